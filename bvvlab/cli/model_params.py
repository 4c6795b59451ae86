"""`bvvlab model-params [PRESET ...] [--published]`: parameter counts of presets, or the published
family beside bvvlab's counts (moved here from models/model.py, which must stay self-contained)."""

from __future__ import annotations

from typing import Any


def add_cli(subparsers: Any) -> None:
    from bvvlab.models.model import PRESETS

    p = subparsers.add_parser("model-params", help="parameter counts (trainable / frozen) of model presets")
    p.add_argument("presets", nargs="*", help=f"presets to count (default: all of {', '.join(PRESETS)})")
    p.add_argument("--published", action="store_true",
                   help="the published model family with bvvlab's counts beside the published ones")
    p.set_defaults(func=run)


def run(args: Any) -> int:
    if args.published:
        from bvvlab.models.published import family_table

        print(family_table())
        return 0
    from bvvlab.models.model import parameter_table

    print(parameter_table(args.presets or None))
    return 0
