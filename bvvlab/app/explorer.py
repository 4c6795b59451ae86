"""The layer explorer (ipywidgets, notebook 04): type a word or a prompt and see, per layer, its
nearest concepts (cosine beside each) and the logit lens; `explore_layers` is the same computation
headless. A view over `bvvlab.analysis` (hidden states, the lens), like the panels in
`bvvlab.app.widgets` are views over generation."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go

from bvvlab.app.widgets import Models, figure_bundle, first_line, picker
from bvvlab.core.errors import BVVError, check_text
from bvvlab.glyph.views import plotly_label, short_label, visible


@dataclass
class ConceptIndex:
    """The concept items' last-token hidden states of one model, per layer, centred (the mean
    of all items removed per layer: otherwise one shared direction makes every item every other
    item's neighbour) and L2-normalised; built once per model (`concept_index`)."""

    lm: Any  # probe.Loaded
    items: list  # probe.Item, English and Russian lemma of each concept
    layers: list[int]
    mean: Any  # (n_layers_kept, d) float32: the centre subtracted per layer
    unit: Any  # (n_layers_kept, n_items, d) float32, unit rows


@dataclass
class LayerView:
    """What the explorer shows for one text: per layer its nearest concept items, and the logit
    lens's most likely next tokens at every position (layer x position)."""

    text: str
    tokens: list[str]  # the text's tokens (the heatmap's columns)
    layers: list[int]  # hidden-state indices: 0 = the embedding output, n_layers = after the final norm
    neighbours: list[list[tuple[str, str, float]]]  # per layer: (item text, lang, cosine), best first
    lens: list[list[list[tuple[str, float]]]] | None  # [layer][position] -> (token, probability), best first
    lens_reason: str = ""  # why there is no lens (no head or final norm found), else ""
    notes: list[str] = field(default_factory=list)


def as_loaded(model: Any, tokenizer: Any, name: str = "model") -> Any:
    """A (model, tokenizer) pair already in memory as `probe.Loaded` (what probe's functions take)."""
    from bvvlab.analysis import activations

    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n_layers, int):
        raise BVVError(f"{name}: the model's config has no num_hidden_layers: it cannot be explored layer by layer")
    norm, head, reason = activations.lens_modules(model)  # probe's own rule for the lens modules
    return activations.Loaded(model.eval(), tokenizer, name, "", n_layers, norm, head, reason)


def concept_index(model: Any, tokenizer: Any, items: Sequence[Any] | None = None, name: str = "model") -> ConceptIndex:
    """Hidden states of the concept items (default: every concept's English and Russian lemma,
    `analysis.items.concept_items`) at their last token, through
    `analysis.activations.hidden_states`."""
    import numpy as np

    from bvvlab.analysis import activations
    from bvvlab.analysis import items as probe_items

    lm = as_loaded(model, tokenizer, name)
    items = list(items) if items is not None else probe_items.concept_items()
    states = activations.hidden_states(lm, items, pooling="last")
    X = np.asarray(states.pooled, dtype=np.float32)
    mean = X.mean(axis=1)
    unit = X - mean[:, None]
    unit /= np.maximum(np.linalg.norm(unit, axis=-1, keepdims=True), 1e-12)
    return ConceptIndex(lm, items, states.layers, mean, unit)


STALE_CSS = "<style>.bvv-stale{opacity:0.35;filter:grayscale(1)}</style>"
MAX_EXPLORE_TOKENS = 48  # heatmap columns at most (the first tokens of a longer prompt)


def explore_layers(index: ConceptIndex, text: str, k: int = 5, top: int = 5) -> LayerView:
    """Per layer: the `k` concept items nearest to `text` (cosine of the last-token states, both
    centred by the items' mean; an item whose text is `text` itself is left out), and the logit lens (`analysis.activations.lens_logits`: each layer's state
    through the final norm and the head; exact at the last layer) top-`top` next tokens at every
    position. An empty text is a one-line BVVError."""
    import numpy as np
    import torch

    from bvvlab.analysis import activations

    if not isinstance(text, str) or not text.strip():
        raise BVVError("type a word or a prompt to explore (the text is empty)")
    check_text(text, "the text")
    for name, v in (("k", k), ("top", top)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise BVVError(f"{name}={v!r}: give an integer >= 1 (how many {'neighbours' if name == 'k' else 'tokens'} "
                           "to show per layer)")
    lm = index.lm
    notes = []
    n_tok = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    if n_tok > MAX_EXPLORE_TOKENS:
        notes.append(f"the text has {n_tok} tokens; showing its first {MAX_EXPLORE_TOKENS}")
    states = activations.hidden_states(lm, [text], pooling="tokens", layers=index.layers, max_tokens=MAX_EXPLORE_TOKENS)
    H = np.asarray(states.pooled, dtype=np.float32)  # (layers, T, d)
    ids = states.token_ids[0]
    q = H[:, -1] - index.mean  # (layers, d): the last token, centred as the items are
    q /= np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    sims = np.einsum("lnd,ld->ln", index.unit, q)
    # the typed word itself is always its own nearest item (cosine ~1): it is left out
    query = text.strip().casefold()
    others = np.array([it.text.strip().casefold() != query for it in index.items])
    k = max(1, min(int(k), int(others.sum())))
    neighbours = []
    for row in np.where(others, sims, -np.inf):
        best = np.argsort(-row, kind="stable")[:k]
        neighbours.append([(index.items[i].text, index.items[i].lang, float(row[i])) for i in best])
    lens = None
    if lm.head is not None and lm.norm is not None:
        lens = []
        ref = next(lm.head.parameters())
        with torch.no_grad():
            for l, h in zip(index.layers, H):
                logits = activations.lens_logits(lm.norm, lm.head, torch.from_numpy(h).to(ref.device, ref.dtype), l, lm.n_layers)
                p, order = torch.softmax(logits.float(), -1).topk(min(int(top), logits.shape[-1]), dim=-1)
                lens.append([list(zip(lm.tokenizer.convert_ids_to_tokens(o), pr))
                             for o, pr in zip(order.tolist(), p.tolist())])
    return LayerView(text, lm.tokenizer.convert_ids_to_tokens(ids), list(index.layers), neighbours, lens,
                     "" if lens is not None else lm.lens_reason, notes)


def lens_figure(view: LayerView) -> go.Figure:
    """The logit lens as a heatmap: a row per layer (0 = embedding output, at the bottom), a
    column per position (labelled with the token there); each cell shows the most likely next
    token and is coloured by its probability; hover lists the top tokens."""
    cols = [f"{j}: {plotly_label(visible(t))}" for j, t in enumerate(view.tokens)]
    rows = [f"layer {l}" for l in view.layers]
    lens = view.lens or []
    z = [[cell[0][1] for cell in row] for row in lens]
    shown = [[plotly_label(short_label(cell[0][0])) for cell in row] for row in lens]  # cut before escaping
    hover = [["<br>".join(f"{plotly_label(visible(t))}: {p:.3f}" for t, p in cell) for cell in row]
             for row in lens]
    fig = go.Figure(go.Heatmap(z=z, x=cols, y=rows, text=shown, texttemplate="%{text}", customdata=hover,
                               hovertemplate="%{y} · position %{x}<br>%{customdata}<extra></extra>",
                               colorscale="Blues", zmin=0, zmax=1, colorbar={"title": {"text": "p"}}))
    fig.update_layout(title=f"logit lens · {plotly_label(view.text[:30])}",
                      template="plotly_white", height=140 + 36 * len(rows), width=max(480, 120 + 64 * len(cols)),
                      margin={"l": 10, "r": 10, "t": 50, "b": 40},
                      xaxis={"title": {"text": "position (the token there); cell: most likely next token"}},
                      yaxis={"automargin": True})
    return fig


def neighbours_html(view: LayerView) -> str:
    """A table: a row per layer, its nearest concept items, each with its cosine beside it."""
    rows = []
    for l, nb in zip(view.layers, view.neighbours):
        cells = "".join(f'<span class="bvv-nb" title="{lang} · cos {c:.3f}" style="margin-right:10px;color:'
                        f'{"#1f77b4" if lang == "en" else "#d62728"}">{html.escape(t)}'
                        f' <small class="bvv-cos" style="color:#666">{c:.2f}</small></span>' for t, lang, c in nb)
        rows.append(f"<tr><td style='padding-right:8px'>layer {l}</td><td>{cells}</td></tr>")
    return ('<table class="bvv-neighbours" style="font-size:12px">'
            f'<tr><th>layer</th><th>nearest concept items (<span style="color:#1f77b4">en</span> / '
            f'<span style="color:#d62728">ru</span>; cosine beside each; the text itself left out)</th></tr>'
            f'{"".join(rows)}</table>')


class LayerExplorer:
    """Type a word or a prompt (Enter or Explore): per layer its nearest concept items and the
    logit-lens heatmap. The computation is `explore_layers` (synchronous: tiny and small models
    take well under a second; the concept states are computed once per model, on first use)."""

    def __init__(self, runs: str | os.PathLike | None = "runs", models: Mapping[str, tuple[Any, Any]] | None = None,
                 word: str = "", k: int = 5, top: int = 5, items: Sequence[Any] | None = None):
        import ipywidgets as W

        self.models = Models(runs, models)
        self.k, self.top, self.items = k, top, items
        self.indexes: dict[str, ConceptIndex] = {}
        self.picker = picker(self.models.options())
        self.text = W.Text(value=word, description="word / prompt", continuous_update=False,
                           style={"description_width": "100px"}, layout={"width": "60%"})
        self.text.add_class("bvv-explore-text")
        self.button = W.Button(description="Explore", button_style="primary")
        self.button.add_class("bvv-explore")
        self.status = W.HTML(value="")
        self.status.add_class("bvv-explore-status")
        self.neighbours = W.HTML(value="")
        self.chart = W.Output()
        self.style = W.HTML(value="")  # the dimming rule while the view is stale
        self.view: LayerView | None = None
        self.figure: go.Figure | None = None
        self.button.on_click(lambda _b: self.explore())
        self.text.observe(lambda _ch: self.explore(), names="value")  # Enter (or leaving the box)
        self.widget = W.VBox([self.picker, W.HBox([self.text, self.button]), self.status, self.style, self.chart,
                              self.neighbours])
        self.widget.add_class("bvv-explorer")
        if word:
            self.explore()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def say(self, message: str, error: bool = False) -> None:
        self.status.value = f'<span style="color:{"#c00" if error else "#444"}">{html.escape(message)}</span>'

    def stale(self, on: bool) -> None:
        """Mark (dim) the heatmap and neighbours as the previous text's after an error, or unmark."""
        for w in (self.chart, self.neighbours):
            (w.add_class if on else w.remove_class)("bvv-stale")
        self.style.value = STALE_CSS if on else ""

    def explore(self, text: str | None = None) -> LayerView | None:
        """Explore `text` (default: the box's value); None and one line in the status on bad input."""
        text = self.text.value if text is None else text
        try:
            key = self.picker.value
            if key not in self.indexes:
                model, tok = self.models.get(key)
                self.say("computing the concept items' hidden states (once per model) ...")
                self.indexes[key] = concept_index(model, tok, self.items, name=str(key))
            view = explore_layers(self.indexes[key], text, self.k, self.top)
        except (BVVError, ValueError, OSError) as e:
            self.say(first_line(e) + (f" (dimmed below: the view of “{self.view.text}”)" if self.view else ""),
                     error=True)
            self.stale(True)
            return None
        self.stale(False)
        self.view = view
        self.neighbours.value = neighbours_html(view)
        if view.lens is not None:
            self.figure = lens_figure(view)
            self.chart.outputs = ({"output_type": "display_data", "data": figure_bundle(self.figure), "metadata": {}},)
        else:
            self.chart.outputs = ()
        self.say("; ".join([f"{len(view.tokens)} tokens, {len(view.layers)} hidden states"] + view.notes
                           + ([f"no logit lens: {view.lens_reason}"] if view.lens is None else [])))
        return view
