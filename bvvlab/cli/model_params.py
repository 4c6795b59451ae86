"""`bvvlab model-params [PRESET ...]`: the parameter table of the model presets
(bvvlab.models.model.parameter_table; the remote-code model file holds no command line)."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from bvvlab.models.model import parameter_table

    print(parameter_table(args.presets or None))
    return 0


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.models.model import PRESETS

    p = sub.add_parser(name, help=help)
    p.add_argument("presets", nargs="*", help=f"presets to count (default: all of {', '.join(PRESETS)})")
    p.set_defaults(func=_run)
