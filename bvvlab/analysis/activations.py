"""Hidden states of every layer for a set of items.

`hidden_states`: batched with left padding (position ids count real tokens only, so a padded item
equals the unpadded one), pooled at the item's last token or over its tokens, optionally streamed
to a memory-mapped file; `lens_logits`: the logit lens through the model's final norm and head.
A fused checkpoint is probed expert by expert: each expert's n_layers + 1 states are taken from
the fused forward by their `hidden_state_sources` labels, with that expert's norm and head."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bvvlab.analysis.items import Item, ProbeError
from bvvlab.models.checkpoints import EXPERT_SEP

POOLINGS = ("last", "mean")
MEMMAP_BYTES = 1 << 30  # hidden states larger than this stream to a memory-mapped temporary file, not RAM


# ============================================================================ models


def lens_modules(model: torch.nn.Module) -> tuple[Any, Any, str]:
    """(final norm, head, reason): the modules the logit lens needs, found by the usual Hugging
    Face names; None and a reason where not found (the probe and the widgets' layer explorer)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None) or getattr(model, "model", None)
    norm = None
    for owner in (base, getattr(model, "model", None), getattr(model, "transformer", None)):
        for name in ("ln_f", "norm", "final_layernorm", "final_layer_norm"):
            if owner is not None and isinstance(getattr(owner, name, None), torch.nn.Module):
                norm = getattr(owner, name)
                break
        if norm is not None:
            break
    if head is None:
        return None, None, "no output head found (get_output_embeddings() is None)"
    if norm is None:
        return None, head, "no final norm found (looked for ln_f, norm, final_layernorm)"
    return norm, head, ""


@dataclass
class Loaded:
    """The probe's view of a model (over `bvvlab.models.loader.Loaded`, or a model in memory): its
    layer count and the final norm and head the logit lens needs."""

    model: Any
    tokenizer: Any
    name: str
    path: str
    n_layers: int
    norm: Any = None
    head: Any = None
    lens_reason: str = ""
    expert: str | None = None  # a fused checkpoint's expert: its hidden states (by hidden_state_sources)


def view(model: Any, tokenizer: Any, name: str, path: str = "", device: Any = None) -> Loaded:
    """A loaded causal LM as a probe target: one forward of one token checks that it returns
    hidden states (one line when it takes no `output_hidden_states` or gives none)."""
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    n_layers = getattr(model.config, "num_hidden_layers", None)
    with torch.no_grad():
        ids = torch.tensor([[_first_id(tokenizer)]], device=device)
        try:
            out = model(input_ids=ids, output_hidden_states=True)
        except TypeError:
            raise ProbeError(f"{path or name}: the model's forward takes no output_hidden_states: it cannot be "
                             "probed") from None
    hs = getattr(out, "hidden_states", None)
    if not hs:
        raise ProbeError(f"{path or name}: the model returns no hidden states (output_hidden_states=True gave none)")
    norm, head, reason = lens_modules(model)
    n = len(hs) - 1 if not isinstance(n_layers, int) else n_layers
    return Loaded(model, tokenizer, name, path, n, norm, head, reason)


def _states(lm: Loaded, out: Any) -> tuple:
    """The n_layers + 1 hidden states of `lm` in a forward's output: a fused model's flat tuple
    holds every expert's, each labelled (expert, layer) by `hidden_state_sources`; `lm.expert`'s
    are taken by those labels."""
    hs = out.hidden_states
    if lm.expert is None:
        return hs
    sources = getattr(out, "hidden_state_sources", None)
    if not sources or len(sources) != len(hs):
        raise ProbeError(f"{lm.path}: the fused model's hidden states carry no (expert, layer) labels "
                         "(hidden_state_sources): re-run `bvvlab fuse` with this bvvlab")
    return tuple(h for h, (e, _) in zip(hs, sources) if e == lm.expert)


def _load(path: str | os.PathLike, device: Any, name: str | None, trust_remote_code: bool) -> Any:
    """`bvvlab.models.loader.load`, its one-line errors as the probe's."""
    from bvvlab.models.checkpoints import CheckpointError
    from bvvlab.models.loader import load

    try:
        return load(path, device, label=name, trust_remote_code=trust_remote_code)
    except CheckpointError as exc:
        raise ProbeError(str(exc)) from None


def load_models(path: str | os.PathLike, device: Any = "cpu", name: str | None = None,
                trust_remote_code: bool = False) -> list[Loaded]:
    """The probe targets `path` stands for: a fused checkpoint (written by `bvvlab fuse`) gives
    one view per expert, named LABEL/EXPERT, all over one loaded fused model
    (`FUSED_DIR::EXPERT` gives that one); any other checkpoint gives itself."""
    lm = _load(path, device, name, trust_remote_code)
    if lm.kind == "fused" and lm.expert is None:
        return [_expert_view(lm, e, f"{lm.label}/{e}") for e in lm.experts]
    return [_view(lm, lm.expert, lm.label)]


def _expert_view(lm: Any, expert: str, name: str) -> Loaded:
    """One expert of a loaded fused model as a probe target: its layers, final norm and head."""
    names = lm.experts
    if expert not in names:
        raise ProbeError(f"{lm.spec} has no expert {expert!r}: its experts are {', '.join(names)} "
                         f"(name one as {lm.path}{EXPERT_SEP}{names[0]})")
    model, device = lm.model, next(lm.model.parameters()).device
    sub = model.experts[names.index(expert)]
    out_lm = Loaded(model, lm.tokenizer, name, str(lm.path), int(sub.config.num_hidden_layers), sub.model.ln_f,
                    sub.lm_head, "", expert)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[_first_id(lm.tokenizer)]], device=device), output_hidden_states=True,
                    use_cache=False)
    if len(_states(out_lm, out)) != out_lm.n_layers + 1:
        raise ProbeError(f"{lm.path}: expert {expert!r} returned {len(_states(out_lm, out))} hidden states for "
                         f"{out_lm.n_layers} layers")
    return out_lm


def _view(lm: Any, expert: str | int | None, name: str) -> Loaded:
    """The probe target of a loaded model: a fused one only through one of its experts."""
    if lm.kind == "fused":
        names = lm.experts
        if expert is None:
            raise ProbeError(f"{lm.spec} is a fused checkpoint of experts {', '.join(names)}: probe one at a time "
                             f"({lm.spec}{EXPERT_SEP}{names[0]}, or load_models for all)")
        if isinstance(expert, int):
            expert = names[expert] if -len(names) <= expert < len(names) else str(expert)
        return _expert_view(lm, expert, name if lm.expert is not None else f"{name}/{expert}")
    if expert is not None:
        raise ProbeError(f"{lm.spec} is not a fused checkpoint, so it has no expert {expert!r}: drop "
                         f"{EXPERT_SEP}{expert}")
    return view(lm.model, lm.tokenizer, name, str(lm.path))


def load_model(path: str | os.PathLike, device: Any = "cpu", name: str | None = None,
               expert: str | int | None = None, trust_remote_code: bool = False) -> Loaded:
    """One probe target through the one loader (`bvvlab.models.loader.load`): a bvvlab checkpoint
    (run or checkpoint folder), any HF causal LM directory, or one expert of a fused checkpoint:
    `expert` (a name or an index) or `FUSED_DIR::NAME` picks it (`load_models` gives all of them).
    One line when it is not a causal LM or returns no hidden states."""
    lm = _load(path, device, name, trust_remote_code)
    return _view(lm, lm.expert if lm.expert is not None else expert, lm.label)


def _first_id(tok) -> int:
    ids = tok("a", add_special_tokens=False)["input_ids"]
    return ids[0] if ids else 0


def _encode(tok, texts: Sequence[str], max_tokens: int | None) -> list[list[int]]:
    out = []
    for i, t in enumerate(texts):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ProbeError(f"item {i} ({t!r}) encodes to no tokens: drop it")
        out.append(ids[:max_tokens] if max_tokens else ids)
    return out


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Layer indices into the n_layers + 1 hidden states (negative counts from the end)."""
    if layers is None:
        return list(range(n_layers + 1))
    out = []
    for l in layers:
        if not -(n_layers + 1) <= int(l) <= n_layers:
            raise ProbeError(f"layer {l} is out of range: this model has {n_layers} layers, so hidden states "
                             f"0..{n_layers} (0 = the embedding output, {n_layers} = after the final norm)")
        out.append(int(l) % (n_layers + 1))
    return out


@dataclass
class States:
    """Pooled hidden states (n_layers_kept, n_items, d) and, where asked, the logit-lens summary."""

    pooled: np.ndarray
    layers: list[int]
    lens: dict[str, Any] | None = None
    token_ids: list[list[int]] | None = None


def lens_logits(norm, head, hidden: torch.Tensor, layer: int, n_layers: int) -> torch.Tensor:
    """Logits of a hidden state through the final norm and the head. The last hidden state is
    already after the final norm (HF convention), so it goes through the head alone: at the last
    layer this is the model's own logits, exactly."""
    return head(hidden if layer == n_layers else norm(hidden))


def _keeps_logits(model: Any) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def padded_batches(lm: Loaded, ids: list[list[int]], batch_size: int, device: Any, pad: int):
    """(item indices, ids, mask, hidden states) per left-padded batch of similar lengths; position
    ids count real tokens only, so a padded item sees the positions it would see alone. Shared by
    `hidden_states` and `latent.latent_language`: one batching rule for every forward of a probe."""
    from bvvlab.eval.scoring import left_pad

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    kw = {"logits_to_keep": 1} if _keeps_logits(lm.model) else {}  # the head over every position is not needed
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x, mask = left_pad([ids[i] for i in idx], pad, device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm.model(input_ids=x, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False,
                       **kw)
        hs = _states(lm, out)
        if len(hs) != lm.n_layers + 1:
            raise ProbeError(f"{lm.path}: the model returned {len(hs)} hidden states for {lm.n_layers} layers "
                             "(expected n_layers + 1: the embedding output, then each layer)")
        yield idx, x, mask, hs


@torch.no_grad()
def hidden_states(lm: Loaded, items: Sequence[Item] | Sequence[str], pooling: str = "last", batch_size: int = 64,
                  layers: Sequence[int] | None = None, max_tokens: int | None = 64, lens: bool = False,
                  memmap: str | os.PathLike | None = None) -> States:
    """Hidden states of every kept layer for every item, pooled per item.

    Items are sorted by length and batched with left padding: the attention mask hides the
    padding and position ids count real tokens only, so a padded item's states equal its
    unpadded ones. `pooling` "last": the item's last token; "mean": the mean over its tokens;
    "tokens": every real token (concatenated in item order: token-level comparisons).
    `lens=True` also runs the logit lens on every next-token prediction inside the items.
    `memmap`: a file to stream the states to; without one, states over `MEMMAP_BYTES` go to a
    memory-mapped temporary file (unlinked at once) instead of RAM.
    """
    if pooling not in POOLINGS + ("tokens",):
        raise ProbeError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    model, tok = lm.model, lm.tokenizer
    texts = [it.text if isinstance(it, Item) else it for it in items]
    if not texts:
        raise ProbeError("no items to probe")
    keep = check_layers(layers, lm.n_layers)
    ids = _encode(tok, texts, max_tokens)
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    d = int(model.config.hidden_size)
    n_rows = sum(len(x) for x in ids) if pooling == "tokens" else len(ids)
    starts = np.concatenate([[0], np.cumsum([len(x) for x in ids])])
    pooled = _state_buffer((len(keep), n_rows, d), memmap)
    do_lens = lens and lm.head is not None and lm.norm is not None
    lens_rank = [[] for _ in keep]
    lens_kl = [[] for _ in keep]
    for idx, x, mask, hs in padded_batches(lm, ids, batch_size, device, pad):
        T = x.shape[1]
        m = mask.unsqueeze(-1).to(hs[0].dtype)
        for k, l in enumerate(keep):
            h = hs[l]
            if pooling == "last":
                v = h[:, -1]
            elif pooling == "mean":
                v = (h * m).sum(1) / m.sum(1)
            else:
                v = None
                for r, i in enumerate(idx):
                    pooled[k, starts[i]:starts[i + 1]] = h[r, T - len(ids[i]):].float().cpu().numpy()
            if v is not None:
                pooled[k, idx] = v.float().cpu().numpy()
        if do_lens and T > 1:
            tgt = x[:, 1:]
            valid = (mask[:, :-1] * mask[:, 1:]).bool()
            final = torch.log_softmax(lens_logits(lm.norm, lm.head, hs[-1][:, :-1], lm.n_layers, lm.n_layers).float(), -1)
            for k, l in enumerate(keep):
                lp = torch.log_softmax(lens_logits(lm.norm, lm.head, hs[l][:, :-1], l, lm.n_layers).float(), -1)
                true = lp.gather(-1, tgt.unsqueeze(-1))
                rank = (lp > true).sum(-1) + 1
                kl = (final.exp() * (final - lp)).sum(-1)
                lens_rank[k].append(rank[valid].cpu().numpy())
                lens_kl[k].append(kl[valid].cpu().numpy())
    lens_out = _lens_summary(lm, keep, lens_rank, lens_kl, do_lens) if lens else None
    if isinstance(pooled, np.memmap):
        pooled.flush()
    return States(pooled, keep, lens_out, ids)


def _state_buffer(shape: tuple[int, int, int], memmap: str | os.PathLike | None) -> np.ndarray:
    """Where `hidden_states` writes the pooled states: the caller's `memmap` file; a memory-mapped
    temporary file (unlinked at once) when they exceed `MEMMAP_BYTES`; else RAM."""
    if memmap is None and 4 * int(np.prod(shape)) > MEMMAP_BYTES:  # large: a temporary file, not RAM
        import tempfile

        fd, tmp_name = tempfile.mkstemp(suffix=".npy", prefix="bvvlab-states-")
        os.close(fd)
        pooled = np.lib.format.open_memmap(tmp_name, mode="w+", dtype=np.float32, shape=shape)
        os.unlink(tmp_name)  # the mapping stays valid; the space is freed when the array goes
        return pooled
    if memmap is not None:
        return np.lib.format.open_memmap(str(memmap), mode="w+", dtype=np.float32, shape=shape)
    return np.empty(shape, dtype=np.float32)


def _lens_summary(lm: Loaded, keep: list[int], lens_rank: list[list[np.ndarray]], lens_kl: list[list[np.ndarray]],
                  available: bool) -> dict[str, Any]:
    """The logit lens per kept layer over every next-token prediction inside the items: median and
    mean log rank of the true token, top-1 accuracy, KL to the final layer, and chance levels."""
    if not available:
        return {"available": False, "reason": f"logit lens unavailable for {lm.name}: {lm.lens_reason}"}
    if not lens_rank[0]:
        return {"available": False, "reason": "logit lens needs items of two or more tokens"}
    ranks = [np.concatenate(r) for r in lens_rank]
    kls = [np.concatenate(k) for k in lens_kl]
    V = int(lm.head.weight.shape[0]) if hasattr(lm.head, "weight") else None
    return {"available": True, "layers": keep, "n_predictions": int(len(ranks[0])),
            "median_rank": [float(np.median(r)) for r in ranks],
            "mean_log_rank": [float(np.mean(np.log(r))) for r in ranks],
            "top1": [float(np.mean(r == 1)) for r in ranks],
            "kl_to_final": [float(np.mean(k)) for k in kls],
            "chance_top1": 1.0 / V if V else None, "chance_median_rank": (V + 1) / 2 if V else None}
