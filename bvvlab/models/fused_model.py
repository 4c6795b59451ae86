"""Experts that share one frozen glyph matrix, fused at the head (docs/recipe.md section 5).

`best_bvv_moe` is best_bvv_ru + best_bvv_zh: both experts read the same input ids through the
same frozen matrix, and the published fusion is the plain mean of their logits, with no router
and no retraining (section 5). Because the matrix is frozen and shared, it is stored here ONCE
(`embed_tokens.weight`, its sha256 in `config.embedding_hash`); every expert reads it through
`inputs_embeds`. Experts may differ in depth and width (heads, MLP size); their hidden size is
the matrix's dimension.

Methods (`config.method`), each a next-token distribution per position:

* `mean_logits`: the published fusion, the arithmetic mean of the experts' logits.
* `mean_probs`: the mean of the experts' probabilities (a uniform mixture).
* `entropy`: a per-token mixture of probabilities, expert e weighted by
  softmax_e(-H_e / entropy_temperature), H_e its predictive entropy (nats) at that position:
  the expert that is sure of the next token counts more. Training-free.
* `bayes`: the posterior over experts given the prefix: weights softmax_e(log prior + sum of
  log p_e(observed token) over the prefix so far), the Bayesian model average. Training-free.
* `bayes_decay`: the same with the evidence decayed by `bayes_decay` per token (an exponential
  forgetting of old evidence, so the posterior can follow a switch of language inside a text).

Output `logits` are the fused log-probabilities for the mixtures (valid logits for sampling
and cross-entropy), the mean logits for `mean_logits`. `weights` (B, T, N) are the experts'
weights at every position (non-negative, sum 1). `output_hidden_states` gives
`expert_hidden_states` (expert name -> that expert's tuple of n_layers + 1 tensors) and the
flat `hidden_states` with `hidden_state_sources`, an (expert name, layer) pair per tensor.

The key-value cache is one `DynamicCache` over all experts' layers (expert e's layer i is layer
offset_e + i); the Bayesian methods keep their running evidence on that cache object (and its
batch operations, e.g. `reorder_cache`, reorder the evidence too), so a cached generation equals
an uncached one. Left padding adds no evidence: a token counts only when it and the token before
it are real, so a left-padded row gets the weights of the same row unpadded.

This file is the fused checkpoint's trust_remote_code file: it imports only the standard library,
torch, transformers and, relatively, the expert model file saved beside it (`model.py`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .model import BVVConfig, BVVForCausalLM, FrozenEmbedding, matrix_sha256

METHODS = ("mean_logits", "mean_probs", "entropy", "bayes", "bayes_decay")
_STATE = "_bvv_fusion_state"  # attribute of the cache object holding the Bayesian evidence


def unique_names(names: list) -> list[str]:
    """`names` with a repeat renamed `name#2`, `name#3`, ... (the loader's rule for a checkpoint named
    twice). `bvvlab fuse` refuses repeated names, but fused folders written before it did hold
    them, and two experts under one name would overwrite each other's hidden states."""
    out: list[str] = []
    for name in map(str, names):
        k, new = 1, name
        while new in out:
            k += 1
            new = f"{name}#{k}"
        out.append(new)
    return out


class FusedConfig(PreTrainedConfig):
    """N expert configs over one shared frozen matrix, and how their predictions are combined."""

    model_type = "bvv_fused"

    expert_configs: list | None = None  # each expert's BVVConfig as a dict (to_dict())
    expert_names: list | None = None  # a short name per expert (hidden-state labels, reports)
    method: str = "bayes"  # one of METHODS
    entropy_temperature: float = 1.0  # `entropy`: weights softmax(-H / temperature), H in nats
    bayes_decay: float = 0.9  # `bayes_decay`: evidence decay per token (1.0 is plain `bayes`)
    prior: list | None = None  # prior weights of the experts (None: uniform)
    vocab_size: int = 0  # rows of the shared matrix (== every expert's vocab_size)
    hidden_size: int = 0  # the shared matrix's dimension (== every expert's hidden_size)
    num_hidden_layers: int = 0  # all experts' layers together: the size of the shared KV cache
    max_position_embeddings: int = 0  # the shortest expert context
    embedding_hash: str | None = None  # sha256 of the shared frozen matrix
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.method not in METHODS:
            raise ValueError(f"unknown fusion method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.expert_configs:
            if len(self.expert_configs) < 2:
                raise ValueError(f"a fused model needs at least two experts; got {len(self.expert_configs)}")
            cfgs = [BVVConfig(**_bvv_keys(c)) for c in self.expert_configs]
            self.vocab_size = cfgs[0].vocab_size
            self.hidden_size = cfgs[0].hidden_size
            self.num_hidden_layers = sum(c.num_hidden_layers for c in cfgs)
            self.max_position_embeddings = min(c.max_position_embeddings for c in cfgs)
            if not self.expert_names:
                self.expert_names = [f"expert{i}" for i in range(len(cfgs))]
            self.expert_names = unique_names(self.expert_names)
        if self.prior is not None and (len(self.prior) != len(self.expert_configs or [])
                                       or any(p <= 0 for p in self.prior)):
            raise ValueError(f"prior={self.prior} must give one positive weight per expert")
        if not 0.0 < self.bayes_decay <= 1.0:
            raise ValueError(f"bayes_decay={self.bayes_decay} must be in (0, 1]")
        if self.entropy_temperature <= 0:
            raise ValueError(f"entropy_temperature={self.entropy_temperature} must be positive")

    def expert_config(self, i: int) -> BVVConfig:
        return BVVConfig(**_bvv_keys(self.expert_configs[i]))


def _bvv_keys(d: dict) -> dict:
    """An expert config dict without the keys that belong to its old checkpoint's config.json."""
    drop = {"auto_map", "architectures", "transformers_version", "model_type", "dtype", "torch_dtype"}
    return {k: v for k, v in d.items() if k not in drop}


@dataclass
class FusedCausalLMOutput(CausalLMOutputWithPast):
    """CausalLMOutputWithPast plus the mixture weights and each expert's own outputs."""

    weights: torch.FloatTensor | None = None  # (B, T, N): each expert's weight per position
    expert_logits: tuple | None = None  # N tensors (B, T, V), when asked (output_expert_logits=True)
    expert_hidden_states: dict | None = None  # expert name -> tuple of n_layers + 1 tensors (B, T, d)
    hidden_state_sources: tuple | None = None  # (expert name, layer) of each entry of hidden_states


class _ExpertCache:
    """One expert's view of the shared cache: its layer i is the cache's layer offset + i."""

    def __init__(self, base: Cache, offset: int):
        self.base, self.offset = base, offset

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return self.base.update(key_states, value_states, layer_idx + self.offset, *args, **kwargs)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.base.get_seq_length(layer_idx + self.offset)


def _set_state(cache: Cache, state: dict) -> None:
    """Keep the Bayesian evidence (tensors with the batch in dim 1) on `cache`, and make the
    cache's batch operations (`reorder_cache`, `batch_repeat_interleave`, `batch_select_indices`:
    beam search, a context's cache repeated once per choice in multiple-choice scoring) apply to
    it as they apply to the keys and values."""
    setattr(cache, _STATE, state)
    if getattr(cache, "_bvv_fusion_batch_ops", False):
        return
    cache._bvv_fusion_batch_ops = True

    def follow(name: str, along: Any) -> None:
        inner = getattr(cache, name, None)
        if inner is None:
            return

        def op(arg):
            out = inner(arg)
            st = getattr(cache, _STATE, None)
            if st is not None:
                setattr(cache, _STATE, {k: along(v, arg) for k, v in st.items()})
            return out

        setattr(cache, name, op)

    follow("reorder_cache", lambda v, idx: v.index_select(1, idx.to(v.device)))
    follow("batch_select_indices", lambda v, idx: v[:, idx.to(v.device) if torch.is_tensor(idx) else idx])
    follow("batch_repeat_interleave", lambda v, n: v.repeat_interleave(n, dim=1))


class FusedPreTrainedModel(PreTrainedModel):
    config_class = FusedConfig
    config: FusedConfig
    base_model_prefix = "fused"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # experts initialise themselves (BVVPreTrainedModel); every weight comes from a checkpoint
        from transformers import initialization as init

        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, FrozenEmbedding):
            init.normal_(module.weight, mean=0.0, std=max(1, self.config.hidden_size) ** -0.5)
        elif isinstance(module, nn.LayerNorm) or hasattr(module, "eps") and hasattr(module, "weight"):
            init.ones_(module.weight)


class FusedForCausalLM(FusedPreTrainedModel, GenerationMixin):
    """N `BVVForCausalLM` experts over one frozen matrix (stored once), fused per `config.method`."""

    def __init__(self, config: FusedConfig):
        super().__init__(config)
        if not config.expert_configs or len(config.expert_configs) < 2:
            raise ValueError("a fused model needs at least two expert configs (config.expert_configs)")
        self.embed_tokens = FrozenEmbedding(config.vocab_size, config.hidden_size)
        experts = []
        for i in range(len(config.expert_configs)):
            ecfg = config.expert_config(i)
            if ecfg.vocab_size != config.vocab_size or ecfg.hidden_size != config.hidden_size:
                raise ValueError(f"expert {i} is {ecfg.vocab_size}x{ecfg.hidden_size} but the shared matrix is "
                                 f"{config.vocab_size}x{config.hidden_size}; fuse experts of one matrix")
            ecfg._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
            expert = BVVForCausalLM(ecfg)
            expert.model.embed_tokens = None  # the shared matrix is read once, by the fused model
            experts.append(expert)
        self.experts = nn.ModuleList(experts)
        offsets, n = [], 0
        for e in experts:
            offsets.append(n)
            n += e.config.num_hidden_layers
        self._offsets = offsets
        self.post_init()

    @classmethod
    def from_experts(cls, experts: list, method: str = "bayes", names: list[str] | None = None,
                     **options: Any) -> "FusedForCausalLM":
        """A fused model from loaded `BVVForCausalLM` experts (their weights copied, the shared
        frozen matrix taken once). The caller checks that the experts belong together."""
        if len(experts) < 2:
            raise ValueError(f"fusion needs at least two experts; got {len(experts)}")
        matrix = experts[0].model.embed_tokens.weight
        cfgs = [e.config.to_dict() for e in experts]
        first = experts[0].config
        config = FusedConfig(expert_configs=cfgs, expert_names=names, method=method,
                             embedding_hash=matrix_sha256(matrix), pad_token_id=first.pad_token_id,
                             bos_token_id=first.bos_token_id, eos_token_id=first.eos_token_id, **options)
        model = cls(config)
        with torch.no_grad():
            model.embed_tokens.weight.copy_(matrix)
            for dst, src in zip(model.experts, experts):
                sd = {k: v for k, v in src.state_dict().items() if k != "model.embed_tokens.weight"}
                missing, unexpected = dst.load_state_dict(sd, strict=False)
                if missing or unexpected:
                    raise RuntimeError(f"expert weights do not map: missing {missing}, unexpected {unexpected}")
        return model.to(matrix.dtype).eval()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module | None:
        return None  # N heads, none of them "the" head

    # ------------------------------------------------------------------------------------------
    def mixture_weights(self, logp: torch.Tensor, input_ids: torch.Tensor | None, mask: torch.Tensor | None,
                        cache: Cache | None, past: int) -> torch.Tensor:
        """(B, T, N) weights from per-expert log-probabilities `logp` (N, B, T, V)."""
        N, B, T, _ = logp.shape
        method = self.config.method
        if method in ("mean_logits", "mean_probs"):
            return logp.new_full((B, T, N), 1.0 / N)
        if method == "entropy":
            H = -(logp.exp() * logp).sum(-1)  # (N, B, T) nats
            return torch.softmax(-H / self.config.entropy_temperature, dim=0).permute(1, 2, 0)
        # bayes / bayes_decay: a(t) = decay * a(t-1) + log p_e(x_t | x_<t), weights softmax(log prior + a)
        decay = 1.0 if method == "bayes" else float(self.config.bayes_decay)
        state = getattr(cache, _STATE, None) if cache is not None and past > 0 else None
        a_prev = state["evidence"] if state is not None else logp.new_zeros(N, B)  # (N, B)
        prev = state["last_logp"] if state is not None else None  # (N, B, V) or None
        # score of token t under position t-1's distribution: within the chunk for t >= 1, the
        # stored last position of the previous chunk for t = 0
        scores = logp.new_zeros(N, B, T)
        if T > 1:
            scores[:, :, 1:] = logp[:, :, :-1].gather(-1, input_ids[None, :, 1:, None].expand(N, B, T - 1, 1))[..., 0]
        if prev is not None:
            scores[:, :, 0] = prev.gather(-1, input_ids[None, :, :1].expand(N, B, 1))[..., 0]
        if mask is not None:  # padding adds no evidence: token t counts only if t and t-1 are real
            real = mask[:, past:past + T].to(scores.dtype)  # (B, T)
            before = torch.zeros_like(real)
            before[:, 1:] = real[:, :-1]
            if past > 0:
                before[:, 0] = mask[:, past - 1].to(scores.dtype)
            scores = scores * (real * before)[None]
        if decay == 1.0:
            a = a_prev[:, :, None] + scores.cumsum(-1)  # (N, B, T)
        else:
            t = torch.arange(T, device=logp.device, dtype=logp.dtype)
            powers = torch.where(t[:, None] >= t[None, :], decay ** (t[:, None] - t[None, :]).clamp(min=0),
                                 torch.zeros((), dtype=logp.dtype, device=logp.device))  # (T, T)
            a = scores @ powers.T + a_prev[:, :, None] * decay ** (t + 1)  # (N, B, T)
        log_prior = (torch.tensor(self.config.prior, dtype=logp.dtype, device=logp.device).log()
                     if self.config.prior is not None else logp.new_zeros(N))
        if cache is not None:
            _set_state(cache, {"evidence": a[:, :, -1].detach(), "last_logp": logp[:, :, -1].detach()})
        return torch.softmax(a + log_prior[:, None, None], dim=0).permute(1, 2, 0)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                logits_to_keep: int = 0, return_logits: bool | None = None,
                num_items_in_batch: int | torch.Tensor | None = None, output_expert_logits: bool = False,
                **kwargs) -> FusedCausalLMOutput:
        """Fused logits (B, T, V) and/or loss, like `BVVForCausalLM.forward` (labels: HF
        convention, loss summed / `num_items_in_batch` when given, else the mean). `weights`
        (B, T, N) always; `expert_logits` with `output_expert_logits=True`."""
        if input_ids is None:
            raise ValueError("the fused model needs input_ids (the Bayesian methods score the observed tokens)")
        if cache is None and kwargs.get("past_key_values") is not None:
            cache = kwargs["past_key_values"]
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training and labels is None
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        V = self.config.vocab_size
        if input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= V:
                raise ValueError(f"token id {lo if lo < 0 else hi} is out of range: the fused model's vocab_size is "
                                 f"{V} (valid ids 0..{V - 1}); encode with the checkpoint's own tokenizer")
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        x = self.embed_tokens(input_ids)  # (B, T, d): the shared frozen matrix, read once
        names = list(self.config.expert_names)
        logits_all, hidden_by = [], {}
        for i, expert in enumerate(self.experts):
            view = _ExpertCache(cache, self._offsets[i]) if cache is not None else None
            h, _, hs, _ = expert.model(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids,
                                       cache=view, use_cache=view is not None,
                                       output_hidden_states=output_hidden_states, output_attentions=False)
            logits_all.append(expert.lm_head(h).float())  # (B, T, V)
            if output_hidden_states:
                hidden_by[names[i]] = hs
        z = torch.stack(logits_all)  # (N, B, T, V)
        logp = torch.log_softmax(z, dim=-1)
        w = self.mixture_weights(logp, input_ids, attention_mask, cache, past)  # (B, T, N)
        if self.config.method == "mean_logits":
            fused = z.mean(0)
        else:
            fused = torch.logsumexp(logp + w.permute(2, 0, 1)[..., None].clamp(min=1e-30).log(), dim=0)
        loss = None
        if labels is not None:
            lp = torch.log_softmax(fused, -1)[:, :-1]  # (B, T-1, V)
            tgt = labels[:, 1:]
            valid = tgt != -100
            nll = -lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0] * valid
            denom = num_items_in_batch if num_items_in_batch is not None else valid.sum().clamp(min=1)
            loss = nll.sum() / torch.as_tensor(denom, device=nll.device, dtype=nll.dtype)
        logits = None
        if labels is None or return_logits:
            logits = fused[:, -logits_to_keep:] if logits_to_keep else fused
        hidden_states = sources = None
        if output_hidden_states:
            hidden_states = tuple(t for n in names for t in hidden_by[n])
            sources = tuple((n, j) for n in names for j in range(len(hidden_by[n])))
        out = FusedCausalLMOutput(loss=loss, logits=logits, cache=cache if use_cache else None,
                                  hidden_states=hidden_states, weights=w,
                                  expert_logits=tuple(z.unbind(0)) if output_expert_logits else None,
                                  expert_hidden_states=hidden_by or None, hidden_state_sources=sources)
        return out if return_dict is not False else out.to_tuple()

    def generate(self, inputs: torch.Tensor | None = None, generation_config: Any = None, **kwargs: Any):
        """`GenerationMixin.generate`, with an empty prompt and a prompt plus `max_new_tokens`
        past the shortest expert context refused before any work."""
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        if isinstance(ids, torch.Tensor):
            n = ids.shape[-1]
            if n == 0:
                raise ValueError("the prompt is empty: give at least one token (e.g. the tokenizer's bos_token, <s>)")
            gc = generation_config if generation_config is not None else self.generation_config
            new = kwargs.get("max_new_tokens", getattr(gc, "max_new_tokens", None))
            total = n + new if new is not None else kwargs.get("max_length", getattr(gc, "max_length", None))
            ctx = self.config.max_position_embeddings
            if total is not None and total > ctx:
                raise ValueError(f"the prompt has {n} tokens and {total - n} more were asked for, {total} in all, "
                                 f"longer than the shortest expert context of {ctx} tokens: use "
                                 f"max_new_tokens<={max(ctx - n, 0)} or a shorter prompt")
        return super().generate(inputs, generation_config=generation_config, **kwargs)


# computed once: generate() inspects the forward's signature at every step (see model.py)
FusedForCausalLM.forward.__signature__ = inspect.signature(FusedForCausalLM.forward)


if __name__.startswith("bvvlab"):
    AutoConfig.register("bvv_fused", FusedConfig, exist_ok=True)
    AutoModelForCausalLM.register(FusedConfig, FusedForCausalLM, exist_ok=True)
    FusedConfig.register_for_auto_class()
    FusedForCausalLM.register_for_auto_class("AutoModelForCausalLM")
elif "bvv_fused" not in CONFIG_MAPPING:
    # remote code: let a following AutoTokenizer.from_pretrained(dir) find the config type
    AutoConfig.register("bvv_fused", FusedConfig)
