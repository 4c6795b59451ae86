"""Memory per GPU of a training run, for DDP and for FSDP (issue 27): planning numbers that
`bvvlab pipeline --dry-run` and `bvvlab model-params --gpus N` print, not measurements.

DDP (every rank a full copy): fp32 weights, 4 B per parameter (the frozen glyph matrix
included); fp32 gradients and AdamW's two moments, 12 B per trainable parameter; the activations
of one micro-batch at bf16 without recomputation, s*b*h*34 B per layer (Korthikanti et al. 2022,
fused/flash attention: no s^2 term), plus the chunked loss's logits (256 tokens x vocab x 4 B).

FSDP2 (`fsdp=true`): parameters, gradients and moments divided by the ranks; the frozen matrix
is a buffer, which FSDP does not shard, so every rank keeps all of it; plus the gathered full
weights of two blocks (the one computing and the one prefetched; PyTorch FSDP2 docs,
"reshard_after_forward") and the root unit's (embedding and head) during its own compute.
Activations are the same as DDP's.
"""

from __future__ import annotations

from typing import Any

GIB = 1024 ** 3


def activation_bytes(config: Any, seq_len: int, micro: int) -> int:
    return seq_len * micro * config.hidden_size * 34 * config.num_hidden_layers + 256 * config.vocab_size * 4


def memory_per_gpu(config: Any, counts: dict[str, int], seq_len: int, micro: int, world: int = 1,
                   fsdp: bool = False, block_params: int | None = None) -> dict[str, float]:
    """GiB per GPU: weights, grads_and_adam, activations (and gathered, for FSDP), total.
    `counts`: `bvvlab.models.model.count_parameters` (trainable / frozen / total);
    `block_params`: parameters of one transformer block (FSDP's unit; default: from `counts`)."""
    acts = activation_bytes(config, seq_len, micro)
    gathered = 0.0
    if not fsdp:
        weights, states = 4 * counts["total"], 12 * counts["trainable"]
    else:
        n = max(1, world)
        sharded = counts["total"] - counts["frozen"]  # parameters; the frozen matrix is a buffer
        weights = 4 * sharded / n + 4 * counts["frozen"]
        states = 12 * counts["trainable"] / n
        layers = max(1, config.num_hidden_layers)
        block = block_params if block_params is not None else sharded // (layers + 1)
        root = max(0, sharded - block * layers)
        gathered = 4 * (2 * block + root) if n > 1 else 0.0
    out = {"weights_gb": weights / GIB, "grads_and_adam_gb": states / GIB, "activations_gb": acts / GIB}
    if fsdp:
        out["gathered_gb"] = gathered / GIB
    out["total_gb"] = sum(out.values())
    return {k: round(v, 2) for k, v in out.items()}


def model_counts(config: Any) -> tuple[dict[str, int], int]:
    """(count_parameters, parameters of one block) of a config, on the meta device (no memory)."""
    import torch

    from bvvlab.models import model as M

    with torch.device("meta"):
        model = M.BVVForCausalLM(config)
    return M.count_parameters(model), sum(p.numel() for p in model.model.blocks[0].parameters())


def memory_table(presets: list[str], gpus: int, seq_len: int | None = None, batch_size: int = 8,
                 vocab_size: int | None = None) -> str:
    """Markdown table: memory per GPU of each preset trained on `gpus` GPUs, DDP and FSDP, at
    `batch_size` windows per GPU of `seq_len` tokens (default: the preset's context)."""
    from bvvlab.models import model as M

    rows = [f"| preset | trainable | DDP GiB/GPU | FSDP GiB/GPU over {gpus} | (seq_len x windows per GPU) |",
            "|---|---|---|---|---|"]
    for name in presets:
        extra = {} if vocab_size is None else {"vocab_size": vocab_size}
        cfg = M.config_from_preset(name, **extra)
        counts, block = model_counts(cfg)
        s = seq_len or cfg.max_position_embeddings
        ddp = memory_per_gpu(cfg, counts, s, batch_size, gpus, fsdp=False)
        fs = memory_per_gpu(cfg, counts, s, batch_size, gpus, fsdp=True, block_params=block)
        rows.append(f"| {name} | {counts['trainable']:,} | {ddp['total_gb']} | {fs['total_gb']} | {s} x {batch_size} |")
    return "\n".join(rows)
