"""`bvvlab train`: a config file, then flags, then `key=value` overrides (`model.<field>=` for the
model config), anywhere on the line; the trainer is `bvvlab.train.loop.train`.

    bvvlab train --preset tiny --steps 20 --out runs/smoke
    bvvlab train --config configs/tiny.json frozen=false lr=2e-3 corpus=libreoffice-en-ru:0.7,concepts:0.3
    bvvlab train --out runs/smoke --resume steps=40          # continue (and extend) a run
    torchrun --nproc_per_node 2 -m bvvlab train --config configs/tiny.json   # DDP

`add_train_arguments`, `config_from_args` and `run_config` are shared by the commands that take
a training config too (`grow`, `compare`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The TrainConfig arguments: --config FILE, the common flags, key=value overrides."""
    from bvvlab.train.config import config_keys

    p.add_argument("--config", help="JSON or TOML file of TrainConfig keys")
    p.add_argument("--preset", help="model preset (same as preset=...)")
    p.add_argument("--steps", help="optimizer steps (same as steps=...)")
    p.add_argument("--out", help="run directory (same as out=...)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="TrainConfig fields (" + ", ".join(config_keys()) + "); model.<field>=v for model overrides")


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig of a command line: the --config file, the flags over it, then key=value."""
    from bvvlab.train.config import config_keys, load_config_file, make_config

    base = load_config_file(args.config) if args.config else {}
    overrides: dict[str, Any] = {}
    for flag in ("preset", "steps", "out"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    for flag in ("resume", "overwrite"):
        if getattr(args, flag):
            overrides[flag] = True
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value; valid keys: {', '.join(config_keys())}")
        overrides[key.strip()] = value
    unknown = [k for k in base if k not in config_keys()]
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {args.config}; valid keys: {', '.join(config_keys())}")
    return make_config(base, **overrides)


def run_config(fn: Callable[[Any], Path], args: argparse.Namespace) -> int:
    """Run `fn(TrainConfig of args)`; an interrupted run exits 130/143 with its resume line."""
    from bvvlab.core.errors import Interrupted
    from bvvlab.train import distributed as dist

    cfg = config_from_args(args)
    try:
        path = fn(cfg)
    except Interrupted as exc:
        print(f"bvvlab {args.command}: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if dist.dist_info().is_main:
        print(path)
    return 0


def _train(args: argparse.Namespace) -> int:
    from bvvlab.train.loop import train

    return run_config(train, args)


def add_parser(sub: Any, name: str, help: str) -> None:
    p = sub.add_parser(name, help=help, description="Train a BVV model; prints the final checkpoint directory.")
    add_train_arguments(p)
    p.set_defaults(func=_train)
