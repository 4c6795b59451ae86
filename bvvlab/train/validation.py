"""Validation loss and bits per character over a token shard: what every training run reports
(docs/recipe.md section 7 calls bits/char the tokenizer-independent figure)."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch

from bvvlab.train.shards import TokenShard, eval_windows


def lm_loss(model: torch.nn.Module, window: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of (B, T) windows (HF convention: position t predicts t+1, so
    T-1 targets per row), through the model's chunked loss (the full logits never exist).
    `reduction="sum"` gives the summed NLL in nats."""
    kw = {"num_items_in_batch": 1} if reduction == "sum" else {}
    return model(input_ids=window, labels=window, **kw).loss


@torch.no_grad()
def evaluate_bpc(model: torch.nn.Module, shard: TokenShard, seq_len: int, n_windows: int | None, batch: int,
                 device: torch.device, autocast: Callable[[], Any] = contextlib.nullcontext) -> dict[str, float]:
    """Validation loss (nats per token) and bits per character over the first `n_windows` windows
    (None: the whole shard, every token after the first a target once); `val_chars` says how many
    characters that was.

    bits/char = sum over targets of -log2 p(target) / characters those targets cover (every
    character of the evaluated text counted once, EOS covers none).
    """
    was_training = model.training
    model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one sync at the end
    n_tok = n_chars = 0
    pending: list[tuple[torch.Tensor, int]] = []

    def flush() -> None:
        nonlocal nll, n_tok, n_chars
        lens = {w.shape[0] for w, _ in pending}
        groups = [pending] if len(lens) == 1 else [[p] for p in pending]
        for g in groups:
            ids = torch.stack([w for w, _ in g]).to(device)
            with autocast():
                nll += lm_loss(model, ids, reduction="sum").double()
            n_tok += ids.shape[0] * (ids.shape[1] - 1)
            n_chars += sum(c for _, c in g)
        pending.clear()

    for w, c in eval_windows(shard, seq_len, n_windows):
        pending.append((w, c))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    model.train(was_training)
    nll = float(nll)
    return {"val_loss": nll / max(1, n_tok), "val_bpc": nll / math.log(2) / max(1, n_chars),
            "val_tokens": n_tok, "val_chars": n_chars}
