"""Metrics and intervals: lm-evaluation-harness's acc and acc_norm, the author's protocol interval
(mean +/- 1.96 sigma / sqrt(runs)), bootstrap intervals over questions, first-letter and SQuAD
matches, sacrebleu BLEU and chrF."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bvvlab.eval.tasks import EvalError, GenItem, MCItem


def mc_metrics(items: list[MCItem], scores: list[list[float]], delimiter: str = "") -> dict[str, Any]:
    """lm-evaluation-harness's definitions: `acc` picks the choice of highest summed
    log-likelihood, `acc_norm` the highest log-likelihood divided by the choice's length in
    characters (`len(choice)`); ties go to the first choice (numpy argmax). Per-question
    correctness is kept for the bootstrap.

    bvvlab's choices carry their leading space (" bear"), so by default that space is counted.
    The harness scores `target_delimiter + choice` but divides by `len(choice)` of the doc's
    choice, without the delimiter (lm_eval/api/task.py, `process_results`); `delimiter=" "`
    does the same (a choice that starts with it is counted without it)."""
    acc, acc_norm = [], []
    for it, s in zip(items, scores):
        s = np.asarray(s, dtype=np.float64)
        n = np.asarray([float(len(c) - (len(delimiter) if delimiter and c.startswith(delimiter) else 0))
                        for c in it.choices])
        n[n == 0] = 1.0  # a choice that is only the delimiter: no division by zero
        acc.append(float(int(np.argmax(s)) == it.answer))
        acc_norm.append(float(int(np.argmax(s / n)) == it.answer))
    return {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)), "n": len(items),
            "per_question": {"acc": acc, "acc_norm": acc_norm}}


# --------------------------------------------------------------------------------- intervals


def protocol_interval(run_means: list[float], bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """The author's interval (docs/recipe.md section 7): mean +/- 1.96 * sigma / sqrt(n) over n
    runs on the same questions (sigma: the sample standard deviation, ddof=1; 0 for one run).
    It measures sampling spread only. `bounds`: the score's range, the interval clipped to it (a
    normal interval of an accuracy near 0 reached below 0: [-0.008, 0.133], issue 24)."""
    x = np.asarray(run_means, dtype=np.float64)
    if x.size == 0:
        raise EvalError("no runs to summarise")
    sigma = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = 1.96 * sigma / math.sqrt(x.size)
    low, high = float(x.mean() - half), float(x.mean() + half)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": float(x.mean()), "low": low, "high": high, "sigma": sigma, "runs": int(x.size)}


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


def first_letter(text: str) -> str:
    """The protocol's answer: the first character of the continuation, stripped, upper-cased."""
    s = text.strip()
    return s[:1].upper()


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
