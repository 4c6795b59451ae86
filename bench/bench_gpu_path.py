"""The GPU training path's figures on CPU (issue 8): bf16 autocast vs fp32, compiled vs eager,
and the training step's FLOP/s as a share of this machine's large-GEMM FLOP/s.

Every figure is a ratio against a peer measured in the same run, timed calls interleaved
(A, B, A, B, ...) and the median taken, so the load of a shared machine falls on both.

  (a) bf16: a training step (forward, backward, AdamW) at the `small` preset, fp32 vs bf16
      autocast from the same initial weights over the same batches: tokens/s and the two loss
      curves. Whether bf16 can win depends on the CPU: with AVX-512 BF16 or AMX (see
      /proc/cpuinfo) oneDNN has native bf16 dot products; on an AVX2-only CPU every bf16 matmul
      is converted element by element and runs ~30x slower than fp32 (measured below), so
      `dtype=auto` must stay fp32 there. On such a CPU the batch is cut so the run stays short.
  (b) compile: torch.compile (Inductor) vs eager, fp32, `small`, tokens/s (target >= 1.1x).
  (c) mfu: model FLOPs per step (6 x matmul parameters x tokens + causal attention) / step time,
      over the FLOP/s of a 2048 x 2048 fp32 matmul timed in the same rounds (1 thread).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_gpu_path.py             # all, writes bench/results/gpu_path.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_gpu_path.py --parts compile mfu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from results_file import write_results  # bench/, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import interleaved, paired_ratio  # noqa: E402

from bvvlab.core.runinfo import REPO_ROOT  # noqa: E402
from bvvlab.models.model import BVVForCausalLM, config_from_preset, count_parameters  # noqa: E402

SEQ = 256  # the small preset's context


def cpu_flags() -> dict:
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        words = set()
    return {f: f in words for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}


def gemm_gflops(n: int, dtype: torch.dtype, reps: int = 2) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def learnable_batches(n: int, batch: int, seq: int, vocab: int) -> list[torch.Tensor]:
    """Rows that count upward with a per-row stride ((start + i * stride) mod a small range), so a
    model can learn them and the loss curves have something to follow."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        start = torch.randint(0, 500, (batch, 1), generator=g)
        stride = torch.randint(1, 4, (batch, 1), generator=g)
        out.append((start + stride * torch.arange(seq)) % min(vocab, 500))
    return out


def step_fn(model, batches, amp=None, lr=1e-3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    it = iter(range(10 ** 9))
    losses: list[float] = []

    def step():
        ids = batches[next(it) % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())

    step.losses = losses
    return step


def fresh(seed: int = 0) -> BVVForCausalLM:
    torch.manual_seed(seed)
    return BVVForCausalLM(config_from_preset("small")).train()


def flops_per_token(model: BVVForCausalLM, seq: int) -> float:
    cfg = model.config
    # 6 N per token for the matmul parameters (the frozen lookup does none) + causal attention
    # scores and values: 2 matmuls x 2 (fwd) x 3 (fwd + bwd) x d x seq / 2 (causal half) per layer
    return 6 * count_parameters(model)["trainable"] + 6 * cfg.num_hidden_layers * cfg.hidden_size * seq


def bench_bf16(steps: int, batch: int) -> dict:
    batches = learnable_batches(steps + 2, batch, SEQ, 8192)
    m32, m16 = fresh(), fresh()
    fns = {"fp32": step_fn(m32, batches), "bf16": step_fn(m16, batches, amp=torch.bfloat16)}
    times = interleaved(fns, steps, warmup=0)
    l32, l16 = fns["fp32"].losses, fns["bf16"].losses
    diff = max(abs(a - b) for a, b in zip(l32, l16))
    sec = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "seq": SEQ, "steps": steps, "sec_per_step_median": sec,
            "tokens_per_s": {k: batch * SEQ / v for k, v in sec.items()},
            "ratio_bf16_vs_fp32": paired_ratio(times, "bf16", "fp32"),
            "loss_fp32": l32, "loss_bf16": l16, "loss_max_abs_diff": diff,
            "loss_tolerance": 0.05, "loss_within_tolerance": diff < 0.05,
            "gemm_512_gflops": {"fp32": gemm_gflops(512, torch.float32), "bf16": gemm_gflops(512, torch.bfloat16, 1)}}


def bench_compile(steps: int, batch: int) -> dict:
    batches = learnable_batches(4, batch, SEQ, 8192)
    eager, base = fresh(), fresh()
    compiled = torch.compile(base)
    t = time.perf_counter()
    warm = step_fn(compiled, batches)
    warm()  # compile forward + backward
    compile_s = time.perf_counter() - t
    fns = {"eager": step_fn(eager, batches), "compiled": warm}
    times = interleaved(fns, steps, warmup=1)
    sec = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": batch, "seq": SEQ, "steps": steps, "compile_s": compile_s, "sec_per_step_median": sec,
            "tokens_per_s": {k: batch * SEQ / v for k, v in sec.items()},
            "ratio_compiled_vs_eager": paired_ratio(times, "compiled", "eager"), "target": ">= 1.1"}


def bench_mfu(steps: int, batch: int) -> dict:
    batches = learnable_batches(4, batch, SEQ, 8192)
    model = fresh()
    gemm_rates: list[float] = []

    def gemm():
        gemm_rates.append(gemm_gflops(2048, torch.float32, 1))

    fns = {"step": step_fn(model, batches), "gemm": gemm}
    times = interleaved(fns, steps, warmup=1)
    fpt = flops_per_token(model, SEQ)
    step_rates = [batch * SEQ * fpt / s / 1e9 for s in times["step"]]
    shares = [s / g for s, g in zip(step_rates, gemm_rates[-steps:])]
    return {"batch": batch, "seq": SEQ, "steps": steps, "flops_per_token": fpt,
            "step_gflops_median": statistics.median(step_rates), "gemm_2048_fp32_gflops_median": statistics.median(gemm_rates),
            "share_of_gemm_median": statistics.median(shares), "target": "about 0.8 (issue 8: keep it there)"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["bf16", "compile", "mfu"], choices=["bf16", "compile", "mfu"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8, help="timed steps per variant (compile, mfu)")
    p.add_argument("--bf16-steps", type=int, default=20, help="steps of the two loss curves")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--bf16-batch", type=int, default=None,
                   help="batch of the bf16 part (default: --batch with native bf16, else 1: see the docstring)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "gpu_path.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = cpu_flags()
    native = flags["avx512_bf16"] or flags["amx_bf16"]
    print(f"[cpu] flags {flags}: native bf16 {'yes' if native else 'NO'}")
    results: dict = {"cpu_flags": flags, "native_bf16": native}
    if "bf16" in args.parts:
        b = args.bf16_batch or (args.batch if native else 1)
        results["bf16"] = r = bench_bf16(args.bf16_steps, b)
        g = r["gemm_512_gflops"]
        print(f"[bf16] small, batch {b} x {SEQ}: tok/s fp32 {r['tokens_per_s']['fp32']:.0f}  bf16 "
              f"{r['tokens_per_s']['bf16']:.0f}  ratio bf16/fp32 {r['ratio_bf16_vs_fp32']:.2f}x  loss curves over "
              f"{r['steps']} steps: max |diff| {r['loss_max_abs_diff']:.4f} (tolerance {r['loss_tolerance']}) "
              f"{r['loss_fp32'][0]:.3f} -> {r['loss_fp32'][-1]:.3f}")
        print(f"[bf16] 512x512 matmul GFLOP/s fp32 {g['fp32']:.1f}  bf16 {g['bf16']:.2f}"
              + ("" if native else ": this CPU has no AVX-512 BF16/AMX, so oneDNN converts bf16 element by element "
                                   "and bf16 loses; dtype=auto must pick fp32 here"))
    if "compile" in args.parts:
        results["compile"] = r = bench_compile(args.steps, args.batch)
        print(f"[compile] small fp32, batch {args.batch} x {SEQ}: tok/s eager {r['tokens_per_s']['eager']:.0f}  "
              f"compiled {r['tokens_per_s']['compiled']:.0f}  ratio {r['ratio_compiled_vs_eager']:.2f}x (target 1.1x)  "
              f"compile time {r['compile_s']:.0f}s")
    if "mfu" in args.parts:
        results["mfu"] = r = bench_mfu(args.steps, args.batch)
        print(f"[mfu] small fp32 eager step {r['step_gflops_median']:.1f} GFLOP/s vs 2048^2 fp32 GEMM "
              f"{r['gemm_2048_fp32_gflops_median']:.1f} GFLOP/s: share {r['share_of_gemm_median']:.0%}")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
