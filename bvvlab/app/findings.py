"""The report's opening section: what this run found, one sentence per claim of the workbench,
each with its number, its 95% interval, its seeds and whether it is significant (issue 24).

Read from the same files as the report's sections (the steps' metrics.json / summary.json), so
it can be rebuilt at any time. A claim whose step did not run, failed, or left no numbers still
gets its sentence, saying what is missing; nothing disappears silently. The smoke and demo
profiles are small budgets, so their claims say "at this budget": a null or a gap there is a
statement about a few hundred steps of a tiny model, not about the method.

The claims: frozen vs trainable embedding (a paired bootstrap over validation windows per seed,
and a t-interval over seeds when the pipeline ran with `--seeds`), where en<->ru alignment
leaves the permutation null (the probe's family-wise p), fusion and growth against their goals,
and the interface ablation when its step ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bvvlab.core.intervals import paired_gap_interval, seed_interval

ALPHA = 0.05  # significance level of every claim (family-wise over layers for probing)
SMALL = ("smoke", "demo")  # profiles whose numbers hold at their budget only


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _status(state: dict[str, Any], name: str) -> str:
    return (state["steps"].get(name) or {}).get("status", "not run")


def _ok(state: dict[str, Any], name: str) -> bool:
    return _status(state, name) in ("done", "cached")


def _missing(state: dict[str, Any], names: list[str]) -> str:
    return "not available: step " + ", ".join(f"{n} {_status(state, n)}" for n in names if not _ok(state, n))


def pct(v: float) -> str:
    text = f"{100 * v:+.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


def pct_interval(iv: dict[str, Any]) -> str:
    return f"{pct(iv['value'])} [95% interval {pct(iv['low'])}, {pct(iv['high'])}]"


def _verdict(iv: dict[str, Any]) -> str:
    return "significant (the interval excludes 0)" if iv.get("significant") else "not significant (the interval holds 0)"


def budget(state: dict[str, Any], step: str) -> str:
    """', at this budget (profile smoke: 12 steps of the tiny preset)' for the small profiles,
    from the parameters `step` ran with."""
    if state.get("profile") not in SMALL:
        return ""
    p = (state["steps"].get(step) or {}).get("params") or {}
    n = p.get("steps") or p.get("steps_per_stage")
    what = (f": {n} steps{' per stage' if 'steps_per_stage' in p else ''} of the {p.get('preset', 'tiny')} preset"
            if n else "")
    return f", at this budget (profile {state['profile']}{what})"


# ---------------------------------------------------------------------------------------------
# frozen vs trainable


def twin_pairs(out: Path, steps: list) -> list[tuple[Any, str, str]]:
    """(seed, frozen step, unfrozen step) for every seed the pipeline trained."""
    train = [s for s in steps if s.group == "train"]
    frozen = {s.name.replace("train-frozen", ""): s for s in train if s.params.get("frozen")}
    unfrozen = {s.name.replace("train-unfrozen", ""): s for s in train if not s.params.get("frozen")}
    return [(f.params.get("seed", 0), f.name, unfrozen[k].name) for k, f in frozen.items() if k in unfrozen]


def twin_gap(fm: dict[str, Any], um: dict[str, Any]) -> dict[str, Any]:
    """The frozen twin's bits/char over the trainable one's, minus 1: paired over the validation
    windows when both runs recorded the same windows, else the point value alone (n = 0)."""
    fb, ub = fm.get("val_window_bits"), um.get("val_window_bits")
    if fb and ub and fm.get("val_window_chars") == um.get("val_window_chars"):
        return paired_gap_interval(fb, ub, fm["val_window_chars"])
    v = fm["val_bits_per_char"] / um["val_bits_per_char"] - 1
    return {"value": v, "low": None, "high": None, "n": 0, "significant": False}


def frozen_vs_trainable(out: Path, state: dict[str, Any], steps: list) -> str:
    head = "**Frozen vs trainable embedding.** "
    pairs = twin_pairs(out, steps)
    done = [(seed, f, u) for seed, f, u in pairs if _ok(state, f) and _ok(state, u)]
    if not done:
        names = [n for _, f, u in pairs for n in (f, u)] or ["train-frozen", "train-unfrozen"]
        return head + _missing(state, names) + "."
    gaps, bpc = [], []
    for seed, f, u in done:
        fm, um = (_read(out / "steps" / n / "metrics.json") for n in (f, u))
        if not fm or not um:
            return head + f"not available: {f} or {u} left no metrics.json."
        gaps.append((seed, twin_gap(fm, um)))
        bpc.append((fm, um))
    fm, um = bpc[0]
    first = gaps[0][1]

    def bpc_text(m: dict[str, Any]) -> str:
        iv = f" [{m['val_bpc_low']:.3f}, {m['val_bpc_high']:.3f}]" if "val_bpc_low" in m else ""
        return f"{m['val_bits_per_char']:.3f}{iv}"

    lead = "frozen ahead" if first["value"] < 0 else "trainable ahead"
    text = (f"Validation bits/char: frozen {bpc_text(fm)}, trainable {bpc_text(um)} (seed {gaps[0][0]}). Frozen "
            f"relative to trainable: {pct(first['value'])} bits/char ({lead})")
    if first["low"] is None:
        recorded = fm.get("val_window_bits") and um.get("val_window_bits")
        text += (" (no interval: the two runs were scored on different validation windows, so they cannot be paired; "
                 "give them the same val_chars and seed)" if recorded else
                 " (no interval: these runs did not record per-window scores; retrain them to get one)")
    else:
        text += (f", 95% interval [{pct(first['low'])}, {pct(first['high'])}] over {first['n']} validation windows "
                 f"(paired bootstrap; the spread over which text was held out, not over training seeds): "
                 f"{_verdict(first)}")
    if len(gaps) > 1:
        s = seed_interval([g["value"] for _, g in gaps])
        text += (f". Over {s['n']} seeds ({', '.join(str(seed) for seed, _ in gaps)}): mean gap {pct(s['value'])}, "
                 f"95% t-interval [{pct(s['low'])}, {pct(s['high'])}]: {_verdict(s)}")
    else:
        text += "; one seed (the pipeline's --seeds 0,1,2 gives an interval over seeds)"
    return head + text + budget(state, done[0][1]) + "."


# ---------------------------------------------------------------------------------------------
# probing, fusion, growth, interfaces


def _layer_text(layer: int, r: dict[str, Any]) -> str:
    return (f"layer {layer}: MRR {r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}] against a null 95th percentile of "
            f"{r['null_high']:.3f}, family-wise p = {r['p_fwe']:.3g}")


def _gain_text(m: dict[str, Any], i: int) -> str:
    gains = m.get("gain_vs_layer0") or []
    g = gains[i] if i < len(gains) else None
    if not g or g.get("low") is None:
        return ""
    return f"; its gain over layer 0: {g['diff']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"


def alignment_of(name: str, m: dict[str, Any]) -> str:
    """One model's clause. Layer 0 is the embedding itself: a frozen glyph matrix can align words
    there by shared characters or token lengths, so it is the baseline, reported apart. Then the
    blocks whose en<->ru retrieval MRR leaves the permutation null (family-wise p < ALPHA) with
    the strongest one's gain over layer 0, or the block closest to leaving it."""
    rows = [(i, l, (r or {}).get("null", {}).get("mrr"))
            for i, (l, r) in enumerate(zip(m.get("layers", []), m.get("retrieval") or []))]
    rows = [(i, l, r) for i, l, r in rows if r]
    if not rows:
        return f"{name}: no permutation null recorded (the probe ran without --permutations)"
    def leaves(r: dict[str, Any]) -> bool:
        return r["p_fwe"] < ALPHA and r["value"] > r["null_mean"]
    base = [(l, r) for _, l, r in rows if l == 0]
    head = (f"{name}: the embedding (layer 0, the baseline) is {'above' if leaves(base[0][1]) else 'inside'} the null "
            f"(MRR {base[0][1]['value']:.3f}, family-wise p = {base[0][1]['p_fwe']:.3g}); " if base else f"{name}: ")
    blocks = [(i, l, r) for i, l, r in rows if l != 0]
    if not blocks:
        return head + "no block was probed"
    out = [(i, l, r) for i, l, r in blocks if leaves(r)]
    if out:
        i, l, r = max(out, key=lambda x: x[2]["value"])
        return (head + f"blocks leave the null at layer{'s' if len(out) > 1 else ''} "
                f"{', '.join(str(x[1]) for x in out)} (strongest {_layer_text(l, r)}{_gain_text(m, i)})")
    i, l, r = min(blocks, key=lambda x: x[2]["p_fwe"])
    return head + f"no block leaves the null (closest {_layer_text(l, r)}{_gain_text(m, i)})"


def alignment(out: Path, state: dict[str, Any]) -> str:
    head = "**Cross-lingual alignment (probing).** "
    if not _ok(state, "probe"):
        return head + _missing(state, ["probe"]) + "."
    m = _read(out / "steps" / "probe" / "probe" / "metrics.json")
    if not m or not m.get("models"):
        return head + "not available: the probe step left no metrics.json."
    meta = m.get("meta") or {}
    any_model = next(iter(m["models"].values()))
    n = (any_model.get("stats") or {}).get("n_pairs", "?")
    return (head + f"en<->ru retrieval of the same concept ({n} concept pairs) against a stratified permutation null "
            f"({meta.get('permutations', '?')} re-pairings; family-wise over layers, level {ALPHA}): "
            + "; ".join(alignment_of(name, mm) for name, mm in m["models"].items()) + budget(state, "train-frozen") + ".")


def fusion(out: Path, state: dict[str, Any]) -> str:
    head = "**Fusion of two experts.** "
    if not _ok(state, "fusion"):
        return head + _missing(state, ["fusion"]) + "."
    m = _read(out / "steps" / "fusion" / "metrics.json")
    if not m or not m.get("goal"):
        return head + "not available: the fusion step left no goal in its metrics.json."
    goal = m["goal"]
    met = [k for k, g in goal.items() if g.get("met")]
    best = max(goal, key=lambda k: goal[k]["mixed_gain_vs_best_expert"])
    g = goal[best]
    ivs = (m.get("intervals") or {}).get(best) or {}
    iv = (f" [95% interval {pct(ivs['low'])}, {pct(ivs['high'])} over {ivs['n']} windows of mixed text, paired: "
          f"{_verdict(ivs).split(' (')[0]}]" if ivs.get("low") is not None else " (one evaluation, no interval)")
    text = (f"goal: at least 10% fewer bits/char than the better expert on mixed (code-switched en/ru/zh) text, and "
            f"within 5% of the "
            f"better expert on each language. {'Met by ' + ', '.join(met) if met else 'Not met by any'} of "
            f"{len(goal)} methods. The best on mixed text, {best}, gains {pct(g['mixed_gain_vs_best_expert'])}{iv}; "
            f"its worst per-language gap to the better expert is {pct(g['worst_gap_to_better_expert'])}")
    fs = m.get("forward_s") or {}
    if fs.get("ratio"):
        text += (f". Measured on this machine, a fused forward pass took {fs['ratio']:.1f}x one expert's time (it runs "
                 "every expert on every token, then combines their next-token distributions)")
    return head + text + budget(state, "fusion") + "."


def growth(out: Path, state: dict[str, Any]) -> str:
    head = "**Layer-wise growth.** "
    if not _ok(state, "growth"):
        return head + _missing(state, ["growth"]) + "."
    m = _read(out / "steps" / "growth" / "metrics.json")
    if not m or m.get("grown_vs_baseline") is None:
        return head + "not available: the growth step left no baseline comparison."
    gap = m["grown_vs_baseline"]
    depth = m["stages"][-1]["depth"] if m.get("stages") else "?"
    n = len(m.get("stages") or [])

    def iv(key: str) -> str:
        v = m.get(f"grown_vs_{key}_interval")
        return (f" [95% interval {pct(v['low'])}, {pct(v['high'])}, paired over {v['n']} validation windows]" if v
                else "")

    text = (f"goal: the grown model (depth {depth}, {n} stage{'s' if n != 1 else ''}, earlier blocks frozen) "
            f"within 5% bits/char of the same depth trained from scratch on the same tokens. Grown vs that baseline: "
            f"{pct(gap)}{iv('baseline')} ({m['stages'][-1]['val_bpc']:.3f} vs {m['baseline_val_bpc']:.3f} "
            f"bits/char): goal {'met' if gap <= 0.05 else 'not met'}")
    if m.get("grown_vs_baseline_compute") is not None:
        text += f"; against the same-compute baseline {pct(m['grown_vs_baseline_compute'])}{iv('baseline_compute')}"
    if not m.get("grown_vs_baseline_interval"):
        text += f"; seed {m.get('seed', 0)}, one evaluation, no interval"
    return head + text + budget(state, "growth") + "."


def interfaces(out: Path, state: dict[str, Any]) -> str:
    head = "**Interfaces (what the frozen vectors must contain).** "
    if not _ok(state, "interfaces"):
        return head + _missing(state, ["interfaces"]) + "."
    m = _read(out / "steps" / "interfaces" / "summary.json")
    if not m or not m.get("gaps"):
        return head + "not available: the ablation left no paired gaps (one interface, or no common seeds)."
    finals = m.get("final_gap_pct_paired") or {}
    parts = [interface_gap(f"{m['gap_ref']} vs {other}", g, finals.get(f"{m['gap_ref']} vs {other}"))
             for other, g in m["gaps"].items()]
    parts = [p for p in parts if p]
    if not parts:
        return head + "not available: the ablation's gaps hold no evaluation."
    return head + "; ".join(parts) + budget(state, "interfaces") + "."


def interface_gap(pair: str, g: dict[str, Any], final: dict[str, Any] | None) -> str:
    """One pair: the final gap on the whole validation split, paired by seed (the periodic
    evaluations use a subset of windows, so they are noisier), else the last periodic one; then
    the trend, called undetermined when the slope's interval over seeds holds 0."""
    p = final if final and final.get("mean") is not None else (g["points"][-1] if g.get("points") else None)
    if not p:
        return ""
    where = "on the whole validation split" if p is final else f"at {p['tokens']:,} tokens"
    if p.get("low") is None:
        iv, sig = "", "one seed, no interval"
    else:  # the ablation's gaps are already in percent
        iv = f" [95% t-interval {p['low']:+.1f}%, {p['high']:+.1f}%]"
        sig = "significant" if p["low"] > 0 or p["high"] < 0 else "not significant"
    mean = "0.0" if f"{p['mean']:+.1f}" in ("+0.0", "-0.0") else f"{p['mean']:+.1f}"
    slope = (g.get("fit_uncertainty") or {}).get("slope") or {}
    boot = (g.get("fit_uncertainty") or {}).get("bootstrap") or {}
    if slope.get("low") is not None and slope["low"] <= 0 <= slope["high"]:
        trend = (f"undetermined (the slope over seeds, [{slope['low']:+.1f}, {slope['high']:+.1f}] points per "
                 f"decade of tokens, holds 0; the fit of the mean says {g['fit'].get('verdict')})")
    else:
        trend = g["fit"].get("verdict")
    if boot.get("share_meets") is not None:
        trend += f"; {100 * boot['share_meets']:.0f}% of seed resamples meet"
    return (f"{pair}: {mean}% bits/char{iv} over {len(g['seeds'])} seeds {where}, {sig}; trend: {trend}")


def steps_run(state: dict[str, Any], steps: list) -> str:
    ran = [f"{s.name} ({_status(state, s.name)})" for s in steps if _ok(state, s.name)]
    other = [f"{s.name} ({_status(state, s.name)})" for s in steps if not _ok(state, s.name)]
    return ("**Steps.** Ran: " + (", ".join(ran) or "none") + "."
            + (" Did not finish or did not run: " + ", ".join(other) + "." if other else ""))


def findings(out: str | Path, state: dict[str, Any], steps: list) -> str:
    """The markdown of the findings section (a claim that cannot be built says why, in its place)."""
    out = Path(out)
    lines = []
    for claim in (lambda: steps_run(state, steps), lambda: frozen_vs_trainable(out, state, steps),
                  lambda: alignment(out, state), lambda: fusion(out, state), lambda: growth(out, state),
                  lambda: interfaces(out, state)):
        try:
            lines.append(claim())
        except Exception as exc:  # noqa: BLE001 - a damaged output spoils its claim, never the report
            lines.append(f"_A claim could not be built: {type(exc).__name__}: {exc}_")
    small = state.get("profile") in SMALL
    intro = ("What this run found, each claim with its 95% interval and whether it is significant at level "
             f"{ALPHA}." + (f" Profile {state.get('profile')} is a small budget: read every claim as holding at this "
                            "budget only." if small else ""))
    return "## Findings\n\n" + intro + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def run_gap(run_a: str | Path, run_b: str | Path) -> dict[str, Any] | None:
    """The relative bits/char gap of training run A over run B (A/B - 1) with the paired 95%
    bootstrap over the validation windows both final evaluations scored (meta.json `final`);
    None when either run has no per-window record or they scored different windows. Notebook 07
    uses it for the grown model against its baselines."""
    fa, fb = ((_read(Path(r) / "meta.json") or {}).get("final") or {} for r in (run_a, run_b))
    if not fa.get("val_window_bits") or fa.get("val_window_chars") != fb.get("val_window_chars"):
        return None
    return paired_gap_interval(fa["val_window_bits"], fb["val_window_bits"], fa["val_window_chars"])
