"""`bvvlab probe CKPT [CKPT ...] --items concepts|sentences|FILE --out DIR` (bvvlab.analysis.probe),
its values through `ProbeConfig`."""

from __future__ import annotations

import argparse
from typing import Any


def probe_config(args: argparse.Namespace) -> Any:
    """The ProbeConfig of a command line (options not given keep its defaults)."""
    from bvvlab.analysis.probe import ProbeConfig
    from bvvlab.core.config import build

    values = {k: getattr(args, k) for k in ("checkpoints", "items", "out", "pooling", "device", "folds", "heldout",
                                            "limit", "batch_size", "cka_level", "seed", "jobs", "contexts", "permutations",
                                            "max_tokens", "anchors")
              if getattr(args, k) is not None}
    if args.langs is not None:
        values["langs"] = [x.strip() for x in str(args.langs).split(",")]
    values["layers"] = args.layers or None  # "" or absent: every layer
    values["umap"] = "aligned-umap" if args.aligned_umap else args.umap
    values["latent"] = not args.no_latent
    values["tuned_lens"] = not args.no_tuned_lens
    values["overwrite"] = args.overwrite
    values["trust_remote_code"] = args.trust_remote_code
    return build(ProbeConfig, **values)


def _run(args: argparse.Namespace) -> int:
    from bvvlab.analysis.contexts import concept_contexts
    from bvvlab.analysis.figures import markdown_table, stats_table
    from bvvlab.analysis.items import load_items, resolve_heldout
    from bvvlab.analysis.probe import check_out, probe_models, write_run
    from bvvlab.models.checkpoints import EXPERT_SEP

    cfg = probe_config(args)
    check_out(cfg.out, cfg.overwrite, [c.partition(EXPERT_SEP)[0] for c in cfg.checkpoints])
    langs = tuple(cfg.langs)
    held = resolve_heldout(cfg.heldout, cfg.checkpoints) if cfg.items in ("concepts", "lemmas") else ()
    cs = None
    if cfg.items == "concepts":  # words in context (bvvlab.analysis.contexts)
        cs = concept_contexts(held, langs, cfg.contexts, cfg.limit)
        for note in cs.notes:
            print(f"note: {note}")
        items = cs.items
    else:
        notes: list[str] = []
        items = load_items(cfg.items, held, cfg.limit, cfg.anchors, notes)
        for note in notes:
            print(f"note: {note}")
        if len({it.lang for it in items}) == 1:
            print(f"note: {cfg.items} holds {items[0].lang} items only: no cross-lingual retrieval (give items of "
                  "two languages with shared pair ids)")
    metrics, states, _ = probe_models(cfg.checkpoints, items, cfg.pooling, cfg.layers, cfg.folds, cfg.device,
                                      cfg.batch_size, cfg.latent, cfg.cka_level, cfg.max_tokens, seed=cfg.seed,
                                      jobs=cfg.jobs, contexts=cs, permutations=cfg.permutations, langs=langs,
                                      trust_remote_code=cfg.trust_remote_code, tuned_lens=cfg.tuned_lens)
    out = write_run(cfg.out, metrics, states, items, cfg.umap, cfg.seed, cfg.overwrite)
    print(markdown_table(metrics["models"]))
    print(stats_table(metrics["models"]))
    print(f"wrote {out}/metrics.json, metrics.md and {len(metrics['meta']['figures'])} figures")
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.analysis.activations import EXPERT_SEP, POOLINGS
    from bvvlab.analysis.workers import default_jobs

    p = sub.add_parser(name, help=help)
    p.add_argument("checkpoints", nargs="+", help="run folders, checkpoint folders, HF causal LM directories, or fused "
                                                  f"checkpoints (every expert; DIR{EXPERT_SEP}NAME for one)")
    p.add_argument("--items", default=None,
                   help="concepts (words in context, default), lemmas (bare lemmas, the old items), sentences, or a "
                        ".csv/.jsonl file (text, label, lang, pair)")
    p.add_argument("--contexts", default=None, help="contexts per concept and language (--items concepts; default 24)")
    p.add_argument("--permutations", default=None,
                   help="re-pairings of the stratified permutation null of retrieval (default 1000)")
    p.add_argument("--max-tokens", default=None,
                   help="refuse items longer than this many tokens (default: no limit; nothing is cut silently)")
    p.add_argument("--anchors", default=None,
                   help="--items sentences: pairs sharing a Latin or digit string with their translation: drop "
                        "(default), apart (reported apart) or keep")
    p.add_argument("--langs", default=None, help="the two languages of the translation pairs (en,ru; en,enx: the clone)")
    p.add_argument("--out", required=True, help="output folder (metrics.json, metrics.md, figures)")
    p.add_argument("--umap", action=argparse.BooleanOptionalAction, default=True,
                   help="UMAP maps per layer (default); --no-umap: PCA (fast)")
    p.add_argument("--aligned-umap", action="store_true",
                   help="umap-learn's AlignedUMAP over all layers instead (panels fitted jointly)")
    p.add_argument("--pooling", choices=POOLINGS, default=None, help="item vector: last token or mean over tokens")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let a Hugging Face folder run the Python code it ships (auto_map); never needed for bvvlab's")
    p.add_argument("--layers", default=None, help="comma-separated layer indices (default: all, 0 = embedding output)")
    p.add_argument("--folds", default=None, help="cross-validation folds of the probes")
    p.add_argument("--heldout", default=None,
                   help="concepts reported apart: auto (what the checkpoints' training held out, default), suite, "
                        "comma-separated ids, or '' for none")
    p.add_argument("--limit", default=None, help="at most this many pairs (concepts or sentences of each source)")
    p.add_argument("--batch-size", default=None)
    p.add_argument("--cka-level", choices=("item", "token"), default=None,
                   help="CKA over pooled items (any tokenizers) or over tokens (same tokenizer only)")
    p.add_argument("--no-latent", action="store_true", help="skip the latent-language view")
    p.add_argument("--no-tuned-lens", action="store_true",
                   help="the latent-language view through the logit lens only (no tuned lens fitted)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--seed", default=None)
    p.add_argument("--jobs", default=None,
                   help=f"worker processes for the per-layer metrics (default: the usable cores, at most 4; now "
                        f"{default_jobs()}); 0: in this process")
    p.set_defaults(func=_run)
