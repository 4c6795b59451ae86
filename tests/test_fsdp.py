"""Sharded training (issue 27): `fsdp=true` under `torchrun --nproc_per_node 2` (FSDP2 over Gloo on
CPU) follows the DDP / one-process loss curve at the same global batch within the tolerance of
tests/test_ddp.py, saves the same plain Hugging Face checkpoint (the full state gathered), and a
run resumed from a checkpoint ends bit-identical to the uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.models import checkpoints as C
from bvvlab.train import loop as TR

COMMON = dict(preset="tiny", steps=6, seq_len=32, batch_size=8, log_every=1, eval_every=3, eval_batches=1,
              save_every=3, train_chars=20_000, val_chars=4_000, warmup=2, lr=3e-3, progress=False)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "bvvlab", "train", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _losses(out):
    return [r["loss"] for r in TR.read_metrics(out) if r["kind"] == "train"]


def _evals(out):
    return [r["val_bpc"] for r in TR.read_metrics(out) if r["kind"] == "eval"]


@pytest.mark.slow
def test_fsdp_matches_one_process_saves_hf_and_resumes_exactly(tmp_path):
    from bvvlab.glyph.embeddings import prepare_vocabulary
    from bvvlab.train import shards as D

    texts = list(D.take_chars(D.iter_texts({"libreoffice-en-ru": 1.0}, "train", 0), COMMON["train_chars"]))
    vocab = str(prepare_vocabulary("compact", dim=64, texts=texts, progress=False).save(tmp_path / "v"))
    one = tmp_path / "one"
    TR.train(TR.make_config(**COMMON, vocab=vocab, out=str(one)))
    fs = tmp_path / "fsdp"
    args = ["--out", str(fs), f"vocab={vocab}", "fsdp=true", *[f"{k}={v}" for k, v in COMMON.items()]]
    proc = torchrun(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = _losses(one)
    assert len(ref) == COMMON["steps"] and ref[-1] < ref[0]
    assert _losses(fs) == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert _evals(fs) == pytest.approx(_evals(one), rel=1e-5)
    # the same plain HF checkpoint: same keys, shapes and (within float tolerance) values
    w1, w2 = load_file(TR.last_checkpoint(one) / "model.safetensors"), load_file(TR.last_checkpoint(fs) / "model.safetensors")
    assert sorted(w1) == sorted(w2)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    model, _ = C.load_checkpoint(fs)  # the run folder loads as an ordinary model
    assert not any(hasattr(p, "full_tensor") for p in model.parameters())

    # killed after the step-3 checkpoint: the resume re-shards the gathered optimizer state exactly
    shutil.rmtree(TR.last_checkpoint(fs))
    proc = torchrun("--out", str(fs), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    w3 = load_file(TR.last_checkpoint(fs) / "model.safetensors")
    for k in w2:
        assert torch.equal(w3[k], w2[k]), k
    assert _losses(fs) == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert json.loads((fs / "meta.json").read_text())["config"]["fsdp"] is True


def test_fsdp_with_lora_is_one_line():
    with pytest.raises(ValueError, match="fsdp=true with lora_rank=4"):
        TR.make_config(fsdp=True, lora_rank=4, freeze_blocks=1).validate()
