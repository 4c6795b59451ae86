"""The probing experiment of issue 11: where does en<->ru alignment appear, layer by layer, in a
frozen-embedding model, its trainable-embedding twin, and the same architecture untrained?

    python scripts/probe_twins.py --out runs/probe_twins --part frozen   --steps 1500 --threads 1 &
    python scripts/probe_twins.py --out runs/probe_twins --part unfrozen --steps 1500 --threads 1 &
    wait
    python scripts/probe_twins.py --out runs/probe_twins --part untrained
    python scripts/probe_twins.py --out runs/probe_twins --part probe

Each part is resumable (a trained twin is resumed, i.e. reused). The twins train on the embedded
corpora with word-translation lines in the mix (`concepts` documents include "cat — кошка"
lists) and with the offline suite's held-out concepts (`concepts?holdout=suite`) never shown, so
the probe reports retrieval for trained and held-out concepts apart. "untrained" is the same
architecture after one step at lr 1e-9 (its layer 0 equals the frozen twin's: same glyph matrix).

The probe part writes `OUT/probe/` (metrics.json, metrics.md, figures) and `OUT/summary.md`:
retrieval top-1 per layer (both directions averaged), trained and held-out concepts, with chance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CORPUS = "libreoffice-en-ru:0.5,concepts?holdout=suite:0.4,instructions?holdout=suite:0.1"


def config(args: argparse.Namespace, part: str):
    from bvvlab.train import make_config

    untrained = part == "untrained"
    return make_config(preset=args.preset, frozen=part != "unfrozen", steps=1 if untrained else args.steps,
                       lr=1e-9 if untrained else args.lr, min_lr=0.0 if untrained else args.lr / 10,
                       warmup=0 if untrained else max(1, args.steps // 20), seq_len=args.seq_len,
                       batch_size=args.batch_size, corpus=CORPUS, train_chars=args.train_chars, val_chars=100_000,
                       seed=args.seed, out=str(Path(args.out) / part), resume=True, progress=False,
                       log_every=max(1, args.steps // 30), eval_every=max(1, args.steps // 5))


def summary(metrics: dict, names: list[str]) -> str:
    """Retrieval top-1 by layer: trained and held-out concepts, each model, with chance."""
    lines = ["| layer | " + " | ".join(f"{n} trained | {n} held-out" for n in names) + " | chance |",
             "|---|" + "---|---|" * len(names) + "---|"]
    first = metrics["models"][names[0]]
    for k, layer in enumerate(first["layers"]):
        row = [str(layer)]
        for n in names:
            r = metrics["models"][n]["retrieval"][k]
            row += [f"{(r['top1_en2ru_trained'] + r['top1_ru2en_trained']) / 2:.3f}",
                    f"{(r['top1_en2ru_heldout'] + r['top1_ru2en_heldout']) / 2:.3f}"]
        row.append(f"{first['retrieval'][k]['chance_top1']:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", required=True, choices=("frozen", "unfrozen", "untrained", "probe"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--train-chars", type=int, default=4_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.part != "probe":
        from bvvlab.train import train

        t0, cpu0 = time.perf_counter(), time.process_time()
        ckpt = train(config(args, args.part))
        print(f"{args.part}: {ckpt} in {time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
        return 0
    from bvvlab import probe as P

    paths = [str(out / p) for p in ("frozen", "unfrozen", "untrained")]
    held = P.resolve_heldout("auto", paths[:2])
    items = P.load_items("concepts", held)
    metrics, states, _ = P.probe_models(paths, items, folds=args.folds, seed=args.seed)
    P.write_run(out / "probe", metrics, states, items, umap=False, seed=args.seed, overwrite=True)
    names = list(metrics["models"])
    text = (f"{len(items) // 2} concepts ({len(held)} held out: never in the twins' training mix), last-token "
            f"pooling, cosine after centring each language; top-1 averaged over en->ru and ru->en.\n\n"
            + summary(metrics, names))
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    print(json.dumps({n: {"lens_top1": P._lens_curve(metrics["models"][n], "top1")} for n in names}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
