"""The shipped GPU configuration (`configs/best_bvv_ru_gpu.json`: bf16, torch.compile, gradient
accumulation, fused AdamW, TensorBoard) run on CPU at a tiny shape, in one process and under
torchrun with Gloo (issue 8): a CPU-only CI catches what would break on the first GPU step."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.train import loop as TR

CONFIG = REPO_ROOT / "configs" / "best_bvv_ru_gpu.json"
# only the shape, the data budget and the device change; dtype is what `auto` gives on a GPU
TINY = dict(preset="tiny", vocab="compact", seq_len=32, batch_size=8, steps=2, log_every=1, eval_every=0,
            eval_batches=1, save_every=2, train_chars=20_000, val_chars=4_000, warmup=1, device="cpu", dtype="bf16",
            progress=False)


def _cfg(out, **kw):
    base = TR.load_config_file(CONFIG)
    assert base["compile"] is True and base["grad_accum"] > 1 and base["dtype"] == "auto"
    return TR.make_config(base, **{**TINY, "out": str(out), **kw})


@pytest.mark.slow
def test_gpu_config_trains_on_cpu_at_a_tiny_shape(tmp_path):
    ckpt = TR.train(_cfg(tmp_path / "run"))
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["dtype"] == "bf16" and meta["config"]["compile"] and meta["config"]["grad_accum"] == 4
    assert meta["optimizer"] == "AdamW fused"
    losses = [r["loss"] for r in TR.read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert (tmp_path / "run" / "tb").is_dir() and ckpt.name == "step_0000002"


@pytest.mark.slow
def test_gpu_config_under_torchrun_with_gloo(tmp_path):
    """Two processes, bf16 + compile + accumulation: the curve of one process (same global batch)."""
    one = tmp_path / "one"
    TR.train(_cfg(one, compile=False))  # fills the vocabulary and shard caches the ranks read
    two = tmp_path / "two"
    args = [f"{k}={v}" for k, v in {**TINY, "grad_accum": 2, "compile": False}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "bvvlab", "train", "--config", str(CONFIG), "--out", str(two), *args, "compile=true"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((two / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["config"]["compile"] and meta["dtype"] == "bf16"
    ref = [r["loss"] for r in TR.read_metrics(one) if r["kind"] == "train"]
    got = [r["loss"] for r in TR.read_metrics(two) if r["kind"] == "train"]
    # bf16 eager (one process, accumulation 4) vs bf16 compiled (two processes x 2 micro-batches):
    # the same windows, different reduction orders and fused kernels; bf16 keeps ~3 digits
    assert got == pytest.approx(ref, rel=2e-2)
