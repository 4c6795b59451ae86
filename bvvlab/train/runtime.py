"""The small pieces of a training run (bvvlab.train.loop uses them): the learning-rate schedule
(warmup + cosine), FLOPs per token and the bf16 peak of known GPUs (MFU), RNG state for an exact
resume, the device and dtype rules, AdamW (fused where it exists), torch.compile."""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import sys
from typing import Any, Callable

import numpy as np
import torch

from bvvlab.core import device as core_device
from bvvlab.train.config import TrainConfig

# dense bf16 peak FLOP/s per device (vendor data sheets, no sparsity); MFU is reported only for these
PEAK_FLOPS_BF16: dict[str, float] = {
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # the SXM part reports itself as "NVIDIA H100 80GB HBM3"
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
}


# ---------------------------------------------------------------------------------------------
# small pieces

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr` over `warmup` steps, then cosine decay to `min_lr` at `steps`."""
    warmup = min(cfg.warmup, cfg.steps // 5)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def peak_flops(device: torch.device) -> float | None:
    """bf16 peak of a known CUDA device; None (no MFU) for CPUs and unknown devices."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS_BF16, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS_BF16[key]
    return None


def flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """6N (N = parameters in matmuls: not the embedding lookup) + attention 12 * L * d * T (PaLM, app. B)."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings()
    if isinstance(getattr(emb, "weight", None), torch.nn.Parameter):
        n -= emb.weight.numel()
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# device and precision


def resolve_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    """cfg.device as a torch.device: the one check every command shares (`bvvlab.core.device`)."""
    return core_device.resolve_device(cfg.device, local_rank)


def resolve_dtype(cfg: TrainConfig, device: torch.device) -> str:
    """"bf16" or "fp32": auto is bf16 autocast on a CUDA device with bf16 support, else fp32 (on a
    CPU without native bf16 (AVX2 only) bf16 matmuls are emulated and far slower than fp32; CPU
    bf16 is for CPUs with AVX-512 BF16 / AMX, asked for explicitly: see bench/bench_gpu_path.py)."""
    if cfg.dtype == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"dtype=bf16 but {torch.cuda.get_device_name(device)} has no bf16 support: use dtype=fp32")
    if cfg.dtype == "bf16" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"dtype=bf16 is not supported on device {device}: use dtype=fp32")
    return cfg.dtype


def autocast(dtype: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device,
                   fused: bool = True) -> torch.optim.Optimizer:
    """AdamW, matrices decayed, norms not; fused (CPU and CUDA) where this torch has it, else
    foreach (also for sharded DTensor parameters: `fused=False`)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        if not fused:
            raise ValueError("foreach asked for")
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, foreach=True, **kw)


def compile_model(model: torch.nn.Module) -> Callable:
    """`torch.compile(model)`, or one line naming compile=false where no backend can be used."""
    try:
        import torch._inductor  # noqa: F401  (the default backend)
    except ImportError as exc:
        raise ValueError(f"compile=true but torch.compile's backend is unavailable ({exc}): use compile=false") from None
    if sys.platform == "win32" or not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
                                      or torch.cuda.is_available()):
        raise ValueError("compile=true needs a C compiler for Inductor on CPU (none found on PATH): install gcc, "
                         "or use compile=false")
    return torch.compile(model)
