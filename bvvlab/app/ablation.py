"""The interface ablation (issue 23): one shape and budget, every frozen interface, >= 3 seeds.

The published "emergent-semantics" series (docs/recipe.md section 10) trains one backbone over
several input interfaces: Unicode glyphs, a trainable embedding, the token id's bits, random
bits and float codes. `run_series` does the same at a chosen shape and budget: every run of a
seed shares that seed's data order and transformer init (`bvvlab.train.setup.build_model` seeds
the blocks before the embedding), so two interfaces differ in the input matrix alone. After
each run it records, in `RUN/ablation.json` (a finished run is never trained or measured
again: the series can be stopped and re-run):

* validation bits/char: the trainer's final evaluation over the whole validation shard, its
  periodic evaluations (a fixed sample, for the gap against tokens), and bits/char per held-out
  language (`bvvlab.eval.scoring.bpc_by_language`);
* optionally the offline evaluation suites (`bvvlab.eval.suites.offline_suite`) and the
  cross-lingual retrieval probe per layer (`bvvlab.analysis.probe.probe_runs`).

`summarize` turns the runs into means with 95% t-intervals over seeds per interface, and the
gap against tokens: (bpc_glyph - bpc_other) / bpc_other in %, paired by seed at every periodic
evaluation, with a least-squares fit gap = a + b log10(tokens) and the budget where the fit
reaches 0 (the curves would meet), or "diverges" / "no crossing" where it does not.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bvvlab.core.atomic import ensure_dir, write_json_atomic

__all__ = ["DEFAULT_SERIES", "series_entry", "run_series", "measure_run", "summarize", "gap_fit",
           "crossing_uncertainty", "gap_figure", "summary_table"]

# name -> TrainConfig keys: the published series at a small width (random codes at two sizes)
DEFAULT_SERIES: dict[str, dict[str, Any]] = {
    "glyph": {"interface": "glyph"},
    "trainable": {"interface": "trainable"},
    "id-bits": {"interface": "id-bits"},
    "random-bits-64": {"interface": "random-bits", "interface_dim": 64},
    "random-bits-256": {"interface": "random-bits", "interface_dim": 256},
    "float-64": {"interface": "float", "interface_dim": 64},
}
RESULT_FILE = "ablation.json"
# what a run of the series may not set (the runner sets them per run)
_RUNNER_KEYS = ("seed", "out", "resume", "overwrite", "frozen")


def series_entry(spec: str) -> tuple[str, dict[str, Any]]:
    """`name` of DEFAULT_SERIES, or `kind[:n]` (id-bits:16, random-bits:128, float:64), as (name, keys)."""
    from bvvlab.glyph.interfaces import check_kind

    if spec in DEFAULT_SERIES:
        return spec, dict(DEFAULT_SERIES[spec])
    kind, _, n = spec.partition(":")
    check_kind(kind)
    keys: dict[str, Any] = {"interface": kind}
    if n:
        if not n.isdigit():
            raise ValueError(f"series entry {spec!r}: the part after ':' is the code width n, a number "
                             f"(e.g. {kind}:64)")
        keys["interface_dim"] = int(n)
    return (f"{kind}-{n}" if n else kind), keys


def _t_interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% Student-t interval over seeds (a single seed: no interval)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(x.size)}


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip().endswith("}")]


def measure_run(run: str | os.PathLike, suites: bool = True, probe: bool = True, bpc_chars: int | None = 20_000,
                suite_limit: int | None = None) -> dict[str, Any]:
    """What the series records of one finished run (see the module docstring)."""
    from bvvlab.eval import scoring
    from bvvlab.models.checkpoints import load_checkpoint

    run = Path(run)
    records = _metrics(run)
    evals = [r for r in records if r.get("kind") == "eval"]
    final = [r for r in evals if r.get("val_full")]
    model, tok = load_checkpoint(run)
    model.eval()
    res: dict[str, Any] = {
        "run": str(run), "interface": model.config.interface, "embedding_hash": model.config.embedding_hash,
        "val_bpc": final[-1]["val_bpc"] if final else None, "tokens": final[-1]["tokens"] if final else None,
        "history": [{"step": r["step"], "tokens": r["tokens"], "val_bpc": r["val_bpc"]} for r in evals
                    if not r.get("val_full")],
        "bpc_by_language": {k: v["bpc"] for k, v in scoring.bpc_by_language(model, tok, max_chars=bpc_chars).items()},
    }
    if suites:
        from bvvlab.eval.runner import evaluate_models
        from bvvlab.eval.suites import offline_suite

        rows = evaluate_models([(run.name, model, tok)], offline_suite(), limit=suite_limit)
        res["suites"] = {f"{r['task']}/{r['metric']}": r["mean"] for r in rows}
    if probe:
        from bvvlab.analysis.probe import probe_runs

        p = probe_runs({run.name: run})["runs"][run.name]
        res["probe"] = {"top1_by_layer": p["top1"], "best_top1": max(p["top1"]), "last_top1": p["top1"][-1],
                        "chance_top1": p["chance_top1"]}
    return res


def run_series(out: str | os.PathLike, base: dict[str, Any] | None = None,
               series: dict[str, dict[str, Any]] | Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
               suites: bool = True, probe: bool = True, bpc_chars: int | None = 20_000,
               suite_limit: int | None = None, log: Any = print) -> dict[str, Any]:
    """Train and measure every (interface, seed) into `out/runs/NAME/seedS`, then summarize
    into `out/summary.json`. Seeds run in rounds (every interface of seed 0 first), so a series
    stopped early still has paired runs. `base`: TrainConfig keys shared by every run."""
    from bvvlab.train.loop import make_config, train

    base = dict(base or {})
    bad = [k for k in base if k in _RUNNER_KEYS or k.startswith("interface")]
    if bad:
        raise ValueError(f"base config sets {', '.join(bad)}, which the series sets per run: drop them (the seeds, "
                         "series and out arguments choose them)")
    if series is None:
        series = DEFAULT_SERIES
    elif not isinstance(series, dict):
        series = dict(series_entry(s) for s in series)
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds={list(seeds)}: give distinct seeds (3 or more for intervals)")
    out = ensure_dir(out)
    cfgs = {(name, s): make_config(**{**base, **keys, "seed": s, "out": str(out / "runs" / name / f"seed{s}"),
                                      "resume": True, "progress": base.get("progress", False)})
            for s in seeds for name, keys in series.items()}
    for cfg in cfgs.values():  # every config is checked before the first run starts
        cfg.validate()
    write_json_atomic(out / "series.json", {"base": base, "series": series, "seeds": list(seeds)})
    for (name, s), cfg in cfgs.items():
        run = Path(cfg.out)
        if (run / RESULT_FILE).is_file():
            continue
        log(f"ablation: {name} seed {s}: training")
        train(cfg)
        write_json_atomic(run / RESULT_FILE, {"name": name, "seed": s, **measure_run(
            run, suites=suites, probe=probe, bpc_chars=bpc_chars, suite_limit=suite_limit)})
    summary = summarize(out)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _load_runs(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for f in sorted(out.glob(f"runs/*/seed*/{RESULT_FILE}")):
        r = json.loads(f.read_text(encoding="utf-8"))
        runs.setdefault(r["name"], {})[int(r["seed"])] = r
    return runs


def gap_fit(tokens: Sequence[float], gaps: Sequence[float]) -> dict[str, Any]:
    """Least squares gap = a + b log10(tokens); where the fitted line reaches 0 (the meeting
    budget) if the gap shrinks towards it, else why there is none."""
    t, g = np.asarray(tokens, dtype=np.float64), np.asarray(gaps, dtype=np.float64)
    if (t <= 0).any():
        raise ValueError("gap_fit: token budgets must be > 0 (log axis)")
    if t.size < 2 or np.ptp(np.log10(t)) == 0:
        return {"a": None, "b": None, "meet_tokens": None, "verdict": "too few budgets to fit"}
    b, a = np.polyfit(np.log10(t), g, 1)
    res: dict[str, Any] = {"a": float(a), "b": float(b), "meet_tokens": None, "crossed_tokens": None}
    if b == 0:
        res["verdict"] = "constant"
        return res
    x0 = -a / b  # log10 of the budget where the fitted line is 0
    if x0 <= np.log10(t[-1]):  # 0 lies behind the last budget: the fitted gap moves away from it
        res["verdict"] = "diverges (the fitted gap grows with tokens)"
        if x0 >= np.log10(t[0]):  # ... after changing sign inside the measured range
            res["crossed_tokens"] = float(10 ** x0)
            res["verdict"] += f"; it changed sign at about {10 ** x0:,.0f} tokens, inside the measured budgets"
    elif x0 > 15:  # a nearly flat fit: 10 ** x0 overflows to inf, which JSON cannot hold
        res["verdict"] = "meets only beyond 1e15 tokens (a nearly flat fit)"
    else:
        res["meet_tokens"] = float(10 ** x0)
        res["verdict"] = "meets"
    return res


def _paired_gaps(runs: dict[str, dict[int, dict]], ref: str, other: str) -> dict[int, dict[int, float]]:
    """seed -> {tokens: gap %} at every periodic evaluation both runs of the seed share (tokens > 0)."""
    out: dict[int, dict[int, float]] = {}
    for s in sorted(set(runs[ref]) & set(runs[other])):
        a = {h["tokens"]: h["val_bpc"] for h in runs[ref][s]["history"]}
        b = {h["tokens"]: h["val_bpc"] for h in runs[other][s]["history"]}
        # the step-0 evaluation has no place on a log axis (and both models are untrained there)
        out[s] = {t: 100.0 * (a[t] - b[t]) / b[t] for t in sorted(set(a) & set(b)) if t > 0}
    return out


def crossing_uncertainty(curves: dict[int, dict[int, float]], n_boot: int = 2000, seed: int = 0,
                         min_tokens: float = 0) -> dict[str, Any]:
    """How far to trust the fitted meeting budget: the fit of every seed's own gap curve, the
    slope's 95% t-interval over seeds, and a bootstrap over seeds (resample seeds with
    replacement, average their curves, refit): the share of resamples whose fit meets, diverges
    or crossed already, and the 2.5/50/97.5 percentiles of the meeting budget among those that
    meet. With k seeds there are only C(2k-1, k) distinct resamples (10 at k = 3), so the
    bootstrap shows the spread between seeds, not a fine-grained distribution."""
    seeds = sorted(curves)
    tokens = sorted(set.intersection(*(set(curves[s]) for s in seeds))) if seeds else []
    tokens = [t for t in tokens if t >= min_tokens]
    res: dict[str, Any] = {"min_tokens": min_tokens, "per_seed": [], "slope": _t_interval([]), "bootstrap": None}
    if len(tokens) < 2:
        return res
    g = np.asarray([[curves[s][t] for t in tokens] for s in seeds])
    res["per_seed"] = [{"seed": s, **gap_fit(tokens, row)} for s, row in zip(seeds, g)]
    res["slope"] = _t_interval([f["b"] for f in res["per_seed"]])
    rng = np.random.default_rng(seed)
    fits = [gap_fit(tokens, g[rng.integers(0, len(seeds), len(seeds))].mean(axis=0)) for _ in range(n_boot)]
    # a fit that meets only beyond 1e15 tokens meets too: it enters the percentiles as +inf, so a
    # percentile that lands on it is reported as None ("beyond 1e15") rather than dropped
    meets = np.asarray([math.log10(f["meet_tokens"]) if f["meet_tokens"] else math.inf
                        for f in fits if f["verdict"].startswith("meets")], dtype=np.float64)
    pcts = np.quantile(meets, [0.025, 0.5, 0.975], method="inverted_cdf") if meets.size else None
    res["bootstrap"] = {
        "n_boot": n_boot, "seed": seed, "distinct_resamples": math.comb(2 * len(seeds) - 1, len(seeds)),
        "share_meets": float(meets.size / n_boot),
        "share_meets_beyond_1e15": float(np.isinf(meets).sum() / n_boot),
        "share_diverges": float(sum(f["verdict"].startswith("diverges") for f in fits) / n_boot),
        "share_crossed": float(sum(f["crossed_tokens"] is not None for f in fits) / n_boot),
        "meet_tokens_p2.5_p50_p97.5": [None if math.isinf(v) else float(10 ** v) for v in pcts]
        if pcts is not None else None,
    }
    return res


def _gap_series(runs: dict[str, dict[int, dict]], ref: str, other: str, n_boot: int = 2000
                ) -> dict[str, Any] | None:
    """Per periodic evaluation: gap % of `ref` vs `other`, paired by seed, with intervals; the fit
    over the whole history and over its later half (tokens >= half the last budget, past warmup
    and the fast early descent), each with `crossing_uncertainty`."""
    if ref not in runs or other not in runs:
        return None
    curves = _paired_gaps(runs, ref, other)
    by_tokens: dict[int, list[float]] = {}
    for c in curves.values():
        for t, v in c.items():
            by_tokens.setdefault(t, []).append(v)
    points = [{"tokens": t, **_t_interval(by_tokens[t])} for t in sorted(by_tokens)]
    fit = gap_fit([p["tokens"] for p in points], [p["mean"] for p in points])
    res = {"ref": ref, "other": other, "seeds": sorted(curves), "points": points, "fit": fit,
           "fit_uncertainty": crossing_uncertainty(curves, n_boot=n_boot)}
    if points:
        half = points[-1]["tokens"] / 2
        late = [p for p in points if p["tokens"] >= half]
        res["late_fit"] = {"min_tokens": half, **gap_fit([p["tokens"] for p in late], [p["mean"] for p in late])}
        res["late_fit_uncertainty"] = crossing_uncertainty(curves, n_boot=n_boot, min_tokens=half)
    return res


def summarize(out: str | os.PathLike, ref: str = "glyph",
              pairs: Sequence[tuple[str, str]] = (("id-bits", "trainable"),)) -> dict[str, Any]:
    """Means and 95% t-intervals over seeds per interface; the gap of `ref` against the others
    (`gaps`) and of each (a, b) of `pairs` (`gaps_more`) against tokens, and the final gaps paired
    by seed (`final_gap_pct_paired`)."""
    runs = _load_runs(Path(out))
    table: dict[str, Any] = {}
    for name, by_seed in runs.items():
        rs = list(by_seed.values())
        row: dict[str, Any] = {"interface": rs[0].get("interface"), "seeds": sorted(by_seed),
                               "val_bpc": _t_interval([r["val_bpc"] for r in rs]),
                               "tokens": rs[0].get("tokens")}
        for lang in sorted({k for r in rs for k in r.get("bpc_by_language", {})}):
            row[f"bpc_{lang}"] = _t_interval([r["bpc_by_language"].get(lang) for r in rs])
        for key in sorted({k for r in rs for k in r.get("suites", {})}):
            row[key] = _t_interval([r["suites"].get(key) for r in rs])
        if any("probe" in r for r in rs):
            row["probe_best_top1"] = _t_interval([r["probe"]["best_top1"] for r in rs if "probe" in r])
            row["probe_last_top1"] = _t_interval([r["probe"]["last_top1"] for r in rs if "probe" in r])
        table[name] = row
    gaps = {other: _gap_series(runs, ref, other) for other in runs if other != ref}
    more = {f"{a} vs {b}": _gap_series(runs, a, b) for a, b in pairs if a in runs and b in runs}
    return {"interfaces": table, "gap_ref": ref, "gaps": {k: v for k, v in gaps.items() if v},
            "gaps_more": more, "final_gap_pct_paired": _final_gaps(runs, [(ref, o) for o in runs if o != ref]
                                                                  + [p for p in pairs if p[0] in runs and p[1] in runs])}


def _final_gaps(runs: dict[str, dict[int, dict]], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The final (whole validation shard) gap % of a vs b, paired by seed, with its t-interval."""
    out = {}
    for a, b in pairs:
        per = {s: 100.0 * (runs[a][s]["val_bpc"] - runs[b][s]["val_bpc"]) / runs[b][s]["val_bpc"]
               for s in sorted(set(runs[a]) & set(runs[b]))
               if runs[a][s].get("val_bpc") is not None and runs[b][s].get("val_bpc") is not None}
        out[f"{a} vs {b}"] = {**_t_interval(list(per.values())), "per_seed": per}
    return out


def summary_table(summary: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """Markdown: one row per interface, `mean [low, high]` per metric (val_bpc and per-language
    bits/char by default)."""
    table = summary["interfaces"]
    if keys is None:
        keys = ["val_bpc"] + sorted({k for row in table.values() for k in row if k.startswith("bpc_")})

    def cell(v: Any) -> str:
        if not isinstance(v, dict) or v.get("mean") is None:
            return "-"
        return f"{v['mean']:.4f}" + ("" if v["low"] is None else f" [{v['low']:.4f}, {v['high']:.4f}]")

    lines = ["| interface | code | seeds | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for name, row in table.items():
        lines.append(f"| {name} | {row['interface']} | {len(row['seeds'])} | "
                     + " | ".join(cell(row.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def gap_figure(summary: dict[str, Any], budget_marker: bool = True):
    """Gap (%) of the reference interface against each other one vs tokens (log axis), with the
    seeds' 95% intervals, the fitted trend, and the meeting budget where the fit gives one."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (other, g) in enumerate(summary["gaps"].items()):
        pts = g["points"]
        t = [p["tokens"] for p in pts]
        m = [p["mean"] for p in pts]
        err = [(p["high"] - p["mean"]) if p["high"] is not None else 0 for p in pts]
        fig.add_trace(go.Scatter(x=t, y=m, mode="markers+lines", name=f"{summary['gap_ref']} vs {other}",
                                 error_y={"type": "data", "array": err}, legendgroup=other))
        fit = g["fit"]
        if fit["b"] is not None:
            hi = max(t[-1], fit["meet_tokens"] or 0) if budget_marker else t[-1]
            xs = np.geomspace(t[0], hi, 50)
            fig.add_trace(go.Scatter(x=xs, y=fit["a"] + fit["b"] * np.log10(xs), mode="lines", legendgroup=other,
                                     line={"dash": "dot"}, name=f"fit: {fit['a']:.2f} + {fit['b']:.2f} log10(tokens)"))
            if budget_marker and fit["meet_tokens"]:
                fig.add_vline(x=fit["meet_tokens"], line_dash="dash",
                              annotation_text=f"meet {fit['meet_tokens']:.3g} tokens ({other})")
    fig.add_hline(y=0, line_color="gray")
    fig.update_layout(template="plotly_white", title="validation bits/char gap against tokens",
                      xaxis={"type": "log", "title": {"text": "tokens seen"}},
                      yaxis={"title": {"text": f"gap (%): ({summary['gap_ref']} - other) / other"}})
    return fig
