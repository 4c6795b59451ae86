"""Issue 28 experiments, training part: the `small` twins (frozen / unfrozen) on en-ru, one seed
per call, with checkpoints kept every `--save-every` steps (emergence over training), and the
untrained twin (the frozen twin's tokenizer and glyph matrix, fresh blocks).

    nice -n 10 python scripts/issue28_train.py --out runs/i28 --part frozen --seed 0 --steps 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CORPUS = "libreoffice-en-ru?holdout=suite:0.5,concepts?holdout=suite:0.4,instructions?holdout=suite:0.1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", required=True, choices=("frozen", "unfrozen", "untrained"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--save-every", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--vocab", default="compact")
    ap.add_argument("--train-chars", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out) / f"{args.part}_s{args.seed}"
    if args.part == "untrained":
        from bvvlab.models.checkpoints import load_checkpoint, save_checkpoint
        from bvvlab.models.model import BVVForCausalLM

        model, tok = load_checkpoint(Path(args.out) / f"frozen_s{args.seed}")
        torch.manual_seed(args.seed)
        fresh = BVVForCausalLM.from_glyphs(model.config, model.model.embed_tokens.weight.detach().clone()).eval()
        print(save_checkpoint(fresh, tok, out, {"purpose": "untrained twin (issue 28)", "seed": args.seed},
                              overwrite=True))
        return 0
    from bvvlab.train.loop import make_config, train

    cfg = make_config(preset="small", frozen=args.part != "unfrozen", steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
                      warmup=max(1, args.steps // 20), seq_len=128, batch_size=16, corpus=args.corpus,
                      vocab=args.vocab, train_chars=args.train_chars, val_chars=100_000, seed=args.seed, out=str(out),
                      resume=True, progress=False, log_every=max(1, args.steps // 20), eval_every=args.save_every,
                      save_every=args.save_every, keep_last=1000)
    t0, c0 = time.perf_counter(), time.process_time()
    ck = train(cfg)
    print(f"{out}: {ck} in {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
