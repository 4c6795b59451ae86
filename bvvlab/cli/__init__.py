"""The `bvvlab` command: a thin argparse layer over library functions.

Every command's parser lives here, one module per command (`bvvlab.cli.train`, `.probe`, ...);
the library holds no argparse. A module exposes `add_parser(subparsers, name, help)`, which
registers the command's parser and sets `func` (called with the parsed namespace, returns an
exit code). Values reach the library through the command's typed config (`bvvlab.core.config`),
so a wrong value gets the same line here as in a notebook or the pipeline's `--set`.

Only the module of the command being run is imported (`bvvlab --help` imports none), so the
listing stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

# command -> (its module in bvvlab.cli, its line in --help), in the order of --help
COMMANDS = {
    "pipeline": ("pipeline", "run every notebook in order (papermill) and write a findings report"),
    "demo": ("pipeline", "the demo profile of the pipeline (make demo): minutes on a CPU"),
    "compare": ("compare", "train frozen and unfrozen twins and plot their curves"),
    "corpus": ("corpus", "print documents of a corpus, file or hf: dataset as JSON lines"),
    "embed": ("embed", "build a tokenizer and its frozen glyph matrix (recipe sections 2-3)"),
    "model-params": ("model_params", "parameter counts (trainable / frozen) of model presets, and memory per GPU "
                                     "for DDP and FSDP"),
    "train": ("train", "train a model (torchrun --nproc_per_node N -m bvvlab train for DDP)"),
    "probe": ("probe", "probe every layer: retrieval, probes, silhouettes, logit lens, CKA, maps"),
    "fuse": ("fuse", "fuse experts that share one frozen matrix into one checkpoint"),
    "eval": ("eval", "evaluate checkpoints on a suite; a tidy table and a chart"),
    "grow": ("grow", "grow a model layer by layer on the frozen substrate"),
    "data": ("data", "prepare the token shards of a training config ahead of training"),
    "ablate": ("ablate", "train one shape over several input interfaces and seeds; bits/char, suites, probes"),
}

from bvvlab.core.errors import BVVError, CLIError  # noqa: E402,F401  (CLIError: the old name)

# a TrainConfig override on the command line (`steps=40`, `model.hidden_size=64`)
KEY_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `bvvlab` parser: every command in full (`command=None`), or `command` in full and the
    others as their --help line only (what `main` parses with: one module imported)."""
    parser = argparse.ArgumentParser(prog="bvvlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        if command is None or command == name:
            importlib.import_module(f"bvvlab.cli.{module}").add_parser(sub, name, help_)
        else:
            sub.add_parser(name, help=help_)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; `key=value` overrides of train, grow and compare are taken anywhere, also
    after an option (argparse alone stops collecting positionals once an option came between)."""
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else "")
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(KEY_VALUE.match(a) for a in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = argparse.Namespace(command="")
    try:
        args = parse(sys.argv[1:] if argv is None else list(argv))
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
