"""DDP (issue 5): `torchrun --nproc_per_node 2 -m bvvlab train` (Gloo, CPU) follows the loss curve
of one process with the same global batch, within float tolerance; so does one process with
gradient accumulation over the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.train import loop as TR

COMMON = dict(preset="tiny", steps=6, seq_len=32, batch_size=8, log_every=1, eval_every=3, eval_batches=1,
              save_every=6, train_chars=20_000, val_chars=4_000, warmup=2, lr=3e-3, progress=False)


def _losses(out):
    return [r["loss"] for r in TR.read_metrics(out) if r["kind"] == "train"]


def _final(out):
    return load_file(TR.last_checkpoint(out) / "model.safetensors")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    from bvvlab.glyph.embeddings import prepare_vocabulary
    from bvvlab.train import shards as D

    # the compact vocabulary + matrix, saved once: each rank then just loads it
    texts = list(D.take_chars(D.iter_texts({"libreoffice-en-ru": 1.0}, "train", 0), COMMON["train_chars"]))
    COMMON["vocab"] = str(prepare_vocabulary("compact", dim=64, texts=texts, progress=False).save(tmp_path / "v"))
    one = tmp_path / "one"
    TR.train(TR.make_config(**COMMON, out=str(one)))  # also fills the caches the ranks read

    two = tmp_path / "two"
    args = [f"{k}={v}" for k, v in COMMON.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "bvvlab", "train", "--out", str(two), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = (two / "meta.json").read_text()
    assert '"world_size": 2' in meta

    accum = tmp_path / "accum"
    TR.train(TR.make_config(**{**COMMON, "grad_accum": 2}, out=str(accum)))

    ref = _losses(one)
    assert len(ref) == COMMON["steps"] and ref[-1] < ref[0]
    for other in (two, accum):
        assert _losses(other) == pytest.approx(ref, rel=1e-5, abs=1e-6), other.name
        w1, w2 = _final(one), _final(other)
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=f"{other.name}: {k}")
    # the validation curve too (rank 0 evaluates the same windows)
    evals = {run: [r["val_bpc"] for r in TR.read_metrics(run) if r["kind"] == "eval"] for run in (one, two)}
    assert evals[two] == pytest.approx(evals[one], rel=1e-5)
