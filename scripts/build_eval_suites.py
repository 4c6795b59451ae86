"""Build the offline evaluation suites into data/eval/ (issue 12).

Sources: the LibreOffice en-ru *test* split (en->ru and ru->en translation, 128 short pairs per
direction) and the concept lexicon (word translation, category membership, odd-one-out as
four-choice questions, chance 25%), split into concepts a default run trains on and the ~10%
`bvvlab.eval.suites.suite_holdout_concepts()`; never training text. Deterministic: re-running
gives byte-identical files (the test suite checks that the shipped files are current).

    python scripts/build_eval_suites.py [--out data/eval]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bvvlab.eval.suites import SUITE_DIR, build_offline_suites  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(SUITE_DIR), help="output folder (replaced whole; default data/eval)")
    args = ap.parse_args(argv)
    man = build_offline_suites(args.out)
    for f, info in man["files"].items():
        print(f"{f}: {info['n']} {'pairs' if info['kind'] == 'translation' else 'questions'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
