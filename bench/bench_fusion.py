"""Speed of a fused model (issue 13) against one of its experts, measured in the same run.

Two experts of one shape on one frozen glyph matrix (random weights: speed does not depend on
them), fused by every method of `bvvlab.models.fused_model`. Timed calls are interleaved round-robin
(expert a, expert b, fused by each method, a, b, ...) and the median over rounds is taken, so a
busy machine slows every model alike; ratios are paired per round (each fused call against the
expert call of the same round).

  (a) score: next-token scoring of (batch x seq) windows with labels, the path of
      `bvvlab.train.validation.evaluate_bpc` (summed loss, `num_items_in_batch=1`): tokens/s.
  (b) gen:   greedy generation with the KV cache, batch 1, `--new` new tokens after a 16-token
      prompt (`min_new_tokens` = max, so every call decodes as many): new tokens/s. The fused
      model's tokens are checked against its uncached generation once.

`ratio_vs_expert` is fused tokens/s over expert a's (1.0: as fast as one expert); a fused
model runs both experts, so `ratio_vs_both_experts` (fused time over the time of a and b run one
after the other) says what the combining itself costs (1.0: nothing beyond the two experts).

    .venv/bin/python bench/bench_fusion.py                 # writes bench/results/fusion.json
    .venv/bin/python bench/bench_fusion.py --preset tiny --repeats 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_model import interleaved, paired_ratio  # bench/, beside this script
from results_file import write_results

from bvvlab.models.fused_model import METHODS, FusedForCausalLM
from bvvlab.models.model import BVVForCausalLM, config_from_preset, count_parameters

OUT = Path(__file__).resolve().parent / "results" / "fusion.json"
PROMPT = 16


def experts(preset: str, vocab: int, seed: int = 0) -> tuple[BVVForCausalLM, BVVForCausalLM]:
    """Two experts of the preset's shape (b with other weights) over one glyph matrix."""
    cfg = config_from_preset(preset, vocab_size=vocab)
    g = F.normalize(torch.randn(vocab, cfg.hidden_size, generator=torch.Generator().manual_seed(seed)), dim=-1)
    out = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        out.append(BVVForCausalLM.from_glyphs(cfg, g).eval())
    return out[0], out[1]


def summary(times: dict[str, list[float]], tokens: int) -> dict:
    """tokens/s (median) per model and, per fused method, the paired ratios against the experts."""
    sec = {k: statistics.median(v) for k, v in times.items()}
    out = {"sec_median": sec, "sec_all": times, "tokens_per_s": {k: tokens / v for k, v in sec.items()},
           "ratio_vs_expert": {}, "ratio_vs_both_experts": {}}
    for k in times:
        if k.startswith("fused:"):
            out["ratio_vs_expert"][k] = paired_ratio(times, k, "expert_a")  # expert time / fused time
            out["ratio_vs_both_experts"][k] = statistics.median(
                f / (a + b) for a, b, f in zip(times["expert_a"], times["expert_b"], times[k]))
    return out


def bench_score(a, b, fused: dict, batch: int, seq: int, repeats: int) -> dict:
    ids = torch.randint(0, a.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(2))

    def run(model):
        def fn():
            with torch.no_grad():
                model(input_ids=ids, labels=ids, num_items_in_batch=1)
        return fn

    fns = {"expert_a": run(a), "expert_b": run(b), **{f"fused:{m}": run(f) for m, f in fused.items()}}
    return {"batch": batch, "seq": seq, "repeats": repeats, **summary(interleaved(fns, repeats), batch * seq)}


def bench_gen(a, b, fused: dict, new: int, repeats: int) -> dict:
    prompt = torch.randint(0, a.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(3))
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    outs = {}

    def run(name, model, **extra):
        def fn():
            with torch.no_grad():
                outs[name] = model.generate(prompt, **kw, **extra)
        return fn

    fns = {"expert_a": run("expert_a", a), "expert_b": run("expert_b", b),
           **{f"fused:{m}": run(f"fused:{m}", f) for m, f in fused.items()}}
    res = summary(interleaved(fns, repeats, warmup=0), new)
    check = next((m for m in ("bayes_decay", "bayes") if m in fused), next(iter(fused)))  # a stateful one
    run("uncached", fused[check], use_cache=False)()
    return {"prompt": PROMPT, "new_tokens": new, "batch": 1, "repeats": repeats, **res,
            "cached_equals_uncached": {check: torch.equal(outs[f"fused:{check}"], outs["uncached"])}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small", help="shape of both experts (default small: 4 x 256, 8 heads)")
    p.add_argument("--vocab", type=int, default=8192, help="rows of the shared matrix (a compact vocabulary)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--parts", nargs="+", default=["score", "gen"], choices=["score", "gen"])
    p.add_argument("--batch", type=int, default=8, help="scoring windows per forward")
    p.add_argument("--seq", type=int, default=256, help="tokens per scoring window")
    p.add_argument("--new", type=int, default=128, help="new tokens per generation")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median taken)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the shared 2-core machine)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    a, b = experts(args.preset, args.vocab)
    fused = {m: FusedForCausalLM.from_experts([a, b], method=m, names=["a", "b"]) for m in args.methods}
    results: dict = {"fusion_setup": {"preset": args.preset, "vocab": args.vocab, "threads": args.threads,
                                      "expert_params": count_parameters(a), "methods": args.methods,
                                      "load_average_before": list(os.getloadavg())}}
    if "score" in args.parts:
        results["fusion_score"] = r = bench_score(a, b, fused, args.batch, args.seq, args.repeats)
        t = r["tokens_per_s"]
        print(f"[score] {args.preset}, {args.batch}x{args.seq} tokens: expert {t['expert_a']:.0f} tok/s; " + "  ".join(
            f"{m} {t[f'fused:{m}']:.0f} ({r['ratio_vs_expert'][f'fused:{m}']:.2f}x expert, "
            f"{r['ratio_vs_both_experts'][f'fused:{m}']:.2f}x a+b time)" for m in args.methods))
    if "gen" in args.parts:
        results["fusion_gen"] = r = bench_gen(a, b, fused, args.new, args.repeats)
        t = r["tokens_per_s"]
        print(f"[gen] {args.preset}, {args.new} new tokens: expert {t['expert_a']:.1f} tok/s; " + "  ".join(
            f"{m} {t[f'fused:{m}']:.1f} ({r['ratio_vs_expert'][f'fused:{m}']:.2f}x expert, "
            f"{r['ratio_vs_both_experts'][f'fused:{m}']:.2f}x a+b time)" for m in args.methods)
            + f"  cached == uncached: {r['cached_equals_uncached']}")
    results["fusion_setup"]["load_average_after"] = list(os.getloadavg())
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
