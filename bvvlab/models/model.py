"""The frozen-embedding causal language model (docs/recipe.md section 4), Hugging Face native.

One readable file, in the order config, norm, rotary, attention, MLP, block, model, head.

* Decoder-only, pre-norm, rotary positions (base 10,000, Llama's "rotate half" layout), causal
  scaled-dot-product attention (`F.scaled_dot_product_attention`: the fused kernel on GPU; an
  eager path returns attention weights when `output_attentions=True`), a 4x GELU MLP, no biases
  (option `bias`: GPT-2-style biases in every block linear and LayerNorm with bias, the block
  style that reproduces the published 269.70 M and 247.59 M exactly), no learned positions, an output head that is *not* tied to the input matrix (section 4: "the
  output head is a separate, trainable matrix"). Options: RMSNorm and a SwiGLU MLP; with both the
  model is numerically `LlamaForCausalLM` (see `to_llama`).
* Frozen (the paper's model): the glyph matrix (section 3) is the *persistent buffer*
  `model.embed_tokens.weight`. It is saved in `model.safetensors`, restored bit-exactly by
  `from_pretrained`, never among `parameters()` so no optimizer ever sees it, and its sha256 is
  recorded in the config as `embedding_hash`. The same buffer holds the other frozen interfaces
  (id bits, random bits, float codes, already widened to d: `config.interface` names which).
  Unfrozen (the paper's baseline,
  best_bvv_unfrozen_ru): an `nn.Embedding` of the same shape, randomly initialised, or, as an
  option, initialised from the glyph matrix. `BVVConfig.frozen_embedding` switches.
* `labels` give a chunked cross-entropy (`ChunkedLinearCrossEntropy`) that never holds the fp32
  logits of the whole sequence: at the best_bvv_ru shape 1 x 1024 tokens x 131,072 vocab those are
  512 MiB, and a naive loss keeps three such tensors alive.

This file is also the remote code of every saved checkpoint (`bvvlab.models.checkpoints.save_checkpoint`), so it imports
only the standard library, torch and transformers: a process that never imported bvvlab loads a
checkpoint with `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

IGNORE_INDEX = -100  # label value that takes no part in the loss (the PyTorch / HF convention)


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------
class BVVConfig(PreTrainedConfig):
    """Shape and options of a bvv model, with Hugging Face field names (the names tools such as lm-evaluation-harness read).

    transformers 5 turns this class into a keyword-only dataclass (docs/stack.md section 2.1);
    unknown keys are kept as attributes.
    """

    model_type = "bvv"

    vocab_size: int = 65536  # rows of the embedding matrix and of lm_head (== len(tokenizer))
    hidden_size: int = 1024  # d_model; must equal the glyph matrix's dimension
    num_hidden_layers: int = 16  # transformer blocks
    num_attention_heads: int = 32  # heads; must divide hidden_size (head_dim = hidden_size // heads)
    intermediate_size: int | None = None  # MLP width; None: 4*d (gelu) or 8d/3 rounded up to 64 (swiglu)
    max_position_embeddings: int = 1024  # context length; longer inputs are refused
    rope_theta: float = 10000.0  # rotary base (recipe section 4: "RoPE base 10,000")
    norm_type: str = "layernorm"  # "layernorm" (no bias) or "rmsnorm"
    mlp_type: str = "gelu"  # "gelu" (4x GELU, the recipe's 12*d^2 per layer) or "swiglu" (Llama's)
    norm_eps: float = 1e-5  # epsilon of every norm
    frozen_embedding: bool = True  # True: glyph matrix as a frozen buffer; False: trainable nn.Embedding
    embedding_init: str = "random"  # unfrozen only: "random" (the paper's baseline) or "glyph"
    embedding_hash: str | None = None  # sha256 of the glyph matrix (float32 bytes), set by from_glyphs
    interface: str | None = None  # what the frozen matrix encodes: glyph, id-bits:16:msb:pm1, ... (set by the trainer)
    bias: bool = False  # GPT-2-style blocks: biases in q/k/v, o, MLP linears, and LayerNorm with bias
    initializer_range: float = 0.02  # std of the normal init of linear layers
    loss_chunk_size: int = 0  # tokens per cross-entropy chunk; 0: 256, fewer if that is over 2^25 logits
    use_cache: bool = True  # generate with the key-value cache
    pad_token_id: int | None = None  # from the tokenizer (bvv241: <pad> = 0xE000)
    bos_token_id: int | None = None  # from the tokenizer (bvv241: <s>)
    eos_token_id: int | list[int] | None = None  # from the tokenizer (bvv241: </s>)
    tie_word_embeddings: bool = False  # never tied: the head is trainable, the input matrix is not

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"BVVConfig: num_attention_heads={self.num_attention_heads} does not divide "
                             f"hidden_size={self.hidden_size}; pick a head count that divides it")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(f"BVVConfig: head_dim={self.hidden_size // self.num_attention_heads} is odd; rotary "
                             "positions need an even head_dim (change hidden_size or num_attention_heads)")
        if self.norm_type not in ("layernorm", "rmsnorm"):
            raise ValueError(f"BVVConfig: norm_type={self.norm_type!r}; use 'layernorm' or 'rmsnorm'")
        if self.mlp_type not in ("gelu", "swiglu"):
            raise ValueError(f"BVVConfig: mlp_type={self.mlp_type!r}; use 'gelu' or 'swiglu'")
        if self.embedding_init not in ("random", "glyph"):
            raise ValueError(f"BVVConfig: embedding_init={self.embedding_init!r}; use 'random' or 'glyph'")
        if self.tie_word_embeddings:
            raise ValueError("BVVConfig: tie_word_embeddings=True is not supported; the output head is a "
                             "separate trainable matrix (recipe section 4)")
        if self.intermediate_size is None:
            d = self.hidden_size
            self.intermediate_size = 4 * d if self.mlp_type == "gelu" else 64 * math.ceil(8 * d / 3 / 64)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


PRESETS: dict[str, dict[str, Any]] = {
    # the seed model's shape (recipe section 4): ~0.47B parameters of which 134M frozen
    "best_bvv_ru": dict(vocab_size=131072, hidden_size=1024, num_hidden_layers=16, num_attention_heads=32,
                        max_position_embeddings=1024),
    # the paper's baseline: the same shape with a trainable, randomly initialised embedding
    "best_bvv_unfrozen_ru": dict(vocab_size=131072, hidden_size=1024, num_hidden_layers=16, num_attention_heads=32,
                                 max_position_embeddings=1024, frozen_embedding=False),
    # a laptop CPU run of minutes (compact vocabulary, 256-dim glyph matrix)
    "small": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                  max_position_embeddings=256),
    # unit tests and smoke runs: seconds on one CPU thread
    "tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128),
}


def config_from_preset(name: str, **overrides: Any) -> BVVConfig:
    """A `BVVConfig` from a named preset, with any field overridden (e.g. `vocab_size=len(tok)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return BVVConfig(**{**PRESETS[name], **overrides})


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable, frozen and total parameter counts; the frozen glyph buffer counts as frozen.

    The frozen matrix is a buffer, not a parameter, so `parameters()` alone would hide it.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    frozen += sum(m.weight.numel() for m in model.modules() if isinstance(m, FrozenEmbedding))
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def parameter_table(names: list[str] | None = None) -> str:
    """Markdown table of parameter counts per preset (built on the meta device: no memory, no init).

    `bvvlab model-params` prints it; the table in docs/model.md is this output (tests/test_docs.py).
    """
    rows = ["| preset | layers | d_model | heads | context | vocab | trainable | frozen | total |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in names or list(PRESETS):
        cfg = config_from_preset(name)
        with torch.device("meta"):
            counts = count_parameters(BVVForCausalLM(cfg))
        rows.append(f"| {name} | {cfg.num_hidden_layers} | {cfg.hidden_size} | {cfg.num_attention_heads} | "
                    f"{cfg.max_position_embeddings} | {cfg.vocab_size:,} | {counts['trainable']:,} | "
                    f"{counts['frozen']:,} | {counts['total']:,} ({counts['total'] / 1e6:.1f}M) |")
    return "\n".join(rows)


def matrix_sha256(matrix: torch.Tensor) -> str:
    """The `embedding_hash`: sha256 over dtype, shape and row-major bytes of the float32 matrix,
    the same definition as `bvvlab.glyph.embeddings.matrix_hash` (restated here: no bvvlab imports)."""
    arr = matrix.detach().to("cpu", torch.float32).contiguous().numpy()
    h = hashlib.sha256(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# norm
# ----------------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32 exactly as `LlamaRMSNorm` (so `to_llama` is exact)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # the same ops in one call (bit-identical in fp32): a third less time per decoding step
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(config: BVVConfig) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return RMSNorm(config.hidden_size, config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.bias)


# ----------------------------------------------------------------------------------------------
# rotary
# ----------------------------------------------------------------------------------------------
class Rotary(nn.Module):
    """cos/sin tables of rotary positions (RoFormer; Llama's half-split layout).

    No buffers: transformers 5 re-creates non-persistent buffers as garbage after
    `from_pretrained` (docs/stack.md section 2.5), so the table is a plain attribute, computed on
    first use per (device, dtype) and grown when needed. fp32 math as in `LlamaRotaryEmbedding`.
    """

    def __init__(self, head_dim: int, base: float, max_positions: int):
        super().__init__()
        self.head_dim, self.base, self.max_positions = head_dim, base, max_positions
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < length:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, self.head_dim, 2, dtype=torch.float, device=device)
                                            / self.head_dim))
            pos = torch.arange(max(length, self.max_positions), device=device, dtype=torch.float)
            freqs = pos[:, None] * inv_freq[None, :]  # (T, hd/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
            cached = (emb.cos().to(dtype), emb.sin().to(dtype))
            self._tables[key] = cached
        return cached

    def forward(self, position_ids: torch.Tensor | None, start: int, length: int, device, dtype):
        """cos, sin of shape (T, hd) for positions start..start+T-1, or (B, T, hd) for position_ids."""
        if position_ids is None:
            cos, sin = self.tables(start + length, device, dtype)
            return cos[start:start + length], sin[start:start + length]
        # the table always covers max_positions (longer inputs are refused): indexing it needs no
        # host read of position_ids.max(), so no device sync and nothing for torch.compile to break on
        cos, sin = self.tables(self.max_positions, device, dtype)
        return cos[position_ids], sin[position_ids]  # (T, hd) or (B, T, hd)


def _rotate_into(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """out = x * cos + rotate_half(x) * sin (Llama's layout) as two half-width multiply-adds
    written straight into `out` (any strides): no negated, concatenated or stacked copies.
    x, out (B, T, ..., hd); cos/sin (T, hd) or (B, T, hd), whose two halves are equal."""
    h2 = x.shape[-1] // 2
    middle = [1] * (x.dim() - 3)
    c = cos[..., :h2].reshape(*cos.shape[:-1], *middle, h2)  # (T, 1.., hd/2) or (B, T, 1.., hd/2)
    s = sin[..., :h2].reshape(*sin.shape[:-1], *middle, h2)
    x1, x2 = x[..., :h2], x[..., h2:]
    torch.mul(x1, c, out=out[..., :h2]).addcmul_(x2, s, value=-1)
    torch.mul(x2, c, out=out[..., h2:]).addcmul_(x1, s)
    return out


def _split_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x (B, T, 3, H, hd) -> q, k rotated and v, each (B, H, T, hd), views of one new buffer."""
    out = torch.empty_like(x)
    _rotate_into(out[:, :, :2], x[:, :, :2], cos, sin)  # q and k in one pass
    out[:, :, 2].copy_(x[:, :, 2])
    return tuple(t.transpose(1, 2) for t in out.unbind(2))


class _RotaryQKV(torch.autograd.Function):
    """`_split_rotate` with a backward that rotates the q/k gradients back (by -angle) and copies
    v's straight into one (B, T, 3, H, hd) gradient: autograd's version of the same ops builds
    zero-filled slice gradients, a concatenation and a stack and sums them."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _split_rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad_q, grad_k, grad_v):
        cos, sin = ctx.saved_tensors
        ref = next(g for g in (grad_q, grad_k, grad_v) if g is not None)
        B, H, T, hd = ref.shape
        grad = torch.empty(B, T, 3, H, hd, dtype=ref.dtype, device=ref.device)
        for i, g in enumerate((grad_q, grad_k)):
            if g is None:
                grad[:, :, i].zero_()
            else:
                _rotate_into(grad[:, :, i], g.transpose(1, 2), cos, -sin)
        if grad_v is None:
            grad[:, :, 2].zero_()
        else:
            grad[:, :, 2].copy_(grad_v.transpose(1, 2))
        return grad, None, None


def rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, ...]:
    """q, k (rotated) and v of a fused projection output (B, T, 3*H*hd), each (B, H, T, hd)."""
    B, T, _ = qkv.shape
    x = qkv.view(B, T, 3, n_heads, -1)
    if torch.compiler.is_compiling():
        # the textbook formula: Inductor fuses it into one kernel and derives its backward, while
        # the eager kernels' `out=` writes into strided views are not traceable (as_strided_scatter
        # out of bounds in Inductor, a graph break per call in Dynamo)
        q, k = apply_rotary(x[:, :, :2], cos, sin).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), x[:, :, 2].transpose(1, 2)
    if torch.is_grad_enabled() and qkv.requires_grad:
        return _RotaryQKV.apply(x, cos, sin)
    return _split_rotate(x, cos, sin)  # inference: no autograd bookkeeping per decoding step


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, ..., hd) rotated; cos/sin (T, hd) or (B, T, hd), broadcast over the middle dims.
    The textbook form (the tests' reference for `rotary_qkv`)."""
    middle = [1] * (x.dim() - 3)  # the dims between T and hd, e.g. (2, H) for stacked q, k
    cos = cos.view(*cos.shape[:-1], *middle, cos.shape[-1])  # (T, 1.., hd) or (B, T, 1.., hd)
    sin = sin.view(*sin.shape[:-1], *middle, sin.shape[-1])
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Causal multi-head self-attention with one fused q/k/v projection and no biases."""

    def __init__(self, config: BVVConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.head_dim = config.num_attention_heads, config.head_dim
        d = config.hidden_size
        self.qkv_proj = nn.Linear(d, 3 * d, bias=config.bias)  # rows: [q; k; v], each (heads * head_dim)
        self.o_proj = nn.Linear(d, d, bias=config.bias)
        self.o_proj.residual_out = True  # scaled init, see _init_weights

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: Cache | None, eager: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, d = x.shape
        q, k, v = rotary_qkv(self.qkv_proj(x), cos, sin, self.n_heads)  # (B, H, T, hd) each
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, H, S, hd), S = past + T
        S = k.shape[2]
        weights = None
        if eager:  # attention weights wanted (lens tools, plots)
            scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5  # (B, H, T, S)
            if mask is None:
                mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
            y = weights @ v
        else:
            # is_causal only when the query block covers the whole key range; else an explicit mask
            # (which is None during unpadded single-token decoding: the new token sees everything)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T == S and T > 1)
        y = y.transpose(1, 2).reshape(B, T, d)  # (B, T, H*hd)
        return self.o_proj(y), weights


# ----------------------------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """4x GELU (recipe section 4: 12*d^2 per layer with attention) or SwiGLU (Llama), no biases."""

    def __init__(self, config: BVVConfig):
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.swiglu = config.mlp_type == "swiglu"
        self.up_proj = nn.Linear(d, 2 * f if self.swiglu else f, bias=config.bias)  # swiglu rows: [gate; up]
        self.down_proj = nn.Linear(f, d, bias=config.bias)
        self.down_proj.residual_out = True  # scaled init, see _init_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up_proj(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.gelu(h))


# ----------------------------------------------------------------------------------------------
# block
# ----------------------------------------------------------------------------------------------
class Block(GradientCheckpointingLayer):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: BVVConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = Attention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask=None, cache=None, eager=False):
        a, weights = self.attn(self.ln_1(x), cos, sin, mask, cache, eager)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


# ----------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------
class FrozenEmbedding(nn.Module):
    """The glyph matrix as a persistent buffer `weight` (vocab, d): saved, loaded, never trained.

    A buffer rather than a `requires_grad=False` parameter, because transformers 5 re-creates
    parameters as trainable in `from_pretrained` (docs/stack.md section 2.6).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("weight", torch.empty(num_embeddings, embedding_dim), persistent=True)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, frozen"


class BVVPreTrainedModel(PreTrainedModel):
    config_class = BVVConfig
    config: BVVConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) linears, residual projections scaled by 1/sqrt(2*layers)
        (GPT-2), unit norms; embeddings with unit-norm-scale rows (std 1/sqrt(d)) like the glyph
        rows, so frozen and unfrozen models start from inputs of the same size."""
        from transformers import initialization as init

        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "residual_out", False):  # o_proj, down_proj: GPT-2's 1/sqrt(2*layers)
                std = std / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, FrozenEmbedding)):
            init.normal_(module.weight, mean=0.0, std=self.config.hidden_size ** -0.5)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)


class BVVModel(BVVPreTrainedModel):
    """Embedding, blocks, final norm: ids (B, T) -> hidden states (B, T, d)."""

    def __init__(self, config: BVVConfig):
        super().__init__(config)
        V, d = config.vocab_size, config.hidden_size
        self.embed_tokens = FrozenEmbedding(V, d) if config.frozen_embedding else nn.Embedding(V, d)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = make_norm(config)
        self.rotary = Rotary(config.head_dim, config.rope_theta, config.max_position_embeddings)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def check_ids(self, input_ids: torch.Tensor) -> None:
        """Out-of-range ids raise one clear line instead of an index assertion deep in torch.

        On CPU (eager) a host check with the offending id. On an accelerator, or under
        torch.compile, a device-side assertion (`torch._assert_async`): it costs no host sync per
        step, and a bad id still stops the run with the message below.
        """
        if input_ids.numel() == 0:
            return
        V = self.config.vocab_size
        if input_ids.device.type != "cpu" or torch.compiler.is_compiling():
            ok = (input_ids >= 0).all() & (input_ids < V).all()
            torch._assert_async(ok, f"a token id is out of range: the model's vocab_size is {V} (valid ids "
                                    f"0..{V - 1}); encode with the checkpoint's own tokenizer")
            return
        lo, hi = torch.aminmax(input_ids)
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of range: the model's vocab_size is {self.config.vocab_size} "
                             f"(valid ids 0..{self.config.vocab_size - 1}); encode with the checkpoint's own tokenizer")

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool = False,
                output_hidden_states: bool = False, output_attentions: bool = False):
        """Returns (last_hidden_state after ln_f, cache, hidden_states tuple or None, attentions or None)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            self.check_ids(input_ids)  # no host sync on accelerators or under torch.compile
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, d)
        x = inputs_embeds
        B, T, _ = x.shape
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        S = past + T
        if S > self.config.max_position_embeddings:
            raise ValueError(f"sequence of {S} tokens (cached {past} + new {T}) is longer than the context "
                             f"max_position_embeddings={self.config.max_position_embeddings}; shorten the prompt "
                             "or max_new_tokens")

        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be 2-D (batch, sequence) of 1 = token, 0 = padding; got "
                             f"{attention_mask.dim()}-D (the causal part is built inside the model)")
        mask = None  # bool (B, 1, T, S), True = may attend; None = plain causal
        if attention_mask is not None and not bool(attention_mask.all()):
            if attention_mask.shape[-1] != S:
                raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions but the cache plus "
                                 f"input hold {S}; pass the mask of the whole sequence so far")
            keep = attention_mask.bool()
            if position_ids is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
            causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(past)  # (T, S)
            mask = causal[None, None] & keep[:, None, None, :]  # (B, 1, T, S)
            # a padding query that sees nothing would give NaN rows that leak through 0 * NaN: let it see all
            mask = mask | ~mask.any(-1, keepdim=True)
        elif T > 1 and past > 0:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(past)[None, None]  # (1, 1, T, S)
        if position_ids is not None and (position_ids.dim() == 1 or position_ids.shape[0] == 1):
            # unbatched positions: (T,) rows of the table, shared by the batch. A gather, not a test
            # for "consecutive, then slice", which read the ids on the host (a sync per forward)
            position_ids = position_ids.reshape(-1)
        cos, sin = self.rotary(position_ids, past, T, x.device, x.dtype)

        eager = output_attentions or self.config._attn_implementation == "eager"
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for i, block in enumerate(self.blocks):
            x, weights = block(x, cos, sin, mask=mask, cache=cache, eager=eager)
            if output_attentions:
                attentions += (weights,)
            if output_hidden_states and i < len(self.blocks) - 1:
                hidden_states += (x,)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden_states += (x,)  # HF convention: the last entry is after the final norm
        return x, cache, hidden_states, attentions


# ----------------------------------------------------------------------------------------------
# head (and the chunked loss)
# ----------------------------------------------------------------------------------------------
class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean next-token cross-entropy of `hidden @ weight.T` without the whole logits tensor.

    Forward walks over token chunks: each chunk's logits (chunk, V) are computed, its loss summed
    in fp32, and, when gradients are wanted, its softmax-minus-one-hot turned at once into the
    gradients of `hidden` (chunk, d) and `weight` (V, d), which are kept for backward. So the head
    matmul is done once (no recompute), and only one chunk of logits is ever alive.

    Precision (see `_head_dtype`): under bf16 autocast the three head matmuls run in bf16 (an
    `out=` matmul is not autocast-eligible, so the cast is explicit); softmax, log-sum-exp, the
    loss and the weight-gradient accumulator stay fp32; gradients come back in the dtypes of
    `hidden` and `weight`.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, denom):
        # hidden (N, d), weight (V, d), targets (N,) int64 with IGNORE_INDEX for no loss
        loss, grad_h, grad_w = _chunked_ce(hidden, weight, targets, chunk, denom,
                                           ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        # saved tensors, not ctx attributes: torch.compile traces only save_for_backward; autograd
        # releases them before the gradients are accumulated, so they are still taken without a copy
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        # the usual upstream gradient is exactly 1 (loss.backward()): skip two passes, but test for
        # it only where reading a scalar costs nothing (eager CPU); elsewhere scale unconditionally
        unit = grad_out.device.type == "cpu" and not torch.compiler.is_compiling() and bool(grad_out == 1)
        if not unit:
            grad_h = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
            grad_w = None if grad_w is None else grad_w * grad_out.to(grad_w.dtype)
        return grad_h, grad_w, None, None, None


def _head_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the head matmuls: the autocast dtype where autocast is on for this device
    type, else the weights' dtype. fp16 autocast is refused: fp16's 5-bit exponent overflows on
    large logits and underflows small gradients without a GradScaler; bf16 has fp32's range."""
    dev = hidden.device.type
    if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
        if dtype == torch.float16:
            raise ValueError("the chunked cross-entropy does not support float16 autocast (no gradient scaler; "
                             "fp16 overflows on large logits): use bfloat16 autocast (dtype='bf16') or fp32")
        return dtype
    return weight.dtype


def _chunked_ce(hidden, weight, targets, chunk, denom, need_h, need_w):
    """(loss, d loss/d hidden or None, d loss/d weight or None), one chunk of logits at a time."""
    dtype, dev = _head_dtype(hidden, weight), hidden.device.type
    no_autocast = torch.autocast(dev, enabled=False) if torch.amp.is_autocast_available(dev) else contextlib.nullcontext()
    with no_autocast:  # precision is chosen explicitly below
        if torch.compiler.is_compiling():
            return _chunked_ce_traced(hidden, weight, targets, chunk, denom, need_h, need_w, dtype)
        if dtype == torch.float32 and hidden.dtype == torch.float32 and weight.dtype == torch.float32:
            return _chunked_ce_fp32(hidden, weight, targets, chunk, denom, need_h, need_w)
        return _chunked_ce_low(hidden, weight, targets, chunk, denom, need_h, need_w, dtype)


def _chunked_ce_fp32(hidden, weight, targets, chunk, denom, need_h, need_w):
    """The fp32 path, tuned for CPU.

    Per chunk: the logits (c, V) and their softmax go into two buffers allocated once per call
    (a fresh multi-MiB tensor per op costs page faults), the log-sum-exp comes from the softmax
    (no second exp pass), and the 1/denom and ignore-mask scale is applied to the small (c, d)
    sides of the two gradient matmuls instead of to the (c, V) softmax.
    """
    N, V = hidden.shape[0], weight.shape[0]
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    logits_buf = torch.empty(min(chunk, N), V, dtype=torch.float32, device=hidden.device)
    probs_buf = torch.empty_like(logits_buf)
    for s in range(0, N, chunk):
        h, t = hidden[s:s + chunk], targets[s:s + chunk]
        c = h.shape[0]
        logits = torch.mm(h, weight.T, out=logits_buf[:c])
        rows = torch.arange(c, device=h.device)
        valid = t != IGNORE_INDEX
        t0 = t.clamp(min=0)
        target_logit = logits[rows, t0]  # (c,)
        top = logits.amax(-1)  # (c,)
        probs = torch.softmax(logits, -1, out=probs_buf[:c])  # (c, V)
        # log-sum-exp = max - log(largest probability): that probability is >= 1/V, so no underflow
        lse = top - probs.amax(-1).log()
        total += ((lse - target_logit) * valid).sum()
        if need_h or need_w:
            probs[rows, t0] -= 1.0  # softmax - one-hot = d loss_i / d logits_i (before the scale)
            scale = (valid.float() / denom)[:, None]  # (c, 1): mean over scored tokens, 0 for ignored
            if need_h:
                grad_h[s:s + chunk] = (probs @ weight) * scale
            if need_w:
                hs = h * scale
                if grad_w is None:
                    grad_w = probs.T @ hs  # (V, d)
                else:
                    grad_w.addmm_(probs.T, hs)
    return total / denom, grad_h, grad_w


def _chunked_ce_low(hidden, weight, targets, chunk, denom, need_h, need_w, dtype):
    """The same walk with the head matmuls in `dtype` (bf16 under autocast, or low-precision
    weights): logits are upcast into an fp32 buffer before the softmax, and the chunks' weight
    gradients are summed in fp32 (a bf16 running sum would lose the small late chunks)."""
    N, V = hidden.shape[0], weight.shape[0]
    w = weight.to(dtype)  # (V, d), cast once per call, not once per chunk
    grad_h = torch.empty_like(hidden) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    logits_buf = torch.empty(min(chunk, N), V, dtype=torch.float32, device=hidden.device)
    probs_buf = torch.empty_like(logits_buf)
    for s in range(0, N, chunk):
        h, t = hidden[s:s + chunk].to(dtype), targets[s:s + chunk]
        c = h.shape[0]
        logits = logits_buf[:c]
        logits.copy_(h @ w.T)  # (c, V): low-precision matmul, fp32 softmax
        rows = torch.arange(c, device=h.device)
        valid = t != IGNORE_INDEX
        t0 = t.clamp(min=0)
        target_logit = logits[rows, t0]
        top = logits.amax(-1)
        probs = torch.softmax(logits, -1, out=probs_buf[:c])
        lse = top - probs.amax(-1).log()
        total += ((lse - target_logit) * valid).sum()
        if need_h or need_w:
            probs[rows, t0] -= 1.0
            scale = (valid.float() / denom)[:, None]
            g = probs.to(dtype)
            if need_h:
                grad_h[s:s + chunk] = (g @ w).float() * scale
            if need_w:
                grad_w += g.T @ (h.float() * scale).to(dtype)
    return total / denom, grad_h, None if grad_w is None else grad_w.to(weight.dtype)


def _chunked_ce_traced(hidden, weight, targets, chunk, denom, need_h, need_w, dtype):
    """The walk without `out=` buffers or in-place writes into slices, for torch.compile (Dynamo
    traces the chunk loop unrolled; Inductor fuses each chunk's softmax/loss/gradient ops)."""
    N = hidden.shape[0]
    w = weight.to(dtype)
    total, gh, grad_w = hidden.new_zeros((), dtype=torch.float32), [], None
    for s in range(0, N, chunk):
        h, t = hidden[s:s + chunk].to(dtype), targets[s:s + chunk]
        logits = (h @ w.T).float()  # (c, V)
        valid = t != IGNORE_INDEX
        t0 = t.clamp(min=0)
        lse = torch.logsumexp(logits, -1)
        total = total + ((lse - logits.gather(1, t0[:, None])[:, 0]) * valid).sum()
        if need_h or need_w:
            probs = torch.softmax(logits, -1) - F.one_hot(t0, logits.shape[1]).to(torch.float32)
            scale = (valid.float() / denom)[:, None]
            g = probs.to(dtype)
            if need_h:
                gh.append((g @ w).float() * scale)
            if need_w:
                part = (g.T @ (h.float() * scale).to(dtype)).float()
                grad_w = part if grad_w is None else grad_w + part
    grad_h = torch.cat(gh).to(hidden.dtype) if need_h else None
    return total / denom, grad_h, None if grad_w is None else grad_w.to(weight.dtype)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int = 0,
                          num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """HF-convention causal LM loss (position t predicts labels[t+1]; -100 ignored) of
    `hidden (B, T, d) @ weight.T`, chunked over tokens; equal to `F.cross_entropy` on full logits."""
    V = weight.shape[0]
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)  # (B*T,)
    h = hidden.reshape(-1, hidden.shape[-1])  # (B*T, d)
    denom = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    denom = torch.as_tensor(denom, device=hidden.device).float().clamp(min=1)
    # 256 tokens: big enough for efficient matmuls, small enough that a compact vocabulary's
    # (256, V) logits and softmax stay in cache; never more than 2^25 fp32 logits (128 MiB) per
    # chunk. Measured (1 thread, forward + gradients): V=8,192 x 2,048 tokens 310-330 ms with
    # 256-512-token chunks vs 350 ms in one chunk; V=65,536 x 1,024 tokens 1.42 s vs 1.47 s at 512
    chunk = chunk or max(16, min(256, (1 << 25) // V))
    if not torch.is_grad_enabled():  # evaluation: no gradients to prepare
        return _chunked_ce(h, weight, targets, chunk, denom, False, False)[0]
    return ChunkedLinearCrossEntropy.apply(h, weight, targets, chunk, denom)


class BVVForCausalLM(BVVPreTrainedModel, GenerationMixin):
    """The causal LM: `BVVModel` plus an untied, trainable, bias-free `lm_head`.

    `forward(input_ids, labels=...)` returns the chunked loss and, by default, no logits (so the
    full fp32 logits are never built in training); pass `return_logits=True` to get them too.
    Without labels, logits are returned (only the last `logits_to_keep` positions if > 0).
    """

    def __init__(self, config: BVVConfig):
        super().__init__(config)
        self.model = BVVModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_glyphs(cls, config: BVVConfig, glyph_matrix: torch.Tensor) -> "BVVForCausalLM":
        """A fresh model over a glyph matrix (recipe section 3) of shape (vocab_size, hidden_size).

        Frozen: the matrix becomes the buffer and its hash goes into the config. Unfrozen with
        embedding_init="glyph": the trainable embedding starts from the matrix; with "random"
        only the shape is checked (the paper's baseline ignores the matrix).
        """
        rows, dim = glyph_matrix.shape
        if rows != config.vocab_size:
            raise ValueError(f"glyph matrix has {rows} rows but vocab_size is {config.vocab_size}; build the matrix "
                             "from the same tokenizer or set vocab_size=len(tokenizer)")
        if dim != config.hidden_size:
            raise ValueError(f"glyph matrix has dimension {dim} but hidden_size is {config.hidden_size}; "
                             "set hidden_size to the matrix's dimension (the embedding feeds the blocks directly)")
        config = copy.deepcopy(config)  # the caller's config is left as it was
        uses_matrix = config.frozen_embedding or config.embedding_init == "glyph"
        if uses_matrix:
            config.embedding_hash = matrix_sha256(glyph_matrix)
        model = cls(config)
        if uses_matrix:
            with torch.no_grad():
                model.model.embed_tokens.weight.copy_(glyph_matrix)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def generate(self, inputs: torch.Tensor | None = None, generation_config: Any = None, **kwargs: Any):
        """`GenerationMixin.generate`, with the two ordinary mistakes caught before any work: an
        empty prompt (the forward has nothing to attend to), and a prompt plus `max_new_tokens`
        (or `max_length`) longer than the context, which would fail only after generating."""
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(ids, torch.Tensor) and kwargs.get("inputs_embeds") is None:
            n = ids.shape[-1]
            if n == 0:
                raise ValueError("the prompt is empty: give at least one token (e.g. the tokenizer's bos_token, <s>)")
            gc = generation_config if generation_config is not None else self.generation_config
            new = kwargs.get("max_new_tokens", getattr(gc, "max_new_tokens", None))
            total = n + new if new is not None else kwargs.get("max_length", getattr(gc, "max_length", None))
            ctx = self.config.max_position_embeddings
            if total is not None and total > ctx:
                raise ValueError(f"the prompt has {n} tokens and {total - n} more were asked for, {total} in all, "
                                 f"longer than the context of {ctx} tokens: use max_new_tokens<={max(ctx - n, 0)} or "
                                 "a shorter prompt")
        return super().generate(inputs, generation_config=generation_config, **kwargs)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                logits_to_keep: int = 0, return_logits: bool | None = None,
                num_items_in_batch: int | torch.Tensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Logits (B, T, V) and/or loss; `cache` is a transformers `Cache` (generate passes it).

        * `labels` (B, T) follow HF: position t is scored against labels[t + 1], -100 is ignored;
          the loss is the chunked cross-entropy (mean over scored tokens, or sum divided by
          `num_items_in_batch` for gradient accumulation). With labels, `logits` is None unless
          `return_logits=True` (which builds the full (B, T, V) tensor: evaluation only).
        * `attention_mask` (B, S) of 1/0 over cache + input (left padding); position ids then
          default to the running count of real tokens (as `generate` computes them).
        * `output_hidden_states`: n_layers + 1 tensors (B, T, d): the embedding output first,
          then each block's output, except that the last entry is *after* `ln_f` (HF
          convention, so `lm_head(hidden_states[-1]) == logits`).
        * `output_attentions` (or config `_attn_implementation="eager"`) takes the eager path
          and returns per-layer softmax weights (B, H, T, S); otherwise fused SDPA.
        * `past_key_values` (the pre-5 name) is an alias of `cache`. Other keys that generate or
          a tokenizer may pass (e.g. `token_type_ids`) are ignored.
        """
        if cache is None and kwargs.get("past_key_values") is not None:
            cache = kwargs["past_key_values"]
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and labels is None
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        hidden, cache, hidden_states, attentions = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions)

        loss = logits = None
        if labels is not None:
            loss = chunked_cross_entropy(hidden, self.lm_head.weight, labels, self.config.loss_chunk_size,
                                         num_items_in_batch)
        if labels is None or return_logits:
            kept = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
            logits = self.lm_head(kept)  # (B, T or logits_to_keep, V)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None,
                                     hidden_states=hidden_states, attentions=attentions)
        return out if return_dict is not False else out.to_tuple()


# generate() calls inspect.signature(model.forward) at every decoding step for classes registered
# for the Auto classes (transformers' remote-code check for `cache_position`); computed once here,
# that is ~30 us less per generated token
BVVForCausalLM.forward.__signature__ = inspect.signature(BVVForCausalLM.forward)


# ----------------------------------------------------------------------------------------------
# Llama equivalence
# ----------------------------------------------------------------------------------------------
def llama_config(config: BVVConfig):
    """The `LlamaConfig` of the same shape (needs norm_type="rmsnorm" and mlp_type="swiglu")."""
    from transformers import LlamaConfig

    if config.norm_type != "rmsnorm" or config.mlp_type != "swiglu" or config.bias:
        raise ValueError("only norm_type='rmsnorm' with mlp_type='swiglu' and bias=False maps onto LlamaForCausalLM; "
                         f"this config has {config.norm_type!r}, {config.mlp_type!r}, bias={config.bias}")
    return LlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                       intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
                       num_attention_heads=config.num_attention_heads,
                       num_key_value_heads=config.num_attention_heads, hidden_act="silu",
                       max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.norm_eps,
                       rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
                       tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                       pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id,
                       eos_token_id=config.eos_token_id)


def llama_state_dict(model: BVVForCausalLM) -> dict[str, torch.Tensor]:
    """Our weights under `LlamaForCausalLM`'s names (fused q/k/v and gate/up split apart)."""
    sd = {"model.embed_tokens.weight": model.model.embed_tokens.weight.detach(),
          "model.norm.weight": model.model.ln_f.weight.detach(),
          "lm_head.weight": model.lm_head.weight.detach()}
    for i, b in enumerate(model.model.blocks):
        p = f"model.layers.{i}."
        q, k, v = b.attn.qkv_proj.weight.detach().chunk(3, dim=0)
        gate, up = b.mlp.up_proj.weight.detach().chunk(2, dim=0)
        sd.update({p + "input_layernorm.weight": b.ln_1.weight.detach(),
                   p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                   p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": b.attn.o_proj.weight.detach(),
                   p + "post_attention_layernorm.weight": b.ln_2.weight.detach(),
                   p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": b.mlp.down_proj.weight.detach()})
    return {k: v.clone() for k, v in sd.items()}


def to_llama(model: BVVForCausalLM, attn_implementation: str = "sdpa"):
    """A `LlamaForCausalLM` that computes the same function (RMSNorm + SwiGLU configs only)."""
    from transformers import LlamaForCausalLM

    cfg = llama_config(model.config)
    cfg._attn_implementation = attn_implementation
    llama = LlamaForCausalLM(cfg).to(model.lm_head.weight.dtype)
    missing, unexpected = llama.load_state_dict(llama_state_dict(model), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"Llama mapping incomplete: missing {missing}, unexpected {unexpected}")
    return llama.eval() if not model.training else llama


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
if __name__.startswith("bvvlab"):
    # inside bvvlab the Auto classes know "bvv" natively (no remote code, isinstance holds), and
    # save_pretrained writes auto_map + this file so that bvvlab-free processes can load it
    AutoConfig.register("bvv", BVVConfig, exist_ok=True)
    AutoModelForCausalLM.register(BVVConfig, BVVForCausalLM, exist_ok=True)
    BVVConfig.register_for_auto_class()
    BVVForCausalLM.register_for_auto_class("AutoModelForCausalLM")
elif "bvv" not in CONFIG_MAPPING:
    # running as a checkpoint's remote code: once the model is loaded, let AutoConfig know "bvv",
    # so a following AutoTokenizer.from_pretrained(dir) (the card's order) does not stop at
    # transformers' interactive "run the custom code? [y/N]" prompt (docs/stack.md section 2.9)
    AutoConfig.register("bvv", BVVConfig)
