"""Layer-wise growth (issue 14): stages are ordinary runs, frozen blocks stay bit-identical, new
blocks start as stated, a grown run resumes across and within stages to the same weights (after
SIGINT and after SIGKILL), the training FLOPs of a stage count the forward of every block and the
backward of the trainable ones, the same-compute baseline spends the schedule's FLOPs, and the
per-stage probe reads every stage's layers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bvvlab.core.errors import Interrupted
from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.models import checkpoints as C
from bvvlab.models.model import BVVForCausalLM, config_from_preset
from bvvlab.train import growth as G
from bvvlab.train import loop as TR
from bvvlab.train.loop import make_config, read_metrics
from bvvlab.train.setup import freeze

FAST = dict(preset="tiny", train_chars=20_000, val_chars=4_000, seq_len=32, batch_size=4, log_every=1,
            eval_every=0, save_every=2, warmup=1, progress=False)


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(C.resolve(run) / "model.safetensors"))


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    out = tmp_path_factory.mktemp("grow") / "g"
    summary = G.grow(make_config(**FAST), "1,1", 4, out, new_block_init="copy")
    return out, summary


def test_stages_are_ordinary_runs_with_their_lineage(grown):
    out, s = grown
    assert [st["depth"] for st in s["stages"]] == [1, 2] and [st["frozen_blocks"] for st in s["stages"]] == [0, 1]
    meta2 = json.loads((out / "stage_2" / "meta.json").read_text())
    assert meta2["frozen_blocks"] == [0] and meta2["init"]["from"] == str(C.resolve(out / "stage_1"))
    assert meta2["init"]["new_blocks"] == [1] and meta2["init"]["new_block_init"] == "copy"
    assert meta2["model"]["config"]["num_hidden_layers"] == 2
    model, tok = C.load_checkpoint(out / "stage_2")  # a plain checkpoint
    assert model.config.num_hidden_layers == 2 and (out / "stage_2" / "config.json").exists()
    assert json.loads((out / "growth.json").read_text())["final"] == str(C.resolve(out / "stage_2"))


def test_frozen_blocks_do_not_move_and_new_blocks_start_as_copies(grown):
    out, _ = grown
    w1, w2 = _weights(out / "stage_1"), _weights(out / "stage_2")
    block0 = [k for k in w1 if k.startswith("model.blocks.0.")]
    assert block0 and all(torch.equal(w1[k], w2[k]) for k in block0)  # frozen in stage 2
    new = [k for k in w2 if k.startswith("model.blocks.1.")]
    assert new and all(not torch.equal(w2[k], w1[k.replace("blocks.1.", "blocks.0.")]) for k in new
                       if w2[k].dim() == 2)  # the copy of block 0 trained on in stage 2


def test_copy_init_equals_the_block_below(tmp_path):
    from bvvlab.models.model import BVVForCausalLM, config_from_preset
    from bvvlab.train.setup import init_from_checkpoint

    torch.manual_seed(0)
    glyphs = torch.nn.functional.normalize(torch.randn(512, 64), dim=1)
    one = BVVForCausalLM.from_glyphs(config_from_preset("tiny", num_hidden_layers=1), glyphs)
    C.save_checkpoint(one, None, tmp_path / "one")
    two = BVVForCausalLM.from_glyphs(config_from_preset("tiny", num_hidden_layers=3), glyphs)
    info = init_from_checkpoint(two, make_config(init_from=str(tmp_path / "one"), new_block_init="copy"))
    assert info["parent_layers"] == 1 and info["new_blocks"] == [1, 2]
    sd, src = two.state_dict(), one.state_dict()
    for k, v in src.items():
        assert torch.equal(sd[k], v)
        if k.startswith("model.blocks.0."):
            for i in (1, 2):
                assert torch.equal(sd[k.replace("blocks.0.", f"blocks.{i}.")], v)


@pytest.mark.slow
def test_a_grown_run_resumes_within_and_across_stages_to_the_same_weights(grown, tmp_path):
    ref_out, _ = grown
    out = tmp_path / "g"
    G.grow(make_config(**FAST), "1", 4, out, new_block_init="copy")  # stop after stage 1 ...

    def stop_at_step_3(rec):  # ... and interrupt stage 2 at its step 3 (a real SIGINT)
        if rec.get("kind") == "train" and rec["step"] == 3:  # stage 1 is finished and skipped
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="interrupted .* at step 3"):
        G.grow(make_config(**FAST), "1,1", 4, out, new_block_init="copy", callback=stop_at_step_3)
    G.grow(make_config(**FAST), "1,1", 4, out, new_block_init="copy")  # resumes stage 2 from step 3
    got, want = _weights(out / "stage_2"), _weights(ref_out / "stage_2")
    assert all(torch.equal(got[k], want[k]) for k in want)
    losses = [r["loss"] for r in read_metrics(out / "stage_2") if r["kind"] == "train"]
    assert losses == [r["loss"] for r in read_metrics(ref_out / "stage_2") if r["kind"] == "train"]


def test_bad_growth_input(tmp_path, grown):
    for stages in ("", "1,0", "a"):
        with pytest.raises(ValueError, match="stages="):
            G.parse_stages(stages)
    with pytest.raises(ValueError, match="one positive step count"):
        G.grow(make_config(**FAST), "1,1", [3], tmp_path / "x")
    with pytest.raises(ValueError, match="--from needs vocab="):
        G.grow(make_config(**FAST), "1", 2, tmp_path / "y", from_checkpoint=str(grown[0] / "stage_1"))
    with pytest.raises(ValueError, match="holds no checkpoint"):
        G.grow(make_config(**FAST), "1", 2, tmp_path / "z", from_checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="freeze_blocks=3 but the model has 2 blocks"):
        from bvvlab.models.model import BVVForCausalLM, config_from_preset
        from bvvlab.train.setup import freeze

        freeze(BVVForCausalLM(config_from_preset("tiny")), 3)


def test_grow_speaks_of_its_own_options_not_of_the_keys_it_sets(grown, tmp_path):
    """issue 26, item 24: a re-run with another plan names the grow option that differs (not
    `model.num_hidden_layers ... drop those keys`), and a fused `--from` is named as such (not
    `embed_tokens ... absent`). Nothing is trained or changed."""
    from bvvlab.train.fusion import fuse

    out, _ = grown
    before = sorted(p.name for p in out.iterdir())
    for stages, init, words in (("2,1", "copy", "stage_1 was grown 1 block deep, this plan makes it 2 (--stages "
                                                "differs)"),
                                ("1,1", "random", "stage_1 was grown with --new-block-init copy, this call asks for "
                                                  "random (--new-block-init differs)")):
        with pytest.raises(ValueError) as e:
            G.grow(make_config(**FAST), stages, 4, out, new_block_init=init)
        msg = str(e.value)
        assert words in msg and "model.num_hidden_layers" not in msg and "drop those keys" not in msg, msg
    assert sorted(p.name for p in out.iterdir()) == before
    fused = tmp_path / "fused"
    fuse([out / "stage_1", out / "stage_2"], "bayes", fused)
    with pytest.raises(ValueError) as e:
        G.grow(make_config(**FAST, vocab=str(out / "embedding")), "1", 2, tmp_path / "g2", from_checkpoint=str(fused))
    msg = str(e.value)
    assert "is a fused checkpoint (experts stage_1, stage_2)" in msg and "embed_tokens" not in msg, msg
    assert not (tmp_path / "g2").exists()


def test_a_stage_folder_with_only_its_metrics_is_resumed_as_train_would(tmp_path, monkeypatch):
    """One rule for "this folder holds a run" (bvvlab.models.checkpoints.holds_run): a stage folder
    left with metrics.jsonl only is resumed by grow, as train would resume it, not refused."""
    seen = []

    def fake_train(cfg, callback=None):
        seen.append((cfg.out, cfg.resume))
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(G, "train", fake_train)
    monkeypatch.setattr(G, "shared_embedding", lambda base, out: "compact")
    (tmp_path / "g" / "stage_1").mkdir(parents=True)
    (tmp_path / "g" / "stage_1" / "metrics.jsonl").write_text("")
    with pytest.raises(KeyboardInterrupt):
        G.grow(make_config(**FAST), "1", 2, tmp_path / "g")
    assert seen == [(str(tmp_path / "g" / "stage_1"), True)]


@pytest.mark.slow
def test_cli_grows_an_existing_model_and_trains_the_baseline(grown, tmp_path, capsys):
    from bvvlab import cli

    out = tmp_path / "more"
    args = [f"{k}={v}" for k, v in FAST.items()] + [f"vocab={grown[0] / 'embedding'}"]
    rc = cli.main(["grow", "--stages", "1", "--steps-per-stage", "2", "--from", str(grown[0] / "stage_2"),
                   "--baseline", "--baseline-compute", "--out", str(out), *args])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "growth.json").read_text())
    assert s["stages"][0]["depth"] == 3 and s["stages"][0]["frozen_blocks"] == 2
    assert s["baseline"]["depth"] == 3 and s["baseline"]["tokens"] == s["stages"][0]["tokens"]
    bc = s["baseline_compute"]  # the same FLOPs as the stage (up to one step's rounding), fewer tokens
    assert bc["depth"] == 3 and bc["steps"] == G.same_compute_steps(s)["steps"] and bc["run"] == str(out / "baseline_compute")
    assert bc["growth_flops"] == s["train_flops"] and bc["compute_ratio"] == bc["train_flops"] / s["train_flops"]
    assert abs(bc["train_flops"] - s["train_flops"]) <= bc["flops_per_token"] * bc["tokens"] / bc["steps"] / 2
    w_parent, w = _weights(grown[0] / "stage_2"), _weights(out / "stage_1")
    assert all(torch.equal(w[k], v) for k, v in w_parent.items() if k.startswith(("model.blocks.0.", "model.blocks.1.")))
    assert capsys.readouterr().out.strip() == str(C.resolve(out / "stage_1"))


def test_training_flops_count_the_forward_of_all_blocks_and_the_backward_of_the_trainable_ones():
    cfg, T = config_from_preset("tiny", num_hidden_layers=3), 32
    d, f, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    Pb, Ph, attn = 4 * d * d + 2 * d * f, d * V, 4 * T * d  # one block's matmul weights, the head's, scores
    full = G.stage_flops(cfg, 0, T)
    assert full["forward"] == 2 * (3 * Pb + Ph) + 3 * attn and full["total"] == 6 * (3 * Pb + Ph) + 3 * 3 * attn
    model = BVVForCausalLM(cfg)  # the trainer's MFU count is 6N + 12LTd over all parameters (norms too)
    norms = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert full["total"] == TR.flops_per_token(model, T) - 6 * norms
    grown = G.stage_flops(cfg, 2, T)  # growth stage 3: block 2 and the head train, blocks 0, 1 forward only
    assert grown["forward"] == full["forward"] and grown["backward"] == 4 * (Pb + Ph) + 2 * attn
    assert grown["trainable_blocks"] == grown["backward_blocks"] == [2]
    freeze(model, 2)  # the same from a real model's requires_grad flags
    assert G.training_flops_per_token(model, T) == grown
    for p in model.model.blocks[2].parameters():  # a frozen block above a trainable one still passes
        p.requires_grad_(False)  # the gradient down: input gradients, no weight gradients
    for p in model.model.blocks[0].parameters():
        p.requires_grad_(True)
    mid = G.training_flops_per_token(model, T)
    assert mid["backward"] == 2 * (3 * Pb + Ph) + 2 * (Pb + Ph) + 3 * 2 * attn and mid["backward_blocks"] == [0, 1, 2]


def test_the_schedule_sums_its_stages_flops_and_the_compute_baseline_gets_fewer_steps(grown):
    out, s = grown
    for st in s["stages"]:
        want = G.stage_flops(C.resolve(st["run"]) / "config.json", st["frozen_blocks"], FAST["seq_len"])["total"]
        assert st["flops_per_token"] == want and st["train_flops"] == want * st["tokens"]
    assert s["train_flops"] == sum(st["train_flops"] for st in s["stages"])
    plan = G.same_compute_steps(s)
    per_step = FAST["seq_len"] * FAST["batch_size"]
    assert plan["tokens_per_step"] == per_step and plan["depth"] == 2
    assert plan["steps"] == round(s["train_flops"] / (plan["flops_per_token"] * per_step))
    assert 0 < plan["steps"] < sum(st["steps"] for st in s["stages"])  # a monolithic token costs more


def test_probe_per_stage_reads_every_layer_of_every_stage(grown):
    out, s = grown
    from bvvlab.analysis.probe import probe_runs

    p = probe_runs({f"stage {st['stage']}": st["run"] for st in s["stages"]}, concepts=12)
    assert p["concepts"] == 12 and p["items"] == 24
    r1, r2 = p["runs"]["stage 1"], p["runs"]["stage 2"]
    assert r1["layers"] == [0, 1] and r2["layers"] == [0, 1, 2]
    assert r1["top1"][0] == r2["top1"][0]  # layer 0: the shared frozen embedding
    assert all(0 <= v <= 1 for v in r1["top1"] + r2["top1"]) and r1["chance_top1"] == pytest.approx(1 / 12)


_GROW_SCRIPT = """
import os, signal, sys
from bvvlab.train import growth as G
from bvvlab.train.loop import make_config
fast, out, kill_at, lora_rank = {fast!r}, sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
starts = []

def kill(rec):  # SIGKILL at step kill_at of the second stage: no handler runs, nothing is saved
    if rec.get("kind") == "train":
        starts.extend([rec["step"]] if rec["step"] == 1 else [])
        if len(starts) == 2 and rec["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

G.grow(make_config(**fast), "1,1", 6, out, new_block_init="copy", callback=kill if kill_at else None,
       lora_rank=lora_rank)
"""


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [0, 2])
def test_a_sigkilled_growth_run_resumes_to_the_same_weights(tmp_path, lora_rank):
    """A real SIGKILL in stage 2 (between its checkpoints at steps 2 and 4), then the same command
    again: it skips stage 1, resumes stage 2 from step 2 and ends bit-identical to a run never
    killed. Every run is its own process with the same thread count (CPU kernels deterministic).
    With LoRA on block 0 in stage 2, the merged weights and the unmerged base + adapters of the
    trainer state are bit-identical too."""
    fast = {**FAST, "save_every": 2}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    script = _GROW_SCRIPT.format(fast=fast)

    def run(out, kill_at=0):
        return subprocess.run([sys.executable, "-c", script, str(out), str(kill_at), str(lora_rank)], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=600)

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = run(ref)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(killed, kill_at=3)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert (killed / "stage_1" / "model.safetensors").exists() and not (killed / "stage_2" / "model.safetensors").exists()
    assert TR.last_checkpoint(killed / "stage_2").name == "step_0000002"
    r = run(killed)
    assert r.returncode == 0, r.stderr[-2000:]
    got, want = _weights(killed / "stage_2"), _weights(ref / "stage_2")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    steps = [r["step"] for r in read_metrics(killed / "stage_2") if r["kind"] == "train"]
    assert steps == list(range(1, 7))  # every step once: the lost step 3 replayed, not logged twice
    got, want = (C.read_trainer_state(C.resolve(d / "stage_2")).get("lora", {}) for d in (killed, ref))
    assert len(got) == (12 if lora_rank else 0)  # 4 adapted layers of block 0: base, A, B each
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
