"""The probing experiment of issue 11: where does en<->ru alignment appear, layer by layer, in a
frozen-embedding model, its trainable-embedding twin, and the same architecture untrained?

    python scripts/probe_twins.py --out runs/probe_twins --part frozen   --steps 1500 --threads 1 &
    python scripts/probe_twins.py --out runs/probe_twins --part unfrozen --steps 1500 --threads 1 &
    wait
    python scripts/probe_twins.py --out runs/probe_twins --part untrained
    python scripts/probe_twins.py --out runs/probe_twins --part probe

Each training part is resumable (a trained twin is resumed, i.e. reused). The twins train on
the embedded corpora with word-translation lines in the mix (`concepts` documents include
"cat — кошка" lists) and with the offline suite's held-out concepts never shown (`CORPUS`).
"untrained" is the frozen twin's architecture, tokenizer and glyph matrix with freshly
initialised blocks (seeded), so its layer 0 equals the frozen twin's.

The probe part writes `OUT/probe/` (metrics.json, metrics.md, figures) and `OUT/summary.md`:
retrieval top-1 per layer (both directions averaged) for three sets of concept queries: trained,
held out (`--heldout`, default: what the twins' recorded corpus held out), and of those the ones
whose words occur nowhere in the LibreOffice training text ("unseen"), with chance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

CORPUS = "libreoffice-en-ru?holdout=suite:0.5,concepts?holdout=suite:0.4,instructions?holdout=suite:0.1"


def config(args: argparse.Namespace, part: str):
    from bvvlab.train.loop import make_config

    return make_config(preset=args.preset, frozen=part != "unfrozen", steps=args.steps, lr=args.lr,
                       min_lr=args.lr / 10, warmup=max(1, args.steps // 20), seq_len=args.seq_len,
                       batch_size=args.batch_size, corpus=args.corpus, train_chars=args.train_chars,
                       val_chars=100_000, seed=args.seed, out=str(Path(args.out) / part), resume=True,
                       progress=False, log_every=max(1, args.steps // 30), eval_every=max(1, args.steps // 5))


def untrained(out: Path, seed: int) -> Path:
    """The frozen twin's config, tokenizer and glyph matrix, blocks freshly initialised."""
    import torch

    from bvvlab.models.checkpoints import load_checkpoint, save_checkpoint
    from bvvlab.models.model import BVVForCausalLM

    model, tok = load_checkpoint(out / "frozen")
    glyphs = model.model.embed_tokens.weight.detach().clone()
    torch.manual_seed(seed)
    fresh = BVVForCausalLM.from_glyphs(model.config, glyphs).eval()
    return save_checkpoint(fresh, tok, out / "untrained", {"purpose": "untrained twin (scripts/probe_twins.py)",
                                                           "seed": seed}, overwrite=True)


def unseen(concepts: list[str]) -> list[str]:
    """The concepts none of whose word forms occurs in the LibreOffice en-ru training pairs."""
    from bvvlab.corpus.concepts import mention_pattern
    from bvvlab.corpus.parallel_text import parallel_pairs

    text = "\n".join(r["en"] + "\n" + r["ru"] for r in parallel_pairs("libreoffice-en-ru", "train"))
    return [c for c in concepts if not mention_pattern([c]).search(text)]


def translation_accuracy(path: str, subsets: dict[str, set[str]]) -> dict[str, float]:
    """Greedy word translation en->ru in the corpus's word-line format ("cat — "): the share of
    concepts whose first generated line is exactly the Russian lemma, per subset of concept ids."""
    import torch

    from bvvlab.corpus import concepts as C
    from bvvlab.models.checkpoints import load_checkpoint

    model, tok = load_checkpoint(path)
    model.eval()
    right = set()
    with torch.no_grad():
        for c in C.LEXICON.values():
            ids = tok(f"{c.en_lemma} — ", return_tensors="pt", add_special_tokens=False).input_ids
            out = model.generate(ids, max_new_tokens=12, do_sample=False)
            text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0].strip()
            if text == c.ru_lemma:
                right.add(c.id)
    return {name: len(right & ids) / len(ids) for name, ids in subsets.items() if ids}


def retrieval_table(states: dict, items: list, subsets: dict[str, "Any"]) -> tuple[str, dict]:
    """Retrieval top-1 by layer (en->ru and ru->en averaged) of every model over query subsets."""
    from bvvlab.analysis import metrics as probe_metrics

    names = list(states)
    cols = [(n, s) for n in names for s in subsets]
    lines = ["| layer | " + " | ".join(f"{n} {s}" for n, s in cols) + " | chance |", "|---|" + "---|" * (len(cols) + 1)]
    data: dict = {n: {s: [] for s in subsets} for n in names}
    for k, layer in enumerate(states[names[0]].layers):
        row = [str(layer)]
        for n in names:
            r = probe_metrics.retrieval(states[n].pooled[k], items, subsets=subsets)
            for s in subsets:
                v = (r[f"top1_en2ru_{s}"] + r[f"top1_ru2en_{s}"]) / 2
                data[n][s].append(v)
                row.append(f"{v:.3f}")
        row.append(f"{r['chance_top1']:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n", data


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
    ap.add_argument("--corpus", default=CORPUS)
    ap.add_argument("--heldout", default="auto", help="auto (the twins' recorded holdout), suite, or ids a,b,c")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.part == "untrained":
        print(f"untrained: {untrained(out, args.seed)}")
        return 0
    if args.part != "probe":
        from bvvlab.train.loop import train

        t0, cpu0 = time.perf_counter(), time.process_time()
        ckpt = train(config(args, args.part))
        print(f"{args.part}: {ckpt} in {time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
        return 0

    import numpy as np

    from bvvlab.analysis import figures as probe_figures
    from bvvlab.analysis import items as probe_items
    from bvvlab.analysis import probe

    paths = [str(out / p) for p in ("frozen", "unfrozen", "untrained")]
    held = probe_items.resolve_heldout(args.heldout, paths[:2])
    items = probe_items.load_items("concepts", held)
    metrics, states, _ = probe.probe_models(paths, items, folds=args.folds, seed=args.seed)
    probe.write_run(out / "probe", metrics, states, items, umap=False, seed=args.seed, overwrite=True)
    clean = set(unseen(held))
    subsets = {"trained": np.array([not it.heldout for it in items]), "heldout": np.array([it.heldout for it in items]),
               "unseen": np.array([it.pair in clean for it in items])}
    table, data = retrieval_table(states, items, subsets)
    from bvvlab.corpus import concepts as C

    groups = {"trained": set(C.LEXICON) - set(held), "heldout": set(held), "unseen": clean}
    translate = {Path(p).name: translation_accuracy(p, groups) for p in paths}
    table += ("\nGreedy word translation en->ru (`cat — ` -> exactly the Russian lemma), share of concepts:\n\n"
              "| model | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups) + "\n" +
              "".join(f"| {n} | " + " | ".join(f"{v:.3f}" for v in r.values()) + " |\n" for n, r in translate.items()))
    text = (f"{len(items) // 2} concepts: {len(held)} held out of the twins' generated training text, {len(clean)} "
            f"of them also absent from its LibreOffice text (unseen); last-token pooling, cosine after centring "
            f"each language; top-1 averaged over en->ru and ru->en.\n\n" + table)
    (out / "summary.md").write_text(text, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"heldout": held, "unseen": sorted(clean), "top1": data,
                                                  "translation_accuracy": translate,
                                                  "lens_top1": {n: probe_figures.lens_curve(metrics["models"][n], "top1")
                                                                for n in metrics["models"]}}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
