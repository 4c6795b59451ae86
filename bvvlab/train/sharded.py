"""Sharded training with PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`), `fsdp=true` (issue 27).

Why: DDP keeps a full copy of the weights, gradients and both AdamW moments on every GPU (16 B
per trainable parameter before activations): fine up to about 3 B parameters on 80 GB, not
beyond. FSDP2 shards each of them over the ranks (dim-0 DTensor shards), all-gathers a block's
weights just before its forward and backward, and reduce-scatters its gradients; the optimizer
steps on the local shards. Each transformer block is one unit, the root (embedding, final norm,
head) another (the usual wrapping: PyTorch FSDP2 tutorial, torchtitan).

What stays as it is: the checkpoint. `model_state` gathers the full state dict (on rank 0, on
the CPU) and `plain_model` holds it in an ordinary model that is saved as the same Hugging Face
folder DDP writes; the optimizer state is saved gathered (keyed by parameter name,
`torch.distributed.checkpoint.state_dict`), so a resume re-shards it exactly. Every rank must
call these (collectives). Evaluation runs on every rank (a forward needs the others' shards).
"""

from __future__ import annotations

from typing import Any

import torch


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """Shard `model` in place over the default process group: each block a unit, then the root."""
    from torch.distributed.fsdp import fully_shard

    for block in model.model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def reshard(model: torch.nn.Module) -> None:
    """Free the gathered weights a forward without backward left behind (evaluation: the root
    unit keeps its weights gathered after its forward, waiting for a backward that never comes),
    so the parameters are the sharded DTensors the optimizer holds again."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on rank 0 (CPU); empty on the other ranks. A collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    reshard(model)
    return get_model_state_dict(model, options=_options())


def optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimizer state keyed by parameter name, on rank 0. A collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    reshard(model)
    return get_optimizer_state_dict(model, opt, options=_options())


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Every rank holds the full saved state (read from the checkpoint); each keeps its shards."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=_options())


def plain_model(model: torch.nn.Module, full: dict[str, torch.Tensor], cache: dict[str, Any]) -> torch.nn.Module:
    """An ordinary CPU model of `model`'s class and config holding `full` (built once, kept in
    `cache` and refilled at every save): what `save_trainer_checkpoint` writes."""
    if "model" not in cache:
        from bvvlab.models.model import BVVForCausalLM

        cache["model"] = BVVForCausalLM(model.config)
    cache["model"].load_state_dict(full)
    return cache["model"]


def scalar(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (a gradient norm over sharded parameters) as its full local tensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
