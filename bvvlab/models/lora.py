"""Low-rank (LoRA) updates of frozen linear layers (Hu et al. 2021): torch only.

Growth (docs/recipe.md section 6) trains "a low-rank update of all earlier layers together with
the new layer so that the lower layers do not ossify". `LoRALinear` is an `nn.Linear` whose
`weight` stays frozen and bit-identical, plus trainable `lora_A` (rank x in, Kaiming-uniform as
nn.Linear's own init, from a seeded generator) and `lora_B` (out x rank, zeros), so that

    y = x W^T + (alpha / rank) (x A^T) B^T        (= x W^T exactly at the start: B = 0)

`merged(model)` swaps every LoRALinear for a plain nn.Linear of weight W + (alpha / rank) B A for
as long as the `with` lasts (a checkpoint is saved from inside it: plain keys, loads anywhere);
`merge(model)` does it for good. Written here rather than taken from peft: peft renames the
adapted weights (`base_layer.weight`, `lora_A.default.weight`), which would leak into every
checkpoint, and its merge/unmerge is not bit-exact, while a resume must continue from the
unmerged base (`state` / `load_state`) and every checkpoint must hold merged plain weights.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F


class LoRALinear(nn.Linear):
    """A frozen nn.Linear plus a trainable rank-`rank` update scaled by `alpha / rank`."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None):
        nn.Module.__init__(self)  # no nn.Linear init: the base's own tensors are taken over
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        for k, v in _attrs(base).items():  # plain attributes such as `residual_out` (model._init_weights)
            setattr(self, k, v)
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        self.rank, self.alpha, self.scale = int(rank), float(alpha), float(alpha) / int(rank)
        a = torch.empty(rank, self.in_features, dtype=self.weight.dtype)
        if self.weight.device.type != "meta":  # nn.Linear's init: U(+-1/sqrt(in)); meta: shapes only
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(a.to(self.weight.device))  # (rank, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=self.weight.dtype,
                                               device=self.weight.device))  # (out, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def merged_weight(self) -> torch.Tensor:
        """W + (alpha / rank) B A: the plain weight with the same outputs (up to rounding)."""
        return (self.weight + (self.lora_B @ self.lora_A) * self.scale).detach()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def adapted(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear of `model`, by module name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply(module: nn.Module, rank: int, alpha: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace every nn.Linear inside `module` by a LoRALinear over it (in module order, so a
    seeded `generator` gives the same A matrices every time); returns the replaced names."""
    names = [n for n, m in module.named_modules() if type(m) is nn.Linear]
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, attr, LoRALinear(getattr(owner, attr), rank, alpha, generator))
    return names


def _plain(m: LoRALinear) -> nn.Linear:
    lin = torch.nn.utils.skip_init(nn.Linear, m.in_features, m.out_features, bias=m.bias is not None,
                                   device=m.weight.device, dtype=m.weight.dtype)  # no init: no RNG drawn
    lin.weight = nn.Parameter(m.merged_weight(), requires_grad=False)
    if m.bias is not None:
        lin.bias = nn.Parameter(m.bias.detach().clone(), requires_grad=False)
    for k, v in _attrs(m).items():
        setattr(lin, k, v)
    return lin


def _attrs(m: nn.Module) -> dict:
    """A layer's own plain attributes (not nn.Linear's or LoRALinear's)."""
    own = {"in_features", "out_features", "training", "bias", "rank", "alpha", "scale"}
    return {k: v for k, v in vars(m).items() if not k.startswith("_") and k not in own}


def _swap(model: nn.Module, new: dict[str, nn.Module]) -> None:
    for name, mod in new.items():
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, mod)


@contextlib.contextmanager
def merged(model: nn.Module) -> Iterator[nn.Module]:
    """`model` with plain merged nn.Linear layers in place of its LoRALinear ones while the `with`
    lasts; afterwards the LoRALinear layers (base weights and adapters untouched) are back."""
    lora = adapted(model)
    _swap(model, {n: _plain(m) for n, m in lora.items()})
    try:
        yield model
    finally:
        _swap(model, lora)


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight for good: a plain model (same outputs up to rounding)."""
    _swap(model, {n: _plain(m) for n, m in adapted(model).items()})
    return model


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a resume needs to rebuild the unmerged layers exactly: `<name>.weight` (the frozen
    base), `<name>.lora_A`, `<name>.lora_B` of every LoRALinear."""
    out = {}
    for name, m in adapted(model).items():
        out.update({f"{name}.weight": m.weight.detach(), f"{name}.lora_A": m.lora_A.detach(),
                    f"{name}.lora_B": m.lora_B.detach()})
    return out


def load_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy `state()`'s tensors back into the model's LoRALinear layers (in place: an optimizer
    holding the parameters keeps them); a missing or misshapen tensor is one ValueError line."""
    mine = state(model)
    if set(saved) != set(mine) or any(saved[k].shape != v.shape for k, v in mine.items()):
        diff = sorted(set(saved) ^ set(mine)) or [k for k, v in mine.items() if saved[k].shape != v.shape]
        raise ValueError(f"the saved LoRA state does not fit this model's adapters ({diff[0]}): resume with the "
                         "same lora_rank and freeze_blocks")
    with torch.no_grad():
        for k, v in mine.items():
            v.copy_(saved[k])
