"""Planning past one machine (issue 27): `pipeline --nnodes N` prints each node's torchrun line
(after the data preparation line) and writes nothing in a dry run; `--nnodes N` without
--dry-run writes the configs the nodes launch; memory per GPU for DDP and FSDP follows its
formula (`bvvlab.train.memory`) and `bvvlab model-params --gpus N` prints it."""

from __future__ import annotations

import json

import pytest

from bvvlab.cli import main
from bvvlab.models import model as M
from bvvlab.train import memory as MEM
from bvvlab.train.config import make_config


def test_dry_run_prints_one_torchrun_line_per_node(tmp_path, capsys):
    out = tmp_path / "paper"
    assert main(["pipeline", "--profile", "paper", "--out", str(out), "--gpus", "8", "--nnodes", "2", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    cfg = "steps/train-frozen/train_config.json"
    assert f"data (once, before): (in {out}) bvvlab data prepare --config {cfg}" in text
    for r in (0, 1):
        assert (f"node {r}: (in {out}) torchrun --nnodes=2 --node-rank={r} --nproc_per_node=8 "
                f"--rdzv-endpoint=$MASTER_ADDR:29500 -m bvvlab train --config {cfg}") in text
    # the global batch (64) over 16 ranks x grad_accum 4: one window per micro-step
    assert "(micro-batch 1)" in text and "with fsdp=true over 16 GPU(s)" in text


def test_nnodes_writes_the_configs_the_nodes_launch(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pipeline", "--profile", "smoke", "--out", str(out), "--only", "train-frozen", "--gpus", "1",
                 "--nnodes", "2"]) == 0
    text = capsys.readouterr().out
    config = out / "steps" / "train-frozen" / "train_config.json"
    saved = json.loads(config.read_text())
    make_config(saved).validate(world_size=2)  # a config every node can launch as it is
    assert "node 1: " in text and "--node-rank=1" in text and "bvvlab pipeline --profile smoke" in text
    assert main(["pipeline", "--nnodes", "0", "--dry-run"]) == 2


def test_fsdp_memory_follows_its_formula():
    cfg = M.config_from_preset("best_bvv_ru")
    counts, block = MEM.model_counts(cfg)
    assert block * cfg.num_hidden_layers < counts["trainable"]
    ddp = MEM.memory_per_gpu(cfg, counts, 1024, 2, world=8)
    fs = MEM.memory_per_gpu(cfg, counts, 1024, 2, world=8, fsdp=True, block_params=block)
    gib = 1024 ** 3
    sharded = counts["total"] - counts["frozen"]
    assert fs["weights_gb"] == round((4 * sharded / 8 + 4 * counts["frozen"]) / gib, 2)
    assert fs["grads_and_adam_gb"] == round(12 * counts["trainable"] / 8 / gib, 2)
    assert fs["gathered_gb"] == round(4 * (2 * block + sharded - block * cfg.num_hidden_layers) / gib, 2)
    assert fs["activations_gb"] == ddp["activations_gb"]
    # on one GPU FSDP holds what DDP holds (nothing to shard, nothing gathered)
    one = MEM.memory_per_gpu(cfg, counts, 1024, 2, world=1, fsdp=True, block_params=block)
    assert one["total_gb"] == pytest.approx(MEM.memory_per_gpu(cfg, counts, 1024, 2, world=1)["total_gb"], abs=0.02)


def test_model_params_prints_memory_per_gpu(capsys):
    assert main(["model-params", "tiny", "best_bvv_ru", "--gpus", "8"]) == 0
    text = capsys.readouterr().out
    assert "| tiny | 2 | 64 |" in text and "FSDP GiB/GPU over 8" in text
    row = next(line for line in text.splitlines() if line.startswith("| best_bvv_ru | 335,578,112 |"))
    ddp, fsdp = (float(x) for x in row.split("|")[3:5])
    assert fsdp < ddp
    assert main(["model-params", "--gpus", "0"]) == 2
    assert main(["model-params", "nosuch"]) == 2


@pytest.mark.parametrize("argv, line", [
    (["--gpus", "abc"], "gpus='abc': expected an integer"),
    (["--gpus", "0"], "gpus=0: must be >= 1 (GPUs to train on)"),
    (["--gpus", "2", "--windows", "x"], "windows='x': expected an integer"),
    (["--gpus", "2", "--seq-len", "0"], "seq_len=0: must be >= 1 (tokens per window)"),
])
def test_model_params_bad_numbers_are_the_shared_config_line(capsys, argv, line):
    # argparse's int type printed usage + "invalid int value"; --gpus 0 printed "--gpus 0: give 1 or more"
    assert main(["model-params", "tiny", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"bvvlab model-params: error: {line}"]


def test_model_params_numbers_from_the_command_line_reach_the_table(capsys):
    assert main(["model-params", "tiny", "--gpus", "2", "--seq-len", "128", "--windows", "4"]) == 0
    want = MEM.memory_table(["tiny"], 2, 128, 4)
    assert want in capsys.readouterr().out
