"""Probing (floor 6): where meaning appears across the layers of a causal LM (issue 11).

Pure functions over hidden states, for any bvvlab checkpoint and any Hugging Face causal LM
directory whose forward returns `hidden_states` (n_layers + 1 tensors: the embedding output
first, the last one after the final norm):

- item sets (`Item`): the concept lexicon (English and Russian lemma of each concept, with its
  category; concepts named held out are flagged and reported separately), held-out parallel
  sentences (LibreOffice help test split + the concept corpus's test pairs), user CSV / JSONL
  files (text, optional label, lang, pair);
- `hidden_states`: every layer for every item, batched with left padding (position ids count
  real tokens only, so a padded item equals the unpadded one), pooled at the item's last token
  or over its tokens, optionally streamed to a memory-mapped file;
- per layer, each with its chance level: cross-lingual retrieval (cosine after centring each
  language; top-1 and MRR, both directions), logistic-regression probes for category and
  language (GroupKFold, groups = concepts), silhouette by category vs by language, the logit
  lens (rank of the true next token, KL to the final distribution), retrieval after removing the
  language direction (mean difference + LDA), linear CKA layer x layer between two models, and
  the latent-language view (lens probability of the answer word and of its source-language
  counterpart on translation prompts, after Wendler et al. 2024);
- figures (plotly): a 2-D map per layer in one figure with a layer slider (UMAP or PCA,
  successive layers Procrustes-aligned so the panels share an orientation), metric-by-layer
  curves, the CKA heatmap, the latent-language curves;
- a fused checkpoint (`bvvlab fuse`) is probed expert by expert: each expert's n_layers + 1
  states are taken from the fused forward by their `hidden_state_sources` labels, with that
  expert's final norm and head for the lens (`load_models(dir)`: all, named DIR/EXPERT;
  `DIR::EXPERT` or `load_model(dir, expert=...)`: one);
- `bvvlab probe CKPT [CKPT ...] --items concepts|sentences|FILE --out DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from bvvlab.corpus import concepts as _concepts
from bvvlab.core.errors import BVVError

POOLINGS = ("last", "mean")
ITEM_SETS = ("concepts", "sentences")
MEMMAP_BYTES = 1 << 30  # hidden states larger than this stream to a memory-mapped temporary file, not RAM
WINDOW_BYTES = 64 << 20  # states larger than this are sent to the metric workers a few layers at a time


class ProbeError(BVVError):
    """Bad probing input: one line naming the problem and the fix."""


# ============================================================================ items


@dataclass(frozen=True)
class Item:
    """One text to probe. Items of one `pair` in different languages are translations of each
    other (retrieval); `group` is what cross-validation keeps together (the concept); `label` is
    the class the probes and the silhouette use (the concept's category)."""

    text: str
    lang: str
    pair: str = ""  # translation group ("" = none)
    label: str = ""  # category ("" = none)
    group: str = ""  # CV group ("" = the pair, else the text)
    heldout: bool = False  # a concept that training never showed
    source: str = ""

    @property
    def cv_group(self) -> str:
        return self.group or self.pair or self.text


def concept_items(heldout: Iterable[str] = (), langs: Sequence[str] = ("en", "ru")) -> list[Item]:
    """The concept lexicon: each concept's English and Russian lemma, labelled by category,
    paired and grouped by concept id; concepts in `heldout` are flagged."""
    held = set(heldout)
    unknown = sorted(held - set(_concepts.LEXICON))
    if unknown:
        raise ProbeError(f"unknown held-out concept id(s) {unknown[:5]}: use ids from bvvlab.corpus.concepts.LEXICON")
    out = []
    for c in _concepts.LEXICON.values():
        forms = {"en": c.en_lemma, "ru": c.ru_lemma}
        for lang in langs:
            out.append(Item(forms[lang], lang, c.id, c.category, c.id, c.id in held, "concepts"))
    return out


def sentence_items(limit: int | None = 250) -> list[Item]:
    """Held-out parallel sentences: up to `limit` pairs of the LibreOffice help en-ru test split
    and up to `limit` of the concept corpus's test pairs (label = the source)."""
    from bvvlab.corpus.sources import parallel_pairs

    out = []
    rows = parallel_pairs("libreoffice-en-ru", "test")[:limit]
    for r in rows:
        out += [Item(r["en"], "en", f"lo:{r['id']}", "libreoffice", source="libreoffice-en-ru"),
                Item(r["ru"], "ru", f"lo:{r['id']}", "libreoffice", source="libreoffice-en-ru")]
    for i, p in enumerate(_concepts.eval_pairs("test")[:limit]):
        out += [Item(p.en, "en", f"cs:{i}", "concepts", source="concepts"),
                Item(p.ru, "ru", f"cs:{i}", "concepts", source="concepts")]
    return out


_PAIR_KEYS = ("pair", "pair_id", "id")


def _file_item(row: dict, where: str) -> Item:
    from bvvlab.corpus.sources import guess_lang

    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProbeError(f"{where}: no text (each row needs a non-empty 'text' field)")
    pair = next((str(row[k]) for k in _PAIR_KEYS if row.get(k) not in (None, "")), "")
    return Item(text, str(row.get("lang") or guess_lang(text)), pair, str(row.get("label") or ""),
                str(row.get("group") or ""), str(row.get("heldout", "")).lower() in ("1", "true", "yes"), "file")


def file_items(path: str | os.PathLike) -> list[Item]:
    """Items from a CSV (header row: text[, label, lang, pair]) or a JSON-lines file (objects
    with those keys). Missing lang: guessed from the script; missing pair: no translation."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"{p}: no such file (--items takes concepts, sentences, a .csv or a .jsonl file)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ProbeError(f"{p} is not UTF-8 text") from None
    items = []
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise ProbeError(f"{p}: the CSV needs a header row with a 'text' column (and optional label, lang, pair)")
        items = [_file_item(r, f"{p} row {i + 2}") for i, r in enumerate(reader)]
    elif p.suffix.lower() in (".jsonl", ".json"):
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ProbeError(f"{p} line {i + 1} is not JSON (one object per line: text, label, lang, pair)") from None
            if not isinstance(row, dict):
                raise ProbeError(f"{p} line {i + 1}: expected a JSON object with a 'text' field")
            items.append(_file_item(row, f"{p} line {i + 1}"))
    else:
        raise ProbeError(f"{p}: unknown item file type {p.suffix!r}: use .csv or .jsonl")
    if not items:
        raise ProbeError(f"{p} holds no items")
    return items


def trained_holdout(path: str | os.PathLike) -> list[str] | None:
    """The concepts a bvvlab checkpoint's training never showed: the `holdout=` of its recorded
    corpus, intersected over the runs it was initialised from (`init_from`: growth stages,
    `--from`); None when it, or a run it came from, records no training config (a Hugging Face
    directory, a fused checkpoint)."""
    from bvvlab.models import checkpoints as C
    from bvvlab.corpus.sources import heldout_concepts

    held: set[str] | None = None
    where: str | os.PathLike | None = _split_spec(path)[0]
    for _ in range(64):  # a model grown or initialised from a parent saw the parent's data too
        try:
            config = C.read_trainer_meta(C.resolve(where)).get("config") or {}
        except Exception:  # noqa: BLE001 - no bvvlab run: nothing recorded
            return None
        if "corpus" not in config:
            return None
        mine = set(heldout_concepts(config["corpus"], strict=False))
        held = mine if held is None else held & mine
        where = config.get("init_from")
        if not where:
            return sorted(held)
    return None


def resolve_heldout(heldout: str | Iterable[str], checkpoints: Sequence[str | os.PathLike] = ()) -> list[str]:
    """`"auto"`: what the checkpoints' training held out (they must agree; models that record no
    training, e.g. an untrained twin, are skipped); `"suite"`: `concepts.suite_holdout()`; `""`:
    none; a comma-separated string or a list: those ids."""
    if isinstance(heldout, str) and heldout.strip() == "auto":
        found = {str(c): h for c in checkpoints if (h := trained_holdout(c)) is not None}
        if len({tuple(h) for h in found.values()}) > 1:
            raise ProbeError("the checkpoints were trained with different held-out concepts (" +
                             "; ".join(f"{c}: {len(h)}" for c, h in found.items()) +
                             "): probe them apart, or name the held-out set with --heldout suite|ID,ID")
        return next(iter(found.values()), [])
    parts = heldout.replace(",", " ").split() if isinstance(heldout, str) else list(heldout)
    try:
        return list(_concepts.parse_holdout(parts))
    except ValueError as exc:
        raise ProbeError(str(exc).replace("concepts?holdout=cat+dog", "--heldout cat,dog")) from None


def load_items(spec: str, heldout: Iterable[str] = (), limit: int | None = None) -> list[Item]:
    """`concepts`, `sentences` or a file path."""
    if spec == "concepts":
        items = concept_items(heldout)
        if limit is None:
            return items
        ids = list(dict.fromkeys(it.pair for it in items))  # concepts, lexicon order (grouped by category)
        step = max(1, len(ids) // max(1, limit))
        keep = set(ids[::step][:limit]) | {it.pair for it in items if it.heldout}  # spread over categories
        return [it for it in items if it.pair in keep]
    if spec == "sentences":
        return sentence_items(250 if limit is None else limit)
    return file_items(spec)


def check_translations(items: Sequence[Item], langs: tuple[str, str] = ("en", "ru")) -> None:
    """Every item with a pair id in one of `langs` needs an item of the other language with the
    same pair id; else one line naming the first offender."""
    have: dict[str, set[str]] = {}
    for it in items:
        if it.pair:
            have.setdefault(it.pair, set()).add(it.lang)
    lonely = [it for it in items if it.pair and it.lang in langs and not set(langs) <= have[it.pair]]
    if lonely:
        it = lonely[0]
        raise ProbeError(f"{len(lonely)} item(s) have no translation: {it.text!r} ({it.lang}, pair {it.pair!r}) has "
                         f"no {'/'.join(set(langs) - {it.lang})} item with the same pair id; add one or drop the pair id")


# ============================================================================ models


def _find_head_and_norm(model: torch.nn.Module) -> tuple[Any, Any, str]:
    """(final norm, head, reason): the modules the logit lens needs; None and a reason where not found."""
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
    model: Any
    tokenizer: Any
    name: str
    path: str
    n_layers: int
    norm: Any = None
    head: Any = None
    lens_reason: str = ""
    expert: str | None = None  # a fused checkpoint's expert: its hidden states (by hidden_state_sources)


EXPERT_SEP = "::"  # `FUSED_DIR::NAME` names one expert of a fused checkpoint on the command line


def _split_spec(path: str | os.PathLike) -> tuple[str, str | None]:
    s = str(path)
    if EXPERT_SEP in s and not Path(s).exists():
        base, expert = s.rsplit(EXPERT_SEP, 1)
        return base, expert or None
    return s, None


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


def load_models(path: str | os.PathLike, device: str = "cpu", name: str | None = None) -> list[Loaded]:
    """`load_model` for every model `path` stands for: a fused checkpoint (written by
    `bvvlab fuse`) gives one `Loaded` per expert, named NAME/EXPERT, all sharing one loaded fused
    model (`FUSED_DIR::EXPERT` gives that one); any other checkpoint gives itself."""
    from bvvlab.models.checkpoints import resolve
    from bvvlab.train.fusion import is_fused_dir

    base, expert = _split_spec(path)
    if expert is not None or not is_fused_dir(resolve(base)):
        return [load_model(path, device, name)]
    first = load_model(path, device, name, expert=0)
    names = list(first.model.config.expert_names)
    prefix = name or Path(base).name
    out = [first]
    for e in names[1:]:
        out.append(_expert_view(first.model, first.tokenizer, first.path, e, f"{prefix}/{e}", device))
    first.name = f"{prefix}/{names[0]}"
    return out


def _expert_view(model: Any, tok: Any, path: str, expert: str, name: str, device: str) -> Loaded:
    """One expert of a loaded fused model as a probe target: its layers, final norm and head."""
    names = list(model.config.expert_names)
    if expert not in names:
        raise ProbeError(f"{path} has no expert {expert!r}: its experts are {', '.join(names)} "
                         f"(name one as {path}{EXPERT_SEP}{names[0]})")
    sub = model.experts[names.index(expert)]
    lm = Loaded(model, tok, name, path, int(sub.config.num_hidden_layers), sub.model.ln_f, sub.lm_head, "", expert)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[_first_id(tok)]], device=device), output_hidden_states=True,
                    use_cache=False)
    if len(_states(lm, out)) != lm.n_layers + 1:
        raise ProbeError(f"{path}: expert {expert!r} returned {len(_states(lm, out))} hidden states for "
                         f"{lm.n_layers} layers")
    return lm


def load_model(path: str | os.PathLike, device: str = "cpu", name: str | None = None,
               expert: str | int | None = None) -> Loaded:
    """A bvvlab checkpoint (run folder or checkpoint folder), a fused checkpoint's expert, or any
    HF causal LM directory with its tokenizer; one line when it is not a causal LM or returns no
    hidden states. bvvlab checkpoints, fused or not, load through `bvvlab.train.fusion.load_any`, the
    loader `bvvlab eval` uses too. A fused checkpoint is probed one expert at a time: `expert`
    (a name or an index) or `FUSED_DIR::NAME` picks it (`load_models` gives all of them)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from bvvlab.models.checkpoints import quiet_hf, resolve
    from bvvlab.train.fusion import is_fused_dir, load_any
    from bvvlab.models.model import BVVConfig

    base, named = _split_spec(path)
    expert = named if named is not None else expert
    p = resolve(base)
    if is_fused_dir(p):
        model, tok = load_any(p, device=device)
        if tok is None:
            raise ProbeError(f"{base} has no tokenizer files: save the tokenizer beside the model")
        names = list(model.config.expert_names)
        if expert is None:
            raise ProbeError(f"{base} is a fused checkpoint of experts {', '.join(names)}: probe one at a time "
                             f"({base}{EXPERT_SEP}{names[0]}, or load_models for all)")
        if isinstance(expert, int):
            expert = names[expert] if -len(names) <= expert < len(names) else str(expert)
        return _expert_view(model, tok, str(p), expert, name or f"{Path(base).name}/{expert}", device)
    if expert is not None:
        raise ProbeError(f"{base} is not a fused checkpoint, so it has no expert {expert!r}: drop "
                         f"{EXPERT_SEP}{expert}")
    try:
        cfg = AutoConfig.from_pretrained(p)
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{path}: config.json cannot be read as a model config ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(cfg, BVVConfig):
        model, tok = load_any(p, device=device)
    else:
        if cfg.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise ProbeError(f"{path}: a {cfg.model_type!r} model is not a causal LM (AutoModelForCausalLM cannot load "
                             "it): pass a causal LM checkpoint")
        try:
            with quiet_hf():
                model = AutoModelForCausalLM.from_pretrained(p).to(device)
            tok = AutoTokenizer.from_pretrained(p)
        except (OSError, ValueError) as exc:
            raise ProbeError(f"{path}: cannot load the model or its tokenizer ({str(exc).splitlines()[0][:160]})") from None
    if tok is None:
        raise ProbeError(f"{path} has no tokenizer files: save the tokenizer beside the model")
    model.eval()
    n_layers = getattr(model.config, "num_hidden_layers", None)
    with torch.no_grad():
        ids = torch.tensor([[_first_id(tok)]], device=device)
        try:
            out = model(input_ids=ids, output_hidden_states=True)
        except TypeError:
            raise ProbeError(f"{path}: the model's forward takes no output_hidden_states: it cannot be probed") from None
    hs = getattr(out, "hidden_states", None)
    if not hs:
        raise ProbeError(f"{path}: the model returns no hidden states (output_hidden_states=True gave none)")
    norm, head, reason = _find_head_and_norm(model)
    return Loaded(model, tok, name or Path(path).name, str(p), len(hs) - 1 if n_layers is None else int(n_layers),
                  norm, head, reason)


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


def _batches(lm: Loaded, ids: list[list[int]], batch_size: int, device: Any, pad: int):
    """(item indices, ids, mask, hidden states) per left-padded batch of similar lengths; position
    ids count real tokens only, so a padded item sees the positions it would see alone."""
    from bvvlab.eval.evaluate import left_pad

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
    shape = (len(keep), n_rows, d)
    if memmap is None and 4 * int(np.prod(shape)) > MEMMAP_BYTES:  # large: a temporary file, not RAM
        import tempfile

        fd, tmp_name = tempfile.mkstemp(suffix=".npy", prefix="bvvlab-states-")
        os.close(fd)
        pooled = np.lib.format.open_memmap(tmp_name, mode="w+", dtype=np.float32, shape=shape)
        os.unlink(tmp_name)  # the mapping stays valid; the space is freed when the array goes
    elif memmap is not None:
        pooled = np.lib.format.open_memmap(str(memmap), mode="w+", dtype=np.float32, shape=shape)
    else:
        pooled = np.empty(shape, dtype=np.float32)
    do_lens = lens and lm.head is not None and lm.norm is not None
    lens_rank = [[] for _ in keep]
    lens_kl = [[] for _ in keep]
    for idx, x, mask, hs in _batches(lm, ids, batch_size, device, pad):
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
    lens_out = None
    if lens:
        if not do_lens:
            lens_out = {"available": False, "reason": f"logit lens unavailable for {lm.name}: {lm.lens_reason}"}
        elif not lens_rank[0]:
            lens_out = {"available": False, "reason": "logit lens needs items of two or more tokens"}
        else:
            ranks = [np.concatenate(r) for r in lens_rank]
            kls = [np.concatenate(k) for k in lens_kl]
            V = int(lm.head.weight.shape[0]) if hasattr(lm.head, "weight") else None
            lens_out = {"available": True, "layers": keep, "n_predictions": int(len(ranks[0])),
                        "median_rank": [float(np.median(r)) for r in ranks],
                        "mean_log_rank": [float(np.mean(np.log(r))) for r in ranks],
                        "top1": [float(np.mean(r == 1)) for r in ranks],
                        "kl_to_final": [float(np.mean(k)) for k in kls],
                        "chance_top1": 1.0 / V if V else None, "chance_median_rank": (V + 1) / 2 if V else None}
    if isinstance(pooled, np.memmap):
        pooled.flush()
    return States(pooled, keep, lens_out, ids)


# ============================================================================ metrics on vectors


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def retrieval_ranks(Q: np.ndarray, G: np.ndarray, q_pair: Sequence[str], g_pair: Sequence[str],
                    centre: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query, the rank (1 = first) of its best-ranked translation among the gallery by
    cosine similarity (each side centred on its own mean when `centre`); ties count against the
    query. Returns (ranks, chance top-1, chance reciprocal rank) per query."""
    Q, G = np.asarray(Q, np.float64), np.asarray(G, np.float64)
    if centre:
        Q, G = Q - Q.mean(0), G - G.mean(0)
    S = _unit(Q) @ _unit(G).T
    qp, gp = np.asarray(q_pair), np.asarray(g_pair)
    same = qp[:, None] == gp[None, :]
    if not same.any(1).all():
        bad = qp[~same.any(1)][0]
        raise ProbeError(f"query pair {bad!r} has no translation in the gallery")
    best = np.where(same, S, -np.inf).max(1)
    ranks = 1 + (np.where(same, -np.inf, S) >= best[:, None] - 1e-12).sum(1)
    n = G.shape[0]
    m = same.sum(1)
    c1 = m / n
    crr = np.array([_chance_rr(n, int(k)) for k in m])
    return ranks, c1, crr


@functools.lru_cache(maxsize=4096)
def _chance_rr(n: int, m: int) -> float:
    """E[1 / rank of the best of m correct items] in a random order of n."""
    # P(best at r) = C(n - r, m - 1) / C(n, m)
    r = np.arange(1, n - m + 2)
    logp = (_lgamma(n - r + 1) - _lgamma(m) - _lgamma(n - r - m + 2)) - (_lgamma(n + 1) - _lgamma(m + 1) - _lgamma(n - m + 1))
    return float(np.sum(np.exp(logp) / r))


def _lgamma(x):
    return np.vectorize(math.lgamma)(np.asarray(x, dtype=np.float64))


def retrieval(X: np.ndarray, items: Sequence[Item], langs: tuple[str, str] = ("en", "ru"), centre: bool = True,
              subsets: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Cross-lingual retrieval both ways, top-1 and MRR with their chance levels; `subsets` (name
    -> boolean mask over items) reports the same over query subsets (the gallery stays whole)."""
    a, b = langs
    la = np.array([it.lang == a and bool(it.pair) for it in items])
    lb = np.array([it.lang == b and bool(it.pair) for it in items])
    pairs = np.array([it.pair for it in items])
    if not la.any() or not lb.any():
        return {"available": False, "reason": f"no paired {a} and {b} items"}
    out: dict[str, Any] = {"available": True, "n_queries": {f"{a}2{b}": int(la.sum()), f"{b}2{a}": int(lb.sum())}}
    for src, dst, name in ((la, lb, f"{a}2{b}"), (lb, la, f"{b}2{a}")):
        ranks, c1, crr = retrieval_ranks(X[src], X[dst], pairs[src], pairs[dst], centre)
        out[f"top1_{name}"] = float(np.mean(ranks == 1))
        out[f"mrr_{name}"] = float(np.mean(1.0 / ranks))
        out[f"chance_top1_{name}"] = float(np.mean(c1))
        out[f"chance_mrr_{name}"] = float(np.mean(crr))
        for sub, mask in (subsets or {}).items():
            sel = mask[src]
            if sel.any():
                out[f"top1_{name}_{sub}"] = float(np.mean(ranks[sel] == 1))
                out[f"mrr_{name}_{sub}"] = float(np.mean(1.0 / ranks[sel]))
    out["top1"] = (out[f"top1_{a}2{b}"] + out[f"top1_{b}2{a}"]) / 2
    out["chance_top1"] = (out[f"chance_top1_{a}2{b}"] + out[f"chance_top1_{b}2{a}"]) / 2
    return out


def remove_language_directions(X: np.ndarray, langs: Sequence[str], method: str = "lda",
                               shrink: float = 0.1) -> np.ndarray:
    """X with each language centred on its own mean and the direction that separates the
    languages projected out: "mean" (the mean difference, Chang et al. 2022) or "lda" (the
    Fisher direction, within-language covariance shrunk towards a multiple of the identity).
    Only two-language sets: the direction is one vector."""
    X = np.asarray(X, np.float64)
    L = np.asarray(langs)
    names = sorted(set(L))
    if len(names) != 2:
        raise ProbeError(f"removing the language direction needs two languages, got {names}")
    mus = [X[L == n].mean(0) for n in names]
    diff = mus[0] - mus[1]
    if method == "lda":
        Xc = np.concatenate([X[L == n] - mu for n, mu in zip(names, mus)])
        Sw = Xc.T @ Xc / max(1, len(Xc) - 2)
        Sw = (1 - shrink) * Sw + shrink * np.trace(Sw) / Sw.shape[0] * np.eye(Sw.shape[0])
        w = np.linalg.solve(Sw, diff)
    elif method == "mean":
        w = diff
    else:
        raise ProbeError(f"method {method!r}: use 'mean' or 'lda'")
    w = w / max(np.linalg.norm(w), 1e-12)
    out = X.copy()
    for n, mu in zip(names, mus):
        out[L == n] -= mu
    return out - np.outer(out @ w, w)


def probe_accuracy(X: np.ndarray, y: Sequence[str], groups: Sequence[str], folds: int = 5, seed: int = 0,
                   max_iter: int = 100) -> dict[str, Any]:
    """Cross-validated accuracy of a logistic-regression probe, groups kept together (GroupKFold:
    a probe never sees the tested concept), beside the majority-class baseline of the same folds.
    The fits run with one BLAS thread: at these sizes more threads only spin against each other and
    against torch's (7x slower with 2 threads on 2 cores, measured)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y, groups = np.unique(np.asarray(y), return_inverse=True)[1], np.asarray(groups)  # int labels: a faster fit
    n_groups = len(set(groups.tolist()))
    if n_groups < folds:
        raise ProbeError(f"{n_groups} groups (concepts) but {folds} cross-validation folds: give at least {folds} "
                         f"concepts or fewer folds (--folds {max(2, n_groups)})")
    if len(set(y.tolist())) < 2:
        return {"available": False, "reason": "one class only"}
    correct = base = 0
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
            if len(set(y[tr].tolist())) < 2:
                pred = np.full(len(te), y[tr][0])
            else:
                sc = StandardScaler().fit(X[tr])
                clf = LogisticRegression(max_iter=max_iter, tol=1e-3, C=1.0, random_state=seed).fit(sc.transform(X[tr]),
                                                                                                   y[tr])
                pred = clf.predict(sc.transform(X[te]))
            correct += int((pred == y[te]).sum())
            vals, counts = np.unique(y[tr], return_counts=True)
            base += int((y[te] == vals[np.argmax(counts)]).sum())
    return {"available": True, "accuracy": correct / len(y), "chance": base / len(y), "folds": folds}


def silhouette(X: np.ndarray, labels: Sequence[str]) -> float | None:
    """Cosine silhouette of `labels` (None with fewer than two labels or a label per item); one
    BLAS thread, as in `probe_accuracy`, so the value is the same in a worker process or here."""
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels)
    k = len(set(labels.tolist()))
    if k < 2 or k >= len(labels):
        return None
    with threadpool_limits(1):
        return float(silhouette_score(X, labels, metric="cosine"))


def _centred_gram(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float64)
    X = X - X.mean(0)
    K = X @ X.T
    return K / max(np.linalg.norm(K), 1e-300)


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of two representations of the same n items (widths may differ)."""
    return float(np.sum(_centred_gram(X) * _centred_gram(Y)))


def cka_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Linear CKA layer x layer: A (La, n, da), B (Lb, n, db) over the same items."""
    if A.shape[1] != B.shape[1]:
        raise ProbeError(f"CKA needs the same items on both sides: {A.shape[1]} vs {B.shape[1]} rows (token-level "
                         "comparison needs the same tokenizer; compare item by item instead)")
    ga = [_centred_gram(a) for a in A]
    gb = [_centred_gram(b) for b in B]
    return np.array([[float(np.sum(x * y)) for y in gb] for x in ga])


# ============================================================================ the latent-language view


def translation_prompts(direction: str = "en2ru", n: int = 60, shots: int = 3, seed: int = 0) -> list[dict[str, str]]:
    """Few-shot word-translation prompts in the corpus's word-line format ("cat — кошка"):
    each with the answer word and its source-language counterpart."""
    import random

    nouns = [c for c in _concepts.LEXICON.values() if c.pos == "noun"]
    rng = random.Random(f"latent:{seed}")
    out = []
    for c in rng.sample(nouns, min(n, len(nouns))):
        demo = rng.sample([d for d in nouns if d is not c], shots)
        src, tgt = ("en", "ru") if direction == "en2ru" else ("ru", "en")
        form = lambda x, lang: x.en_lemma if lang == "en" else x.ru_lemma  # noqa: E731
        lines = [f"{form(d, src)} — {form(d, tgt)}" for d in demo]
        out.append({"prompt": "\n".join(lines + [f"{form(c, src)} — "]), "answer": form(c, tgt),
                    "counterpart": form(c, src), "concept": c.id})
    return out


def _next_token(tok, prompt: str, word: str) -> int:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    full = tok(prompt + word, add_special_tokens=False)["input_ids"]
    if full[:len(p)] == p and len(full) > len(p):
        return full[len(p)]
    w = tok(word, add_special_tokens=False)["input_ids"]
    return w[0] if w else 0


@torch.no_grad()
def latent_language(lm: Loaded, direction: str = "en2ru", n: int = 60, n_boot: int = 500, seed: int = 0,
                    batch_size: int = 16) -> dict[str, Any]:
    """Per layer, the lens probability of the answer's first token and of its source-language
    counterpart's first token at the end of translation prompts; mean with a 95% bootstrap interval.
    Prompts run in length-sorted batches of `batch_size`: small batches pad less (the prompts'
    lengths differ by half), and the forward is matmul-bound, so padding is time."""
    if lm.head is None or lm.norm is None:
        return {"available": False, "reason": f"logit lens unavailable for {lm.name}: {lm.lens_reason}"}
    prompts = translation_prompts(direction, n, seed=seed)
    device = next(lm.model.parameters()).device
    tok = lm.tokenizer
    ids = [tok(p["prompt"], add_special_tokens=False)["input_ids"] for p in prompts]
    want = torch.tensor([[_next_token(tok, p["prompt"], p["answer"]), _next_token(tok, p["prompt"], p["counterpart"])]
                         for p in prompts], device=device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    got = np.zeros((len(prompts), lm.n_layers + 1, 2))
    for idx, _, _, hs in _batches(lm, ids, batch_size, device, pad):
        w = want[idx]
        for l, h in enumerate(hs):
            pr = torch.softmax(lens_logits(lm.norm, lm.head, h[:, -1], l, lm.n_layers).float(), -1)
            got[idx, l] = pr.gather(-1, w).cpu().numpy()
    probs = {"answer": list(got[:, :, 0]), "counterpart": list(got[:, :, 1])}
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"available": True, "direction": direction, "n_prompts": len(prompts)}
    for k, v in probs.items():
        a = np.stack(v)  # (n, L + 1)
        boots = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
        out[k] = {"mean": a.mean(0).tolist(), "lo": np.percentile(boots, 2.5, 0).tolist(),
                  "hi": np.percentile(boots, 97.5, 0).tolist()}
    return out


# ============================================================================ all metrics of one model


def default_jobs() -> int:
    """Worker processes for the per-layer metrics (the probes' fits, retrieval, silhouettes): the
    usable cores, at most 4 (0, this process, where fork is unavailable)."""
    if not sys.platform.startswith("linux"):
        return 0
    return max(1, min(4, len(os.sched_getaffinity(0))))


class _Serial:
    """The pool's interface, run in this process at submit time."""

    _max_workers = 0

    def submit(self, fn, *args, **kwargs) -> Future:
        f: Future = Future()
        f.set_result(fn(*args, **kwargs))
        return f


def _worker_init() -> None:
    """Each worker: one BLAS and one torch thread for good (the jobs are small and the workers
    share the cores), and Ctrl-C left to the parent, which stops the workers itself."""
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1)
    torch.set_num_threads(1)


@contextlib.contextmanager
def probe_pool(jobs: int | None = None):
    """Where the per-layer metrics run: `jobs` forked worker processes (Linux), or this process
    (`jobs` 0, no fork, or a daemonic process). The probes' logistic-regression fits dominate;
    they are small and Python-bound, so threads do not help, and forked workers start in
    milliseconds with scikit-learn already imported (here, before the fork). A worker runs only
    NumPy/scikit-learn code on arrays it is sent, never torch or CUDA, which is what makes forking
    a process that holds a model safe here. While the workers live, this process's torch and BLAS
    threads leave their cores to them (idle OpenMP threads spin and starve the fits otherwise).
    Read the results inside the block: pending jobs are cancelled when it ends. Results do not
    depend on `jobs`."""
    jobs = default_jobs() if jobs is None else int(jobs)
    if jobs < 0:
        raise ProbeError(f"jobs={jobs}: give a number of worker processes, 0 or more (0 computes in this process)")
    if (jobs == 0 or "fork" not in multiprocessing.get_all_start_methods() or not sys.platform.startswith("linux")
            or multiprocessing.current_process().daemon):  # a daemonic process may not have children
        yield _Serial()
        return
    import sklearn.linear_model  # noqa: F401  (imported once here, not once per worker)
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    from concurrent.futures.process import BrokenProcessPool

    from threadpoolctl import threadpool_info, threadpool_limits

    threads = torch.get_num_threads()
    left = max(1, min(threads, len(os.sched_getaffinity(0)) - jobs))
    blas = max([i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"] or [1])
    ex = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init)
    try:
        with warnings.catch_warnings():  # Python >= 3.12 warns about fork in any multi-threaded process: safe here
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            ex.submit(int).result()  # fork the workers now, inside the filter
    except (BrokenProcessPool, OSError) as exc:
        ex.shutdown(wait=False, cancel_futures=True)
        raise ProbeError(f"could not start {jobs} worker processes ({exc}): pass --jobs 0 (jobs=0) to compute in "
                         "this process") from None
    torch.set_num_threads(left)
    try:
        with threadpool_limits(min(left, blas), user_api="blas"):
            yield ex
    except BrokenProcessPool:
        raise ProbeError("a probe worker process died (out of memory?): pass --jobs 0 (jobs=0) to compute in this "
                         "process, or fewer items") from None
    except BaseException:  # Ctrl-C or an error: the queued jobs are not wanted, stop the workers now
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        torch.set_num_threads(threads)
        ex.shutdown(wait=True, cancel_futures=True)


def _resolved(m: dict[str, Any]) -> dict[str, Any]:
    """`m` with every pending metric (a Future in a per-layer list) replaced by its result."""
    return {k: [x.result() if isinstance(x, Future) else x for x in v] if isinstance(v, list) else v
            for k, v in m.items()}


def layer_metrics(states: States, items: Sequence[Item], folds: int = 5, seed: int = 0, probes: bool = True,
                  langs: tuple[str, str] = ("en", "ru"), jobs: int | None = None) -> dict[str, Any]:
    """Every per-layer metric of one model's pooled states, with chance levels beside them
    (computed in `jobs` worker processes, see `probe_pool`)."""
    with probe_pool(jobs) as pool:
        return _resolved(_layer_metrics(states, items, folds, seed, probes, langs, pool))


def _layer_metrics(states: States, items: Sequence[Item], folds: int, seed: int, probes: bool,
                   langs: tuple[str, str], pool: Any) -> dict[str, Any]:
    """`layer_metrics` with every metric submitted to `pool`: the entries are Futures until `_resolved`."""
    items = list(items)
    if states.pooled.shape[1] != len(items):
        raise ProbeError(f"{states.pooled.shape[1]} state rows for {len(items)} items: pool per item (last or mean)")
    paired = [it for it in items if it.pair and it.lang in langs]
    if paired:
        check_translations(items, langs)
    labels = [it.label for it in items]
    lang = [it.lang for it in items]
    groups = [it.cv_group for it in items]
    held = np.array([it.heldout for it in items])
    subsets = {"heldout": held, "trained": ~held} if held.any() else None
    has_labels = all(labels) and len(set(labels)) > 1
    two_langs = sorted({it.lang for it in items}) == sorted(langs)
    per: dict[str, list | None] = dict.fromkeys(("retrieval", "retrieval_raw", "retrieval_neutral", "probe_category",
                                                 "probe_language", "probe_language_neutral", "silhouette_category",
                                                 "silhouette_language"))  # the output's order; unused ones dropped
    if probes:
        n_groups = len(set(groups))
        if n_groups < folds:
            raise ProbeError(f"{n_groups} groups (concepts) but {folds} cross-validation folds: give at least {folds} "
                             f"concepts or fewer folds (--folds {max(2, n_groups)})")
    L = len(states.layers)

    def tasks(k: int) -> list[tuple[str, int, Any, tuple]]:  # (metric, cost rank: 0 longest, function, arguments)
        X = np.asarray(states.pooled[k], dtype=np.float32)
        Xn = remove_language_directions(X, lang, "lda") if two_langs and (probes or paired) else None
        t: list[tuple[str, int, Any, tuple]] = []
        if probes:
            t.append(("probe_category", 0, probe_accuracy, (X, labels, groups, folds, seed)) if has_labels else
                     ("probe_category", 9, None, ()))
            t.append(("probe_language", 1, probe_accuracy, (X, lang, groups, folds, seed)))
            if two_langs:
                t.append(("probe_language_neutral", 1, probe_accuracy, (Xn.astype(np.float32), lang, groups, folds, seed)))
        if paired:
            t.append(("retrieval", 2, retrieval, (X, items, langs, True, subsets)))
            t.append(("retrieval_raw", 2, _short_retrieval, (X, items, langs, False)))
            if two_langs:
                t.append(("retrieval_neutral", 2, _short_retrieval, (Xn, items, langs, False, subsets)))
        t.append(("silhouette_category", 2, silhouette, (X, labels)) if has_labels else ("silhouette_category", 9, None, ()))
        t.append(("silhouette_language", 2, silhouette, (X, lang)))
        return t

    def submit(key: str, k: int, fn: Any, args: tuple) -> None:
        per[key] = per.get(key) or [None] * L
        per[key][k] = pool.submit(fn, *args) if fn is not None else None

    if states.pooled.nbytes > WINDOW_BYTES:  # large: layer by layer, at most workers + 1 layers' arguments held
        in_flight: list[list[Future]] = []
        for k in range(L):
            if len(in_flight) > pool._max_workers:
                wait(in_flight.pop(0))
            for key, _, fn, args in tasks(k):
                submit(key, k, fn, args)
            in_flight.append([v[k] for v in per.values() if v and isinstance(v[k], Future)])
    else:  # longest first (the category probes), so no long job is left to run alone at the end
        every = [(rank, k, key, fn, args) for k in range(L) for key, rank, fn, args in tasks(k)]
        for _, k, key, fn, args in sorted(every, key=lambda t: t[:2]):
            submit(key, k, fn, args)
    per = {k: v for k, v in per.items() if v}
    out: dict[str, Any] = {"layers": states.layers, "n_items": len(items), **per}
    if states.lens is not None:
        out["logit_lens"] = states.lens
    return out


def _short(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("n_")}


def _short_retrieval(*args) -> dict[str, Any]:
    return _short(retrieval(*args))


def curve(metrics: dict[str, Any], key: str, field: str) -> list[float | None]:
    """One number per layer from `layer_metrics` output (None where not available)."""
    vals = metrics.get(key) or []
    return [(v or {}).get(field) if isinstance(v, dict) else v for v in vals]


# ============================================================================ figures


def _coords_2d(X: np.ndarray, method: str, seed: int) -> np.ndarray:
    X = np.asarray(X, np.float64)
    X = X - X.mean(0)
    if method == "umap":
        import umap
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Y = umap.UMAP(n_components=2, n_neighbors=min(15, len(X) - 1), metric="cosine", random_state=seed,
                          n_jobs=1, init="pca" if len(X) > 3 else "random").fit_transform(X)
    elif method == "pca":  # the top two principal axes from the smaller of X'X and XX' (eigh: 10x an SVD's speed)
        n, d = X.shape
        w, V = np.linalg.eigh(X.T @ X if n >= d else X @ X.T)
        V = V[:, ::-1][:, :2]
        Y = X @ V if n >= d else V * np.sqrt(np.clip(w[::-1][:V.shape[1]], 0, None))
        if Y.shape[1] < 2:
            Y = np.pad(Y, ((0, 0), (0, 2 - Y.shape[1])))
    else:
        raise ProbeError(f"map method {method!r}: use 'umap' or 'pca'")
    return _scaled(Y)


def _procrustes(Y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Y rotated/reflected onto ref (orthogonal Procrustes): successive panels share an orientation."""
    U, _, Vt = np.linalg.svd(Y.T @ ref)
    return Y @ (U @ Vt)


MAP_METHODS = ("pca", "umap", "aligned-umap")


def _scaled(Y: np.ndarray) -> np.ndarray:
    Y = Y - Y.mean(0)
    return Y / max(float(np.abs(Y).max()), 1e-12)


def _aligned_umap(states: States, seed: int) -> list[np.ndarray]:
    """umap-learn's AlignedUMAP over the layers: the same items in every layer (identity relations),
    so each panel is fitted jointly with its neighbours and they share an orientation."""
    import umap
    import warnings

    Xs = [np.asarray(states.pooled[k], np.float64) for k in range(len(states.layers))]
    Xs = [X - X.mean(0) for X in Xs]
    n = len(Xs[0])
    if len(Xs) < 2:
        return [_coords_2d(Xs[0], "umap", seed)]
    ident = {i: i for i in range(n)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = umap.AlignedUMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine", random_state=seed,
                               init="random").fit(Xs, relations=[ident] * (len(Xs) - 1))
    return [_scaled(np.asarray(Y)) for Y in fit.embeddings_]


def layer_maps(states: States, method: str = "pca", seed: int = 0) -> list[np.ndarray]:
    """2-D coordinates per layer (in [-1, 1]): "pca" or "umap" per layer, each layer Procrustes-
    aligned to the one before it; "aligned-umap": umap-learn's AlignedUMAP over all layers."""
    if method not in MAP_METHODS:
        raise ProbeError(f"map method {method!r}: use one of {', '.join(MAP_METHODS)}")
    if method == "aligned-umap":
        return _aligned_umap(states, seed)
    maps: list[np.ndarray] = []
    for k in range(len(states.layers)):
        Y = _coords_2d(states.pooled[k], method, seed)
        maps.append(_procrustes(Y, maps[-1]) if maps else Y)
    return maps


_SYMBOLS = ("circle", "x", "diamond", "square", "triangle-up", "star")


def slider_figure(maps: Sequence[np.ndarray], items: Sequence[Item], layers: Sequence[int], title: str = ""):
    """One scatter per layer as plotly frames with a layer slider: colour = label (category),
    symbol = language, the text on hover."""
    import plotly.graph_objects as go
    import plotly.express as px

    labels = sorted({it.label or "(none)" for it in items})
    langs = sorted({it.lang for it in items})
    palette = px.colors.qualitative.Dark24
    groups = [[i for i, it in enumerate(items) if (it.label or "(none)") == lab] for lab in labels]

    symbols = [[_SYMBOLS[langs.index(items[i].lang) % len(_SYMBOLS)] for i in g] for g in groups]
    hover = [[f"{items[i].text} ({items[i].lang}{', held out' if items[i].heldout else ''})" for i in g] for g in groups]

    def traces(Y):  # plain dicts: plotly validates them once, in the Figure (go.Scatter + go.Frame would twice)
        return [{"type": "scatter", "x": Y[g, 0], "y": Y[g, 1], "mode": "markers", "name": lab,
                 "legendgroup": lab, "text": hover[j], "hovertemplate": "%{text}<extra>" + lab + "</extra>",
                 "marker": {"color": palette[j % len(palette)], "size": 7, "opacity": 0.8, "symbol": symbols[j]}}
                for j, (lab, g) in enumerate(zip(labels, groups))]

    frames = [{"data": traces(np.asarray(Y)), "name": str(l)} for Y, l in zip(maps, layers)]
    steps = [{"method": "animate", "label": str(l),
              "args": [[str(l)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}}]}
             for l in layers]
    fig = go.Figure(data=frames[0]["data"], frames=frames)
    sym = ", ".join(f"{s} = {lang}" for s, lang in zip(_SYMBOLS, langs))
    fig.update_layout(title=f"{title} (symbol: {sym})", template="plotly_white", height=650,
                      xaxis={"range": [-1.1, 1.1], "showticklabels": False},
                      yaxis={"range": [-1.1, 1.1], "showticklabels": False, "scaleanchor": "x"},
                      sliders=[{"active": 0, "currentvalue": {"prefix": "layer "}, "steps": steps}])
    return fig


_CURVES = (("retrieval", "top1", "chance_top1", "retrieval top-1 (centred)"),
           ("retrieval_neutral", "top1", "chance_top1", "retrieval top-1, language direction removed"),
           ("probe_category", "accuracy", "chance", "category probe accuracy"),
           ("probe_language", "accuracy", "chance", "language probe accuracy"),
           ("silhouette_category", None, None, "silhouette by category"),
           ("silhouette_language", None, None, "silhouette by language"),
           ("logit_lens", "kl_to_final", None, "logit lens KL to final (nats)"),
           ("logit_lens", "mean_log_rank", None, "logit lens mean log rank of the true token"))


def _lens_curve(m: dict, field: str) -> list | None:
    lens = m.get("logit_lens") or {}
    return lens.get(field) if lens.get("available") else None


def metric_curves(results: dict[str, dict[str, Any]], title: str = "metrics by layer"):
    """Each metric against layer, one colour per model, the chance level dashed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=4, cols=2, subplot_titles=[c[3] for c in _CURVES], vertical_spacing=0.08)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    for j, (name, m) in enumerate(results.items()):
        c = colors[j % len(colors)]
        for k, (key, field, chance, _) in enumerate(_CURVES):
            r, col = divmod(k, 2)
            if key == "logit_lens":
                ys = _lens_curve(m, field)
            elif field is None:
                ys = m.get(key)
            else:
                ys = curve(m, key, field)
            if not ys or all(v is None for v in ys):
                continue
            fig.add_trace(go.Scatter(x=m["layers"], y=ys, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=k == 0, line={"color": c}), row=r + 1, col=col + 1)
            if chance:
                fig.add_trace(go.Scatter(x=m["layers"], y=curve(m, key, chance), mode="lines", name=f"{name} chance",
                                         legendgroup=name, showlegend=False, line={"color": c, "dash": "dash", "width": 1}),
                              row=r + 1, col=col + 1)
    fig.update_layout(title=title + " (dashed: chance)", template="plotly_white", height=1100)
    fig.update_xaxes(title_text="layer (0 = embedding output)", dtick=1)
    return fig


def cka_heatmap(M: np.ndarray, name_a: str, name_b: str, layers_a: Sequence[int], layers_b: Sequence[int]):
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=M, x=[str(l) for l in layers_b], y=[str(l) for l in layers_a], zmin=0, zmax=1,
                               colorscale="Viridis", colorbar={"title": {"text": "CKA"}}))
    fig.update_layout(title=f"linear CKA: {name_a} (rows) vs {name_b} (columns)", template="plotly_white",
                      xaxis={"title": {"text": f"{name_b} layer"}}, yaxis={"title": {"text": f"{name_a} layer"}},
                      height=550, width=620)
    return fig


def latent_figure(latent: dict[str, dict[str, Any]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    colors = {"answer": "#d62728", "counterpart": "#1f77b4"}
    for name, res in latent.items():
        if not res.get("available"):
            continue
        x = list(range(len(res["answer"]["mean"])))
        for k, c in colors.items():
            r = res[k]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=r["hi"] + r["lo"][::-1], fill="toself", fillcolor=c, opacity=0.15,
                                     line={"width": 0}, showlegend=False, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=x, y=r["mean"], mode="lines+markers", line={"color": c},
                                     name=f"{name}: {k} ({res['direction']})"))
    fig.update_layout(title="latent language: lens probability of the answer vs its source-language counterpart "
                            "(band: 95% bootstrap)", template="plotly_white", height=500,
                      xaxis={"title": {"text": "layer"}, "dtick": 1}, yaxis={"title": {"text": "probability"}})
    return fig


# ============================================================================ a whole run


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per (model, layer): retrieval, probes, silhouettes, lens, with chance levels in the header."""
    lines = []
    for name, m in results.items():
        lines.append(f"### {name}\n")
        r0 = (m.get("retrieval") or [{}])[0] or {}
        pc = next((p for p in (m.get("probe_category") or []) if p and p.get("available")), {})
        pl = next((p for p in (m.get("probe_language") or []) if p and p.get("available")), {})
        ch = (f"chance: retrieval top-1 {r0.get('chance_top1', float('nan')):.3f}, category probe "
              f"{pc.get('chance', float('nan')):.3f}, language probe {pl.get('chance', float('nan')):.3f}")
        lines.append(ch + "\n")
        lines.append("| layer | top-1 en->ru | top-1 ru->en | MRR en->ru | top-1 neutral | category probe | "
                     "language probe | sil. category | sil. language | lens KL | lens top-1 |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")

        def f(v):
            return "" if v is None else f"{v:.3f}"

        for k, l in enumerate(m["layers"]):
            row = [str(l)]
            for key, field in (("retrieval", "top1_en2ru"), ("retrieval", "top1_ru2en"), ("retrieval", "mrr_en2ru"),
                               ("retrieval_neutral", "top1"), ("probe_category", "accuracy"),
                               ("probe_language", "accuracy")):
                vals = curve(m, key, field)
                row.append(f(vals[k]) if k < len(vals) else "")
            for key in ("silhouette_category", "silhouette_language"):
                vals = m.get(key) or []
                row.append(f(vals[k]) if k < len(vals) else "")
            for field in ("kl_to_final", "top1"):
                vals = _lens_curve(m, field) or []
                row.append(f(vals[k]) if k < len(vals) else "")
            lines.append("| " + " | ".join(row) + " |")
        lens = m.get("logit_lens")
        if lens and not lens.get("available"):
            lines.append(f"\n{lens['reason']}")
        lines.append("")
    return "\n".join(lines)


def _names(paths: Sequence[str]) -> list[str]:
    names = []
    for p in paths:
        parts = Path(p).resolve().parts
        n = parts[-1]
        if n.startswith("step_") and len(parts) > 2:
            n = f"{parts[-3]}/{n}"
        base, i = n, 2
        while n in names:
            n, i = f"{base}#{i}", i + 1
        names.append(n)
    return names


def probe_models(paths: Sequence[str], items: Sequence[Item], pooling: str = "last", layers: Sequence[int] | None = None,
                 folds: int = 5, device: str = "cpu", batch_size: int = 64, latent: bool = True,
                 cka_level: str = "item", max_tokens: int | None = 64, seed: int = 0,
                 lms: Sequence[Loaded] | None = None, jobs: int | None = None
                 ) -> tuple[dict[str, Any], dict[str, States], dict[str, Loaded]]:
    """Load every model, compute its states and metrics, CKA of the first against each model
    (itself included). Returns (metrics, states by model, loaded models). The forward passes run
    first; then the per-layer metrics run in `jobs` worker processes (`probe_pool`; default: the
    usable cores, at most 4). The results do not depend on `jobs`."""
    if pooling not in POOLINGS:
        raise ProbeError(f"pooling {pooling!r}: use one of {', '.join(POOLINGS)}")
    if cka_level not in ("item", "token"):
        raise ProbeError(f"cka level {cka_level!r}: use 'item' or 'token'")
    items = list(items)
    if any(it.pair for it in items):
        check_translations(items)
    n_groups = len({it.cv_group for it in items})
    if n_groups < folds:
        raise ProbeError(f"{n_groups} groups (concepts) but {folds} cross-validation folds: give at least {folds} "
                         f"concepts or fewer folds (--folds {max(2, n_groups)})")
    t0 = time.perf_counter()
    lms = list(lms) if lms is not None else [lm for p, n in zip(paths, _names(paths)) for lm in load_models(p, device, n)]
    for lm in lms:
        check_layers(layers, lm.n_layers)
    states: dict[str, States] = {}
    lat: dict[str, Any] = {}
    for lm in lms:  # every forward first, with all of torch's threads (matmul-bound: sharing cores slows it 2x)
        states[lm.name] = hidden_states(lm, items, pooling, batch_size, layers, max_tokens, lens=True)
        if latent:
            lat[lm.name] = {d: latent_language(lm, d, seed=seed) for d in ("en2ru", "ru2en")}
    results: dict[str, Any] = {}
    with probe_pool(jobs) as pool:  # then the per-layer metrics, in the workers
        for lm in lms:
            m = _layer_metrics(states[lm.name], items, folds, seed, True, ("en", "ru"), pool)
            m.update(path=lm.path, n_layers=lm.n_layers, model_class=type(lm.model).__name__, expert=lm.expert)
            if latent:
                m["latent_language"] = lat[lm.name]
            results[lm.name] = m
        results = {name: _resolved(m) for name, m in results.items()}
    ref = lms[0]
    cka: dict[str, Any] = {}
    for lm in lms:
        if cka_level == "token":
            ta, tb = states[ref.name].token_ids, states[lm.name].token_ids
            if ta != tb:
                raise ProbeError(f"token-by-token CKA of {ref.name} and {lm.name} needs the same tokenization, and their "
                                 "tokenizers split the items differently: compare item by item (--cka-level item)")
            A = hidden_states(ref, items, "tokens", batch_size, layers, max_tokens).pooled
            B = hidden_states(lm, items, "tokens", batch_size, layers, max_tokens).pooled
        else:
            A, B = states[ref.name].pooled, states[lm.name].pooled
        cka[lm.name] = {"reference": ref.name, "level": cka_level,
                        "matrix": cka_matrix(A, B).tolist(), "layers_a": states[ref.name].layers,
                        "layers_b": states[lm.name].layers}
    meta = {"pooling": pooling, "folds": folds, "n_items": len(items), "seconds": round(time.perf_counter() - t0, 3),
            "items": {"n_heldout": sum(it.heldout for it in items),
                      "langs": sorted({it.lang for it in items}), "labels": sorted({it.label for it in items})}}
    return {"meta": meta, "models": results, "cka": cka}, states, {lm.name: lm for lm in lms}


def write_run(out: str | os.PathLike, metrics: dict[str, Any], states: dict[str, States], items: Sequence[Item],
              umap: bool | str = True, seed: int = 0, overwrite: bool = False) -> Path:
    """metrics.json, metrics.md and the figures into `out`, all or nothing (atomic folder)."""
    from bvvlab.core.atomic import atomic_dir, write_json_atomic

    out = Path(out)
    method = umap if isinstance(umap, str) else ("umap" if umap else "pca")  # True, False or a MAP_METHODS name
    if method not in MAP_METHODS:
        raise ProbeError(f"map method {method!r}: use one of {', '.join(MAP_METHODS)}")
    with atomic_dir(out, replace=overwrite) as tmp:
        figs = {}
        t0 = time.perf_counter()
        for name, st in states.items():
            safe = name.replace("/", "_").replace("#", "_")
            fig = slider_figure(layer_maps(st, method, seed), items, st.layers, title=f"{name}: {method.upper()} per layer")
            figs[f"map_{safe}.html"] = fig
        metrics["meta"]["map_method"] = method
        metrics["meta"]["map_seconds"] = round(time.perf_counter() - t0, 3)
        figs["metrics_by_layer.html"] = metric_curves(metrics["models"])
        for name, c in metrics["cka"].items():
            figs[f"cka_{name.replace('/', '_').replace('#', '_')}.html"] = cka_heatmap(
                np.array(c["matrix"]), c["reference"], name, c["layers_a"], c["layers_b"])
        lat = {f"{n} {d}": r for n, m in metrics["models"].items() for d, r in (m.get("latent_language") or {}).items()}
        if any(r.get("available") for r in lat.values()):
            figs["latent_language.html"] = latent_figure(lat)
        for fname, fig in figs.items():
            fig.write_html(tmp / fname, include_plotlyjs="directory")
        metrics["meta"]["figures"] = sorted(figs)
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "metrics.md").write_text(markdown_table(metrics["models"]), encoding="utf-8")
    return out


# ============================================================================ command line


def _parse_layers(s: str | None) -> list[int] | None:
    if not s:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ProbeError(f"--layers {s!r}: give comma-separated layer indices, e.g. 0,2,4") from None


def add_cli(subparsers) -> None:
    """`bvvlab probe CKPT [CKPT ...] --items concepts|sentences|FILE --out DIR`."""
    p = subparsers.add_parser("probe", help="probe every layer: retrieval, probes, silhouettes, logit lens, CKA, maps")
    p.add_argument("checkpoints", nargs="+", help="run folders, checkpoint folders, HF causal LM directories, or fused "
                                                  f"checkpoints (every expert; DIR{EXPERT_SEP}NAME for one)")
    p.add_argument("--items", default="concepts", help="concepts, sentences, or a .csv/.jsonl file (text, label, lang, pair)")
    p.add_argument("--out", required=True, help="output folder (metrics.json, metrics.md, figures)")
    p.add_argument("--umap", action=argparse.BooleanOptionalAction, default=True,
                   help="UMAP maps per layer (default); --no-umap: PCA (fast)")
    p.add_argument("--aligned-umap", action="store_true",
                   help="umap-learn's AlignedUMAP over all layers instead (panels fitted jointly)")
    p.add_argument("--pooling", choices=POOLINGS, default="last", help="item vector: last token or mean over tokens")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--layers", default=None, help="comma-separated layer indices (default: all, 0 = embedding output)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probes")
    p.add_argument("--heldout", default="auto",
                   help="concepts reported apart: auto (what the checkpoints' training held out, default), suite, "
                        "comma-separated ids, or '' for none")
    p.add_argument("--limit", type=int, default=None, help="at most this many pairs (concepts or sentences of each source)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cka-level", choices=("item", "token"), default="item",
                   help="CKA over pooled items (any tokenizers) or over tokens (same tokenizer only)")
    p.add_argument("--no-latent", action="store_true", help="skip the latent-language view")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None,
                   help=f"worker processes for the per-layer metrics (default: the usable cores, at most 4; now "
                        f"{default_jobs()}); 0: in this process")

    def run(args) -> int:
        if args.jobs is not None and args.jobs < 0:
            raise ProbeError(f"--jobs {args.jobs}: give a number of worker processes, 0 or more (0 fits in this process)")
        if Path(args.out).exists() and not args.overwrite:
            raise ProbeError(f"{args.out} already exists: choose another --out or pass --overwrite")
        held = resolve_heldout(args.heldout, args.checkpoints) if args.items == "concepts" else ()
        items = load_items(args.items, held, args.limit)
        metrics, states, _ = probe_models(args.checkpoints, items, args.pooling, _parse_layers(args.layers), args.folds,
                                          args.device, args.batch_size, not args.no_latent, args.cka_level, seed=args.seed,
                                          jobs=args.jobs)
        maps = "aligned-umap" if args.aligned_umap else args.umap
        out = write_run(args.out, metrics, states, items, maps, args.seed, args.overwrite)
        print(markdown_table(metrics["models"]))
        print(f"wrote {out}/metrics.json, metrics.md and {len(metrics['meta']['figures'])} figures")
        return 0

    p.set_defaults(func=run)


__all__ = ["Item", "ProbeError", "States", "cka_matrix", "concept_items", "default_jobs", "file_items", "hidden_states",
           "latent_language", "layer_metrics", "lens_logits", "linear_cka", "load_items", "load_model", "load_models",
           "metric_curves", "probe_accuracy", "probe_models", "probe_pool", "remove_language_directions", "resolve_heldout", "retrieval",
           "sentence_items", "silhouette", "slider_figure", "trained_holdout", "write_run"]
