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
                 device: torch.device, autocast: Callable[[], Any] = contextlib.nullcontext,
                 per_window: bool = False) -> dict[str, Any]:
    """Validation loss (nats per token) and bits per character over the first `n_windows` windows
    (None: the whole shard, every token after the first a target once); `val_chars` says how many
    characters that was.

    `per_window`: each window scored on its own (one forward per window, so the final evaluation
    only), adding `val_window_bits` and `val_window_chars` (one entry per window) and
    `val_bpc_low` / `val_bpc_high`, the 95% bootstrap interval over windows
    (`bvvlab.core.intervals.ratio_interval`): the report's bits/char carry their uncertainty,
    and two models scored on the same windows give a paired gap (issue 24).

    bits/char = sum over targets of -log2 p(target) / characters those targets cover (every
    character of the evaluated text counted once, EOS covers none).
    """
    was_training = model.training
    model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: one sync at the end
    n_tok = n_chars = 0
    pending: list[tuple[torch.Tensor, int]] = []
    window_nll: list[torch.Tensor] = []
    window_chars: list[int] = []

    def flush() -> None:
        nonlocal nll, n_tok, n_chars
        lens = {w.shape[0] for w, _ in pending}
        groups = [[p] for p in pending] if per_window or len(lens) > 1 else [pending]
        for g in groups:
            ids = torch.stack([w for w, _ in g]).to(device)
            with autocast():
                part = lm_loss(model, ids, reduction="sum").double()
            nll += part
            if per_window:
                window_nll.append(part.detach())
                window_chars.append(g[0][1])
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
    out: dict[str, Any] = {"val_loss": nll / max(1, n_tok), "val_bpc": nll / math.log(2) / max(1, n_chars),
                           "val_tokens": n_tok, "val_chars": n_chars}
    if per_window and window_nll:
        from bvvlab.core.intervals import ratio_interval

        bits = (torch.stack(window_nll).cpu().numpy() / math.log(2)).tolist()
        iv = ratio_interval(bits, window_chars)
        out.update(val_bpc_low=iv["low"], val_bpc_high=iv["high"], val_windows=len(bits),
                   val_window_bits=bits, val_window_chars=window_chars)
    return out
