"""Distributed set-up for `torchrun`: process group, barriers, rank-0-first work.

DDP goes through PyTorch's own launcher (no home-made one): `torchrun
--nproc_per_node N -m bvvlab train ...` sets RANK / LOCAL_RANK / WORLD_SIZE; NCCL on GPUs,
Gloo on CPUs. Every rank draws the same global batch and trains on its slice.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """This process's place in a torchrun job (a plain process: rank 0 of 1)."""
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ.get("WORLD_SIZE", "1")))


@contextlib.contextmanager
def process_group(info: DistInfo, device: torch.device) -> Iterator[None]:
    """Set up (and tear down) the process group when WORLD_SIZE > 1; share the CPU cores."""
    if info.world <= 1:
        yield
        return
    import torch.distributed as tdist

    own = not tdist.is_initialized()
    if own:
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # share the cores, don't fight
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", info.world))))
    try:
        yield
    finally:
        if own and tdist.is_initialized():
            tdist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def rank0_first(info: DistInfo, fn: Callable[[], T], others: Callable[[], T] | None = None) -> T:
    """Run `fn` on rank 0 first (it fills a cache), then on the other ranks (they read it)."""
    if info.is_main:
        result = fn()
    barrier(info.world)
    if not info.is_main:
        result = (others or fn)()
    return result


def all_reduce_mean(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as tdist

        tdist.all_reduce(t, op=tdist.ReduceOp.AVG)
    return t


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank when `flag` is true on one (a collective: every rank must call it)."""
    if world <= 1:
        return flag
    import torch.distributed as tdist

    t = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces CUDA tensors
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: Any, world: int) -> Any:
    """Every rank's `obj` as a list on every rank (the object itself when not distributed)."""
    if world <= 1:
        return obj
    import torch.distributed as tdist

    out: list[Any] = [None] * world
    tdist.all_gather_object(out, obj)
    return out
