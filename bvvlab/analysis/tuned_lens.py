"""A tuned lens beside the logit lens (issue 28; Belrose et al. 2023, "Eliciting latent
predictions from transformers with the tuned lens"): one affine map per layer, fitted on held-out
text, that carries a layer's hidden state to the final one before the head. The plain logit lens
reads early layers through a head trained on the last one and is biased there; the tuned lens
corrects for each layer's own basis.

Simplification, stated: the maps are fitted by ridge least squares to the final hidden state
(closed form, seconds on a CPU), not by gradient descent on the KL to the final distribution as
in the paper. At the last layer the map is the identity, so both lenses give the model's logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from bvvlab.analysis.activations import Loaded, hidden_states
from bvvlab.analysis.items import ProbeError


@dataclass
class TunedLens:
    """Per kept layer an affine map (d + 1, d): [h, 1] @ W ~ the final hidden state."""

    layers: list[int]
    maps: list[np.ndarray]
    n_tokens: int

    def apply(self, lm: Loaded, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Tuned-lens logits of hidden states `h` (..., d) of `layer`."""
        W = torch.as_tensor(self.maps[self.layers.index(layer)], dtype=h.dtype, device=h.device)
        return lm.head(h @ W[:-1] + W[-1])


def heldout_texts(n: int = 200) -> list[str]:
    """English and Russian paragraphs of the LibreOffice help validation split (never trained)."""
    from bvvlab.corpus.parallel_text import parallel_pairs

    rows = parallel_pairs("libreoffice-en-ru", "validation")[:n]
    return [r["en"] for r in rows] + [r["ru"] for r in rows]


def fit_tuned_lens(lm: Loaded, texts: Sequence[str] | None = None, ridge: float = 1e-2, batch_size: int = 32,
                   max_tokens: int | None = 128) -> TunedLens:
    """Fit one affine map per layer on every token of `texts` (default: `heldout_texts`)."""
    if lm.head is None:
        raise ProbeError(f"a tuned lens needs the model's head: {lm.lens_reason}")
    texts = list(texts) if texts is not None else heldout_texts()
    st = hidden_states(lm, texts, "tokens", batch_size, None, max_tokens)
    Y = np.asarray(st.pooled[-1], np.float64)
    maps = []
    for k in range(len(st.layers)):
        X = np.concatenate([np.asarray(st.pooled[k], np.float64), np.ones((Y.shape[0], 1))], 1)
        if k == len(st.layers) - 1:
            W = np.concatenate([np.eye(Y.shape[1]), np.zeros((1, Y.shape[1]))])
        else:
            reg = ridge * np.trace(X.T @ X) / X.shape[1] * np.eye(X.shape[1])
            W = np.linalg.solve(X.T @ X + reg, X.T @ Y)
        maps.append(W.astype(np.float32))
    return TunedLens(list(st.layers), maps, int(Y.shape[0]))


@torch.no_grad()
def tuned_latent(lm: Loaded, lens: TunedLens, direction: str = "en2ru", n: int = 60, n_boot: int = 500,
                 seed: int = 0) -> dict[str, Any]:
    """The latent-language view (`latent.latent_language`) read through the tuned lens: per layer
    the probability of the answer, its counterpart and a control word of the prompt."""
    from bvvlab.analysis.latent import next_token, translation_prompts

    prompts = translation_prompts(direction, n, seed=seed)
    keys = ("answer", "counterpart", "control")
    want = torch.tensor([[next_token(lm.tokenizer, p["prompt"], p[k]) for k in keys] for p in prompts])
    st = hidden_states(lm, [p["prompt"] for p in prompts], "last", 16, lens.layers, None)
    got = np.zeros((len(prompts), len(lens.layers), len(keys)))
    for k, layer in enumerate(lens.layers):
        h = torch.as_tensor(np.asarray(st.pooled[k]))
        pr = torch.softmax(lens.apply(lm, h, layer).float(), -1)
        got[:, k] = pr.gather(-1, want).numpy()
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"available": True, "lens": "tuned", "direction": direction, "n_prompts": len(prompts)}
    for j, key in enumerate(keys):
        a = got[:, :, j]
        boots = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
        out[key] = {"mean": a.mean(0).tolist(), "lo": np.percentile(boots, 2.5, 0).tolist(),
                    "hi": np.percentile(boots, 97.5, 0).tolist()}
    return out
