"""Probing figures (plotly) and tables: the layer-slider map, metric-by-layer curves, the CKA
heatmap, the latent-language curves, the markdown summary table."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from bvvlab.analysis.items import Item
from bvvlab.analysis.metrics import curve

_SYMBOLS = ("circle", "x", "diamond", "square", "triangle-up", "star")


def slider_figure(maps: Sequence[np.ndarray], items: Sequence[Item], layers: Sequence[int], title: str = ""):
    """One scatter per layer as plotly frames with a layer slider: colour = label (category),
    symbol = language, the text on hover."""
    import plotly.express as px
    import plotly.graph_objects as go

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


def lens_curve(m: dict, field: str) -> list | None:
    """One model's logit-lens `field` by layer ("top1", "median_rank", ...) from its probe
    metrics, or None where the lens was unavailable."""
    lens = m.get("logit_lens") or {}
    return lens.get(field) if lens.get("available") else None


def metric_curves(results: dict[str, dict[str, Any]], title: str = "metrics by layer"):
    """Each metric against layer, one colour per model, the chance level dashed; retrieval top-1
    with its stratified permutation null (shaded, null mean to 95th percentile) and 95% bootstrap
    interval (bars) where the probe computed them."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=4, cols=2, subplot_titles=[c[3] for c in _CURVES], vertical_spacing=0.08)
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    for j, (name, m) in enumerate(results.items()):
        c = colors[j % len(colors)]
        for k, (key, field, chance, _) in enumerate(_CURVES):
            r, col = divmod(k, 2)
            if key == "logit_lens":
                ys = lens_curve(m, field)
            elif field is None:
                ys = m.get(key)
            else:
                ys = curve(m, key, field)
            if not ys or all(v is None for v in ys):
                continue
            nulls = [(v or {}).get("null", {}).get("top1") for v in (m.get(key) or [])] if key == "retrieval" else []
            if nulls and all(nulls):  # the stratified null's band and the bootstrap interval, not the analytic chance
                x = list(m["layers"])
                fig.add_trace(go.Scatter(x=x + x[::-1], y=[s["null_high"] for s in nulls] + [s["null_mean"] for s in nulls][::-1],
                                         fill="toself", fillcolor=c, opacity=0.15, line={"width": 0}, legendgroup=name,
                                         showlegend=False, hoverinfo="skip"), row=r + 1, col=col + 1)
                fig.add_trace(go.Scatter(x=x, y=ys, mode="lines+markers", name=name, legendgroup=name,
                                         showlegend=k == 0, line={"color": c},
                                         error_y={"type": "data", "symmetric": False,
                                                  "array": [s["high"] - s["value"] for s in nulls],
                                                  "arrayminus": [s["value"] - s["low"] for s in nulls]}),
                              row=r + 1, col=col + 1)
                continue
            fig.add_trace(go.Scatter(x=m["layers"], y=ys, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=k == 0, line={"color": c}), row=r + 1, col=col + 1)
            if chance:
                fig.add_trace(go.Scatter(x=m["layers"], y=curve(m, key, chance), mode="lines", name=f"{name} chance",
                                         legendgroup=name, showlegend=False, line={"color": c, "dash": "dash", "width": 1}),
                              row=r + 1, col=col + 1)
    fig.update_layout(title=title + " (dashed: chance; shaded: permutation null; bars: 95% bootstrap)",
                      template="plotly_white", height=1100)
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


def latent_results(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latent-language views of a probe's models, logit and tuned lens, keyed for
    `latent_figure` ("MODEL DIRECTION", "+ (tuned)")."""
    return {f"{n} {d}" + (" (tuned)" if key.endswith("tuned") else ""): r for n, m in models.items()
            for key in ("latent_language", "latent_language_tuned") for d, r in (m.get(key) or {}).items()}


def latent_figure(latent: dict[str, dict[str, Any]]):
    """The latent-language curves: logit lens on the left, tuned lens (results with
    `lens == "tuned"`) on the right; per model and direction the answer, its source-language
    counterpart and a control word of the prompt, each with its 95% bootstrap band. A counterpart
    no likelier than the control is copying from the prompt, not a latent language."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    tuned = any(r.get("lens") == "tuned" for r in latent.values() if r.get("available"))
    fig = make_subplots(rows=1, cols=2 if tuned else 1, shared_yaxes=True,
                        subplot_titles=("logit lens", "tuned lens") if tuned else ("logit lens",))
    colors = {"answer": "#d62728", "counterpart": "#1f77b4", "control": "#7f7f7f"}
    dashes = ["solid", "dash", "dot", "dashdot"]
    for j, (name, res) in enumerate(latent.items()):
        if not res.get("available"):
            continue
        col = 2 if res.get("lens") == "tuned" else 1
        x = list(range(len(res["answer"]["mean"])))
        for k, c in colors.items():
            if k not in res:
                continue
            r = res[k]
            fig.add_trace(go.Scatter(x=x + x[::-1], y=r["hi"] + r["lo"][::-1], fill="toself", fillcolor=c, opacity=0.15,
                                     line={"width": 0}, showlegend=False, hoverinfo="skip"), row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=r["mean"], mode="lines+markers",
                                     line={"color": c, "dash": dashes[(j // 2) % len(dashes)]},
                                     name=f"{name}: {k} ({res['direction']})"), row=1, col=col)
    fig.update_layout(title="latent language: probability of the answer, its source-language counterpart and a control "
                            "word of the prompt (band: 95% bootstrap)", template="plotly_white", height=500)
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_yaxes(title_text="probability", row=1, col=1)
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
                vals = lens_curve(m, field) or []
                row.append(f(vals[k]) if k < len(vals) else "")
            lines.append("| " + " | ".join(row) + " |")
        lens = m.get("logit_lens")
        if lens and not lens.get("available"):
            lines.append(f"\n{lens['reason']}")
        lines.append("")
    return "\n".join(lines)


def null_band_figure(results: dict[str, dict[str, Any]], stat: str = "mrr", title: str = ""):
    """Retrieval `stat` by layer for every model with its 95% bootstrap interval (error bars) and
    its stratified permutation null (shaded from the null mean to its 95th percentile); a star
    marks the layers whose family-wise p < 0.01 (issue 28)."""
    import plotly.graph_objects as go

    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
    fig = go.Figure()
    for j, (name, m) in enumerate(results.items()):
        rows = [(l, (r or {}).get("null", {}).get(stat)) for l, r in zip(m.get("layers", []), m.get("retrieval") or [])]
        rows = [(l, s) for l, s in rows if s]
        if not rows:
            continue
        c = colors[j % len(colors)]
        x = [l for l, _ in rows]
        lo = [s["null_mean"] for _, s in rows]
        hi = [s["null_high"] for _, s in rows]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor=c, opacity=0.15,
                                 line={"width": 0}, name=f"{name} null (mean to 95th pct.)", hoverinfo="skip"))
        v = [s["value"] for _, s in rows]
        fig.add_trace(go.Scatter(x=x, y=v, mode="lines+markers", name=name, line={"color": c},
                                 error_y={"type": "data", "symmetric": False,
                                          "array": [s["high"] - s["value"] for _, s in rows],
                                          "arrayminus": [s["value"] - s["low"] for _, s in rows]},
                                 text=[f"p={s['p']:.3g}, family-wise p={s['p_fwe']:.3g}" for _, s in rows]))
        sig = [(l, s["value"]) for l, s in rows if s["p_fwe"] < 0.01]
        if sig:
            fig.add_trace(go.Scatter(x=[a for a, _ in sig], y=[b for _, b in sig], mode="markers", showlegend=False,
                                     marker={"symbol": "star", "size": 13, "color": c}))
    fig.update_layout(title=title or f"retrieval {stat} by layer (bars: 95% bootstrap over concepts; band: stratified "
                                     "permutation null; star: family-wise p < 0.01)",
                      template="plotly_white", height=500, xaxis={"title": {"text": "layer"}, "dtick": 1},
                      yaxis={"title": {"text": stat}})
    return fig



def gain_text(g: dict | None) -> str:
    """A layer's MRR gain over layer 0 for a table; "n/a" when layer 0 was not probed."""
    return "n/a (layer 0 not probed)" if g is None else f"{g['diff']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]"


def stats_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: per model and layer, MRR and top-1 with interval, null 95th percentile and
    family-wise p; CSLS MRR; gain over layer 0; cross-lingual debiased CKA and RSA with p."""
    lines = []
    for name, m in results.items():
        if not m.get("stats"):
            continue
        st = m["stats"]
        lines += [f"### {name}: statistics ({st['n_pairs']} pairs, {st['permutations']} stratified re-pairings, "
                  f"{st['strata']['count']} strata)\n",
                  "| layer | MRR [95% CI] | null 95th | p (fwe) | top-1 [95% CI] | CSLS MRR | MRR gain vs layer 0 "
                  "[95% CI] | CKA (p) | RSA (p) |", "|---|---|---|---|---|---|---|---|---|"]
        for k, l in enumerate(m["layers"]):
            r = ((m.get("retrieval") or [None] * (k + 1))[k] or {}).get("null")
            if not r:
                continue
            g = m["gain_vs_layer0"][k]
            ck, rs = m["crosslingual_cka"][k], m["crosslingual_rsa"][k]
            lines.append(f"| {l} | {r['mrr']['value']:.4f} [{r['mrr']['low']:.4f}, {r['mrr']['high']:.4f}] | "
                         f"{r['mrr']['null_high']:.4f} | {r['mrr']['p_fwe']:.3g} | {r['top1']['value']:.3f} "
                         f"[{r['top1']['low']:.3f}, {r['top1']['high']:.3f}] | {m['retrieval_csls'][k]['mrr']['value']:.4f} | "
                         f"{gain_text(g)} | {ck['value']:.3f} ({ck['p']:.3g}) | "
                         f"{rs['value']:.3f} ({rs['p']:.3g}) |")
        lines.append("")
    return "\n".join(lines)
