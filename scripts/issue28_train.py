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
        print(untrained_twin(Path(args.out) / f"frozen_s{args.seed}", out, args.seed,
                             {"purpose": "untrained twin (issue 28)", "seed": args.seed}))
        return 0
    train_small(out, frozen=args.part != "unfrozen", corpus=args.corpus, vocab=args.vocab,
                train_chars=args.train_chars, steps=args.steps, lr=args.lr, seed=args.seed,
                save_every=args.save_every, log_every=max(1, args.steps // 20))
    return 0


def untrained_twin(src: Path, dst: Path, seed: int, meta: dict) -> Path:
    """The trained run's architecture and frozen matrix with fresh (seeded) blocks: the baseline
    every trained layer is compared against."""
    import torch

    from bvvlab.models.checkpoints import load_checkpoint, save_checkpoint
    from bvvlab.models.model import BVVForCausalLM

    model, tok = load_checkpoint(src)
    torch.manual_seed(seed)
    fresh = BVVForCausalLM.from_glyphs(model.config, model.model.embed_tokens.weight.detach().clone()).eval()
    return save_checkpoint(fresh, tok, dst, meta, overwrite=True)


def train_small(out: Path, *, frozen: bool, corpus: str, vocab: str, train_chars: int, steps: int, lr: float,
                seed: int, save_every: int, log_every: int) -> None:
    """One `small` run of the issue-28 budget (batch 16 x 128, cosine to lr/10, every save kept)."""
    from bvvlab.train.loop import make_config, train

    cfg = make_config(preset="small", frozen=frozen, steps=steps, lr=lr, min_lr=lr / 10,
                      warmup=max(1, steps // 20), seq_len=128, batch_size=16, corpus=corpus,
                      vocab=vocab, train_chars=train_chars, val_chars=100_000, seed=seed, out=str(out),
                      resume=True, progress=False, log_every=log_every, eval_every=save_every,
                      save_every=save_every, keep_last=1000)
    t0, c0 = time.perf_counter(), time.process_time()
    ck = train(cfg)
    print(f"{out}: {ck} in {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU")


if __name__ == "__main__":
    raise SystemExit(main())
