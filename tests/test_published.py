"""The published model family (issue 23): bvvlab's parameter counts beside the published sizes,
and the GPT-2-style block option that reproduces 269.70 M and 247.59 M exactly."""

from __future__ import annotations

import pytest
import torch

from bvvlab.cli import main
from bvvlab.models.model import BVVForCausalLM, config_from_preset, count_parameters, llama_config
from bvvlab.models.published import PUBLISHED, family_counts

# (gpt2-style blocks, no-bias blocks): exact counts, frozen code counted as V x n
COUNTS = {
    "UNI_GLYPH (16 layers)": (335_759_360, 335_578_112),
    "16_BIT (16 layers)": (269_699_072, 269_517_824),
    "64_BIT (16 layers)": (272_844_800, 272_663_552),
    "256_BIT (16 layers)": (285_427_712, 285_246_464),
    "9 layers, trainable embedding": (247_585_792, 247_483_392),
    "9 layers, 16-bit": (181_525_504, 181_423_104),
    "best_bvv_ru": (469_977_088, 469_795_840),
}


def test_each_listed_count_is_held():
    rows = {r["name"]: r for r in family_counts()}
    assert set(rows) == set(COUNTS) == {p.name for p in PUBLISHED}
    for name, (gpt2, nobias) in COUNTS.items():
        assert (rows[name]["gpt2"], rows[name]["nobias"]) == (gpt2, nobias), name


def test_gpt2_blocks_land_on_the_exact_published_sizes():
    rows = {r["name"]: r for r in family_counts()}
    assert round(rows["16_BIT (16 layers)"]["gpt2"] / 1e6, 2) == 269.70
    assert round(rows["9 layers, trainable embedding"]["gpt2"] / 1e6, 2) == 247.59
    for r in rows.values():  # every stated size within 0.35% (best_bvv_ru is "about 0.5B")
        if r["name"] != "best_bvv_ru":
            assert abs(r["gpt2_rel"]) < 0.0035 and abs(r["nobias_rel"]) < 0.0035, r


def test_bias_option_adds_the_gpt2_biases_and_trains():
    d, L = 64, 2
    plain = BVVForCausalLM(config_from_preset("tiny"))
    torch.manual_seed(0)
    biased = BVVForCausalLM(config_from_preset("tiny", bias=True))
    extra = count_parameters(biased)["trainable"] - count_parameters(plain)["trainable"]
    assert extra == L * (3 * d + d + 4 * d + d + 2 * d) + d  # qkv, o, up, down, two LN biases; ln_f bias
    assert all(torch.count_nonzero(m.bias) == 0 for m in biased.modules() if getattr(m, "bias", None) is not None)
    ids = torch.randint(0, 512, (2, 16))
    biased(ids, labels=ids).loss.backward()
    assert biased.model.blocks[0].attn.qkv_proj.bias.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bias=False"):
        llama_config(config_from_preset("tiny", bias=True, norm_type="rmsnorm", mlp_type="swiglu"))


def test_model_params_published_prints_the_table(capsys):
    assert main(["model-params", "--published"]) == 0
    out = capsys.readouterr().out
    assert "269,699,072" in out and "16_BIT" in out
