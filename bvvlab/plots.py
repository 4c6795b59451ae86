"""Plotly figures shared by notebooks and the CLI (plotly.graph_objects only: no pandas)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def training_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "training curves") -> go.Figure:
    """Train loss and validation bits per character against tokens seen, one colour per run.

    `runs` maps a label (e.g. "frozen", "unfrozen") to that run's metrics records (the lines of
    `metrics.jsonl`: `kind` "train" with `loss`, `kind` "eval" with `val_bpc`, both with `tokens`).
    Bits per character is tokenizer-independent, so runs over different vocabularies share the axis.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("train loss (nats/token)", "validation bits per character"))
    for i, (label, records) in enumerate(runs.items()):
        color = _COLORS[i % len(_COLORS)]
        train = [r for r in records if r.get("kind") == "train"]
        evals = [r for r in records if r.get("kind") == "eval"]
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in train], y=[r["loss"] for r in train], mode="lines",
                                 name=f"{label} train loss", line={"color": color}, legendgroup=label), row=1, col=1)
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in evals], y=[r["val_bpc"] for r in evals],
                                 mode="lines+markers", name=f"{label} val bits/char",
                                 line={"color": color, "dash": "dot"}, legendgroup=label), row=1, col=2)
    fig.update_xaxes(title_text="tokens seen")
    fig.update_layout(title=title, template="plotly_white", height=420, legend={"orientation": "h", "y": -0.2})
    return fig


def interactive_frontend() -> bool:
    """True inside a live Jupyter frontend (it allows stdin), False under papermill/nbclient
    (`allow_stdin=False`), nbval or plain Python: live redraws would there only pile up outputs."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    return bool(getattr(kernel, "_allow_stdin", False))


class LiveCurves:
    """A `train(cfg, callback=...)` callback that redraws loss and bits/char as records arrive,
    in a live frontend only; elsewhere it just keeps the records (draw the static figure after)."""

    def __init__(self, title: str = "training", live: bool | None = None):
        self.records: list[dict[str, Any]] = []
        self.live = interactive_frontend() if live is None else live
        self.fig = go.Figure(layout={"title": title, "xaxis": {"title": "tokens seen"}, "template": "plotly_white",
                                     "height": 380})
        self.fig.add_scatter(name="train loss (nats/token)", mode="lines")
        self.fig.add_scatter(name="val bits/char", mode="lines+markers")
        self._handle = None
        if self.live:
            from IPython.display import display

            self._handle = display(self.fig, display_id=True)

    def __call__(self, rec: Mapping[str, Any]) -> None:
        self.records.append(dict(rec))
        trace, key = (self.fig.data[0], "loss") if rec.get("kind") == "train" else (self.fig.data[1], "val_bpc")
        trace.x = (*(trace.x or ()), rec["tokens"])
        trace.y = (*(trace.y or ()), rec[key])
        if self._handle is not None:
            self._handle.update(self.fig)
