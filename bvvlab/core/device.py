"""Which torch device a user means (floor 1): one check for every command (issue 26, item 12).

`train`, `grow`, `eval`, `probe`, the widgets and the notebooks all take `device=` ("auto",
"cpu", "cuda", "cuda:N", "mps"); a word torch does not know, or a device this machine does not
have, is one line naming the value and what to use instead, before anything is loaded. torch is
imported inside the function, so this floor stays free of it."""

from __future__ import annotations

from typing import Any

from bvvlab.core.errors import BVVError

DEVICES = "auto, cpu, cuda or cuda:N"


def resolve_device(value: Any, local_rank: int = 0) -> Any:
    """The `torch.device` meant by `value`: "auto" is the local rank's GPU when torch sees one,
    else the CPU; a bare "cuda" is the local rank's GPU (torchrun). BVVError (one line) for a
    word that is not a device, a device type bvvlab does not run on, or one this machine lacks."""
    import torch

    if isinstance(value, torch.device):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BVVError(f"device={value!r} is not a device: use {DEVICES}")
    if value == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise BVVError(f"device={value!r} is not a device: use {DEVICES}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise BVVError(f"device={value} is not one bvvlab runs on: use {DEVICES}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise BVVError(f"device={value} but torch sees no MPS device: use device=cpu (or auto)")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BVVError(f"device={value} but torch sees no CUDA device: use device=cpu (or auto)")
    if dev.type == "cuda" and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise BVVError(f"device={value} but torch sees {n} CUDA device{'s' if n != 1 else ''} "
                         f"(cuda:0..cuda:{n - 1}): use one of those")
    return dev
