"""The pipeline's findings report: `report.md` and a self-contained, offline `report.html`.

Built from what the steps left in the run folder (their metrics.json, results.json, run
folders and the figures they saved as plotly JSON), so it can be rebuilt at any time and shows
whatever ran: a step that failed or never ran appears as such in the step table, and its
section says so. The HTML inlines plotly.js once (no network, no files beside it); the
markdown links the same figures as standalone HTML files in `figures/`.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from bvvlab.core.atomic import ensure_dir, write_atomic
from bvvlab.app import plots
from bvvlab.core.outputs import write_figure

Part = tuple  # ("md", text) or ("fig", name, plotly figure)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    esc = [[_f(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                     + ["| " + " | ".join(r) + " |" for r in esc]) + "\n"


def _status(state: dict[str, Any], name: str) -> str:
    return (state["steps"].get(name) or {}).get("status", "not run")


def _missing(state: dict[str, Any], *names: str) -> str | None:
    bad = [f"{n} ({_status(state, n)})" for n in names if _status(state, n) not in ("done", "cached")]
    return f"_Not available: step {', '.join(bad)}._\n" if bad else None


# ---------------------------------------------------------------------------------------------
# sections


def _steps_section(out: Path, state: dict[str, Any], steps: list) -> list[Part]:
    rows = []
    for s in steps:
        r = state["steps"].get(s.name, {})
        err = r.get("error") or ""
        if r.get("cell") is not None:
            err = f"cell In [{r['cell']}]: {err}"
        link = r.get("html") or r.get("executed")  # the rendered page; a browser shows a raw .ipynb as JSON
        rows.append([s.name, s.notebook, r.get("status", "not run"), _f(r.get("seconds"), 1),
                     f"[{link}]({link})" if link else "", err])
    meta = state.get("meta") or {}
    vers = ", ".join(f"{k} {v}" for k, v in (meta.get("packages") or {}).items() if v)
    dev = meta.get("device") or {}
    dev = ", ".join(dev.get("cuda") or []) or f"{dev.get('processor', '?')} ({dev.get('cpu_count')} CPUs)"
    text = (f"Profile **{state['profile']}**, started {state.get('started')}, "
            + (f"finished {state['finished']} ({state.get('seconds')} s)." if state.get("finished")
               else "**not finished** (" + ("interrupted" if state.get("interrupted") else "running") + ")."))
    text += f"\n\ngit commit `{meta.get('git_commit')}`; device {dev}; {vers}.\n\n"
    return [("md", "## Steps\n\n" + text + table(["step", "notebook", "status", "seconds", "executed notebook",
                                                   "error"], rows))]


def _train_section(out: Path, state: dict[str, Any], steps: list) -> list[Part]:
    from bvvlab.train.loop import read_metrics

    parts: list[Part] = [("md", "## Frozen vs unfrozen embedding\n\nThe same model, seed, data order and schedule; "
                                "only the embedding differs: the frozen glyph matrix, or a trainable copy of it. "
                                "Bits/char with a 95% bootstrap interval over validation windows.\n")]
    names = [s.name for s in steps if s.group == "train"] or ["train-frozen", "train-unfrozen"]
    have = [n for n in names if _status(state, n) in ("done", "cached")]
    if not have:
        return parts + [("md", _missing(state, *names))]
    rows, curves = [], {}
    for name in have:
        m = _read(out / "steps" / name / "metrics.json") or {}
        kind = "frozen" if name.startswith("train-frozen") else "unfrozen"
        label = kind + name[len(f"train-{kind}"):].replace("-", " ")  # "frozen", "frozen seed1"
        iv = f"[{m['val_bpc_low']:.4f}, {m['val_bpc_high']:.4f}]" if "val_bpc_low" in m else ""
        rows.append([label, m.get("seed"), m.get("preset"), m.get("steps"), m.get("tokens_seen"), m.get("train_loss"),
                     m.get("val_loss"), m.get("val_bits_per_char"), iv, m.get("val_chars"), _f(m.get("tok_per_s"), 0)])
        if (out / "steps" / name / kind / "metrics.jsonl").exists():
            curves[label] = read_metrics(out / "steps" / name / kind)
    parts.append(("md", table(["embedding", "seed", "preset", "steps", "tokens", "train loss", "val loss",
                               "val bits/char", "95% interval", "val chars", "tokens/s"], rows)))
    if curves:
        parts.append(("fig", "training_curves", plots.training_curves(curves, title="frozen vs unfrozen: training curves")))
    return parts


def _eval_section(out: Path, state: dict[str, Any]) -> list[Part]:
    from bvvlab.eval import runner as R

    parts: list[Part] = [("md", "## Evaluation\n\nLog-likelihood multiple choice (acc, acc_norm) with 95% bootstrap "
                                "intervals over questions, and bits per character on held-out text; the chance level "
                                "beside each task.\n")]
    miss = _missing(state, "evaluate")
    res = _read(out / "steps" / "evaluate" / "results.json")
    if miss or not res:
        return parts + [("md", miss or "_No results.json._\n")]
    rows = res["rows"]
    parts.append(("md", table(["model", "task", "metric", "mean", "95% interval", "n", "chance"],
                              [[r["model"], r["task"], r["metric"], r["mean"],
                                "" if r.get("low") is None else f"[{r['low']:.3f}, {r['high']:.3f}]", r.get("n"),
                                r.get("chance")] for r in rows])))
    m = _read(out / "steps" / "evaluate" / "metrics.json") or {}
    p = m.get("protocol")
    if p:
        parts.append(("md", f"The author's generative protocol on {p.get('model', '')} {p['task']} ({p['runs']} sampled "
                            f"runs): first-letter accuracy {p['mean']:.3f}, protocol interval [{p['low']:.3f}, "
                            f"{p['high']:.3f}], bootstrap over questions [{p['bootstrap_low']:.3f}, "
                            f"{p['bootstrap_high']:.3f}].\n"))
    # two figures: scores in [0, 1] beside chance, and bits/char (an untrained language's ~30 would flatten the rest)
    scores = [r for r in rows if r["metric"] != "bpc"]
    bpc = [r for r in rows if r["metric"] == "bpc"]
    if scores:
        parts.append(("fig", "evaluation", R.figure(scores, title="evaluation: scores (error bars: 95% intervals)")))
    if bpc:
        parts.append(("fig", "evaluation_bpc", R.figure(bpc, title="held-out bits per character (lower is better)")))
    return parts


def _probe_section(out: Path, state: dict[str, Any]) -> list[Part]:
    import plotly.io as pio

    from bvvlab.analysis import figures as probe_figures

    parts: list[Part] = [("md", "## Where meaning emerges: probing by layer\n\nPer layer (0 = the embedding output): "
                                "en<->ru retrieval of the same concept, linear probes for category and language "
                                "(grouped by concept), silhouettes and the logit lens; dashed lines are chance.\n")]
    root = out / "steps" / "probe" / "probe"
    miss = _missing(state, "probe")
    m = _read(root / "metrics.json")
    if miss or not m:
        return parts + [("md", miss or "_No probe metrics.json._\n")]
    parts.append(("fig", "probe_curves", probe_figures.metric_curves(m["models"])))
    if (root / "layer_map.plotly.json").exists():
        parts.append(("md", "Items per layer (drag the slider: the map of each layer, coloured by category, "
                            "marked by language).\n"))
        parts.append(("fig", "probe_layer_map", pio.read_json(root / "layer_map.plotly.json")))
    parts.append(("md", probe_figures.markdown_table(m["models"]).replace("### ", "#### ")))
    return parts


def _pct(v: Any) -> str:
    """A gain or gap as a percent with its sign ("+8.5%"): the report showed fractions (0.085)
    where the notebooks showed percents (issue 24)."""
    return f"{100 * v:+.1f}%" if isinstance(v, (int, float)) else ""


def _fusion_section(out: Path, state: dict[str, Any]) -> list[Part]:
    parts: list[Part] = [("md", "## Fusion of experts that share the frozen embedding\n\nAn English+Russian and an "
                                "English+Chinese expert, fused without retraining; validation bits per character.\n")]
    miss = _missing(state, "fusion")
    m = _read(out / "steps" / "fusion" / "metrics.json")
    if miss or not m:
        return parts + [("md", miss or "_No fusion metrics.json._\n")]
    sets = ["en", "ru", "zh", "mixed"]
    parts.append(("md", table(["model"] + sets, [[name] + [row.get(s) for s in sets] for name, row in m["bpc"].items()])))
    ivs = m.get("intervals") or {}

    def gain_iv(k: str) -> str:
        iv = ivs.get(k) or {}
        return f"[{_pct(iv['low'])}, {_pct(iv['high'])}]" if iv.get("low") is not None else "-"

    goals = [[k, _pct(g.get("mixed_gain_vs_best_expert")), gain_iv(k), _pct(g.get("worst_gap_to_better_expert")),
              g.get("met")] for k, g in (m.get("goal") or {}).items()]
    if goals:
        parts.append(("md", "Goal: beat both experts on mixed text by >= 10% and stay within 5% of the better expert "
                            "on each language. Gains in percent of the best expert's bits/char (positive: the fused "
                            "model needs fewer), 95% paired bootstrap over the mixed text's windows.\n\n"
                            + table(["method", "mixed gain vs best expert", "95% interval",
                                     "worst gap to better expert", "goal met"], goals)))
    if (m.get("forward_s") or {}).get("ratio") is not None:
        n_experts = len(m.get("experts") or {}) or sum(not k.startswith("fused:") for k in m["bpc"])
        parts.append(("md", plots.forward_time_note(m["forward_s"], n_experts) + "\n"))
    return parts + [("fig", "fusion", plots.fusion_figure(m["bpc"], sets))]


def _growth_section(out: Path, state: dict[str, Any]) -> list[Part]:
    import plotly.io as pio

    parts: list[Part] = [("md", "## Layer-wise growth\n\nEach stage adds blocks and trains only them and the head "
                                "(earlier blocks frozen); the baselines train the final depth from scratch on the "
                                "same number of tokens, and on the same training FLOPs.\n")]
    miss = _missing(state, "growth")
    m = _read(out / "steps" / "growth" / "metrics.json")
    if miss or not m:
        return parts + [("md", miss or "_No growth metrics.json._\n")]
    rows = [[s["stage"], s["depth"], s["frozen_blocks"], s["steps"], s["tokens"], s["first_loss"], s["last_loss"],
             s["val_bpc"]] for s in m["stages"]]
    parts.append(("md", table(["stage", "depth", "frozen blocks", "steps", "tokens", "first loss", "last loss",
                               "val bits/char"], rows)))
    def iv(key: str) -> str:
        v = m.get(f"grown_vs_{key}_interval")
        return f"[{_pct(v['low'])}, {_pct(v['high'])}]" if v else "-"

    base = [[what, b.get("depth"), b.get("steps"), b.get("tokens"), _f(b.get("train_flops") / m["train_flops"], 2)
             if b.get("train_flops") and m.get("train_flops") else "", b.get("val_bpc"),
             "" if gap is None else f"{100 * gap:+.1f}%", iv(key)]
            for key, what, gap in (("baseline", "same tokens", m.get("grown_vs_baseline")),
                                   ("baseline_compute", "same compute", m.get("grown_vs_baseline_compute")))
            for b in [(m.get("baselines") or {}).get(key)] if b]
    if not base and m.get("baseline_val_bpc") is not None:  # a growth run from before the same-compute baseline
        base = [["same tokens", "", "", "", "", m["baseline_val_bpc"], f"{100 * m['grown_vs_baseline']:+.1f}%", "-"]]
    if base:
        parts.append(("md", "Monolithic baselines, the final depth trained from scratch (goal: the grown model within "
                            "5% bits/char of the same-tokens baseline):\n\n"
                            + table(["baseline", "depth", "steps", "tokens", "FLOPs vs schedule", "val bits/char",
                                     "grown vs baseline", "95% interval (paired, windows)"], base)))
    for name, title in (("growth_curves", None), ("growth_probe", "Per-layer en<->ru retrieval of each stage and "
                                                                  "baseline (does alignment appear with depth, and in "
                                                                  "the new block or the old ones?)")):
        fig_path = out / "steps" / "growth" / f"{name}.plotly.json"
        if fig_path.exists():
            if title:
                parts.append(("md", title + "\n"))
            parts.append(("fig", name, pio.read_json(fig_path)))
    return parts


def _interfaces_section(out: Path, state: dict[str, Any]) -> list[Part]:
    from bvvlab.app import ablation as A

    parts: list[Part] = [("md", "## What the frozen vectors must contain: the interface ablation\n\nOne shape and "
                                "budget over several input interfaces (glyph, trainable, token-id bits, random bits, "
                                "float codes), the same data order and init per seed; means with 95% t-intervals "
                                "over seeds.\n")]
    miss = _missing(state, "interfaces")
    m = _read(out / "steps" / "interfaces" / "summary.json")
    if miss or not m:
        return parts + [("md", miss or "_No interfaces summary.json._\n")]
    parts.append(("md", A.summary_table(m) + "\n"))
    fits = [[f"{m['gap_ref']} vs {k}", _f(g["fit"]["a"], 3), _f(g["fit"]["b"], 3), _f(g["fit"]["meet_tokens"], 0),
             g["fit"]["verdict"]] for k, g in m["gaps"].items()]
    if fits:
        parts.append(("md", "Gap (%) against tokens, fit gap = a + b log10(tokens):\n\n"
                            + table(["pair", "a", "b", "meet (tokens)", "verdict"], fits)))
        parts.append(("fig", "interfaces_gap", A.gap_figure(m)))
    return parts


def _generation_section(out: Path, state: dict[str, Any]) -> list[Part]:
    parts: list[Part] = [("md", "## Sample generation\n")]
    miss = _missing(state, "generate")
    m = _read(out / "steps" / "generate" / "metrics.json")
    if miss or not m:
        return parts + [("md", miss or "_No samples._\n")]
    s = m.get("settings") or {}
    text = (f"Model `{m.get('checkpoint')}`; temperature {s.get('temperature')}, top-k {s.get('top_k')}, top-p "
            f"{s.get('top_p')}, seed {s.get('seed')}; {m.get('tokens')} tokens at {_f(m.get('tokens_per_s'), 1)} "
            f"tokens/s ({m.get('finish_reason')}).\n\n```text\n{m.get('prompt', '')}{m.get('sample', '')}\n```\n")
    return parts + [("md", text)]


def _config_section(out: Path, state: dict[str, Any], steps: list) -> list[Part]:
    lines = ["## Configuration of every step\n"]
    for s in steps:
        r = state["steps"].get(s.name, {})
        params = r.get("params", s.params)
        lines.append(f"**{s.name}** ({s.notebook}, key `{r.get('key', '')}`): "
                     + ", ".join(f"`{k}={json.dumps(v, default=str)}`" for k, v in params.items()) + "\n")
    if state.get("overrides"):
        lines.append("Overrides: " + ", ".join(f"`{k}={v!r}`" for k, v in state["overrides"].items()) + "\n")
    return [("md", "\n".join(lines))]


def sections(out: Path, state: dict[str, Any], steps: list) -> list[Part]:
    """Every part of the report, in order; each section copes with its step missing."""
    from bvvlab.app.findings import findings

    parts: list[Part] = [("md", f"# bvvlab pipeline report: {state['profile']}\n\nRun folder `{out}`. Models with a "
                                "frozen embedding precomputed from pictures of Unicode glyphs, and their trainable "
                                "twins.\n"),
                         ("md", findings(out, state, steps))]
    with_steps = (_steps_section, _train_section, _config_section)
    for build in (_steps_section, _train_section, _eval_section, _probe_section, _fusion_section, _growth_section,
                  _interfaces_section, _generation_section, _config_section):
        try:
            parts += build(out, state, steps) if build in with_steps else build(out, state)
        except Exception as exc:  # noqa: BLE001 - a damaged output spoils its section, never the report
            parts.append(("md", f"_This section could not be built: {type(exc).__name__}: {exc}_\n"))
    return parts


# ---------------------------------------------------------------------------------------------
# writing

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}
.figure{margin:1em 0;border:1px solid #eee}li{margin:.35em 0}"""


def write(out: str | Path, state: dict[str, Any], steps: list) -> Path:
    """report.md, report.html and figures/ in `out` (each file written whole or not at all)."""
    import mistune
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    out = Path(out)
    parts = sections(out, state, steps)
    figures = ensure_dir(out / "figures")
    md, body = [], []
    render = mistune.create_markdown(plugins=["table"], escape=True)
    for part in parts:
        if part[0] == "md":
            md.append(part[1])
            body.append(render(part[1]))
        else:
            _, name, fig = part
            write_figure(fig, figures / f"{name}.html")  # plotly.min.js checked before it is reused
            md.append(f"[figure: {name}](figures/{name}.html)\n")
            body.append(f'<div class="figure" id="fig-{name}">'
                        + pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{name}") + "</div>")
    write_atomic(out / "report.md", "\n".join(md))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>bvvlab report: {html.escape(state['profile'])}"
            f"</title><style>{_CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            + "\n".join(body) + "</body></html>")
    write_atomic(out / "report.html", page)
    return out / "report.html"


# ---------------------------------------------------------------------------------------------
# executed notebooks as HTML

# nbconvert's lab template without what it fetches from a CDN (require.js, MathJax, mermaid, the
# widget manager): the page opens offline; plotly's figures carry their own plotly.js (the
# notebooks' "notebook" renderer inlines it) and progress-bar widgets show as their text
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""


_REMOTE_SCRIPT = re.compile(r'<script\s+src="https?://[^"]*"\s*>\s*</script>')


def notebook_html(nb_path: str | Path) -> Path:
    """The executed notebook rendered to HTML beside it (`NN_step.html`), readable in a browser
    without a network: the report links these, not the .ipynb (which a browser shows as JSON)."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb_path = Path(nb_path)
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"bvvlab_offline.html.j2": _OFFLINE_TEMPLATE})],
                            template_file="bvvlab_offline.html.j2")
    body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4))
    body = _REMOTE_SCRIPT.sub("", body)  # plotly's figures ask for MathJax from a CDN; they draw without it
    dest = nb_path.with_suffix(".html")
    write_atomic(dest, body)
    return dest
