"""`bvvlab model-params [PRESET ...] [--gpus N] [--published]`: parameter counts per preset
(`bvvlab.models.model.parameter_table`); with `--gpus`, the memory per GPU of training each preset
with DDP and with FSDP (`bvvlab.train.memory.memory_table`); with `--published`, the published
model family beside bvvlab's counts (`bvvlab.models.published.family_table`). The command lives on
the cli floor: the remote-code model file holds no command line, and the memory estimate belongs
to training (a floor above the model file)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any, name: str, help: str) -> None:
    from bvvlab.models.model import PRESETS

    p = sub.add_parser(name, help=help)
    p.add_argument("presets", nargs="*", help=f"presets to count (default: all of {', '.join(PRESETS)})")
    p.add_argument("--gpus", type=int, help="also print memory per GPU when training on this many GPUs (DDP, FSDP)")
    p.add_argument("--seq-len", type=int, help="tokens per window for the memory table (default: the context)")
    p.add_argument("--windows", type=int, default=8, help="windows per GPU per micro-step (default 8)")
    p.add_argument("--published", action="store_true",
                   help="the published model family with bvvlab's counts beside the published ones")
    p.set_defaults(func=_run)


def _run(args: Any) -> int:
    from bvvlab.models.model import PRESETS, parameter_table

    if args.published:
        from bvvlab.models.published import family_table

        print(family_table())
        return 0
    unknown = [n for n in args.presets if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset {unknown[0]!r}: choose from {', '.join(PRESETS)}")
    print(parameter_table(args.presets or None))
    if args.gpus is not None:
        if args.gpus < 1:
            raise ValueError(f"--gpus {args.gpus}: give 1 or more")
        from bvvlab.train.memory import memory_table

        print()
        print(memory_table(args.presets or list(PRESETS), args.gpus, args.seq_len, args.windows))
    return 0
