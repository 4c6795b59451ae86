"""`bvvlab data prepare`: the token shards of a training config, built ahead of training
(bvvlab.train.prepare): parallel workers, resumable after a kill, an estimate of disk and time
first. Takes the same arguments as `bvvlab train` (a config file, flags, key=value), so a train
command line becomes its prepare line by changing the verb.

    bvvlab data prepare --config configs/paper.json shard_dir=/scratch/shards
    bvvlab data prepare --config configs/paper.json --dry-run      # the estimate only
"""

from __future__ import annotations

import argparse
from typing import Any


def _prepare(args: argparse.Namespace) -> int:
    from bvvlab.cli.train import config_from_args
    from bvvlab.core.config import check_count
    from bvvlab.train.prepare import prepare_config

    # the shared coercion: `--workers abc` and `--workers 0` give the line every surface gives
    workers = check_count("workers", args.workers, 1, "tokenising processes; leave it out for one per core",
                          optional=True)
    cfg = config_from_args(args)
    cfg.validate()
    prepare_config(cfg, workers=workers or 0, progress=cfg.progress, dry_run=args.dry_run)
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.train.config import config_keys

    p = sub.add_parser(name, help=help, description=__doc__.split("\n\n")[0])
    verbs = p.add_subparsers(dest="data_command", required=True)
    q = verbs.add_parser("prepare", help="tokenise a config's training and validation text into shards",
                         description=__doc__.split("\n\n")[0])
    q.add_argument("--config", help="JSON or TOML file of TrainConfig keys (as for bvvlab train)")
    q.add_argument("--preset", help="model preset (decides the width of a compact vocabulary)")
    q.add_argument("--steps", help=argparse.SUPPRESS)  # accepted so a train line works verbatim
    q.add_argument("--out", help=argparse.SUPPRESS)
    q.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    q.add_argument("--overwrite", action="store_true", help=argparse.SUPPRESS)
    q.add_argument("--workers", help="tokenising processes (default: one per core)")
    q.add_argument("--dry-run", action="store_true", help="print the estimate (tokens, disk, time); build nothing")
    q.add_argument("overrides", nargs="*", metavar="key=value",
                   help="TrainConfig fields (" + ", ".join(config_keys()) + ")")
    q.set_defaults(func=_prepare, command="data prepare")
