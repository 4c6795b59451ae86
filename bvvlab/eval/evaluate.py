"""Evaluation of language models (floor 5, with the trainer, which reports its bits per character).

- Bits per character (docs/recipe.md section 7 calls it the tokenizer-independent figure): the
  summed negative log-likelihood of every target token, in bits, over the characters those
  targets cover, so frozen and unfrozen twins, compact and full vocabularies compare fairly;
  `evaluate_bpc` over a token shard (the trainer), `text_bpc` / `bpc_by_language` over held-out
  text per language (en, ru, zh, mixed), with per-character and per-token perplexity.
- Multiple choice by log-likelihood (`score_choices`, `mc_metrics`): lm-evaluation-harness's
  `acc` and `acc_norm` (log-likelihood over the choice's length in characters); context and
  continuation tokenised separately; each context scored once, its KV cache repeated for all
  of its choices, which run as one batch.
- The author's generative protocol (section 7: prompts, new-token counts, first-letter match,
  SQuAD substring match, sentence BLEU on upper-cased text, 10 runs, mean +/- 1.96 sigma /
  sqrt(n)) in `run_protocol`, with a bootstrap interval over questions beside it.
- Translation: sacrebleu corpus BLEU and chrF (`translation_scores`).
- Tasks: user JSON-lines files, the offline suites in data/eval/ (`build_offline_suites`),
  and MMLU, ARC, CommonsenseQA, SQuAD v2, OPUS-100 in their Hub formats (`hub_task`).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bvvlab.core.atomic import write_json_atomic
from bvvlab.core.runinfo import embedded_data_dir
from bvvlab.train.shards import TokenShard, eval_windows
from bvvlab.core.errors import BVVError


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


# =============================================================================================
# Issue 12: held-out bits/char per language, multiple choice by log-likelihood, the author's
# generative protocol (docs/recipe.md section 7), BLEU/chrF, intervals, task files.
# =============================================================================================

LETTERS = "ABCDEFGHIJ"
_ANSWER_TAIL = "\nAnswer:"


class EvalError(BVVError):
    """Bad evaluation input (task file, task name, model/tokenizer pair): one line with the fix."""


# --------------------------------------------------------------------------------- model checks


def check_pair(model: torch.nn.Module, tokenizer: Any) -> None:
    """A tokenizer whose size differs from the model's vocab_size would index the wrong rows (or
    past the matrix): refused before any scoring."""
    v = getattr(model.config, "vocab_size", None)
    if v is not None and len(tokenizer) != v:
        raise EvalError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {v}: evaluate a "
                        "checkpoint with its own tokenizer (load both with bvvlab.models.checkpoints.load_checkpoint)")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` alone: no special tokens, special-token strings read as text (as the
    token shards are built, bvvlab.train.shards.encode_texts)."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def left_pad(seqs: list[list[int]], pad: int, device: torch.device | str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (len(seqs), longest): each row's tokens at its right end after `pad`s,
    mask 1 on the real tokens. The batch layout of every padded forward here and in
    bvvlab.analysis.probe: with position ids `(mask.cumsum(-1) - 1).clamp(min=0)` (or `generate`, which
    derives them from the mask) a row sees the positions it would see unpadded."""
    T = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for r, s in enumerate(seqs):
        if len(s):
            ids[r, T - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask[r, T - len(s):] = 1
    return (ids, mask) if device is None else (ids.to(device), mask.to(device))


def _prefix(tokenizer: Any, prefix: str | None) -> list[int]:
    """The token a scored text starts after: "eos" (default; in training every document follows
    the previous one's EOS), "bos", or None (nothing, lm-evaluation-harness's hf default)."""
    if prefix is None:
        return []
    tid = {"eos": tokenizer.eos_token_id, "bos": tokenizer.bos_token_id}.get(prefix)
    if tid is None:
        raise EvalError(f"prefix={prefix!r}: use 'eos', 'bos' or None, with a tokenizer that defines that token")
    return [tid]


# --------------------------------------------------------------------------------- bits per char


@torch.no_grad()
def text_bpc(model: torch.nn.Module, tokenizer: Any, texts: list[str], batch: int = 8,
             prefix: str | None = "eos") -> dict[str, float]:
    """Bits per character, nats per token and perplexities of `texts`, each scored as one
    document: after the prefix token (EOS), every token of the text and its closing EOS is a
    target (as `evaluate_bpc` counts a shard). A text longer than the context is cut into windows
    whose first token is the previous window's last (every token a target once).

    Returns `bpc`, `char_ppl` (2**bpc: perplexity per character, comparable across tokenizers),
    `token_ppl` (exp of nats/token: per token, so only within one tokenizer), `tokens`, `chars`.
    """
    check_pair(model, tokenizer)
    texts = [t for t in texts if t]
    if not texts:
        raise EvalError("no text to score: give at least one non-empty held-out text")
    was = model.training
    model.eval()
    dev = _device(model)
    L = int(model.config.max_position_embeddings)
    eos = tokenizer.eos_token_id
    rows: list[list[int]] = []
    for t in texts:
        ids = _prefix(tokenizer, prefix) + encode(tokenizer, t) + ([eos] if eos is not None else [])
        if len(ids) < 2:
            ids = [eos] + ids
        for s in range(0, len(ids) - 1, L - 1):  # windows overlap by one token: each target once
            rows.append(ids[s:s + L])
    rows.sort(key=len)
    nll, n_tok = 0.0, 0
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        T = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), T), 0, dtype=torch.long)
        labels = torch.full((len(chunk), T), -100, dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, :len(r)] = torch.tensor(r)
            labels[j, :len(r)] = torch.tensor(r)
        out = model(input_ids=ids.to(dev), labels=labels.to(dev), num_items_in_batch=1)
        nll += float(out.loss)
        n_tok += sum(len(r) - 1 for r in chunk)
    model.train(was)
    chars = sum(len(t) for t in texts)
    bpc = nll / math.log(2) / chars
    return {"bpc": bpc, "char_ppl": 2.0 ** bpc, "nats_per_token": nll / n_tok, "token_ppl": math.exp(nll / n_tok),
            "tokens": n_tok, "chars": chars, "texts": len(texts)}


def heldout_texts(max_chars: int | None = 20_000) -> dict[str, list[str]]:
    """Held-out text per language from the embedded corpora's *test* splits (never training
    text): en and ru sides of LibreOffice en-ru, the zh side of en-zh, and "mixed" (an English
    paragraph with its Russian translation, one per line, as the parallel documents are
    rendered). At most `max_chars` characters per language (None: all)."""
    from bvvlab.corpus.parallel_text import parallel_pairs

    ru, zh = parallel_pairs("libreoffice-en-ru", "test"), parallel_pairs("libreoffice-en-zh", "test")
    pools = {"en": [r["en"] for r in ru], "ru": [r["ru"] for r in ru], "zh": [r["zh"] for r in zh],
             "mixed": [f"{r['en']}\n{r['ru']}" for r in ru]}
    out = {}
    for lang, texts in pools.items():
        kept, n = [], 0
        for t in texts:
            if max_chars is not None and n >= max_chars:
                break
            kept.append(t)
            n += len(t)
        out[lang] = kept
    return out


def bpc_by_language(model: torch.nn.Module, tokenizer: Any, texts_by_lang: dict[str, list[str]] | None = None,
                    max_chars: int | None = 20_000, batch: int = 8) -> dict[str, dict[str, float]]:
    """`text_bpc` per language (default: `heldout_texts(max_chars)`)."""
    texts_by_lang = heldout_texts(max_chars) if texts_by_lang is None else texts_by_lang
    return {lang: text_bpc(model, tokenizer, texts, batch=batch) for lang, texts in texts_by_lang.items()}


# --------------------------------------------------------------------------------- multiple choice


@dataclass
class MCItem:
    """One multiple-choice question scored by log-likelihood: `context` is followed by each of
    `choices` (continuations, with their leading space); `answer` is the index of the right one."""

    context: str
    choices: list[str]
    answer: int
    meta: dict = field(default_factory=dict)


def _mc_rows(tokenizer: Any, items: list[MCItem], max_len: int, prefix: str | None
             ) -> list[tuple[list[int], list[list[int]]]]:
    """(context ids, [continuation ids]) per item, each side tokenised on its own (a merged n-gram
    never straddles the join); the context is cut on the left when a choice would not fit."""
    out = []
    for k, it in enumerate(items):
        conts = [encode(tokenizer, c) for c in it.choices]
        if any(not c for c in conts):
            raise EvalError(f"question {k}: a choice is empty; every choice needs text")
        longest = max(len(c) for c in conts)
        if longest >= max_len:
            raise EvalError(f"question {k}: a choice has {longest} tokens, more than the context of {max_len} "
                            "allows; shorten the choices")
        ctx = _prefix(tokenizer, prefix) + encode(tokenizer, it.context)
        if not ctx:  # nothing to condition on: score after EOS (lm-evaluation-harness does the same)
            ctx = [tokenizer.eos_token_id]
        ctx = ctx[-(max_len - longest + 1):]  # the last continuation token is never fed
        out.append((ctx, conts))
    return out


@torch.no_grad()
def score_choices(model: torch.nn.Module, tokenizer: Any, items: list[MCItem], batch: int = 32,
                  prefix: str | None = "eos", share_prefix: bool = True) -> list[list[float]]:
    """Summed log-likelihood (nats) of every choice of every item given its context.

    The context is scored once: a batch of contexts (left-padded) runs with the KV cache on, the
    last position's logits score every choice's first token, the cache is repeated once per
    choice (`Cache.reorder_cache`) and all choices of the batch run together (right-padded) over
    it. Cost: one context pass per question instead of one per choice. With `share_prefix`, the
    tokens that all contexts of a batch start with (questions are sorted by their ids, so
    templated prompts share most of theirs) run once and their cache is repeated too.
    """
    check_pair(model, tokenizer)
    from transformers import DynamicCache

    was = model.training
    model.eval()
    dev = _device(model)
    rows = _mc_rows(tokenizer, items, int(model.config.max_position_embeddings), prefix)
    # sorted by the context's ids: a batch's contexts then share long prefixes (templated prompts)
    order = sorted(range(len(rows)), key=lambda k: rows[k][0])
    out: list[list[float]] = [[] for _ in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for b in range(0, len(order), batch):
        ks = order[b:b + batch]
        ctxs = [rows[k][0] for k in ks]
        P = _common_prefix(ctxs) if share_prefix and len(ks) > 1 else 0
        P = min(P, min(len(c) for c in ctxs) - 1)  # every row keeps one token: its last logits come from it
        cache = DynamicCache(config=model.config)
        if P > 0:  # the shared prefix once, then its cache repeated for every question of the batch
            model(input_ids=torch.tensor([ctxs[0][:P]], device=dev), cache=cache, use_cache=True, logits_to_keep=1)
            cache.reorder_cache(torch.zeros(len(ks), dtype=torch.long, device=dev))
        # the rest of each context, left-padded after the prefix: positions still count real tokens (cumsum)
        ctx, rest_mask = left_pad([c[P:] for c in ctxs], pad)
        cmask = torch.cat([torch.ones((len(ks), P), dtype=torch.long), rest_mask], dim=1)
        ctx, cmask = ctx.to(dev), cmask.to(dev)
        o = model(input_ids=ctx, attention_mask=cmask, cache=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(o.logits[:, -1].float(), -1)  # (Q, V)
        cache = o.cache if getattr(o, "cache", None) is not None else cache
        qidx = [j for j, k in enumerate(ks) for _ in rows[k][1]]
        conts = [c for k in ks for c in rows[k][1]]
        idx = torch.tensor(qidx, device=dev)
        score = first[idx, torch.tensor([c[0] for c in conts], device=dev)].double()  # (R,)
        Lk = max(len(c) for c in conts) - 1
        if Lk > 0:
            cache.reorder_cache(idx)  # (Q, ...) -> (R, ...): each context's keys/values once per choice
            inp = torch.full((len(conts), Lk), pad, dtype=torch.long)
            tgt = torch.zeros((len(conts), Lk), dtype=torch.long)
            keep = torch.zeros((len(conts), Lk), dtype=torch.bool)
            for r, c in enumerate(conts):
                inp[r, :len(c) - 1] = torch.tensor(c[:-1])
                tgt[r, :len(c) - 1] = torch.tensor(c[1:])
                keep[r, :len(c) - 1] = True
            inp, tgt, keep = inp.to(dev), tgt.to(dev), keep.to(dev)
            # right padding is harmless under the causal mask: pads come after every scored position
            amask = torch.cat([cmask[idx], torch.ones_like(inp)], dim=1)
            lo = model(input_ids=inp, attention_mask=amask, cache=cache, use_cache=True).logits  # (R, Lk, V)
            lp = torch.log_softmax(lo.float(), -1).gather(-1, tgt[..., None])[..., 0]
            score = score + (lp * keep).sum(-1).double()
        vals = score.tolist()
        r = 0
        for k in ks:
            n = len(rows[k][1])
            out[k] = vals[r:r + n]
            r += n
    model.train(was)
    return out


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(x) for x in seqs)
    first, last = min(seqs), max(seqs)  # the common prefix of all = that of the smallest and largest
    i = 0
    while i < n and first[i] == last[i]:
        i += 1
    return i


@torch.no_grad()
def score_full_sequences(model: torch.nn.Module, tokenizer: Any, items: list[MCItem],
                         prefix: str | None = "eos") -> list[list[float]]:
    """The reference for `score_choices`: every (context + choice) sequence on its own, uncached,
    the choice's tokens summed (same separate tokenisation). Slow; for tests and checks."""
    rows = _mc_rows(tokenizer, items, int(model.config.max_position_embeddings), prefix)
    dev = _device(model)
    out = []
    for ctx, conts in rows:
        s = []
        for c in conts:
            ids = torch.tensor([ctx + c], device=dev)
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            s.append(float(sum(lp[len(ctx) - 1 + i, t] for i, t in enumerate(c))))
        out.append(s)
    return out


def mc_metrics(items: list[MCItem], scores: list[list[float]]) -> dict[str, Any]:
    """lm-evaluation-harness's definitions: `acc` picks the choice of highest summed
    log-likelihood, `acc_norm` the highest log-likelihood divided by the choice's length in
    characters (`len(choice)`); ties go to the first choice (numpy argmax). Per-question
    correctness is kept for the bootstrap."""
    acc, acc_norm = [], []
    for it, s in zip(items, scores):
        s = np.asarray(s, dtype=np.float64)
        n = np.asarray([float(len(c)) for c in it.choices])
        acc.append(float(int(np.argmax(s)) == it.answer))
        acc_norm.append(float(int(np.argmax(s / n)) == it.answer))
    return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)), "n": len(items),
            "per_question": {"acc": acc, "acc_norm": acc_norm}}


# --------------------------------------------------------------------------------- intervals


def protocol_interval(run_means: list[float]) -> dict[str, float]:
    """The author's interval (docs/recipe.md section 7): mean +/- 1.96 * sigma / sqrt(n) over n
    runs on the same questions (sigma: the sample standard deviation, ddof=1; 0 for one run).
    It measures sampling spread only."""
    x = np.asarray(run_means, dtype=np.float64)
    if x.size == 0:
        raise EvalError("no runs to summarise")
    sigma = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = 1.96 * sigma / math.sqrt(x.size)
    return {"mean": float(x.mean()), "low": float(x.mean() - half), "high": float(x.mean() + half),
            "sigma": sigma, "runs": int(x.size)}


def bootstrap_interval(per_question: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap over questions: resample the questions with replacement, average
    (over runs too, when `per_question` is runs x questions), take the (1-level)/2 and
    (1+level)/2 quantiles. This is the uncertainty from which questions were asked, which the
    protocol's interval leaves out."""
    x = np.asarray(per_question, dtype=np.float64)
    x = x[None] if x.ndim == 1 else x
    n = x.shape[1]
    if n == 0:
        raise EvalError("no questions to resample")
    per_q = x.mean(0)
    rng = np.random.default_rng(seed)
    means = per_q[rng.integers(0, n, size=(n_boot, n))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(per_q.mean()), "low": float(lo), "high": float(hi), "n": int(n), "level": level}


# --------------------------------------------------------------------------------- generation


def _gen_kwargs(sample: bool) -> dict[str, Any]:
    # the card's sampling settings (docs/recipe.md section 4, "Usage shown in the card")
    return dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.95) if sample else dict(do_sample=False)


@torch.no_grad()
def generate_texts(model: torch.nn.Module, tokenizer: Any, prompts: list[str], max_new_tokens: int,
                   batch: int = 16, sample: bool = False, seed: int = 0, prefix: str | None = "eos",
                   stop: str | None = "\n") -> list[str]:
    """Continuations of `prompts` (batched, left-padded, KV cache on through `generate`); each cut
    at the first `stop` string (None: kept whole). A prompt too long for the context plus
    `max_new_tokens` is cut on the left."""
    check_pair(model, tokenizer)
    was = model.training
    model.eval()
    dev = _device(model)
    L = int(model.config.max_position_embeddings)
    if max_new_tokens >= L:
        raise EvalError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the context of {L} tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = [(_prefix(tokenizer, prefix) + encode(tokenizer, p))[-(L - max_new_tokens):] or [tokenizer.eos_token_id]
           for p in prompts]
    order = sorted(range(len(enc)), key=lambda k: len(enc[k]))
    out: list[str] = [""] * len(enc)
    gen = torch.Generator().manual_seed(seed)
    for b in range(0, len(order), batch):
        ks = order[b:b + batch]
        ids, mask = left_pad([enc[k] for k in ks], pad)
        T = ids.shape[1]
        torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen)))
        res = model.generate(ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **_gen_kwargs(sample))
        for j, k in enumerate(ks):
            text = tokenizer.decode(res[j, T:].tolist(), skip_special_tokens=True)
            out[k] = text.lstrip().split(stop)[0] if stop else text
    model.train(was)
    return out


def first_letter(text: str) -> str:
    """The protocol's answer: the first character of the continuation, stripped, upper-cased."""
    s = text.strip()
    return s[:1].upper()


@dataclass
class GenItem:
    """One generative question: `prompt` (ends in "Answer:"), and its `answer` (a letter for
    `match="letter"`, accepted strings for "substring", the reference for "bleu")."""

    prompt: str
    answer: Any
    match: str = "letter"  # "letter" | "substring" | "bleu"
    meta: dict = field(default_factory=dict)


def gen_scores(items: list[GenItem], outputs: list[str]) -> list[float]:
    """Per-question score of one run: 1/0 for letter and substring matches (SQuAD: correct when an
    answer is a substring of the generated text), sentence BLEU (0-100) of the upper-cased text."""
    import sacrebleu

    out = []
    for it, o in zip(items, outputs):
        if it.match == "letter":
            out.append(float(first_letter(o) == str(it.answer).strip().upper()))
        elif it.match == "substring":
            answers = [it.answer] if isinstance(it.answer, str) else list(it.answer)
            out.append(float(any(a and a in o for a in answers)))
        elif it.match == "bleu":
            out.append(float(sacrebleu.sentence_bleu(o.strip().upper(), [str(it.answer).upper()]).score))
        else:
            raise EvalError(f"unknown match {it.match!r}: use letter, substring or bleu")
    return out


def run_protocol(model: torch.nn.Module, tokenizer: Any, items: list[GenItem], max_new_tokens: int, runs: int = 10,
                 sample: bool = True, seed: int = 0, batch: int = 16, n_boot: int = 2000) -> dict[str, Any]:
    """The author's generative protocol (docs/recipe.md section 7): `runs` runs over the same
    questions (sampled with the card's settings, seeds seed..seed+runs-1), each run's mean score,
    then mean +/- 1.96 sigma / sqrt(runs); beside it the bootstrap interval over questions of the
    runs x questions matrix. Scores are fractions (letter, substring) or BLEU points."""
    if not items:
        raise EvalError("no questions: the task is empty")
    matrix = []
    outputs = []
    for r in range(runs):
        outs = generate_texts(model, tokenizer, [it.prompt for it in items], max_new_tokens, batch=batch,
                              sample=sample, seed=seed + r)
        outputs.append(outs)
        matrix.append(gen_scores(items, outs))
    means = [float(np.mean(m)) for m in matrix]
    return {"protocol": protocol_interval(means), "bootstrap": bootstrap_interval(matrix, n_boot=n_boot, seed=seed),
            "run_means": means, "n": len(items), "outputs": outputs[0]}


# --------------------------------------------------------------------------------- translation


def translation_scores(hyps: list[str], refs: list[str], target_lang: str = "ru") -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default settings; the "zh" tokenizer for a Chinese target),
    and the protocol's figure: sentence BLEU on upper-cased text, averaged over sentences."""
    import sacrebleu

    if len(hyps) != len(refs) or not refs:
        raise EvalError(f"{len(hyps)} translations for {len(refs)} references: give one per reference")
    tok = "zh" if target_lang == "zh" else "13a"
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tok)
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    sent = [sacrebleu.sentence_bleu(h.upper(), [r.upper()], tokenize=tok).score for h, r in zip(hyps, refs)]
    return {"bleu": float(bleu.score), "chrf": float(chrf.score), "sentence_bleu_upper": float(np.mean(sent)),
            "n": len(refs)}


def translation_prompt(src: str, src_lang: str, tgt_lang: str) -> str:
    """docs/recipe.md section 7: `Translate from English to Russian:\\n{src}\\nAnswer:`."""
    names = {"en": "English", "ru": "Russian", "zh": "Chinese"}
    return f"Translate from {names[src_lang]} to {names[tgt_lang]}:\n{src}{_ANSWER_TAIL}"


# --------------------------------------------------------------------------------- prompts


def mmlu_prompt(question: str, options: list[str]) -> str:
    """Section 7, MMLU: options on one line."""
    opts = " ".join(f"{LETTERS[i]}) {o}" for i, o in enumerate(options))
    return f"Question: {question}\nOptions: {opts}{_ANSWER_TAIL}"


def arc_prompt(question: str, options: list[str], labels: list[str] | None = None) -> str:
    """Section 7, ARC and CommonsenseQA: one option per line."""
    labels = labels or list(LETTERS[:len(options)])
    opts = "\n".join(f"{lab}) {o}" for lab, o in zip(labels, options))
    return f"Question: {question}\nOptions:\n{opts}{_ANSWER_TAIL}"


def squad_prompt(context: str, question: str) -> str:
    return f"Context: {context}\nQuestion: {question}{_ANSWER_TAIL}"


# --------------------------------------------------------------------------------- task files


@dataclass
class Task:
    """A named set of questions. kind "mc": `items` are MCItems (scored by log-likelihood, and by
    the protocol when `gen` is set); "gen": GenItems; "translation": `pairs` (src, ref)."""

    name: str
    kind: str
    items: list = field(default_factory=list)
    chance: float | None = None
    gen: list = field(default_factory=list)  # GenItems of the same questions (the author's protocol)
    max_new_tokens: int = 2
    src_lang: str = "en"
    tgt_lang: str = "ru"
    meta: dict = field(default_factory=dict)


def _answer_index(ans: Any, choices: list[str], where: str) -> int:
    if isinstance(ans, bool):
        ans = None
    if isinstance(ans, int):
        if 0 <= ans < len(choices):
            return ans
    elif isinstance(ans, str):
        s = ans.strip()
        if s in choices:
            return choices.index(s)
        if len(s) == 1 and s.upper() in LETTERS[:len(choices)]:
            return LETTERS.index(s.upper())
        if s.isdigit() and 0 <= int(s) < len(choices):
            return int(s)
    raise EvalError(f"{where}: answer {ans!r} is not among the {len(choices)} choices; give the index (0-based), "
                    f"the letter ({LETTERS[0]}-{LETTERS[len(choices) - 1]}) or the text of one choice")


def mc_task(name: str, rows: list[dict], where: str, chance: float | None = None, layout: str = "arc",
            gen_tokens: int = 2) -> Task:
    """A multiple-choice Task from rows {question, choices, answer[, context]}: log-likelihood
    items `Question: {q}\\nAnswer:` + ` {choice}`, and the protocol's prompts (section 7 layout
    "mmlu" or "arc") answered by letter."""
    items, gen = [], []
    for k, r in enumerate(rows):
        at = f"{where}: question {k + 1}"
        q = r.get("question")
        if not isinstance(q, str) or not q.strip():
            raise EvalError(f"{at} has no question text; every line needs \"question\", \"choices\", \"answer\"")
        choices = r.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise EvalError(f"{at} has no choices (got {choices!r}); give \"choices\": a list of at least 2 strings")
        if len(choices) > len(LETTERS):
            raise EvalError(f"{at} has {len(choices)} choices; at most {len(LETTERS)} are supported")
        a = _answer_index(r.get("answer"), choices, at)
        ctx = f"Question: {q}{_ANSWER_TAIL}"
        if r.get("context"):
            ctx = f"Context: {r['context']}\n{ctx}"
        extra = {k: v for k, v in r.items() if k not in ("question", "choices", "answer", "context", "meta")}
        items.append(MCItem(ctx, [" " + c for c in choices], a, {**extra, **dict(r.get("meta") or {})}))
        prompt = mmlu_prompt(q, choices) if layout == "mmlu" else arc_prompt(q, choices)
        gen.append(GenItem(prompt, LETTERS[a], "letter"))
    if not items:
        raise EvalError(f"{where} holds no questions; write one JSON object per line: "
                        '{"question": ..., "choices": [...], "answer": ...}')
    if chance is None:
        chance = float(np.mean([1.0 / len(it.choices) for it in items]))
    return Task(name, "mc", items, chance, gen, gen_tokens)


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON lines (blank lines skipped); one line names a line that is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"task file {path} does not exist; give a JSON-lines file (question, choices, answer)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{n} is not JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise EvalError(f"{path}:{n} is not a JSON object; write one object per line")
        rows.append(obj)
    return rows


def load_task_file(path: str | Path, name: str | None = None) -> Task:
    """A user task: JSON lines of {"question", "choices", "answer"} (answer: index, letter or
    choice text; optional "context"), or a suite file written by scripts/build_eval_suites.py
    (its first line a {"task": ...} header)."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise EvalError(f"task file {path} is empty; write one JSON object per line: "
                        '{"question": ..., "choices": [...], "answer": ...}')
    head = rows[0].get("task") if len(rows[0]) and "task" in rows[0] else None
    if isinstance(head, dict):
        return _suite_task(head, rows[1:], str(path))
    return mc_task(name or path.stem, rows, str(path))


def _suite_task(head: dict, rows: list[dict], where: str) -> Task:
    if head.get("kind") == "translation":
        if not rows:
            raise EvalError(f"{where} holds no sentence pairs; rebuild it with scripts/build_eval_suites.py")
        return Task(head["name"], "translation", [(r["src"], r["ref"]) for r in rows], None,
                    src_lang=head["src"], tgt_lang=head["tgt"], max_new_tokens=int(head.get("max_new_tokens", 64)),
                    meta={k: head[k] for k in head if k not in ("name", "kind")})
    t = mc_task(head["name"], rows, where, chance=head.get("chance"))
    t.meta = {k: head[k] for k in head if k not in ("name", "kind", "chance")}
    return t


# --------------------------------------------------------------------------------- Hub tasks

# name -> (Hub id, config, split, converter); the splits and counts of docs/recipe.md section 7
HUB_TASKS = {
    "mmlu": ("cais/mmlu", "all", "test"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "validation"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "validation"),
    "commonsense_qa": ("tau/commonsense_qa", None, "validation"),
    "squad_v2": ("rajpurkar/squad_v2", None, "validation"),
    "opus100_en_ru": ("Helsinki-NLP/opus-100", "en-ru", "validation"),
    "opus100_ru_en": ("Helsinki-NLP/opus-100", "en-ru", "validation"),
}


def _offline() -> bool:
    import os

    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_rows(name: str, local: str | Path | None) -> list[dict]:
    """Rows of a Hub task: from `local` (a JSON-lines, JSON, parquet or CSV file, or a
    save_to_disk folder, in the Hub format) or, online, from the Hub through `datasets`."""
    import datasets

    repo, config, split = HUB_TASKS[name]
    alt = (f"pass a local file in the same format instead: --suite {name}=PATH.jsonl "
           f"(rows of {repo}{'/' + config if config else ''}, split {split})")
    if local is not None:
        p = Path(local)
        if p.is_dir():
            ds = datasets.load_from_disk(str(p))
            ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        elif p.is_file():
            fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(p.suffix)
            if fmt is None:
                raise EvalError(f"{p}: unknown file type {p.suffix!r}; use .jsonl, .json, .parquet or .csv")
            ds = datasets.load_dataset(fmt, data_files=str(p), split="train")
        else:
            raise EvalError(f"{p} does not exist; {alt}")
        return [dict(r) for r in ds]
    if _offline():
        raise EvalError(f"{name} is the Hub dataset {repo} and this machine is offline (HF_*_OFFLINE is set); {alt}")
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # no network, unknown name, ...: one line with the alternative
        raise EvalError(f"{name}: {repo} could not be loaded from the Hub ({type(exc).__name__}); {alt}") from None
    return [dict(r) for r in ds]


def hub_task(name: str, local: str | Path | None = None, limit: int | None = None) -> Task:
    """MMLU, ARC-Easy/Challenge, CommonsenseQA, SQuAD v2 or OPUS-100 en-ru as a Task, from its Hub
    format (field names as on the Hub), with the section 7 prompts and answer rules (SQuAD v2:
    256 answerable questions whose answer has at most 8 characters; OPUS-100: 128 pairs)."""
    if name not in HUB_TASKS:
        raise EvalError(f"unknown Hub task {name!r}: use one of {', '.join(HUB_TASKS)}")
    rows = _hub_rows(name, local)
    where = str(local or HUB_TASKS[name][0])
    if not rows:
        raise EvalError(f"{where} holds no rows for {name}")
    if name == "mmlu":
        t = mc_task(name, [{"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])}
                           for r in rows[:limit]], where, chance=0.25, layout="mmlu", gen_tokens=1)
    elif name in ("arc_easy", "arc_challenge", "commonsense_qa"):
        conv = []
        for r in rows[:limit]:
            ch = r["choices"]
            labels, texts = list(ch["label"]), list(ch["text"])
            if r["answerKey"] not in labels:
                raise EvalError(f"{where}: answerKey {r['answerKey']!r} is not among the labels {labels}")
            conv.append({"question": r["question"], "choices": texts, "answer": labels.index(r["answerKey"]),
                         "labels": labels})
        t = mc_task(name, conv, where, chance=0.2 if name == "commonsense_qa" else 0.25, gen_tokens=2)
        for g, r in zip(t.gen, conv):  # the dataset's own labels (ARC has some 1-4 labels)
            g.prompt = arc_prompt(r["question"], r["choices"], r["labels"])
            g.answer = r["labels"][r["answer"]]
    elif name == "squad_v2":
        keep = [r for r in rows if r["answers"]["text"] and len(r["answers"]["text"][0]) <= 8][:limit or 256]
        gen = [GenItem(squad_prompt(r["context"], r["question"]), list(r["answers"]["text"]), "substring")
               for r in keep]
        t = Task(name, "gen", [], None, gen, max_new_tokens=8)
    else:
        src, tgt = ("en", "ru") if name == "opus100_en_ru" else ("ru", "en")
        pairs = [(r["translation"][src], r["translation"][tgt]) for r in rows[:limit or 128]]
        t = Task(name, "translation", pairs, None, src_lang=src, tgt_lang=tgt, max_new_tokens=64)
    if t.kind != "translation" and not (t.items or t.gen):
        raise EvalError(f"{where} holds no usable questions for {name}")
    return t


# --------------------------------------------------------------------------------- offline suites

SUITE_DIR = embedded_data_dir() / "eval"  # the embedded suites (data/eval in a checkout)
SUITE_VERSION = 1
# concepts the suites call "held out": every concept whose id hashes into bucket < 10 (about 10%,
# `concepts.suite_holdout`); train with corpus `concepts?holdout=suite` and these never appear in training
TRANSLATION_PAIRS = 128  # per direction, as the paper's OPUS-100 run (section 7)
TRANSLATION_MAX_CHARS = 160  # short LibreOffice paragraphs: prompt + answer fit a small model's context


def suite_holdout_concepts() -> list[str]:
    from bvvlab.corpus import concepts as C

    return C.suite_holdout()


def _concept_rows(seed: int = 0) -> dict[str, list[dict]]:
    """Concept questions from the lexicon alone (no corpus sentence): word translation en->ru and
    ru->en (distractors of the same category and part of speech), category membership (three
    distractors from categories that cannot also be right), odd-one-out (three of one category,
    one from an unconfusable other). One question per concept per task; each row says whether
    its concept is in `suite_holdout_concepts()`."""
    import random

    from bvvlab.corpus import concepts as C
    from bvvlab.corpus.instructions import _CATEGORY_QUESTIONS, _CONFUSABLE

    held = set(suite_holdout_concepts())
    words = sorted(C.LEXICON.values(), key=lambda c: c.id)
    group = {c.id: next((g for g in _CONFUSABLE if c.category in g), {c.category}) for c in words}
    out: dict[str, list[dict]] = {"concepts-word-en-ru": [], "concepts-word-ru-en": [], "concepts-category": [],
                                  "concepts-odd-one-out": []}

    def place(rng, answer, others):
        opts = [answer] + others
        rng.shuffle(opts)
        return opts, opts.index(answer)

    for c in words:
        rng = random.Random(f"suite:{seed}:{c.id}")
        en, ru = C.word_line(c)
        split = "heldout" if c.id in held else "trained"
        same = [w for w in words if w.pos == c.pos and w.category == c.category and w.id != c.id]
        if len(same) < 3:
            same = [w for w in words if w.pos == c.pos and w.id != c.id]
        for side, task in ((1, "concepts-word-en-ru"), (0, "concepts-word-ru-en")):
            others: list[str] = []
            for w in rng.sample(same, len(same)):
                e, r = C.word_line(w)
                if e != en and r != ru and (e, r)[side] not in others:
                    others.append((e, r)[side])
                if len(others) == 3:
                    break
            q = (f'What is the Russian word for "{en}"?' if side == 1
                 else f'What does the Russian word "{ru}" mean in English?')
            opts, a = place(rng, (en, ru)[side], others)
            out[task].append({"question": q, "choices": opts, "answer": a, "concept": c.id, "split": split})
        far = [w for w in words if w.category not in group[c.id]]
        pick: list[str] = []
        for w in rng.sample(far, len(far)):
            e = C.word_line(w)[0]
            if e != en and e not in pick:
                pick.append(e)
            if len(pick) == 3:
                break
        opts, a = place(rng, en, pick)
        out["concepts-category"].append({"question": f"Which of these is {_CATEGORY_QUESTIONS[c.category]}?",
                                         "choices": opts, "answer": a, "concept": c.id, "split": split})
        # odd-one-out: c is the odd word among three of another, unconfusable category
        cats = sorted({w.category for w in far if sum(x.category == w.category for x in far) >= 3})
        cat = rng.choice(cats)
        three = [C.word_line(w)[0] for w in rng.sample([w for w in far if w.category == cat], 3)]
        if en in three:
            continue
        opts, a = place(rng, en, three)
        out["concepts-odd-one-out"].append({"question": f"Which word does not belong with the others: "
                                                        f"{', '.join(opts)}?", "choices": opts, "answer": a,
                                            "concept": c.id, "split": split})
    return out


def _translation_rows() -> dict[str, tuple[dict, list[dict]]]:
    from bvvlab.corpus.parallel_text import parallel_pairs

    rows = [r for r in parallel_pairs("libreoffice-en-ru", "test")
            if len(r["en"]) <= TRANSLATION_MAX_CHARS and len(r["ru"]) <= TRANSLATION_MAX_CHARS]
    rows = sorted(rows, key=lambda r: r["id"])[:TRANSLATION_PAIRS]
    out = {}
    for src, tgt in (("en", "ru"), ("ru", "en")):
        head = {"name": f"libreoffice-{src}-{tgt}", "kind": "translation", "src": src, "tgt": tgt,
                "source": "libreoffice-en-ru test split", "max_new_tokens": 64}
        out[head["name"]] = (head, [{"src": r[src], "ref": r[tgt], "id": r["id"]} for r in rows])
    return out


def build_offline_suites(out_dir: str | Path = SUITE_DIR) -> dict[str, Any]:
    """Write the offline suites (JSON lines, a {"task": header} first line) and `manifest.json`
    into `out_dir`, atomically (the folder is replaced whole). Sources: the LibreOffice en-ru
    *test* split and the concept lexicon; never training text. Deterministic."""
    from bvvlab.core.atomic import atomic_dir, write_atomic

    files: dict[str, dict] = {}
    suites: dict[str, tuple[dict, list[dict]]] = dict(_translation_rows())
    for name, rows in _concept_rows().items():
        for split in ("trained", "heldout"):
            part = [r for r in rows if r["split"] == split]
            head = {"name": f"{name}/{split}", "kind": "mc", "chance": 0.25, "split": split,
                    "source": "bvvlab.corpus.concepts.LEXICON"}
            suites[f"{name}.{split}"] = (head, part)
    with atomic_dir(out_dir, replace=True) as tmp:
        for fname, (head, rows) in suites.items():
            text = "\n".join(json.dumps(x, ensure_ascii=False) for x in [{"task": head}] + rows) + "\n"
            write_atomic(tmp / f"{fname}.jsonl", text)
            files[f"{fname}.jsonl"] = {"task": head["name"], "kind": head["kind"], "n": len(rows),
                                       "chance": head.get("chance")}
        manifest = {"version": SUITE_VERSION, "files": files, "holdout_concepts": suite_holdout_concepts(),
                    "built_by": "scripts/build_eval_suites.py"}
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest


def offline_suite(suite_dir: str | Path = SUITE_DIR) -> list[Task]:
    """The shipped offline tasks, in manifest order."""
    d = Path(suite_dir)
    man = d / "manifest.json"
    if not man.is_file():
        raise EvalError(f"{man} is missing: build the suites with python scripts/build_eval_suites.py")
    files = json.loads(man.read_text(encoding="utf-8"))["files"]
    return [load_task_file(d / f) for f in files]


# --------------------------------------------------------------------------------- one task


def evaluate_task(model: torch.nn.Module, tokenizer: Any, task: Task, runs: int = 1, sample: bool = False,
                  seed: int = 0, batch: int = 32, limit: int | None = None, protocol: bool = False,
                  n_boot: int = 2000) -> list[dict[str, Any]]:
    """Tidy result rows (task, metric, mean, low, high, interval, n, chance) of one task.

    mc: acc and acc_norm by log-likelihood (bootstrap interval over questions), and with
    `protocol` the author's generative letter match (protocol interval and bootstrap).
    gen: the protocol. translation: corpus BLEU and chrF (bootstrap over sentences of the
    sentence-level scores is not what corpus BLEU is, so the interval is that of chrF per
    sentence), and the protocol's upper-cased sentence BLEU."""
    rows: list[dict[str, Any]] = []

    def row(metric, mean, iv, n, chance=None, how="bootstrap"):
        rows.append({"task": task.name, "metric": metric, "mean": float(mean),
                     "low": None if iv is None else float(iv["low"]), "high": None if iv is None else float(iv["high"]),
                     "interval": how, "n": int(n), "chance": chance})

    if task.kind == "mc":
        items = task.items[:limit]
        if not items:
            raise EvalError(f"task {task.name} has no questions")
        m = mc_metrics(items, score_choices(model, tokenizer, items, batch=batch))
        for k in ("acc", "acc_norm"):
            row(k, m[k], bootstrap_interval(m["per_question"][k], n_boot=n_boot, seed=seed), m["n"], task.chance)
    if (task.kind == "gen" or (task.kind == "mc" and protocol)) and task.gen:
        gen = task.gen[:limit]
        r = run_protocol(model, tokenizer, gen, task.max_new_tokens, runs=runs, sample=sample, seed=seed,
                         batch=batch, n_boot=n_boot)
        metric = "exact_letter" if gen[0].match == "letter" else gen[0].match
        row(f"{metric}_protocol", r["protocol"]["mean"], r["protocol"], r["n"], task.chance,
            f"1.96 sigma/sqrt({runs}) over runs")
        row(f"{metric}_protocol", r["bootstrap"]["mean"], r["bootstrap"], r["n"], task.chance,
            "bootstrap over questions")
    if task.kind == "translation":
        import sacrebleu

        pairs = task.items[:limit]
        hyps = generate_texts(model, tokenizer, [translation_prompt(s, task.src_lang, task.tgt_lang) for s, _ in pairs],
                              task.max_new_tokens, batch=batch, sample=sample, seed=seed)
        refs = [r for _, r in pairs]
        sc = translation_scores(hyps, refs, task.tgt_lang)
        row("bleu", sc["bleu"], None, sc["n"], None, "none (corpus)")
        chrf = [sacrebleu.sentence_chrf(h, [r]).score for h, r in zip(hyps, refs)]
        row("chrf", sc["chrf"], bootstrap_interval(chrf, n_boot=n_boot, seed=seed), sc["n"], None,
            "bootstrap of sentence chrF")
        sent = gen_scores([GenItem("", r, "bleu") for r in refs], hyps)
        row("sentence_bleu_upper", sc["sentence_bleu_upper"], bootstrap_interval(sent, n_boot=n_boot, seed=seed),
            sc["n"], None, "bootstrap over sentences")
    return rows
