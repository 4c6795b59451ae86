"""Checkpoints a user can trust (issue 10, items 1-10): no code runs from a checkpoint, damaged
files are named and the newest intact checkpoint is taken, weights are never deleted unasked,
a full or read-only disk gives one line and no debris, interrupted runs exit 130 and resume
with their history kept, git is read without its index lock, files get the user's umask, and
a finished run folder is a plain Hugging Face directory.

One 6-step run (checkpoints at steps 2, 4 and 6) is shared by the module; destructive tests work
on a copy of it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bvvlab import cli
from bvvlab.core import runinfo
from bvvlab.core.errors import OutputError
from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.models import checkpoints as C
from bvvlab.train.loop import make_config, train

FAST = dict(preset="tiny", seq_len=32, batch_size=4, train_chars=20_000, val_chars=4_000, log_every=1,
            eval_every=0, progress=False)
ARGS = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in FAST.items()]


def _step(run: Path, n: int) -> Path:
    return run / "checkpoints" / f"step_{n:07d}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished 6-step run written under umask 0o022: checkpoints at steps 2, 4 and 6."""
    out = tmp_path_factory.mktemp("base") / "run"
    old = os.umask(0o022)
    try:
        train(make_config(**FAST, steps=6, save_every=2, keep_last=3, out=str(out)))
    finally:
        os.umask(old)
    return out


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    """A private copy of the base run, for tests that damage it."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    got = capsys.readouterr()
    return rc, got.out, got.err


def _resume(capsys, run: Path, *extra: str) -> tuple[int, str, str]:
    return _cli(capsys, "train", "--out", str(run), "--resume", *extra)


def _assert_one_line_error(rc: int, err: str, *words: str) -> str:
    """rc 2, no traceback, and a last `bvvlab train: error:` line holding every word."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("bvvlab train: error: "), err
    for w in words:
        assert w in line, (w, line)
    return line


def _fix_digests(ckpt: Path) -> None:
    """What someone planting a file would do too: record the new files' digests in meta.json."""
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["files"] = C.file_digests(ckpt)
    (ckpt / "meta.json").write_text(json.dumps(meta))


def _finished(run: Path, steps: int) -> dict:
    meta = json.loads((run / "meta.json").read_text())
    assert meta["final"]["step"] == steps and "interrupted" not in meta
    assert C.damaged_files(_step(run, steps)) == []
    return meta


# ---------------------------------------------------------------------------------------------
# item 1: reading a checkpoint runs no code


class _Payload:
    """Unpickling this creates `marker` (a harmless stand-in for os.system)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_pickle_in_trainer_state_is_never_run(run, tmp_path, capsys):
    marker = tmp_path / "PAYLOAD_RAN"
    for ckpt in C.step_dirs(run):  # every checkpoint, with digests fixed up: nothing to fall back to
        (ckpt / C.STATE_FILE).unlink()
        torch.save({"step": 6, "optimizer": _Payload(marker)}, ckpt / C.LEGACY_STATE_FILE)
        _fix_digests(ckpt)
    assert pickle.loads(pickle.dumps(_Payload(marker))) is None and marker.exists()  # the payload is live
    marker.unlink()

    with pytest.raises(C.CheckpointError, match="trainer_state.pt is damaged or not a bvvlab trainer state"):
        C.read_trainer_state(_step(run, 6))
    rc, out, err = _resume(capsys, run)
    assert not marker.exists(), "a resume ran code planted in a checkpoint"
    _assert_one_line_error(rc, err, "every checkpoint", "trainer_state.pt")
    assert out == ""


def _legacy_state() -> dict:
    """What bvvlab 0.1 pickled: tensors, an optimizer state, python / numpy / torch RNG states,
    a sampler state with a numpy int64 array and a numpy scalar."""
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"step": 4, "tokens_seen": 512, "optimizer": opt.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            "sampler": {"rng": np.random.default_rng(3).bit_generator.state, "order": np.arange(5),
                        "batches_drawn": np.int64(7)},
            "config": {"steps": 4, "out": "runs/x"}}


def _assert_same_state(got: dict, want: dict) -> None:
    assert got["step"] == want["step"] and got["config"] == want["config"]
    assert got["rng"]["python"] == want["rng"]["python"]
    np_got, np_want = got["rng"]["numpy"], want["rng"]["numpy"]
    assert np_got[0] == np_want[0] and np.array_equal(np_got[1], np_want[1]) and np_got[2:] == np_want[2:]
    assert torch.equal(got["rng"]["torch"], want["rng"]["torch"])
    assert np.array_equal(got["sampler"]["order"], want["sampler"]["order"]) and got["sampler"]["batches_drawn"] == 7
    assert got["sampler"]["rng"] == want["sampler"]["rng"]
    for k, v in want["optimizer"]["state"][0].items():
        assert torch.equal(got["optimizer"]["state"][0][k], v)


def test_legit_legacy_trainer_state_pt_is_read(tmp_path):
    """bvvlab 0.1 runs still resume: their trainer_state.pt loads with weights_only=True, under
    numpy 2's names (numpy._core, numpy.dtypes.*) and numpy 1's (numpy.core)."""
    want = _legacy_state()
    torch.save(want, tmp_path / C.LEGACY_STATE_FILE)
    _assert_same_state(C.read_trainer_state(tmp_path), want)

    # numpy 1 wrote numpy.core.multiarray._reconstruct: the same file as numpy 1 would have written it
    np1 = tmp_path / "np1"
    np1.mkdir()
    torch.save(want, np1 / C.LEGACY_STATE_FILE, _use_new_zipfile_serialization=False)
    raw = (np1 / C.LEGACY_STATE_FILE).read_bytes()
    assert b"numpy._core.multiarray" in raw
    (np1 / C.LEGACY_STATE_FILE).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    _assert_same_state(C.read_trainer_state(np1), want)


def test_legacy_run_without_digests_resumes(run, capsys):
    """A checkpoint as bvvlab 0.1 wrote it (trainer_state.pt, no `files` digests, no train_config
    in meta.json) resumes."""
    for ckpt in C.step_dirs(run):
        state = C.read_trainer_state(ckpt)
        (ckpt / C.STATE_FILE).unlink()
        torch.save(state, ckpt / C.LEGACY_STATE_FILE)
        meta = json.loads((ckpt / "meta.json").read_text())
        meta.pop("files"), meta.pop("train_config")
        (ckpt / "meta.json").write_text(json.dumps(meta))
    rc, out, err = _resume(capsys, run, "steps=8")
    assert rc == 0, err
    assert out.strip() == str(_step(run, 8))
    _finished(run, 8)


def test_run_saved_with_an_unfused_optimizer_resumes(run, capsys):
    """A real bvvlab 0.1 trainer_state.pt (CPU) records fused=False, foreach=None in its groups."""
    for ckpt in C.step_dirs(run):
        state = C.read_trainer_state(ckpt)
        for group in state["optimizer"]["param_groups"]:
            group.update(fused=False, foreach=None)
        (ckpt / C.STATE_FILE).unlink()
        torch.save(state, ckpt / C.LEGACY_STATE_FILE)
        _fix_digests(ckpt)
    rc, out, err = _resume(capsys, run, "steps=8")
    assert rc == 0, err
    _finished(run, 8)


@pytest.mark.parametrize("metadata", ["{not json", json.dumps({"__tensor__": "missing"}),
                                      json.dumps({"__items__": 5}), None])
def test_trainer_state_with_malformed_metadata_is_one_line(run, capsys, metadata):
    from safetensors.torch import save_file

    for ckpt in C.step_dirs(run):
        save_file({"x": torch.zeros(2)}, str(ckpt / C.STATE_FILE),
                  metadata=None if metadata is None else {"bvvlab_state": metadata})
        _fix_digests(ckpt)
    with pytest.raises(C.CheckpointError, match="trainer_state.safetensors is damaged or not a bvvlab trainer state"):
        C.read_trainer_state(_step(run, 6))
    if metadata == "{not json":
        rc, out, err = _resume(capsys, run)
        _assert_one_line_error(rc, err, "every checkpoint", "trainer_state.safetensors")


# ---------------------------------------------------------------------------------------------
# items 3-4: damaged files are named, and the newest intact checkpoint is taken


def _overwrite_tensor_bytes(path: Path, key: str) -> None:
    """Garbage over a tensor's bytes, in place: the file keeps its size and its header."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8:8 + n])[key]["data_offsets"]
    size = len(raw)
    with open(path, "r+b") as fh:
        fh.seek(8 + n + start)
        fh.write(b"\x7f" * min(4096, end - start))  # 0x7f7f7f7f: float32 3.4e38
    assert path.stat().st_size == size


def test_garbage_over_lm_head_is_named_and_an_intact_checkpoint_taken(run, capsys):
    newest = _step(run, 6)
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").unlink()  # a file of its own (a run folder's final model is a hard link)
    (newest / "model.safetensors").write_bytes(data)
    _overwrite_tensor_bytes(newest / "model.safetensors", "lm_head.weight")

    with pytest.raises(C.CheckpointError) as exc:
        C.load_checkpoint(newest)
    assert "model.safetensors" in str(exc.value) and str(_step(run, 4)) in str(exc.value)

    rc, out, err = _resume(capsys, run)
    assert rc == 0, err
    assert f"{newest} is damaged (model.safetensors)" in err
    assert f"resuming from the newest intact checkpoint {_step(run, 4)}" in err
    meta = _finished(run, 6)
    assert meta["resumes"][-1]["from_checkpoint"] == str(_step(run, 4))
    assert math_finite(meta["final"]["loss"]) and meta["final"]["loss"] < 20
    C.load_checkpoint(newest)  # re-saved from the intact one


def math_finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def test_truncated_state_and_weights_are_named_and_skipped(run, capsys):
    for name, n in ((C.STATE_FILE, 6), ("model.safetensors", 4)):
        f = _step(run, n) / name
        data = f.read_bytes()
        f.unlink()  # (hard-linked into the run folder: truncate a copy of its own)
        f.write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointError, match="model.safetensors"):
        C.load_checkpoint(_step(run, 4))

    rc, out, err = _resume(capsys, run)
    assert rc == 0 and "Traceback" not in err, err
    assert f"{_step(run, 6)} is damaged ({C.STATE_FILE})" in err
    assert f"{_step(run, 4)} is damaged (model.safetensors)" in err
    assert f"resuming from the newest intact checkpoint {_step(run, 2)}" in err
    _finished(run, 6)


def test_truncation_is_found_without_digests(base_run, tmp_path):
    """A checkpoint written before digests existed: a truncated safetensors file is still named."""
    ckpt = tmp_path / "step_0000006"
    shutil.copytree(_step(base_run, 6), ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta.pop("files")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    assert C.damaged_files(ckpt) == []
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:-100])
    assert C.damaged_files(ckpt) == ["model.safetensors"]
    (ckpt / "model.safetensors").write_bytes(data + b"\0" * 8)
    assert C.damaged_files(ckpt) == ["model.safetensors"]


def test_every_checkpoint_damaged_is_one_line(run, capsys):
    for ckpt in C.step_dirs(run):
        (ckpt / C.STATE_FILE).write_bytes(b"")
    rc, out, err = _resume(capsys, run)
    _assert_one_line_error(rc, err, "every checkpoint", "step_0000002", "overwrite=true")


# ---------------------------------------------------------------------------------------------
# item 5: weights are never deleted unasked


def test_pruned_trainer_states_refuse_and_keep_every_checkpoint(run, capsys):
    for f in run.glob("checkpoints/step_*/trainer_state.*"):
        f.unlink()
    (_step(run, 2) / "NOTES.txt").write_text("the user's own file\n")
    before = {p: (p.stat().st_ino, _sha(p)) for p in run.glob("checkpoints/**/*") if p.is_file()}
    assert len([p for p in before if p.name == "model.safetensors"]) == 3

    rc, out, err = _resume(capsys, run)
    _assert_one_line_error(rc, err, "without trainer state", "step_0000002", "step_0000006", "new out=")
    after = {p: (p.stat().st_ino, _sha(p)) for p in run.glob("checkpoints/**/*") if p.is_file()}
    assert after == before  # same files, same inodes, same bytes


# ---------------------------------------------------------------------------------------------
# item 6: a full or read-only disk: one line, no debris, the last good checkpoint intact


def _debris(run: Path) -> list[str]:
    return [str(p) for p in run.rglob("*") if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".tmp")]


def test_disk_full_during_a_save_is_one_line_and_leaves_no_debris(run, capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    before = {p.name: _sha(p) for p in _step(run, 6).iterdir()}

    def full(*a, **k):  # exactly what safetensors raises when the disk fills up (not an OSError)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    rc, out, err = _resume(capsys, run, "steps=8")
    _assert_one_line_error(rc, err, f"cannot write {_step(run, 8)}", "no space left", "MiB needed", "MiB free")
    assert out == "" and _debris(run) == []
    assert not _step(run, 8).exists()
    monkeypatch.undo()
    assert {p.name: _sha(p) for p in _step(run, 6).iterdir()} == before
    assert C.damaged_files(_step(run, 6)) == []
    C.load_checkpoint(_step(run, 6))
    C.read_trainer_state(_step(run, 6))


def test_failed_rename_over_an_existing_checkpoint_puts_it_back(run, monkeypatch):
    """Re-saving a step (a resume from an earlier checkpoint does): if the new copy cannot be
    renamed into place, the previous one is put back under its name."""
    ckpt = _step(run, 6)
    before = {p.name: _sha(p) for p in ckpt.iterdir()}
    model, tok = C.load_checkpoint(ckpt)
    state = C.read_trainer_state(ckpt)
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(src).name.startswith(".tmp-step_"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match=f"cannot write {ckpt}: no space left"):
        C.save_trainer_checkpoint(run, 6, model, tok, state, {"step": 6}, keep_last=3)
    monkeypatch.undo()
    assert {p.name: _sha(p) for p in ckpt.iterdir()} == before
    assert _debris(run) == []


def test_publish_final_on_a_full_disk_is_one_line(run, monkeypatch):
    (run / "model.safetensors").unlink()

    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def full(src, dst, **k):
        Path(dst).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(OutputError, match="no space left"):
        C.publish_final(run, _step(run, 6))
    assert _debris(run) == []


def test_read_only_output_is_one_line(tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if parent in Path(self).parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    rc, out, err = _cli(capsys, "train", "--out", str(parent / "run"), "steps=2", *ARGS)
    _assert_one_line_error(rc, err, f"cannot write {parent / 'run'}", "read-only")
    assert list(parent.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes (the EROFS case above covers CI)")
def test_read_only_parent_by_mode_is_one_line(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        rc, out, err = _cli(capsys, "train", "--out", str(parent / "run"), "steps=2", *ARGS)
    finally:
        parent.chmod(0o755)
    _assert_one_line_error(rc, err, f"cannot write {parent / 'run'}", "permission denied")


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    rc, out, err = _cli(capsys, "train", "--out", str(f), "steps=2", *ARGS)
    _assert_one_line_error(rc, err, str(f), "is a file")
    assert "Errno" not in err and f.read_text() == "mine\n"


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (room for one checkpoint of the tiny run), where mounting is allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk_is_one_line(small_disk, capsys):
    out = small_disk / "run"
    rc, stdout, err = _cli(capsys, "train", "--out", str(out), "steps=4", "save_every=2", *ARGS)
    _assert_one_line_error(rc, err, f"cannot write {_step(out, 4)}", "no space left", "MiB free")
    assert _debris(out) == []
    assert C.damaged_files(_step(out, 2)) == []
    C.load_checkpoint(_step(out, 2))


# ---------------------------------------------------------------------------------------------
# items 7-8: an interrupted run exits 130 and says how to resume; resumes keep their history


# the `bvvlab` command in a process of its own that presses Ctrl-C on itself (a real SIGINT, from
# the kernel) as soon as the first metrics record is written: the stop step does not depend on speed
_CTRL_C_AT_FIRST_RECORD = """
import os, signal, sys
from bvvlab import cli
from bvvlab.train import loop as train
emit = train.RunLog.emit
def emit_then_ctrl_c(self, rec):
    emit(self, rec)
    if rec["kind"] == "train" and not getattr(train, "_pressed", False):
        train._pressed = True
        os.kill(os.getpid(), signal.SIGINT)
train.RunLog.emit = emit_then_ctrl_c
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigint_exits_130_then_resumes_keep_their_history(tmp_path, capsys):
    out = tmp_path / "run"
    steps = 4
    proc = subprocess.run([sys.executable, "-c", _CTRL_C_AT_FIRST_RECORD, "train", "--out", str(out), f"steps={steps}",
                           "save_every=2", *ARGS], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 130, stderr[-3000:]
    assert stdout == "" and "Traceback" not in stderr
    meta = json.loads((out / "meta.json").read_text())
    at = meta["interrupted"]["step"]
    assert at == 1 and "final" not in meta and meta["interrupted"]["signal"] == "SIGINT"
    assert f"interrupted (SIGINT) at step {at} of {steps}" in stderr
    assert f"resume with: bvvlab train --out {out} --resume" in stderr
    assert C.last_checkpoint(out) == _step(out, at) and C.damaged_files(_step(out, at)) == []

    rc, stdout, err = _resume(capsys, out, f"steps={steps + 2}")
    assert rc == 0, err
    meta = _finished(out, steps + 2)
    assert meta["config"]["steps"] == steps + 2
    assert [(r["at_step"], r["steps"]) for r in meta["resumes"]] == [(at, steps + 2)]

    rc, stdout, err = _resume(capsys, out, f"steps={steps + 4}")
    assert rc == 0, err
    meta = _finished(out, steps + 4)
    assert meta["config"]["steps"] == steps + 4
    assert [(r["at_step"], r["steps"]) for r in meta["resumes"]] == [(at, steps + 2), (steps + 2, steps + 4)]
    assert "resumed" not in meta


# ---------------------------------------------------------------------------------------------
# item 9: git is read without taking .git/index.lock


def test_git_is_called_without_optional_locks(monkeypatch):
    calls = []

    def fake_run(argv, **kw):
        calls.append((list(argv), kw.get("env")))
        return subprocess.CompletedProcess(argv, 0, stdout="0123abcd\n" if "rev-parse" in argv else "", stderr="")

    monkeypatch.setattr(runinfo.subprocess, "run", fake_run)
    assert runinfo.git_commit() == "0123abcd"
    assert calls
    for argv, env in calls:
        assert argv[0] == "git"
        assert "--no-optional-locks" in argv or (env or {}).get("GIT_OPTIONAL_LOCKS") == "0", argv


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_does_not_rewrite_the_index(tmp_path):
    """A real repository whose index is stale (a tracked file touched): `git status` would
    refresh and rewrite .git/index under index.lock; reading the commit must not."""
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    later = time.time() + 5
    os.utime(tmp_path / "a.txt", (later, later))
    index = tmp_path / ".git" / "index"
    before = (index.stat().st_ino, index.stat().st_mtime_ns, index.read_bytes())
    commit = runinfo.git_commit(tmp_path)
    assert commit is not None and len(commit) == 40  # clean: same content, only the mtime moved
    assert (index.stat().st_ino, index.stat().st_mtime_ns, index.read_bytes()) == before


# ---------------------------------------------------------------------------------------------
# item 10: files get the user's umask


def _modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


def test_files_get_the_umask_022(base_run):
    modes = _modes(base_run)
    assert "checkpoints/step_0000006/model.safetensors" in modes and "model.safetensors" in modes
    for name, mode in modes.items():
        want = "0o755" if (base_run / name).is_dir() else "0o644"
        assert mode == want, (name, mode)


def test_files_get_the_umask_077(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o077)
    try:
        train(make_config(**FAST, steps=2, save_every=2, out=str(out)))
    finally:
        os.umask(old)
    modes = _modes(out)
    assert "checkpoints/step_0000002/model.safetensors" in modes and "metrics.jsonl" in modes
    for name, mode in modes.items():
        want = "0o700" if (out / name).is_dir() else "0o600"
        assert mode == want, (name, mode)


# ---------------------------------------------------------------------------------------------
# resolving run folders: a finished run folder is a plain HF directory


def test_run_folder_is_a_plain_hf_directory(base_run):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(base_run, trust_remote_code=True).eval()
    last, _ = C.load_checkpoint(_step(base_run, 6))
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, last.eval()(ids).logits)
    via_run, _ = C.load_checkpoint(base_run)
    for k, v in last.state_dict().items():
        assert torch.equal(via_run.state_dict()[k], v)


def test_resolve_run_folders_and_steps(base_run, tmp_path):
    assert C.resolve(base_run) == _step(base_run, 6)
    assert C.resolve(base_run, step=2) == _step(base_run, 2)
    assert C.resolve(_step(base_run, 4)) == _step(base_run, 4)
    with pytest.raises(C.CheckpointError, match=r"no checkpoint at step 3 \(steps saved: 2, 4, 6\)"):
        C.resolve(base_run, step=3)
    with pytest.raises(C.CheckpointError, match="holds no checkpoint"):
        C.resolve(tmp_path)
    with pytest.raises(C.CheckpointError, match="does not exist"):
        C.resolve(tmp_path / "nothing")
    with pytest.raises(C.CheckpointError, match="holds no checkpoint"):
        C.load_checkpoint(tmp_path)


# ---------------------------------------------------------------------------------------------
# a checkpoint written before the command line left the model file (issue 22)

OLD = Path(__file__).resolve().parent / "fixtures" / "checkpoint_be5f065"


def _old_expected() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(OLD / "expected.safetensors"))


def test_a_checkpoint_whose_model_file_holds_the_old_parser_still_loads(tmp_path):
    """tests/fixtures/checkpoint_be5f065 was saved by the bvvlab of commit be5f065, whose model.py
    (copied into the checkpoint as its remote code) still held `add_cli` and argparse. Today's
    code loads it and gives the logits it gave then."""
    ckpt = shutil.copytree(OLD / "model", tmp_path / "old")
    assert "def add_cli" in (ckpt / "model.py").read_text(encoding="utf-8")
    model, tok = C.load_checkpoint(ckpt)
    want = _old_expected()
    assert tok("Hello, мир! The fox.", add_special_tokens=False)["input_ids"] == want["input_ids"][0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(want["input_ids"]).logits, want["logits"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_old_model_file_still_runs_as_remote_code(tmp_path):
    """The same checkpoint in a process that cannot import bvvlab: its own old model.py (parser
    and all) is the code that runs, and the logits are the recorded ones."""
    ckpt = shutil.copytree(OLD / "model", tmp_path / "old")
    child = (
        "import sys\n"
        "class _NoBvvlab:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'bvvlab':\n"
        "            raise ImportError('bvvlab is blocked')\n"
        "sys.meta_path.insert(0, _NoBvvlab())\n"
        "import torch\n"
        "from safetensors.torch import load_file\n"
        "from transformers import AutoModelForCausalLM\n"
        "want = load_file(sys.argv[2])\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "assert type(model).__module__.startswith('transformers_modules'), type(model).__module__\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(model(want['input_ids']).logits, want['logits'], rtol=0, atol=1e-6)\n"
        "print('same logits')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", child, str(ckpt), str(OLD / "expected.safetensors")], cwd=tmp_path,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "same logits" in proc.stdout, proc.stderr[-3000:]
