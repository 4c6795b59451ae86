"""Exact resume (issue 5): a run SIGKILLed at an arbitrary step, or stopped by SIGTERM, and then
resumed ends with weights bit-identical to an uninterrupted run on CPU. Real subprocesses, real
signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.models import checkpoints as C
from bvvlab.train import loop as TR

STEPS = 60
ARGS = ["preset=tiny", f"steps={STEPS}", "save_every=10", "keep_last=2", "log_every=1", "eval_every=20",
        "eval_batches=1", "seq_len=64", "batch_size=16", "train_chars=40000", "val_chars=4000", "warmup=5",
        "progress=false"]


def _env() -> dict[str, str]:
    # the same thread count in every process: CPU kernels are then deterministic run to run
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(out: Path, vocab: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bvvlab", "train", "--out", str(out), *ARGS, f"vocab={vocab}",
                             *extra],
                            cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _logged_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 240) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = _logged_step(out)
        if got >= step:
            return got
        assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read()[-2000:]}"
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(ckpt / "model.safetensors")


def _embed_dir(tmp_path: Path) -> Path:
    """The compact vocabulary + matrix, saved once: each process then just loads it."""
    from bvvlab.glyph.embeddings import prepare_vocabulary
    from bvvlab.train import shards as D

    texts = list(D.take_chars(D.iter_texts({"libreoffice-en-ru": 1.0}, "train", 0), 40_000))
    return prepare_vocabulary("compact", dim=64, texts=texts, progress=False).save(tmp_path / "vocab")


@pytest.mark.slow
def test_sigkill_and_sigterm_then_resume_are_bit_identical(tmp_path):
    ref, killed, termed = tmp_path / "ref", tmp_path / "killed", tmp_path / "termed"
    vocab = _embed_dir(tmp_path)
    # the reference first (it also fills the shard cache for the others)
    rc, _, err = _finish(_start(ref, vocab))
    assert rc == 0, err[-2000:]

    a, b = _start(killed, vocab), _start(termed, vocab)
    kill_at = _wait_for_step(a, killed, 13)  # between checkpoints 10 and 20
    a.send_signal(signal.SIGKILL)
    a.wait()
    term_at = _wait_for_step(b, termed, 27)
    b.send_signal(signal.SIGTERM)
    rc_b, out_b, err_b = _finish(b)
    assert a.returncode == -signal.SIGKILL
    assert kill_at < STEPS and TR.last_checkpoint(killed).name < f"step_{STEPS:07d}", "the kill came too late"
    # SIGTERM: an honest exit (143, issue 10 item 7) with a checkpoint at the step it stopped and
    # the command to resume; not the finished run's output (no checkpoint path on stdout, no final)
    assert rc_b == 143, err_b[-2000:]
    stopped = TR.last_checkpoint(termed)
    assert f"interrupted (SIGTERM) at step {stopped.name.split('_')[1].lstrip('0')}" in err_b
    assert "--resume" in err_b and out_b.strip() == ""
    meta = json.loads((termed / "meta.json").read_text())
    assert "final" not in meta and meta["interrupted"]["signal"] == "SIGTERM"
    assert int(stopped.name.split("_")[1]) >= term_at
    assert int(stopped.name.split("_")[1]) < STEPS, "the signal came too late"

    # resume both (the killed one from step 10, replaying the steps it lost)
    c, d = _start(killed, vocab, "resume=true"), _start(termed, vocab, "resume=true")
    for proc in (c, d):
        rc, _, err = _finish(proc)
        assert rc == 0, err[-2000:]

    final = f"step_{STEPS:07d}"
    want = _weights(ref / "checkpoints" / final)
    for run in (killed, termed):
        got = _weights(run / "checkpoints" / final)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), f"{run.name}: weights differ after resume"
        # the metrics read as one run: every step once, and the same losses as the reference
        recs = [r for r in TR.read_metrics(run) if r["kind"] == "train"]
        ref_recs = [r for r in TR.read_metrics(ref) if r["kind"] == "train"]
        assert [r["step"] for r in recs] == list(range(1, STEPS + 1))
        assert [r["loss"] for r in recs] == [r["loss"] for r in ref_recs]
        # optimizer state too
        s_ref = C.read_trainer_state(ref / "checkpoints" / final)
        s_got = C.read_trainer_state(run / "checkpoints" / final)
        for k, st in s_ref["optimizer"]["state"].items():
            assert torch.equal(st["exp_avg_sq"], s_got["optimizer"]["state"][k]["exp_avg_sq"])
        assert s_got["sampler"] == s_ref["sampler"]
        meta = json.loads((run / "meta.json").read_text())  # the history of resumes is kept (item 8)
        assert meta["config"]["steps"] == STEPS and len(meta["resumes"]) == 1 and "final" in meta
    assert len(C.list_checkpoints(killed)) == 2  # keep_last
