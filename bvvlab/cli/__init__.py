"""The `bvvlab` command: a thin argparse layer over library functions.

Each subcommand lives in the module that owns the work; that module exposes
`add_cli(subparsers)` which registers its parser and sets `func` (called with the parsed
namespace, returns an exit code). Modules are imported lazily so `bvvlab --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order they appear in --help
_MODULES = ["bvvlab.app.pipeline", "bvvlab.corpus.sources", "bvvlab.glyph.embeddings", "bvvlab.cli.model_params", "bvvlab.train.loop",
            "bvvlab.analysis.probe", "bvvlab.train.fusion", "bvvlab.eval.runner", "bvvlab.train.growth",
            "bvvlab.cli.data", "bvvlab.cli.ablate"]

from bvvlab.core.errors import BVVError, CLIError  # noqa: E402,F401  (CLIError: the old name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bvvlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argparse.Namespace(command="")
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (BVVError, ValueError, FileNotFoundError, FileExistsError) as exc:
        # one clear line, no traceback: bad input is the user's to fix
        print(f"bvvlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the trainer's own handler is in place (start-up)
        print("bvvlab: interrupted (nothing was saved by this command yet)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
