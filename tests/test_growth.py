"""Layer-wise growth (issue 14): stages are ordinary runs, frozen blocks stay bit-identical, new
blocks start as stated, a grown run resumes across and within stages to the same weights."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from bvvlab import checkpoints as C
from bvvlab import growth as G
from bvvlab.errors import Interrupted
from bvvlab.train import make_config, read_metrics

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
    from bvvlab.build import init_from_checkpoint
    from bvvlab.model import BVVForCausalLM, config_from_preset

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
        from bvvlab.build import freeze
        from bvvlab.model import BVVForCausalLM, config_from_preset

        freeze(BVVForCausalLM(config_from_preset("tiny")), 3)


@pytest.mark.slow
def test_cli_grows_an_existing_model_and_trains_the_baseline(grown, tmp_path, capsys):
    from bvvlab import cli

    out = tmp_path / "more"
    args = [f"{k}={v}" for k, v in FAST.items()] + [f"vocab={grown[0] / 'embedding'}"]
    rc = cli.main(["grow", "--stages", "1", "--steps-per-stage", "2", "--from", str(grown[0] / "stage_2"),
                   "--baseline", "--out", str(out), *args])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "growth.json").read_text())
    assert s["stages"][0]["depth"] == 3 and s["stages"][0]["frozen_blocks"] == 2
    assert s["baseline"]["depth"] == 3 and s["baseline"]["tokens"] == s["stages"][0]["tokens"]
    w_parent, w = _weights(grown[0] / "stage_2"), _weights(out / "stage_1")
    assert all(torch.equal(w[k], v) for k, v in w_parent.items() if k.startswith(("model.blocks.0.", "model.blocks.1.")))
    assert capsys.readouterr().out.strip() == str(C.resolve(out / "stage_1"))
