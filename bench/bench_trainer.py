"""Trainer overhead and CPU bf16 autocast (issue 5, "Performance").

Every figure is a ratio against a peer measured in the same run, with the runs interleaved
(bare, trainer fp32, trainer bf16, bare, ...) so that a busy machine slows all of them alike;
the best (shortest) time of each kind is taken.

  (a) overhead: `train()` (token shards + seeded sampler, grad clipping, LR schedule, metrics
      records, tqdm off, checkpoints every `save_every` steps) against a bare
      forward/backward/AdamW-step loop over the *same* model init and the *same* batches, held
      in memory. Trainer time = its loop time minus validation (`meta.json` final.loop_s -
      final.eval_s): evaluation is a measurement the bare loop does not make. Target <= 5%.
      The first-step losses of both must be equal (same model, same batch), or the bench fails.
  (b) bf16: `dtype=bf16` (CPU autocast) against fp32: training tokens/s and the difference of
      the two loss curves (same seed and batches) and of the final validation bits/char.
  (c) GPU: with `--device cuda` the same trainer runs in bf16 (+ `--compile`) and MFU is read
      from its metrics; nothing is recorded for a GPU that was not measured.

    .venv/bin/python bench/bench_trainer.py              # writes bench/results/trainer.json
    .venv/bin/python bench/bench_trainer.py --reps 3 --steps 100
    .venv/bin/python bench/bench_trainer.py --device cuda --preset best_bvv_ru --vocab bvv241-max \
        --seq-len 1024 --batch-size 16 --steps 30 --compile
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bvvlab.core.runinfo import device_info, git_commit, write_json_atomic
from bvvlab.train import loop as TR
from bvvlab.train import shards as D

RESULTS = Path(__file__).resolve().parent / "results" / "trainer.json"


def bare_loop(cfg: TR.TrainConfig, embedded, shard: D.TokenShard) -> tuple[dict[str, float], list[float]]:
    """forward/backward/clip/AdamW step/LR step over pre-drawn batches: the trainer's arithmetic and
    nothing else, so both runs follow the same weights. ({"wall": s, "cpu": s}, losses)"""
    TR.seed_everything(cfg.seed)
    model = TR.build_model(cfg, embedded)
    model.train()
    sampler = D.BatchSampler(shard, cfg.seq_len, cfg.batch_size, seed=cfg.seed)
    batches = [sampler.next_batch() for _ in range(cfg.steps)]
    opt = TR.make_optimizer(model, cfg, torch.device("cpu"))  # the trainer's AdamW (fused where available)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: TR.lr_at(s, cfg) / cfg.lr)
    losses = []
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in batches:
        loss = TR.lm_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        losses.append(loss.item())
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}, losses


def trainer_run(cfg: TR.TrainConfig, out: Path) -> dict:
    TR.train(TR.make_config(cfg, out=str(out), overwrite=True))
    final = json.loads((out / "meta.json").read_text())["final"]
    recs = TR.read_metrics(out)
    return {"wall": final["loop_s"] - final["eval_s"], "cpu": final["loop_cpu_s"] - final["eval_cpu_s"],
            "save_s": final["save_s"],
            "losses": [r["loss"] for r in recs if r["kind"] == "train"],
            "val_bpc": final.get("val_bpc"), "mfu": [r["mfu"] for r in recs if "mfu" in r]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", default="compact", help="compact (CPU) or bvv241-max for the best_bvv_ru shape")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--save-every", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device.startswith("cuda")

    work = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    base = TR.make_config(preset=args.preset, steps=args.steps, seq_len=args.seq_len, batch_size=args.batch_size,
                          train_chars=400_000, val_chars=20_000, log_every=1, eval_every=0, eval_batches=2,
                          save_every=args.save_every, keep_last=2, warmup=max(1, args.steps // 10),
                          device=args.device, compile=args.compile, vocab=args.vocab, progress=False)
    # one vocabulary for every run (a saved dir: each run loads it instead of rebuilding it)
    texts = (list(D.take_chars(D.iter_texts(base.corpus, "train", base.seed), base.train_chars))
             if args.vocab == "compact" else None)
    embedded = TR.prepare_embedded(base, texts)
    vocab_dir = embedded.save(work / "vocab")
    base = TR.make_config(base, vocab=str(vocab_dir))
    shard = D.build_shard(base.corpus, embedded.tokenizer, "train", max_chars=base.train_chars, seed=base.seed,
                          progress=False)

    kinds = {"fp32": TR.make_config(base, dtype="fp32"), "bf16": TR.make_config(base, dtype="bf16")}
    if gpu:
        kinds = {"bf16": kinds["bf16"]}
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in ("bare", *kinds)}
    runs: dict[str, dict] = {}
    bare_losses: list[float] = []
    for rep in range(args.reps):
        if not gpu:
            t, bare_losses = bare_loop(kinds["fp32"], embedded, shard)
            for clock in ("wall", "cpu"):
                times["bare"][clock].append(t[clock])
        for name, cfg in kinds.items():
            runs[name] = trainer_run(cfg, work / f"{name}-{rep}")
            for clock in ("wall", "cpu"):
                times[name][clock].append(runs[name][clock])
        print(f"rep {rep}: " + ", ".join(f"{k} {v['wall'][-1]:.2f}s wall / {v['cpu'][-1]:.2f}s cpu"
                                         for k, v in times.items() if v["wall"]), flush=True)

    tokens = args.steps * args.batch_size * args.seq_len
    best = {k: {clock: min(v[clock]) for clock in v} for k, v in times.items() if v["wall"]}
    result: dict = {"git_commit": git_commit(), "device": device_info(), "torch_threads": torch.get_num_threads(),
                    "setup": {"preset": args.preset, "steps": args.steps, "seq_len": args.seq_len,
                              "batch_size": args.batch_size, "save_every": args.save_every, "reps": args.reps,
                              "vocab_size": len(embedded.tokenizer), "tokens_per_run": tokens},
                    "times_s": times}
    if not gpu:
        fp32, bf16 = runs["fp32"], runs["bf16"]
        if bare_losses != fp32["losses"]:
            raise SystemExit(f"bare and trainer loss curves differ (first {bare_losses[0]} vs {fp32['losses'][0]}): "
                             "not the same model and batches")
        overhead = {clock: best["fp32"][clock] / best["bare"][clock] - 1 for clock in ("wall", "cpu")}
        speed = {clock: best["fp32"][clock] / best["bf16"][clock] for clock in ("wall", "cpu")}
        diffs = [abs(a - b) for a, b in zip(fp32["losses"], bf16["losses"])]
        result["overhead"] = {"ratio_cpu": overhead["cpu"], "ratio_wall": overhead["wall"], "target": 0.05,
                              "bare_s": best["bare"], "trainer_s": best["fp32"], "trainer_save_s": fp32["save_s"],
                              "same_loss_curve": True}
        result["cpu_bf16"] = {"speedup_cpu": speed["cpu"], "speedup_wall": speed["wall"],
                              "fp32_tok_per_s_wall": tokens / best["fp32"]["wall"],
                              "bf16_tok_per_s_wall": tokens / best["bf16"]["wall"],
                              "loss_max_abs_diff": max(diffs), "loss_final_fp32": fp32["losses"][-1],
                              "loss_final_bf16": bf16["losses"][-1],
                              "val_bpc_fp32": fp32["val_bpc"], "val_bpc_bf16": bf16["val_bpc"]}
        print(f"trainer overhead vs bare loop (same losses, step for step): {overhead['cpu'] * 100:+.1f}% CPU time, "
              f"{overhead['wall'] * 100:+.1f}% wall (trainer {best['fp32']['wall']:.2f}s incl. "
              f"{fp32['save_s']:.2f}s of checkpoints, bare {best['bare']['wall']:.2f}s; target <= 5%)")
        print(f"CPU bf16 autocast vs fp32: {speed['cpu']:.2f}x tokens per CPU second, {speed['wall']:.2f}x wall "
              f"({tokens / best['bf16']['wall']:.0f} vs {tokens / best['fp32']['wall']:.0f} tok/s); loss curves "
              f"differ by at most {max(diffs):.4f} nats; final val bits/char {bf16['val_bpc']:.4f} (bf16) vs "
              f"{fp32['val_bpc']:.4f} (fp32)")
        result["gpu"] = None  # no GPU here: no GPU figure is recorded
    else:
        r = runs["bf16"]
        result["gpu"] = {"device": torch.cuda.get_device_name(0), "compile": args.compile,
                         "tok_per_s": tokens / best["bf16"]["wall"],
                         "mfu_median": sorted(r["mfu"])[len(r["mfu"]) // 2] if r["mfu"] else None}
        print(f"GPU bf16: {result['gpu']}")
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
