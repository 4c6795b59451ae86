"""Scoring a model: held-out bits/char per language, multiple choice by log-likelihood (context and
continuation tokenised apart; each context scored once, its KV cache repeated for its choices),
generation for the author's protocol, and one task's tidy result rows (`evaluate_task`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bvvlab.eval.metrics import (
    bootstrap_interval,
    gen_scores,
    mc_metrics,
    protocol_interval,
    translation_scores,
)
from bvvlab.eval.tasks import EvalError, GenItem, MCItem, Task, translation_prompt
from bvvlab.models.generation import decode_generated

# --------------------------------------------------------------------------------- model checks


def check_pair(model: torch.nn.Module, tokenizer: Any) -> None:
    """A tokenizer whose size differs from the model's vocab_size would index the wrong rows (or
    past the matrix): refused before any scoring."""
    v = getattr(model.config, "vocab_size", None)
    if v is not None and len(tokenizer) != v:
        raise EvalError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {v}: evaluate a "
                        "checkpoint with its own tokenizer (load both with bvvlab.models.loader.load)")


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
    `token_ppl` (exp of nats/token: per token, so only within one tokenizer), `tokens`, `chars`,
    and `bpc_low` / `bpc_high`: the 95% bootstrap interval over the texts (each text's bits and
    characters resampled together, `bvvlab.core.intervals.ratio_interval`; issue 24). Each window
    is scored alone so its text is known (the same sums as batched, up to float rounding);
    `batch` is kept for callers and no longer used.
    """
    from bvvlab.core.intervals import ratio_interval

    check_pair(model, tokenizer)
    texts = [t for t in texts if t]
    if not texts:
        raise EvalError("no text to score: give at least one non-empty held-out text")
    was = model.training
    model.eval()
    dev = _device(model)
    L = int(model.config.max_position_embeddings)
    eos = tokenizer.eos_token_id
    per_text = [0.0] * len(texts)
    n_tok = 0
    for k, t in enumerate(texts):
        ids = _prefix(tokenizer, prefix) + encode(tokenizer, t) + ([eos] if eos is not None else [])
        if len(ids) < 2:
            ids = [eos] + ids
        for s in range(0, len(ids) - 1, L - 1):  # windows overlap by one token: each target once
            row = torch.tensor([ids[s:s + L]], dtype=torch.long, device=dev)
            per_text[k] += float(model(input_ids=row, labels=row, num_items_in_batch=1).loss)
            n_tok += row.shape[1] - 1
    model.train(was)
    nll = sum(per_text)
    chars = sum(len(t) for t in texts)
    bpc = nll / math.log(2) / chars
    iv = ratio_interval([x / math.log(2) for x in per_text], [len(t) for t in texts])
    return {"bpc": bpc, "char_ppl": 2.0 ** bpc, "nats_per_token": nll / n_tok, "token_ppl": math.exp(nll / n_tok),
            "tokens": n_tok, "chars": chars, "texts": len(texts), "bpc_low": iv["low"], "bpc_high": iv["high"]}


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


TOKENISATIONS = ("split", "joint")


def joint_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's `_encode_pair` (lm_eval/api/model.py, 0.4.x): trailing whitespace
    of the context moves to the continuation, `context + continuation` is tokenised as one
    string, and the continuation is whatever follows the first len(encode(context)) tokens.
    Where a merged n-gram straddles the join, those tokens are not the context's own: the
    harness scores them anyway, and so does `tokenisation="joint"`."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def tokenisation_differences(tokenizer: Any, items: list[MCItem]) -> list[dict[str, Any]]:
    """The questions whose scored tokens differ between `split` (bvvlab's default) and `joint`
    (lm-evaluation-harness) tokenisation, with why: `merge` where a merged n-gram straddles the
    join of context + choice (the joint string's tokens are not the two sides' own), `whitespace`
    where none does and only the harness's moving of the context's trailing whitespace into the
    continuation changes the tokens. acc can only differ on these questions."""
    out = []
    for k, it in enumerate(items):
        split_ctx = encode(tokenizer, it.context)
        diff = []
        for j, c in enumerate(it.choices):
            ctx, cont = joint_pair(tokenizer, it.context, c)
            split = split_ctx + encode(tokenizer, c)
            # the scored tokens: a moved split point changes them even where the concatenation is the same
            if (ctx, cont) != (split_ctx, encode(tokenizer, c)):
                why = "merge" if encode(tokenizer, it.context + c) != split else "whitespace"
                diff.append({"choice": j, "why": why})
        if diff:
            out.append({"question": k, "choices": diff})
    return out


def _mc_rows(tokenizer: Any, items: list[MCItem], max_len: int, prefix: str | None, tokenisation: str = "split"
             ) -> list[tuple[list[int], list[list[int]]]]:
    """(context ids, [continuation ids]) per item; the context is cut on the left when a choice
    would not fit. `split` (default): each side tokenised on its own (a merged n-gram never
    straddles the join); `joint`: lm-evaluation-harness's tokenisation (`joint_pair`)."""
    if tokenisation not in TOKENISATIONS:
        raise EvalError(f"tokenisation={tokenisation!r}: use split (bvvlab's) or joint (lm-evaluation-harness's)")
    out = []
    for k, it in enumerate(items):
        if tokenisation == "joint":
            pairs = [joint_pair(tokenizer, it.context, c) for c in it.choices]
            context_ids, conts = pairs[0][0], [c for _, c in pairs]
        else:
            context_ids, conts = encode(tokenizer, it.context), [encode(tokenizer, c) for c in it.choices]
        if any(not c for c in conts):
            raise EvalError(f"question {k}: a choice is empty; every choice needs text")
        longest = max(len(c) for c in conts)
        if longest >= max_len:
            raise EvalError(f"question {k}: a choice has {longest} tokens, more than the context of {max_len} "
                            "allows; shorten the choices")
        ctx = _prefix(tokenizer, prefix) + context_ids
        if not ctx:  # nothing to condition on: score after EOS (lm-evaluation-harness does the same)
            ctx = [tokenizer.eos_token_id]
        ctx = ctx[-(max_len - longest + 1):]  # the last continuation token is never fed
        out.append((ctx, conts))
    return out


@torch.no_grad()
def score_choices(model: torch.nn.Module, tokenizer: Any, items: list[MCItem], batch: int = 32,
                  prefix: str | None = "eos", share_prefix: bool = True, tokenisation: str = "split"
                  ) -> list[list[float]]:
    """Summed log-likelihood (nats) of every choice of every item given its context.

    The context is scored once: a batch of contexts (left-padded) runs with the KV cache on, the
    last position's logits score every choice's first token, the cache is repeated once per
    choice (`Cache.reorder_cache`) and all choices of the batch run together (right-padded) over
    it. Cost: one context pass per question instead of one per choice. `tokenisation`: see
    `_mc_rows` ("joint" reproduces lm-evaluation-harness). With `share_prefix`, the
    tokens that all contexts of a batch start with (questions are sorted by their ids, so
    templated prompts share most of theirs) run once and their cache is repeated too.
    """
    check_pair(model, tokenizer)
    from transformers import DynamicCache

    was = model.training
    model.eval()
    dev = _device(model)
    rows = _mc_rows(tokenizer, items, int(model.config.max_position_embeddings), prefix, tokenisation)
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
                         prefix: str | None = "eos", tokenisation: str = "split") -> list[list[float]]:
    """The reference for `score_choices`: every (context + choice) sequence on its own, uncached,
    the choice's tokens summed (same tokenisation). Slow; for tests and checks."""
    rows = _mc_rows(tokenizer, items, int(model.config.max_position_embeddings), prefix, tokenisation)
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
            text = decode_generated(tokenizer, res[j, T:].tolist())  # no "�" for a character cut by the budget
            out[k] = text.lstrip().split(stop)[0] if stop else text
    model.train(was)
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
    bounds = (0.0, 100.0) if items[0].match == "bleu" else (0.0, 1.0)  # BLEU points, else a fraction
    return {"protocol": protocol_interval(means, bounds), "bootstrap": bootstrap_interval(matrix, n_boot=n_boot, seed=seed),
            "run_means": means, "n": len(items), "outputs": outputs[0]}


# --------------------------------------------------------------------------------- one task


def evaluate_task(model: torch.nn.Module, tokenizer: Any, task: Task, runs: int = 1, sample: bool = False,
                  seed: int = 0, batch: int = 32, limit: int | None = None, protocol: bool = False,
                  n_boot: int = 2000, tokenisation: str = "split") -> list[dict[str, Any]]:
    """Tidy result rows (task, metric, mean, low, high, interval, n, chance) of one task.

    mc: acc and acc_norm by log-likelihood (bootstrap interval over questions; `tokenisation`
    "joint" is lm-evaluation-harness parity: its tokenisation, see `joint_pair`, no prefix token,
    and its acc_norm, which divides by the choice's length without the leading " " delimiter), and with
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
        # lm-evaluation-harness parity: its joint tokenisation and its acc_norm length (without the " " delimiter)
        # and its prefix: the hf model feeds the context with no token before it (a tokenizer that adds no
        # BOS, as bvvlab's: lm_eval/models/huggingface.py tok_encode), where bvvlab's default is EOS
        joint = tokenisation == "joint"
        m = mc_metrics(items, score_choices(model, tokenizer, items, batch=batch, tokenisation=tokenisation,
                                            prefix=None if joint else "eos"), delimiter=" " if joint else "")
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
