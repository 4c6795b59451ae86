"""`bvvlab ablate`: the interface ablation of issue 23 (bvvlab.app.ablation.run_series)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any, name: str, help: str) -> None:
    p = sub.add_parser(
        name, help=help,
        description="Train the interface series (glyph, trainable, id-bits, random-bits, float) at one shape and "
                    "budget with >= 3 seeds, then write summary.json (means, 95%% t-intervals over seeds, the gap "
                    "against tokens with its fit) and gap.html into --out. A finished run is never redone.")
    p.add_argument("--out", required=True, help="series folder (runs/NAME/seedS, summary.json, gap.html)")
    p.add_argument("--series", nargs="+", default=None,
                   help="entries: names (glyph trainable id-bits random-bits-64 random-bits-256 float-64, the default) "
                        "or kind:n (random-bits:128)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    p.add_argument("--no-suites", action="store_true", help="skip the offline evaluation suites")
    p.add_argument("--no-probe", action="store_true", help="skip the cross-lingual retrieval probe")
    p.add_argument("--suite-limit", type=int, default=None, help="questions per suite task (default: all)")
    p.add_argument("overrides", nargs="*", help="TrainConfig keys shared by every run, key=value (preset=small ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bvvlab.app import ablation as A

    base = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not key=value: give TrainConfig keys such as preset=small steps=100")
        base[key.strip()] = value
    summary = A.run_series(args.out, base, series=args.series, seeds=args.seeds, suites=not args.no_suites,
                           probe=not args.no_probe, suite_limit=args.suite_limit)
    A.gap_figure(summary).write_html(Path(args.out) / "gap.html", include_plotlyjs="directory")  # offline
    print(A.summary_table(summary))
    for other, g in summary["gaps"].items():
        print(f"gap {summary['gap_ref']} vs {other}: {json.dumps(g['fit'])}")
    return 0
