"""Speed and memory of bvvlab.models.model against Hugging Face's LlamaForCausalLM (issue 4).

Every figure is a ratio against a peer measured in the same run; timed steps of the two
models are interleaved (A, B, A, B, ...) and the median is taken, so a busy machine slows both.

  (a) train: a training step (forward, backward, AdamW), tokens/s, at a compact (8,192) and the full
      bvv241-2-3 (65,536) vocabulary. Like for like: our
      RMSNorm + SwiGLU config against LlamaForCausalLM carrying the same weights with its
      embedding frozen (the same function, see `to_llama`); also our default LayerNorm + GELU.
  (b) gen:   greedy generation of 256 new tokens, batch 1: ours with the KV cache against
      LlamaForCausalLM.generate (with its cache), and against ours without the cache; at the
      small shape (7M parameters) and a mid shape (34M).
  (c) mem:   peak RSS of training steps, frozen vs unfrozen embedding (the frozen one has no
      embedding gradient and no AdamW state for it); one fresh subprocess per variant.
  (d) ce:    the best_bvv_ru shape, batch 1 x 1024 tokens, one forward + backward: peak RSS
      with the chunked cross-entropy vs the naive loss over full fp32 logits; subprocesses.

Peak memory is the child process's VmHWM (the kernel's high-water mark of resident memory,
nothing sampled), reported with the RSS just before the measured work so that the increase
is visible. CPU figures only here; `--device cuda --dtype bf16` runs the train part at the
best_bvv_ru shape, eager and compiled, bf16 as autocast over fp32 weights (the trainer's path),
and reports tokens/s and MFU (FLOPs = 6 x matmul parameters + attention).

    .venv/bin/python bench/bench_model.py                 # all parts, writes bench/results/model.json
    .venv/bin/python bench/bench_model.py --parts train gen
    .venv/bin/python bench/bench_model.py --device cuda --dtype bf16 --parts train
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results_file import write_results  # bench/, beside this script

from bvvlab.core.runinfo import REPO_ROOT
from bvvlab.models.model import (
    BVVForCausalLM,
    config_from_preset,
    count_parameters,
    to_llama,
)

# (a), (b): the "small" preset's shape with a compact vocabulary (a corpus's tokens only);
# (a), (c): the same blocks over the full bvv241-2-3 vocabulary (65,536), as the paper's models use
TRAIN_SHAPE = dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                   max_position_embeddings=512)
TRAIN_BATCH, TRAIN_SEQ = 8, 256
FULL_VOCAB_SHAPE = {**TRAIN_SHAPE, "vocab_size": 65536}
# (b) also at a mid shape (34M parameters), where decoding is bound by reading the weights as in
# real models, not by per-op overhead as in the 7M-parameter small shape
GEN_MID_SHAPE = dict(vocab_size=8192, hidden_size=512, num_hidden_layers=8, num_attention_heads=16,
                     max_position_embeddings=512)
FULL_VOCAB_BATCH = 4
GEN_PROMPT, GEN_NEW = 16, 256
MEM_SHAPE = dict(vocab_size=65536, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                 max_position_embeddings=256)
MEM_BATCH, MEM_SEQ = 4, 256
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """The kernel's resident high-water mark of this process image (VmHWM). Not ru_maxrss: Linux
    carries that across fork + exec, so a child would report its parent's peak."""
    return _status_mib("VmHWM")


def model_pair(shape: dict, swiglu: bool, seed: int = 0):
    torch.manual_seed(seed)
    opts = dict(norm_type="rmsnorm", mlp_type="swiglu") if swiglu else {}
    model = BVVForCausalLM(config_from_preset("small", **shape, **opts))
    return model


def train_step_fn(model, ids, device, amp: torch.dtype | None = None):
    """One training step; `amp` runs the forward under autocast (the trainer's bf16 path: fp32
    weights and optimizer, bf16 matmuls)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    dev = torch.device(device).type

    def step():
        with torch.autocast(dev, dtype=amp or torch.float32, enabled=amp is not None):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev == "cuda":
            torch.cuda.synchronize()
        return loss.item()

    return step


def interleaved(fns: dict, steps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each fn, `steps` rounds, calls interleaved round-robin so that the
    load of a shared machine falls on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def paired_ratio(times: dict[str, list[float]], fast: str, slow: str) -> float:
    """Median over rounds of slow/fast: each pair ran back to back, so slow drifts cancel."""
    return statistics.median(s / f for f, s in zip(times[fast], times[slow]))


def bench_train(steps: int, shape: dict, batch: int, with_default: bool = True) -> dict:
    ids = torch.randint(0, shape["vocab_size"], (batch, TRAIN_SEQ), generator=torch.Generator().manual_seed(0))
    ours_sw = model_pair(shape, swiglu=True).train()
    llama = to_llama(ours_sw).train()
    llama.model.embed_tokens.weight.requires_grad_(False)  # the same frozen embedding
    fns = {"bvv_rmsnorm_swiglu": train_step_fn(ours_sw, ids, "cpu"), "llama": train_step_fn(llama, ids, "cpu")}
    params = {"bvv_rmsnorm_swiglu": count_parameters(ours_sw)["trainable"],
              "llama": sum(p.numel() for p in llama.parameters() if p.requires_grad)}
    if with_default:
        ours_default = model_pair(shape, swiglu=False).train()
        fns["bvv_default"] = train_step_fn(ours_default, ids, "cpu")
        params["bvv_default"] = count_parameters(ours_default)["trainable"]
    times = interleaved(fns, steps)
    sec = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: batch * TRAIN_SEQ / v for k, v in sec.items()}
    out = {"shape": {**shape, "batch": batch, "seq": TRAIN_SEQ}, "steps": steps,
           "sec_per_step_median": sec, "sec_per_step_all": times, "tokens_per_s": tps, "trainable_params": params,
           "ratio_swiglu_vs_llama": paired_ratio(times, "bvv_rmsnorm_swiglu", "llama"),
           "target": ">= 1.1 (like for like)"}
    if with_default:
        out["ratio_default_vs_llama"] = paired_ratio(times, "bvv_default", "llama")
    return out


def bench_gen(repeats: int, shape: dict = TRAIN_SHAPE) -> dict:
    ours = model_pair(shape, swiglu=True).eval()
    llama = to_llama(ours).eval()
    prompt = torch.randint(0, shape["vocab_size"], (1, GEN_PROMPT), generator=torch.Generator().manual_seed(1))
    kw = dict(max_new_tokens=GEN_NEW, min_new_tokens=GEN_NEW, do_sample=False, eos_token_id=None, pad_token_id=0)
    outs = {}

    def run(name, model, **extra):
        def fn():
            with torch.no_grad():
                outs[name] = model.generate(prompt, **kw, **extra)
        return fn

    fns = {"bvv_cache": run("bvv_cache", ours), "llama_cache": run("llama_cache", llama),
           "bvv_no_cache": run("bvv_no_cache", ours, use_cache=False)}
    times = interleaved(fns, repeats, warmup=0)
    sec = {k: statistics.median(v) for k, v in times.items()}
    same = torch.equal(outs["bvv_cache"], outs["llama_cache"]) and torch.equal(outs["bvv_cache"], outs["bvv_no_cache"])
    tps = {k: GEN_NEW / v for k, v in sec.items()}
    return {"shape": {**shape, "prompt": GEN_PROMPT, "new_tokens": GEN_NEW, "batch": 1}, "repeats": repeats,
            "params": count_parameters(ours),
            "sec_median": sec, "sec_all": times, "new_tokens_per_s": tps, "identical_tokens": same,
            "ratio_cache_vs_llama": paired_ratio(times, "bvv_cache", "llama_cache"),
            "ratio_cache_vs_no_cache": paired_ratio(times, "bvv_cache", "bvv_no_cache"),
            "target": "vs llama >= 1.0, vs no cache >= 5"}


# ------------------------------------------------------------------ subprocess children --

def child_mem(variant: str, steps: int) -> dict:
    torch.manual_seed(0)
    model = BVVForCausalLM(config_from_preset("small", **MEM_SHAPE, frozen_embedding=variant == "frozen")).train()
    ids = torch.randint(0, MEM_SHAPE["vocab_size"], (MEM_BATCH, MEM_SEQ))
    step = train_step_fn(model, ids, "cpu")
    before = rss_mib()
    for _ in range(steps):
        step()
    return {"variant": variant, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(),
            "params": count_parameters(model)}


def child_ce(variant: str) -> dict:
    torch.manual_seed(0)
    model = BVVForCausalLM(config_from_preset("best_bvv_ru")).train()
    ids = torch.randint(0, 131072, (1, 1024))
    before = rss_mib()
    t = time.perf_counter()
    if variant == "chunked":
        loss = model(ids, labels=ids).loss
    else:  # the usual HF loss: full logits, upcast, cross-entropy over all positions
        logits = model(ids).logits.float()
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    return {"variant": variant, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(),
            "sec": time.perf_counter() - t, "loss": loss.item()}


def in_subprocess(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--threads", str(torch.get_num_threads()), "--child", *args],
                         capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_mem(steps: int) -> dict:
    res = {v: in_subprocess(["mem", v, str(steps)]) for v in ("frozen", "unfrozen")}
    for r in res.values():
        r["increase_mib"] = r["peak_rss_mib"] - r["rss_before_mib"]
    V, d = MEM_SHAPE["vocab_size"], MEM_SHAPE["hidden_size"]
    return {"shape": {**MEM_SHAPE, "batch": MEM_BATCH, "seq": MEM_SEQ}, "steps": steps, **res,
            "peak_saving_mib": res["unfrozen"]["peak_rss_mib"] - res["frozen"]["peak_rss_mib"],
            # upper bound: gradient + two AdamW moments of V x d fp32. The peak comes at the start of
            # backward, before the embedding's gradient exists, so about the two moments are saved there.
            "expected_saving_mib": 3 * V * d * 4 / 2**20,
            "ratio_peak_unfrozen_vs_frozen": res["unfrozen"]["peak_rss_mib"] / res["frozen"]["peak_rss_mib"]}


def bench_ce() -> dict:
    res = {v: in_subprocess(["ce", v]) for v in ("chunked", "full")}
    for r in res.values():
        r["increase_mib"] = r["peak_rss_mib"] - r["rss_before_mib"]
    return {"shape": "best_bvv_ru, batch 1 x 1024 tokens, forward + backward (no optimizer)", **res,
            "loss_abs_diff": abs(res["chunked"]["loss"] - res["full"]["loss"]),
            "peak_saving_mib": res["full"]["peak_rss_mib"] - res["chunked"]["peak_rss_mib"],
            "ratio_increase_full_vs_chunked": res["full"]["increase_mib"] / res["chunked"]["increase_mib"],
            "full_logits_tensor_mib": 1024 * 131072 * 4 / 2**20}


# ------------------------------------------------------------------ GPU ------------------

def bench_gpu(dtype: torch.dtype, steps: int, batch: int, preset: str = "best_bvv_ru", device: str = "cuda") -> dict:
    """best_bvv_ru training step on one GPU, eager and torch.compile'd (interleaved): tokens/s and
    MFU. bf16 is autocast over fp32 weights, as the trainer runs it. Never run in this project's
    CPU-only CI; figures only from a real run (issue 4: never estimate a GPU figure)."""
    torch.manual_seed(0)
    cfg = config_from_preset(preset)
    model = BVVForCausalLM(cfg).to(device).train()
    seq = cfg.max_position_embeddings
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    amp = dtype if dtype != torch.float32 else None
    fns = {"eager": train_step_fn(model, ids, device, amp), "compiled": train_step_fn(torch.compile(model), ids, device, amp)}
    times = interleaved(fns, steps)
    counts = count_parameters(model)
    matmul_params = counts["trainable"]  # blocks + head; the frozen lookup does no matmul
    flops_per_token = 6 * matmul_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    name = torch.cuda.get_device_name() if device == "cuda" else device
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    out = {"device": name, "dtype": str(dtype), "preset": preset, "batch": batch, "seq": seq,
           "flops_per_token": flops_per_token, "peak_tflops_assumed": peak,
           "ratio_compiled_vs_eager": paired_ratio(times, "compiled", "eager"),
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
    for k, v in times.items():
        sec = statistics.median(v)
        tps = batch * seq / sec
        out[k] = {"sec_per_step": sec, "tokens_per_s": tps,
                  "mfu": None if peak is None else tps * flops_per_token / (peak * 1e12)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["train", "gen", "mem", "ce"],
                   choices=["train", "gen", "mem", "ce"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=8, help="timed training steps per model")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine a second thread mostly waits "
                        "at OpenMP barriers; measured 3.7 vs 14 ms per decode step)")
    p.add_argument("--batch", type=int, default=8, help="GPU batch (sequences of 1024)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "model.json")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        kind, *rest = args.child
        res = child_mem(rest[0], int(rest[1])) if kind == "mem" else child_ce(rest[0])
        print(json.dumps(res))
        return 0

    results: dict = {}
    if args.device == "cuda":
        results["gpu_train"] = r = bench_gpu(torch.bfloat16 if args.dtype == "bf16" else torch.float32,
                                             args.steps, args.batch)
        for k in ("eager", "compiled"):
            print(f"[gpu] {r['device']} {r['dtype']} {k}: {r[k]['tokens_per_s']:.0f} tok/s, MFU {r[k]['mfu']}")
        print(f"[gpu] compiled vs eager {r['ratio_compiled_vs_eager']:.2f}x")
    else:
        if args.dtype != "fp32":
            raise SystemExit("CPU figures are fp32 only (pass --device cuda for bf16)")
        if "train" in args.parts:
            results["train"] = r = bench_train(args.steps, TRAIN_SHAPE, TRAIN_BATCH)
            t = r["tokens_per_s"]
            print(f"[train] vocab 8,192: tok/s  bvv rmsnorm+swiglu {t['bvv_rmsnorm_swiglu']:.0f}  llama {t['llama']:.0f}"
                  f"  bvv default {t['bvv_default']:.0f}  ratio like-for-like {r['ratio_swiglu_vs_llama']:.2f}x  "
                  f"(default vs llama {r['ratio_default_vs_llama']:.2f}x)")
            results["train_full_vocab"] = r = bench_train(max(3, args.steps // 2), FULL_VOCAB_SHAPE, FULL_VOCAB_BATCH,
                                                          with_default=False)
            t = r["tokens_per_s"]
            print(f"[train] vocab 65,536: tok/s  bvv rmsnorm+swiglu {t['bvv_rmsnorm_swiglu']:.0f}  llama "
                  f"{t['llama']:.0f}  ratio like-for-like {r['ratio_swiglu_vs_llama']:.2f}x")
        if "gen" in args.parts:
            for key, shape, reps in (("gen", TRAIN_SHAPE, 3), ("gen_mid", GEN_MID_SHAPE, 2)):
                results[key] = r = bench_gen(reps, shape)
                t = r["new_tokens_per_s"]
                print(f"[{key}] {r['params']['total'] / 1e6:.0f}M params, new tok/s  bvv cache {t['bvv_cache']:.0f}  "
                      f"llama cache {t['llama_cache']:.0f}  bvv no cache {t['bvv_no_cache']:.1f}  ratio vs llama "
                      f"{r['ratio_cache_vs_llama']:.2f}x  vs no cache {r['ratio_cache_vs_no_cache']:.1f}x  "
                      f"identical tokens {r['identical_tokens']}")
        if "mem" in args.parts:
            results["mem"] = r = bench_mem(3)
            print(f"[mem] training peak RSS  frozen {r['frozen']['peak_rss_mib']:.0f} MiB  unfrozen "
                  f"{r['unfrozen']['peak_rss_mib']:.0f} MiB  saving {r['peak_saving_mib']:.0f} MiB "
                  f"(upper bound {r['expected_saving_mib']:.0f}: grad + AdamW moments)")
        if "ce" in args.parts:
            results["ce"] = r = bench_ce()
            print(f"[ce] best_bvv_ru 1x1024 fwd+bwd peak RSS  chunked {r['chunked']['peak_rss_mib']:.0f} MiB "
                  f"(+{r['chunked']['increase_mib']:.0f})  full logits {r['full']['peak_rss_mib']:.0f} MiB "
                  f"(+{r['full']['increase_mib']:.0f})  saving {r['peak_saving_mib']:.0f} MiB  "
                  f"time {r['chunked']['sec']:.1f}s vs {r['full']['sec']:.1f}s")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
