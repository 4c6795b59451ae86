"""The latent-language view (after Wendler et al. 2024): on few-shot translation prompts, the lens
probability of the answer word and of its source-language counterpart at every layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bvvlab.analysis.activations import Loaded, lens_logits, padded_batches
from bvvlab.corpus import concepts as _concepts

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
    for idx, _, _, hs in padded_batches(lm, ids, batch_size, device, pad):
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
