"""One writer per run folder (issue 26 item 7): train, grow and pipeline take one lock
(`bvvlab.core.locks`); a second process gets one line naming the first, a lock whose process is
gone (SIGKILL) is taken over, and two real `bvvlab grow` runs in one folder no longer both write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bvvlab.cli import main
from bvvlab.core.locks import LockedError, folder_lock, lock_path
from bvvlab.core.runinfo import REPO_ROOT

TRAIN = ["preset=tiny", "train_chars=20000", "val_chars=4000", "seq_len=32", "batch_size=4", "progress=false",
         "log_every=1", "eval_every=0", "warmup=1"]
HOLD = ("import sys, time\nfrom bvvlab.core.locks import folder_lock\n"
        "with folder_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(600)\n")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _holder(folder, command: str = "grow") -> subprocess.Popen:
    """Another process holding the lock of `folder` (it says 'held' once it does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), command], stdout=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_a_second_writer_gets_one_line_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        for argv in (["train", "--out", str(out), "--steps", "2", *TRAIN],
                     ["grow", "--stages", "1", "--steps-per-stage", "2", "--out", str(out), *TRAIN],
                     ["pipeline", "--profile", "smoke", "--out", str(out), "--only", "embeddings"]):
            assert main(argv) == 2
            assert f"another bvvlab grow (pid {proc.pid}) is writing to {out}: wait for it" in _one_line(capsys)
        assert not out.exists()  # refused before anything was written
        with pytest.raises(LockedError):
            with folder_lock(out, "train"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_path(out).exists()  # the killed holder's file is left behind ...
    with folder_lock(out, "train") as path:  # ... and taken over at once: the kernel dropped its flock
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists() and not out.exists()


def test_a_folder_where_the_lock_belongs_is_one_line(tmp_path, capsys):
    lock_path(tmp_path / "run").mkdir()  # someone's folder named like the lock file
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "2", *TRAIN]) == 2
    assert f"{lock_path(tmp_path / 'run')} is a folder, where bvvlab keeps the lock of" in _one_line(capsys)


def test_the_lock_leaves_no_folder_it_had_to_create(tmp_path):
    deep = tmp_path / "a" / "b" / "run"
    with folder_lock(deep, "train"):
        assert lock_path(deep).parent == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    with folder_lock(deep, "train"):
        deep.mkdir()  # what the locked work writes stays
    assert deep.is_dir() and not lock_path(deep).exists()


@pytest.mark.slow
def test_two_real_grow_runs_in_one_folder_do_not_both_write(tmp_path):
    """The issue's case: two `bvvlab grow` in one folder both exited 0 with interleaved records.
    Now the second is refused in one line while the first runs (held still with SIGSTOP once it
    trains, so the machine's load cannot let it finish first), and the first's records are its own."""
    out = tmp_path / "g"
    cmd = [sys.executable, "-m", "bvvlab", "grow", "--stages", "1,1", "--steps-per-stage", "20", "--out", str(out),
           *TRAIN, "save_every=10"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    deadline = time.time() + 600
    while not (out / "stage_1" / "metrics.jsonl").exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.1)
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    finally:
        first.send_signal(signal.SIGCONT)
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert f"another bvvlab grow (pid {first.pid}) is writing to {out}" in lines[0]
    assert first.wait(timeout=600) == 0, first.communicate()[1][-2000:]
    for stage in ("stage_1", "stage_2"):
        recs = [json.loads(line) for line in (out / stage / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in recs if r["kind"] == "train"] == list(range(1, 21)), stage
    summary = json.loads((out / "growth.json").read_text())
    assert [s["steps"] for s in summary["stages"]] == [20, 20] and not summary["superseded"]
