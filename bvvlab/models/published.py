"""The published model family with bvvlab's parameter count beside the published one (issue 23).

Sizes stated in the papers' later versions and model cards (docs/recipe.md sections 4 and 10).
The block style the author used is not published; two are counted here:

* ``gpt2``: biases in q/k/v, o and both MLP linears, LayerNorm with bias (`BVVConfig.bias=True`);
  lands exactly on 269.70 M (16 layers, 16-bit) and 247.59 M (9 layers, trainable);
* ``nobias``: bvvlab's default (12 d^2 per block and LayerNorm weights only).

The frozen part is counted as published: the glyph matrix V x d, a trainable embedding V x d
(trainable), an n-bit code V x n. (bvvlab stores a code already widened to V x d in its frozen
buffer, so `count_parameters` of such a model reports V x d frozen; the published numbers count
the n-wide code, and so does this table.) Counts are exact integers (models built on the meta
device: no memory, no init); tests/test_published.py holds every one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bvvlab.models.model import BVVConfig, BVVForCausalLM, count_parameters

__all__ = ["Published", "PUBLISHED", "family_counts", "family_table"]


@dataclass(frozen=True)
class Published:
    name: str
    layers: int
    vocab: int
    interface: str  # glyph | trainable | id-bits:16 | random-bits:64 ...
    published_m: float  # millions, as stated
    source: str
    approx: bool = False  # stated as "about"
    width: int = 1024
    heads: int = 32

    @property
    def code_dim(self) -> int:
        """Columns of the frozen input matrix as the papers count it (d for glyph and trainable)."""
        return int(self.interface.split(":")[1]) if ":" in self.interface else self.width


PUBLISHED: tuple[Published, ...] = (
    Published("UNI_GLYPH (16 layers)", 16, 65536, "glyph", 335.0, "arXiv 2507.04886 v4, model card"),
    Published("16_BIT (16 layers)", 16, 65536, "id-bits:16", 269.7, "arXiv 2507.07129 v3 headline model"),
    Published("64_BIT (16 layers)", 16, 65536, "random-bits:64", 272.0, "arXiv 2507.04886 v4", approx=True),
    Published("256_BIT (16 layers)", 16, 65536, "random-bits:256", 285.0, "arXiv 2507.04886 v4", approx=True),
    Published("9 layers, trainable embedding", 9, 65536, "trainable", 247.6, "arXiv 2507.07129 v3"),
    Published("9 layers, 16-bit", 9, 65536, "id-bits:16", 181.6, "arXiv 2507.07129 v3"),
    Published("best_bvv_ru", 16, 131072, "glyph", 500.0, "seed model card (about 0.5B)", approx=True),
)


def _trainable(p: Published, bias: bool) -> int:
    """Trainable parameters of the blocks, final norm and head (+ a trainable embedding)."""
    config = BVVConfig(vocab_size=p.vocab, hidden_size=p.width, num_hidden_layers=p.layers,
                       num_attention_heads=p.heads, bias=bias, frozen_embedding=p.interface != "trainable")
    with torch.device("meta"):
        return count_parameters(BVVForCausalLM(config))["trainable"]


def family_counts() -> list[dict[str, Any]]:
    """One row per published model: both block styles' totals and their difference to the paper."""
    rows = []
    for p in PUBLISHED:
        frozen = 0 if p.interface == "trainable" else p.vocab * p.code_dim
        row: dict[str, Any] = {"name": p.name, "layers": p.layers, "d_model": p.width, "vocab": p.vocab,
                               "interface": p.interface, "frozen": frozen, "published_m": p.published_m,
                               "approx": p.approx, "source": p.source}
        for style, bias in (("gpt2", True), ("nobias", False)):
            total = _trainable(p, bias) + frozen
            row[style] = total
            row[f"{style}_rel"] = total / (p.published_m * 1e6) - 1
        rows.append(row)
    return rows


def family_table() -> str:
    """Markdown table of `family_counts` (what `bvvlab model-params --published` prints)."""
    lines = ["| model | layers | vocab | input | published | bvvlab gpt2 blocks | bvvlab no-bias blocks |",
             "|---|---|---|---|---|---|---|"]
    for r in family_counts():
        pub = f"{'about ' if r['approx'] else ''}{r['published_m']:g} M"
        cells = [f"{r[s]:,} ({r[s] / 1e6:.2f} M, {100 * r[s + '_rel']:+.2f}%)" for s in ("gpt2", "nobias")]
        lines.append(f"| {r['name']} | {r['layers']} | {r['vocab']:,} | {r['interface']} | {pub} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
