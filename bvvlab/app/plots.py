"""Plotly figures shared by notebooks and the CLI (plotly.graph_objects only: no pandas)."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
import plotly.io as pio

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
LOSS_AXIS = "train loss (nats/token)"
BPC_AXIS = "validation bits/char"


def _curve_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    """One x axis (tokens seen), train loss on the left y axis and validation bits per character
    on the right one: the two units differ (nats per token, bits per character), so each has its
    own titled scale."""
    fig.update_layout(title=title, template="plotly_white", height=height,
                      xaxis={"title": {"text": "tokens seen"}},
                      yaxis={"title": {"text": LOSS_AXIS}},
                      yaxis2={"title": {"text": BPC_AXIS}, "overlaying": "y", "side": "right", "showgrid": False},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def _eval_points(records: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
    """(periodic evaluations, full-split evaluations): a record with `val_full: true` is the
    final evaluation over the whole validation split, the others a fixed sample of it, so the
    full one is drawn as its own marker instead of as the last point of the sample's line."""
    evals = [r for r in records if r.get("kind") == "eval"]
    return [r for r in evals if not r.get("val_full")], [r for r in evals if r.get("val_full")]


def training_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str = "training curves") -> go.Figure:
    """Train loss and validation bits per character against tokens seen, one colour per run.

    `runs` maps a label (e.g. "frozen", "unfrozen") to that run's metrics records (the lines of
    `metrics.jsonl`: `kind` "train" with `loss`, `kind` "eval" with `val_bpc`, both with `tokens`).
    Bits per character is tokenizer-independent, so runs over different vocabularies share the axis.
    Periodic evaluations (a sample of the validation split) are a dotted line; the final one over
    the whole split (`val_full: true`) is a diamond labelled "full split".
    """
    fig = go.Figure()
    for i, (label, records) in enumerate(runs.items()):
        color = _COLORS[i % len(_COLORS)]
        train = [r for r in records if r.get("kind") == "train"]
        sample, full = _eval_points(records)
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in train], y=[r["loss"] for r in train], mode="lines",
                                 name=f"{label} train loss", line={"color": color}, legendgroup=label))
        fig.add_trace(go.Scatter(x=[r["tokens"] for r in sample], y=[r["val_bpc"] for r in sample],
                                 mode="lines+markers", name=f"{label} val bits/char (sample)", yaxis="y2",
                                 line={"color": color, "dash": "dot"}, legendgroup=label))
        if full:
            fig.add_trace(go.Scatter(x=[r["tokens"] for r in full], y=[r["val_bpc"] for r in full],
                                     mode="markers+text", name=f"{label} val bits/char (full split)", yaxis="y2",
                                     marker={"color": color, "symbol": "diamond", "size": 11},
                                     text=[f"full split {r['val_bpc']:.3f}" for r in full], textposition="top left",
                                     legendgroup=label))
    return _curve_layout(fig, title, 440)


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
    """A `train(cfg, callback=...)` callback that draws loss and bits/char as records arrive.

    Live (in a Jupyter frontend; `live=None` asks `interactive_frontend`): ONE output, redrawn in
    place. plotly's own `_ipython_display_` ignores a display id and appends a new output on
    every update (37 stacked figures for one default run), and JupyterLab's plotly renderer
    ignores `update_display` once it has drawn a graph (seen in a browser: the figure stayed
    empty). So the figure lives in an `ipywidgets.Output` shown once (one display with a display
    id), whose content is replaced by each record's plotly bundle; `close()` then swaps the
    widget for the final figure as a plain plotly output (`update_display`), which the saved
    notebook keeps. Not live (papermill, nbval, scripts): no figure, the records are kept for the
    static one, and with `total` a text progress bar goes to stderr, which papermill logs
    (`--log-output`) where it would not show a widget.
    """

    def __init__(self, title: str = "training", live: bool | None = None, total: int | None = None,
                 mininterval: float = 2.0):
        self.records: list[dict[str, Any]] = []
        self.live = interactive_frontend() if live is None else live
        self.fig = _curve_layout(go.Figure(), title, 400)
        self.fig.add_scatter(name="train loss", mode="lines", x=[], y=[], line={"color": _COLORS[0]})
        self.fig.add_scatter(name="val bits/char (sample)", mode="lines+markers", yaxis="y2", x=[], y=[],
                             line={"dash": "dot", "color": _COLORS[1]})
        self.fig.add_scatter(name="val bits/char (full split)", mode="markers+text", yaxis="y2", x=[], y=[],
                             marker={"symbol": "diamond", "size": 11, "color": _COLORS[1]}, text=[],
                             textposition="top left")
        self.display_id: str | None = None
        self.bar = None
        self._out = None
        if self.live:
            import ipywidgets
            from IPython.display import display

            self.display_id = f"bvvlab-live-{uuid.uuid4().hex}"
            self._out = ipywidgets.Output()
            self._redraw()
            display(self._out, display_id=self.display_id)
        elif total is not None:
            from tqdm import (
                tqdm,  # the plain text bar: tqdm.auto would draw a widget papermill cannot log
            )

            self.bar = tqdm(total=total, desc="train", unit="step", file=sys.stderr, mininterval=mininterval,
                            ascii=True, dynamic_ncols=False, ncols=100)

    def bundle(self) -> dict[str, Any]:
        """The figure as a mime bundle: plotly JSON (JupyterLab's plotly renderer) and a text line."""
        n = len(self.records)
        return {PLOTLY_MIME: json.loads(pio.to_json(self.fig, validate=False)),
                "text/plain": f"<training curves: {n} record{'s' * (n != 1)}>"}

    def _redraw(self) -> None:
        # replacing the widget's outputs makes the frontend draw a new graph in the same place
        self._out.outputs = ({"output_type": "display_data", "data": self.bundle(), "metadata": {}},)

    def __call__(self, rec: Mapping[str, Any]) -> None:
        self.records.append(dict(rec))
        if rec.get("kind") == "train":
            trace, y = self.fig.data[0], rec["loss"]
        elif rec.get("val_full"):
            trace, y = self.fig.data[2], rec["val_bpc"]
            trace.text = (*(trace.text or ()), f"full split {y:.3f}")
        else:
            trace, y = self.fig.data[1], rec["val_bpc"]
        trace.x = (*(trace.x or ()), rec["tokens"])
        trace.y = (*(trace.y or ()), y)
        if self._out is not None:
            self._redraw()
        if self.bar is not None and rec.get("kind") == "train" and "step" in rec:
            self.bar.update(int(rec["step"]) - self.bar.n)
            self.bar.set_postfix_str(f"loss {rec['loss']:.3f}", refresh=False)

    def close(self) -> None:
        """End the progress bar; live, replace the widget by the final figure as a plain plotly
        output (kept in the saved notebook, unlike a widget's content)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._out is not None:
            from IPython.display import update_display

            update_display(self.bundle(), raw=True, display_id=self.display_id)
            self._out.close()
            self._out = None


def fusion_figure(bpc: Mapping[str, Mapping[str, float]], sets: Sequence[str] = ("en", "ru", "zh", "mixed"),
                  title: str = "experts and fusions") -> go.Figure:
    """Each model's validation bits/char per text set as a percent difference from the better
    expert on that set (0 = the better expert; below 0 = better than both experts): bars from 0
    bits/char hid differences of 0.4% (issue 24). Experts are the names without "fused:"; the
    absolute bits/char is in the hover."""
    from plotly.colors import DEFAULT_PLOTLY_COLORS as D3  # ten colours: two experts and five fusion methods

    experts = [n for n in bpc if not n.startswith("fused:")] or list(bpc)
    best = {s: min(bpc[n][s] for n in experts) for s in sets}
    fig = go.Figure()
    for i, (name, row) in enumerate(bpc.items()):
        rel = [100 * (row[s] / best[s] - 1) for s in sets]
        fig.add_trace(go.Bar(name=name, x=list(sets), y=rel, marker={"color": D3[i % len(D3)]},
                             customdata=[row[s] for s in sets], text=[f"{v:+.1f}%" for v in rel], textposition="outside",
                             hovertemplate=name + " · %{x}: %{customdata:.4f} bits/char (%{y:+.2f}%)<extra></extra>"))
    fig.add_hline(y=0, line={"color": "black", "width": 1})
    fig.update_layout(barmode="group", title=title, template="plotly_white", height=440,
                      yaxis={"title": {"text": "bits/char vs the better expert (%; below 0 = better)"},
                             "ticksuffix": "%", "zeroline": True},
                      xaxis={"title": {"text": "validation text"}}, legend={"orientation": "h", "y": -0.2})
    return fig


def forward_time_note(forward_s: Mapping[str, float], n_experts: int) -> str:
    """What "fused forward time / one expert" measures, in one sentence: one forward pass of the
    fused model over a batch of validation windows against one expert's, and why it costs more:
    every expert runs on every token (so at least `n_experts` times), then their next-token
    distributions over the vocabulary are combined."""
    return (f"Forward time over one batch of validation windows: the fused model (bayes) "
            f"{1000 * forward_s['fused']:.1f} ms, one expert {1000 * forward_s['one_expert']:.1f} ms, a ratio of "
            f"{forward_s['ratio']:.2f}x. The fused model runs all {n_experts} experts on every token (at least "
            f"{n_experts}x) and then combines their next-token distributions over the whole vocabulary, which is "
            "the rest: the price of fusing without retraining, measured on this machine.")


def chance_heatmap(z: Sequence[Sequence[float | None]], x: Sequence[str], y: Sequence[Any], chance: float,
                   title: str, colorbar: str = "top-1") -> go.Figure:
    """A heatmap whose colour scale is centred on chance (`zmid`; diverging: red above chance,
    blue below, white at it) and spans the data's own distance from it: a fixed 0-1 scale drew
    values of 0.08-0.10 as one colour (07's retrieval map, issue 24). Each cell prints its value."""
    vals = [v for row in z for v in row if v is not None]
    reach = max([abs(v - chance) for v in vals] + [1e-6])
    heat = go.Heatmap(z=z, x=list(x), y=list(y), zmid=chance, zmin=chance - reach, zmax=chance + reach,
                      colorscale="RdBu_r", texttemplate="%{z:.3f}",
                      colorbar={"title": {"text": f"{colorbar}<br>(white = chance {chance:.3f})"}})
    # grey behind: a missing cell (a run with fewer layers) must not read as white = chance
    return go.Figure(heat, layout={"title": title, "template": "plotly_white", "height": 380, "plot_bgcolor": "#d9d9d9",
                                   "xaxis": {"showgrid": False}, "yaxis": {"showgrid": False}})
