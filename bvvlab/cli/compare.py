"""`bvvlab compare`: the frozen and the unfrozen twin under --out, their curves overlaid
(bvvlab.app.compare); the training config as `bvvlab train` takes it."""

from __future__ import annotations

import argparse
from typing import Any

from bvvlab.cli.train import add_train_arguments, run_config


def _run(args: argparse.Namespace) -> int:
    from bvvlab.app.compare import compare

    return run_config(lambda cfg: compare(cfg, figures=args.figures), args)


def add_parser(sub: Any, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help,
                       description="Frozen vs unfrozen twins under --out; curves in --out/compare.html.")
    add_train_arguments(p)
    p.add_argument("--figures", help="also copy the figure into this folder (e.g. figures/)")
    p.set_defaults(func=_run)
