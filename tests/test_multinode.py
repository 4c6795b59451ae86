"""Several nodes (issue 27): `torchrun --nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT -m bvvlab
train` with two node ranks on localhost (Gloo, CPU) follows the one-process loss curve at the same
global batch (the tolerance of tests/test_ddp.py) and resumes exactly; node ranks that disagree
on the config, or a node without the corpus, fail at once with one line on every node."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.train import loop as TR

COMMON = dict(preset="tiny", steps=6, seq_len=32, batch_size=8, log_every=1, eval_every=3, eval_batches=1,
              save_every=3, train_chars=20_000, val_chars=4_000, warmup=2, lr=3e-3, progress=False)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch_nodes(args_of_node, cwd_of_node=None, timeout=300):
    """Start one torchrun agent per node rank on localhost; return [(returncode, stderr)]."""
    port = _port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    procs = []
    for r, args in enumerate(args_of_node):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
               "--nproc_per_node", "1", "--rdzv-endpoint", f"localhost:{port}", "-m", "bvvlab", "train", *args]
        procs.append(subprocess.Popen(cmd, cwd=(cwd_of_node or [REPO_ROOT] * 2)[r], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    t0, results = time.time(), []
    for p in procs:
        _, err = p.communicate(timeout=max(1, timeout - (time.time() - t0)))
        results.append((p.returncode, err))
    return results


def _losses(out):
    return [r["loss"] for r in TR.read_metrics(out) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    from bvvlab.glyph.embeddings import prepare_vocabulary
    from bvvlab.train import shards as D

    texts = list(D.take_chars(D.iter_texts({"libreoffice-en-ru": 1.0}, "train", 0), COMMON["train_chars"]))
    return str(prepare_vocabulary("compact", dim=64, texts=texts, progress=False).save(tmp_path_factory.mktemp("v") / "v"))


@pytest.mark.slow
def test_two_nodes_match_one_process_and_resume_exactly(tmp_path, vocab):
    one = tmp_path / "one"
    TR.train(TR.make_config(**COMMON, vocab=vocab, out=str(one)))  # also fills the shard cache
    two = tmp_path / "two"
    args = ["--out", str(two), f"vocab={vocab}", *[f"{k}={v}" for k, v in COMMON.items()]]
    for rc, err in launch_nodes([args, args]):
        assert rc == 0, err[-3000:]
    meta = json.loads((two / "meta.json").read_text())
    assert meta["world_size"] == 2
    ref = _losses(one)
    assert len(ref) == COMMON["steps"] and ref[-1] < ref[0]
    assert _losses(two) == pytest.approx(ref, rel=1e-5, abs=1e-6)
    w1 = load_file(TR.last_checkpoint(one) / "model.safetensors")
    w2 = load_file(TR.last_checkpoint(two) / "model.safetensors")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)

    # a kill after the step-3 checkpoint: the later checkpoint is gone; both nodes resume from step 3
    shutil.rmtree(TR.last_checkpoint(two))
    assert TR.last_checkpoint(two).name.endswith("3")
    for rc, err in launch_nodes([["--out", str(two), "--resume"]] * 2):
        assert rc == 0, err[-3000:]
    assert _losses(two) == pytest.approx(ref, rel=1e-5, abs=1e-6)
    w3 = load_file(TR.last_checkpoint(two) / "model.safetensors")
    for k in w2:
        assert torch.equal(w3[k], w2[k]), k  # the resumed run ends bit-identical to the uninterrupted one
    assert len(json.loads((two / "meta.json").read_text())["resumes"]) == 1


@pytest.mark.slow
def test_nodes_that_disagree_or_lack_the_corpus_fail_with_one_line(tmp_path, vocab):
    base = ["--out", str(tmp_path / "run"), f"vocab={vocab}", *[f"{k}={v}" for k, v in COMMON.items()]]
    results = launch_nodes([base, [*base, "lr=0.002"]])
    for rc, err in results:
        assert rc != 0
        lines = [ln for ln in err.splitlines() if "bvvlab train: error:" in ln]
        assert len(lines) == 1 and "node ranks disagree on the config: rank 1" in lines[0] and "lr differ" in lines[0]
    # the same config (a relative corpus path), but node 1's folder has no such file
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "docs.txt").write_text("hello world, a document.\n\nanother one, with more text.\n" * 200)
    args = ["--out", str(tmp_path / "run2"), f"vocab={vocab}", "corpus=docs.txt",
            *[f"{k}={v}" for k, v in COMMON.items()]]
    for rc, err in launch_nodes([args, args], cwd_of_node=[a, b]):
        lines = [ln for ln in err.splitlines() if "bvvlab train: error:" in ln]
        assert rc != 0 and len(lines) == 1 and "rank 1" in lines[0] and "corpus docs.txt does not exist" in lines[0]
    assert not (tmp_path / "run2").exists()
