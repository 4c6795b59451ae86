"""Training speed of a frozen id-bits interface against the glyph matrix (issue 23).

The id-bits code is widened to the model width ONCE, into the frozen buffer, so its forward is
the same `F.embedding` gather as the glyph matrix's and should train at the same tokens/s. The
alternative the issue names, a (V, n) buffer widened in every forward (`repeat_interleave` of
the gathered rows: a (B, T, d) copy per step), is measured beside them. One process, the three
variants' steps interleaved (A, B, C, A, B, C, ...), medians: a busy machine slows all alike.
Ratios are against the glyph model of the same run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_interfaces.py   # writes bench/results/interfaces.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results_file import write_results  # bench/, beside this script

from bvvlab.glyph.interfaces import code_matrix, interface_matrix, InterfaceSpec
from bvvlab.models.model import BVVForCausalLM, config_from_preset

SHAPE = dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
             max_position_embeddings=256)  # the "small" preset with a compact vocabulary


class WidenPerStep(torch.nn.Module):
    """A (V, n) frozen code widened in every forward (the variant bvvlab does not use)."""

    def __init__(self, code: torch.Tensor, width: int, scale: float):
        super().__init__()
        self.register_buffer("code", code)
        self.r, self.scale = width // code.shape[1], scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.code).repeat_interleave(self.r, dim=-1) * self.scale


def models(seed: int = 0) -> dict[str, BVVForCausalLM]:
    cfg = config_from_preset("small", **SHAPE)
    V, d = cfg.vocab_size, cfg.hidden_size
    glyph = F.normalize(torch.randn(V, d, generator=torch.Generator().manual_seed(seed)), dim=1)
    bits, meta = interface_matrix("id-bits", V, d)
    out = {}
    for name, matrix in (("glyph", glyph), ("id_bits", bits), ("id_bits_widen_per_step", bits)):
        torch.manual_seed(seed)
        out[name] = BVVForCausalLM.from_glyphs(cfg, matrix).train()
    spec = InterfaceSpec(**meta["interface"])
    out["id_bits_widen_per_step"].model.embed_tokens = WidenPerStep(code_matrix(spec, V), d, d ** -0.5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    ms = models()
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for k, m in ms.items()}
    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {k: [] for k in ms}
    for step in range(args.steps + 2):
        ids = torch.randint(0, SHAPE["vocab_size"], (args.batch, args.seq), generator=gen)
        for k, m in ms.items():
            t = time.perf_counter()
            m(ids, labels=ids).loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            if step >= 2:  # two warm-up steps
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = args.batch * args.seq
    res = {"shape": {**SHAPE, "batch": args.batch, "seq": args.seq}, "steps": args.steps,
           "torch_threads": torch.get_num_threads(), "sec_per_step_median": med, "sec_per_step_all": times,
           "tok_per_s": {k: tokens / v for k, v in med.items()},
           "ratio_tok_per_s_vs_glyph": {k: med["glyph"] / v for k, v in med.items()}}
    for k, v in med.items():
        print(f"{k:26s} {tokens / v:9.0f} tok/s  x{med['glyph'] / v:.3f} of glyph")
    write_results(Path(__file__).resolve().parent / "results" / "interfaces.json", {"train": res})


if __name__ == "__main__":
    main()
