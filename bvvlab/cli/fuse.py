"""`bvvlab fuse EXPERT EXPERT ... --method M --out DIR` (bvvlab.train.fusion), its values through
`FuseConfig`."""

from __future__ import annotations

import argparse
from typing import Any

# FuseConfig fields set by an option of the same name (options not given keep its defaults)
OPTIONS = ("experts", "method", "out", "names", "entropy_temperature", "bayes_decay")


def fuse_config(args: argparse.Namespace) -> Any:
    from bvvlab.core.config import build
    from bvvlab.train.fusion import FuseConfig

    values = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    return build(FuseConfig, **values, overwrite=args.overwrite)


def _run(args: argparse.Namespace) -> int:
    from bvvlab.train.fusion import fuse

    cfg = fuse_config(args)
    fuse(cfg.experts, cfg.method, cfg.out, names=cfg.names, overwrite=cfg.overwrite, **cfg.options)
    print(args.out)
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.models.fused_model import METHODS

    p = sub.add_parser(name, help=help,
                       description="Fuse N >= 2 expert checkpoints (one vocabulary, tokenizer and frozen "
                                   "matrix) without retraining; writes one HF checkpoint directory.")
    p.add_argument("experts", nargs="+", help="expert checkpoints (run folders or step folders)")
    p.add_argument("--method", default=None, help=f"how to combine predictions: {', '.join(METHODS)} "
                                                  "(default bayes; mean_logits is the published fusion)")
    p.add_argument("--out", required=True, help="new or empty folder for the fused checkpoint")
    p.add_argument("--names", nargs="+", default=None, help="one short name per expert (default: folder names)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier fused checkpoint at --out")
    p.add_argument("--entropy-temperature", default=None, help="entropy method: weights softmax(-H/T) (default 1.0)")
    p.add_argument("--bayes-decay", default=None, help="bayes_decay method: evidence decay per token (default 0.9)")
    p.set_defaults(func=_run)
