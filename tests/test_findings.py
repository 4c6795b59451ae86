"""The report's findings section (bvvlab.app.findings, issue 24): one sentence per claim with its
number, interval, seeds and significance; a claim whose inputs are missing says so."""

import json
from pathlib import Path

import numpy as np
import pytest

from bvvlab.app import findings as F
from bvvlab.app import pipeline as PL
from bvvlab.app import report
from bvvlab.core.intervals import paired_gap_interval
from bvvlab.train.fusion import mixed_gain_intervals


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _twin(out: Path, name: str, bits: list[float], chars: list[int], seed: int) -> None:
    _write(out / "steps" / name / "metrics.json",
           {"preset": "tiny", "steps": 12, "seed": seed, "val_bits_per_char": sum(bits) / sum(chars),
            "val_bpc_low": 1.0, "val_bpc_high": 3.0, "val_window_bits": bits, "val_window_chars": chars})


def _layer(value, p_fwe, null_high=0.1):
    return {"null": {"mrr": {"value": value, "low": value - 0.02, "high": value + 0.02, "null_mean": 0.06,
                             "null_high": null_high, "p": p_fwe / 2, "p_fwe": p_fwe}}}


@pytest.fixture
def run(tmp_path):
    """A run folder as the smoke pipeline leaves it, seeds 0 and 1, with the probe failed."""
    out = tmp_path / "run"
    rng = np.random.default_rng(0)
    chars = rng.integers(40, 80, size=60).tolist()
    for seed, suffix in ((0, ""), (1, "-seed1")):
        base = (np.asarray(chars) * rng.normal(2.0, 0.2, size=60)).tolist()
        _twin(out, f"train-frozen{suffix}", [b * 0.97 for b in base], chars, seed)  # frozen 3% fewer bits
        _twin(out, f"train-unfrozen{suffix}", base, chars, seed)
    steps = PL.plan("smoke", seeds=[0, 1])
    state = {"profile": "smoke", "steps": {s.name: {"status": "done", "params": s.params} for s in steps}}
    state["steps"]["probe"]["status"] = "failed"
    del state["steps"]["interfaces"]  # never ran
    _write(out / "steps" / "growth" / "metrics.json",
           {"stages": [{"depth": 2, "val_bpc": 5.0}], "baseline_val_bpc": 5.1, "grown_vs_baseline": 5.0 / 5.1 - 1,
            "grown_vs_baseline_interval": {"low": -0.03, "high": -0.01, "n": 80}, "seed": 0})
    return out, state, steps


def test_every_claim_is_there_and_names_what_is_missing(run):
    out, state, steps = run
    md = F.findings(out, state, steps)
    assert md.startswith("## Findings")
    claims = [l for l in md.splitlines() if l.startswith("- **")]
    assert [c.split("**")[1] for c in claims] == [
        "Steps.", "Frozen vs trainable embedding.", "Cross-lingual alignment (probing).", "Fusion of two experts.",
        "Layer-wise growth.", "Interfaces (what the frozen vectors must contain)."]
    ran = claims[0]
    for s in steps:
        assert s.name in ran, s.name
    assert "probe (failed)" in ran and "interfaces (not run)" in ran
    assert "not available: step probe failed" in claims[2]
    assert "not available: the fusion step left no goal" in claims[3]  # done, but its metrics.json is not there
    assert "not available: step interfaces not run" in claims[5]
    assert "at this budget (profile smoke: 12 steps of the tiny preset)" in claims[1]
    assert "-2.0% [95% interval -3.0%, -1.0%, paired over 80 validation windows]" in claims[4] and "goal met" in claims[4]


def test_frozen_vs_trainable_is_paired_over_windows_and_over_seeds(run):
    out, state, steps = run
    claim = F.frozen_vs_trainable(out, state, steps)
    fm, um = (json.loads((out / "steps" / n / "metrics.json").read_text()) for n in ("train-frozen", "train-unfrozen"))
    iv = paired_gap_interval(fm["val_window_bits"], um["val_window_bits"], fm["val_window_chars"])
    assert iv["value"] == pytest.approx(-0.03) and iv["significant"]
    assert f"-3.0% bits/char (frozen ahead), 95% interval [{F.pct(iv['low'])}, {F.pct(iv['high'])}] over 60" in claim
    assert "significant (the interval excludes 0)" in claim
    assert "Over 2 seeds (0, 1): mean gap -3.0%" in claim
    # one seed: said, and the option named
    one = F.frozen_vs_trainable(out, state, PL.plan("smoke"))
    assert "one seed (the pipeline's --seeds 0,1,2" in one and "Over 2 seeds" not in one
    # a large profile drops the budget wording
    assert "at this budget" not in F.frozen_vs_trainable(out, {**state, "profile": "paper"}, steps)


def test_runs_without_window_scores_give_the_gap_and_say_there_is_no_interval(run):
    out, state, steps = run
    for name in ("train-frozen", "train-unfrozen"):
        p = out / "steps" / name / "metrics.json"
        m = json.loads(p.read_text())
        _write(p, {k: v for k, v in m.items() if not k.startswith("val_window") and "low" not in k and "high" not in k})
    claim = F.frozen_vs_trainable(out, state, PL.plan("smoke"))
    assert "no interval: these runs did not record per-window scores" in claim and "-3.0%" in claim


def test_alignment_names_the_layers_that_leave_the_null():
    m = {"layers": [0, 1, 2], "retrieval": [_layer(0.07, 0.6), _layer(0.2, 0.001), _layer(0.15, 0.02)],
         "gain_vs_layer0": [{"diff": 0.0, "low": 0.0, "high": 0.0}, {"diff": 0.13, "low": 0.1, "high": 0.16},
                            {"diff": 0.08, "low": 0.05, "high": 0.11}]}
    assert F.alignment_of("frozen", m) == ("frozen: the embedding (layer 0, the baseline) is inside the null (MRR 0.070, "
                                           "family-wise p = 0.6); blocks leave the null at layers 1, 2 (strongest "
                                           "layer 1: MRR 0.200 [0.180, 0.220] against a null 95th percentile of 0.100, "
                                           "family-wise p = 0.001; its gain over layer 0: +0.130 [+0.100, +0.160])")
    none = {"layers": [0, 1], "retrieval": [_layer(0.07, 0.6), _layer(0.09, 0.2)]}
    assert F.alignment_of("unfrozen", none) == ("unfrozen: the embedding (layer 0, the baseline) is inside the null "
                                                "(MRR 0.070, family-wise p = 0.6); no block leaves the null (closest "
                                                "layer 1: MRR 0.090 [0.070, 0.110] against a null 95th percentile of "
                                                "0.100, family-wise p = 0.2)")
    assert "no permutation null recorded" in F.alignment_of("x", {"layers": [0], "retrieval": [{}]})


def test_alignment_of_the_embedding_alone_is_the_baseline_not_a_finding_of_the_blocks():
    """The demo's frozen twin left the null at layer 0 only (shared glyphs) and was reported as
    'alignment leaves the null at layer 0', read as emergence; the blocks are what the claim is about."""
    m = {"layers": [0, 1, 2], "retrieval": [_layer(0.079, 0.003), _layer(0.05, 0.5), _layer(0.04, 0.7)]}
    text = F.alignment_of("frozen", m)
    assert text.startswith("frozen: the embedding (layer 0, the baseline) is above the null (MRR 0.079")
    assert "no block leaves the null (closest layer 1" in text


def test_fusion_gain_interval_is_the_paired_gap_turned_round():
    chars = [10] * 50
    rng = np.random.default_rng(1)
    a = (rng.uniform(20, 40, 50)).tolist()
    windows = {"en-ru": {"val_bpc": 2.0, "val_window_bits": a, "val_window_chars": chars},
               "en-zh": {"val_bpc": 3.0, "val_window_bits": [x * 1.5 for x in a], "val_window_chars": chars},
               "fused:bayes": {"val_bpc": 1.8, "val_window_bits": [x * 0.9 for x in a], "val_window_chars": chars}}
    iv = mixed_gain_intervals(windows, ["en-ru", "en-zh"])["bayes"]
    assert iv["expert"] == "en-ru" and iv["value"] == pytest.approx(0.1)
    assert iv["low"] == pytest.approx(0.1) and iv["high"] == pytest.approx(0.1) and iv["significant"]


def test_run_gap_pairs_two_runs_windows_and_refuses_different_windows(tmp_path):
    for name, bits, chars in (("a", [2.0, 4.0], [1, 2]), ("b", [1.0, 2.0], [1, 2]), ("c", [1.0], [3])):
        _write(tmp_path / name / "meta.json", {"final": {"val_window_bits": bits, "val_window_chars": chars}})
    assert F.run_gap(tmp_path / "a", tmp_path / "b")["value"] == pytest.approx(1.0)
    assert F.run_gap(tmp_path / "a", tmp_path / "c") is None
    assert F.run_gap(tmp_path / "a", tmp_path / "nosuch") is None


def test_the_report_opens_with_the_findings(run):
    out, state, steps = run
    state.update(started="now", meta={})
    parts = report.sections(out, state, steps)
    assert parts[1][1].startswith("## Findings")
    md = "\n".join(p[1] for p in parts if p[0] == "md")
    assert md.index("## Findings") < md.index("## Steps")
    assert "| frozen seed1 | 1 | tiny |" in md and "[1.0000, 3.0000]" in md


def test_an_executed_notebook_renders_to_html_that_fetches_nothing(tmp_path):
    """The report links rendered pages (issue 24: raw .ipynb over file:// showed JSON). nbconvert's
    lab template asks CDNs for require.js and MathJax, and plotly's output for MathJax: all gone."""
    import re

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Fusion, $x$"), nbformat.v4.new_code_cell("fig")]
    nb.cells[1].outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": '<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/3.2.2/es5/tex-svg.min.js"></script>'
                     '<div id="plot">the figure</div>', "text/plain": "fig"})]
    path = tmp_path / "06_fusion.ipynb"
    nbformat.write(nb, path)
    page = report.notebook_html(path)
    assert page == tmp_path / "06_fusion.html"
    text = page.read_text(encoding="utf-8")
    assert '<div id="plot">the figure</div>' in text and "Fusion" in text
    assert not re.search(r"<script[^>]*\ssrc=|<link[^>]*\shref=", text)


def test_interface_claim_uses_the_whole_split_gap_and_calls_an_uncertain_trend_undetermined():
    """The demo said "glyph vs id-bits: -0.0% ... trend: meets" from the last periodic evaluation
    (a subset of windows), while the slope's interval over seeds held 0 and the whole-split gap
    paired by seed was in the same file."""
    g = {"seeds": [0, 1, 2], "points": [{"tokens": 25600, "mean": -0.01, "low": -0.3, "high": 0.3}],
         "fit": {"verdict": "meets"},
         "fit_uncertainty": {"slope": {"mean": 1.1, "low": -1.5, "high": 3.8}, "bootstrap": {"share_meets": 0.85}}}
    final = {"mean": 0.148, "low": -0.306, "high": 0.603, "n": 3}
    text = F.interface_gap("glyph vs id-bits", g, final)
    assert text.startswith("glyph vs id-bits: +0.1% bits/char [95% t-interval -0.3%, +0.6%] over 3 seeds on the "
                           "whole validation split, not significant; trend: undetermined")
    assert "holds 0" in text and "85% of seed resamples meet" in text
    sure = {**g, "fit": {"verdict": "diverges (the fitted gap grows with tokens)"},
            "fit_uncertainty": {"slope": {"low": 2.0, "high": 9.0}}}
    text = F.interface_gap("glyph vs trainable", sure, None)  # no whole-split gap: the last evaluation
    assert text == ("glyph vs trainable: 0.0% bits/char [95% t-interval -0.3%, +0.3%] over 3 seeds at 25,600 "
                    "tokens, not significant; trend: diverges (the fitted gap grows with tokens)")
    assert F.pct(-0.0001) == "0.0%" and F.pct(0.021) == "+2.1%"
