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
    p.add_argument("--gpus", help="also print memory per GPU when training on this many GPUs (DDP, FSDP)")
    p.add_argument("--seq-len", help="tokens per window for the memory table (default: the context)")
    p.add_argument("--windows", default=8, help="windows per GPU per micro-step (default 8)")
    p.add_argument("--published", action="store_true",
                   help="the published model family with bvvlab's counts beside the published ones")
    p.set_defaults(func=_run)


def _run(args: Any) -> int:
    from bvvlab.core.config import check_count
    from bvvlab.models.model import PRESETS, parameter_table

    # the shared coercion: a bad number is the `name=value: ...` line every surface gives
    gpus = check_count("gpus", args.gpus, 1, "GPUs to train on", optional=True)
    seq_len = check_count("seq_len", args.seq_len, 1, "tokens per window", optional=True)
    windows = check_count("windows", args.windows, 1, "windows per GPU per micro-step")
    if args.published:
        from bvvlab.models.published import family_table

        print(family_table())
        return 0
    unknown = [n for n in args.presets if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset {unknown[0]!r}: choose from {', '.join(PRESETS)}")
    print(parameter_table(args.presets or None))
    if gpus is not None:
        from bvvlab.train.memory import memory_table

        print()
        print(memory_table(args.presets or list(PRESETS), gpus, seq_len, windows))
    return 0
