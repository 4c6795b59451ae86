"""Issue 28, the rest: same-template galleries and lexical anchors for sentence retrieval, the
tuned lens beside the logit lens in the probe's output, and their bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bvvlab.analysis import items as probe_items
from bvvlab.analysis import metrics as probe_metrics
from bvvlab.analysis import probe, stats
from bvvlab.analysis.items import Item, ProbeError
from test_probe_stats import _one_line, tiny  # noqa: F401  (the module's tiny checkpoint fixture)


def _template_world(n_gal: int = 6, per: int = 12, word: float = 0.0, seed: int = 0):
    """Pairs whose states are dominated by their gallery's 'template' direction; `word` > 0 adds a
    direction each pair shares with its translation (the word), 0: within a template, nothing."""
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((n_gal, 64)) * 6
    items, A, B = [], [], []
    for g in range(n_gal):
        for j in range(per):
            w = rng.standard_normal(64)
            A.append(T[g] + rng.standard_normal(64) + word * w)
            B.append(T[g] + rng.standard_normal(64) + word * w)
            pid = f"{g}:{j}"
            items += [Item(f"a{pid}", "en", pid, gallery=f"t{g}"), Item(f"b{pid}", "ru", pid, gallery=f"t{g}")]
    X = np.empty((len(items), 64))
    X[0::2], X[1::2] = A, B
    return X, items


def test_a_same_template_gallery_takes_the_template_away_from_retrieval():
    X, items = _template_world()
    plain = [Item(it.text, it.lang, it.pair) for it in items]  # the same states, one gallery for all
    g = stats.layer_report(X[None], items, 300, seed=0)["layers"][0]["cosine"]["mrr"]
    p = stats.layer_report(X[None], plain, 300, seed=0)["layers"][0]["cosine"]["mrr"]
    assert p["p"] < 0.01 and p["value"] > 2 * p["null_mean"]  # the template alone beats a plain null ...
    assert g["p"] > 0.05  # ... and nothing within a template
    harmonic = sum(1 / k for k in range(1, 13)) / 12  # chance MRR in a gallery of 12
    assert g["null_mean"] == pytest.approx(harmonic, rel=0.05)
    Xw, items_w = _template_world(word=3.0)
    gw = stats.layer_report(Xw[None], items_w, 300, seed=0)["layers"][0]["cosine"]
    assert gw["top1"]["value"] > 0.9 and gw["mrr"]["p"] < 0.01 and gw["auc"]["value"] > 0.95


def test_gallery_ranks_stay_inside_the_gallery_and_the_null_never_crosses_one():
    X, items = _template_world(n_gal=3, per=10)
    ia, ib, _ = stats.paired_index(items)
    gal = np.array([items[i].gallery for i in ia])
    S = stats.gallery_mask(stats.centred_cosine(X[ia], X[ib]), gal)
    assert stats.per_pair(S, sizes=np.full(len(ia), 10))["rank"].max() <= 10
    strata = stats.gallery_strata(gal, [(1, 1, 1, 1)] * len(ia))
    for perm in stats.permutations(len(ia), 50, strata, seed=3):
        assert (gal[perm] == gal).all()
    r = probe_metrics.retrieval(X, items)
    assert r["chance_top1"] == pytest.approx(1 / 10)  # chance follows the gallery's size, not all 30


def test_sentence_items_have_template_galleries_and_anchors_dropped_apart_or_kept():
    notes: list[str] = []
    drop = probe_items.sentence_items(60, "drop", notes)
    apart = probe_items.sentence_items(60, "apart")
    keep = probe_items.sentence_items(60, "keep")
    by_pair = lambda its: {it.pair: it for it in its if it.lang == "en"}  # noqa: E731
    ru = {it.pair: it.text for it in keep if it.lang == "ru"}
    anchored = {p for p, it in by_pair(keep).items() if probe_items.anchor_strings(it.text, ru[p])}
    assert anchored and all(p.startswith("lo:") for p in anchored)  # LibreOffice names, numbers; the concepts none
    assert set(by_pair(drop)) == set(by_pair(keep)) - anchored
    assert {p for p, it in by_pair(apart).items() if it.anchored} == anchored and not any(it.anchored for it in keep)
    assert any(f"dropped {len(anchored)} sentence pair" in n for n in notes)
    gal = {}
    for it in by_pair(keep).values():
        gal.setdefault(it.gallery, []).append(it)
    assert all(g == "libreoffice" or g.startswith("template:") for g in gal)
    assert all(len(v) >= 2 for v in gal.values()) and len(gal) > 5
    assert probe_items.anchor_strings("Press F1 in LibreOffice 7", "Нажмите F1 в LibreOffice") == {"F", "1", "LibreOffice"}


def test_bad_anchor_values_are_one_line(capsys):
    from bvvlab.cli import main
    from bvvlab.core.config import build

    with pytest.raises(ProbeError) as e:
        probe_items.sentence_items(5, "sometimes")
    assert "anchors=sometimes" in _one_line(e)
    with pytest.raises(ValueError) as e:
        build(probe.ProbeConfig, checkpoints=["x"], anchors="sometimes")
    assert "anchors=" in _one_line(e)
    assert main(["probe", "nowhere", "--items", "sentences", "--anchors", "sometimes", "--out", "/tmp/x_anchor"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "anchors=" in err[0]


def test_anchored_pairs_are_reported_apart_in_the_probe_output(tiny):  # noqa: F811
    ckpt, _ = tiny
    words = [("cat", "кошка"), ("dog", "собака"), ("sun", "солнце"), ("tea", "чай"), ("milk", "молоко"),
             ("house", "дом"), ("bird", "птица"), ("fish", "рыба"), ("tree", "дерево")]
    items = []
    for i, (en, ru) in enumerate(words):
        items += [Item(f"The {en} sleeps.", "en", f"w{i}", "a"), Item(f"{ru.capitalize()} спит.", "ru", f"w{i}", "a")]
        items += [Item(f"Press F{i} for the {en}.", "en", f"k{i}", "b", anchored=True),
                  Item(f"Нажмите F{i}: {ru}.", "ru", f"k{i}", "b", anchored=True)]
    m, _, _ = probe.probe_models([str(ckpt)], items, "mean", folds=2, latent=False, permutations=40, jobs=0)
    mod = next(iter(m["models"].values()))
    assert mod["stats"]["n_pairs"] == 9 and mod["stats_anchored"]["n_pairs"] == 9
    assert len(mod["stats_anchored"]["retrieval"]) == mod["n_layers"] + 1
    assert m["meta"]["n_anchored_pairs"] == 9
    assert "mrr_en2ru_anchored" in mod["retrieval"][0] and "mrr_en2ru_unanchored" in mod["retrieval"][0]


# ----------------------------------------------------------------------------- the tuned lens in the output


def test_the_probe_writes_the_tuned_lens_beside_the_logit_lens(tiny, tmp_path):  # noqa: F811
    from bvvlab.cli import main

    ckpt, _ = tiny
    out = tmp_path / "p"
    assert main(["probe", str(ckpt), "--items", "lemmas", "--limit", "12", "--permutations", "20", "--folds", "2",
                 "--no-umap", "--heldout", "", "--jobs", "0", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    mod = next(iter(m["models"].values()))
    for d in ("en2ru", "ru2en"):
        logit, tuned = mod["latent_language"][d], mod["latent_language_tuned"][d]
        assert tuned["lens"] == "tuned" and tuned["fit_tokens"] > 100
        for k in ("answer", "counterpart", "control"):
            assert len(tuned[k]["mean"]) == len(logit[k]["mean"]) == mod["n_layers"] + 1
            assert all(lo <= v + 1e-12 and v <= hi + 1e-12 for lo, v, hi in zip(tuned[k]["lo"], tuned[k]["mean"],
                                                                                   tuned[k]["hi"]))
            # the tuned lens is the identity at the last layer: both lenses read the model's own distribution there
            assert tuned[k]["mean"][-1] == pytest.approx(logit[k]["mean"][-1], rel=1e-4, abs=1e-7)
    from bvvlab.analysis import figures

    curves = figures.metric_curves(m["models"]).data  # the retrieval curve carries its null band and interval
    assert any(t.error_y and t.error_y.array is not None for t in curves)
    assert any(t.fill == "toself" for t in curves)
    html = (out / "latent_language.html").read_text()
    assert "tuned lens" in html and "logit lens" in html and "control" in html
    assert main(["probe", str(ckpt), "--items", "lemmas", "--limit", "12", "--permutations", "20", "--folds", "2",
                 "--no-umap", "--no-tuned-lens", "--heldout", "", "--jobs", "0", "--out", str(tmp_path / "q")]) == 0
    m = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert "latent_language_tuned" not in next(iter(m["models"].values()))


def test_gain_over_layer_0_is_only_named_when_layer_0_was_probed():
    """The statistics compare each layer with the first one probed; with --layers 2,4 that is
    layer 2, which was stored and printed as the 'gain over layer 0'."""
    from bvvlab.analysis import figures as probe_figures
    from bvvlab.analysis.probe import attach_stats

    layer = {"cosine": {}, "csls": {}, "cka": {}, "rsa": {},
             "gain_mrr_vs_layer0": {"diff": 0.1, "low": 0.05, "high": 0.15, "p": 0.01, "n": 10}}
    report = {"layers": [layer, layer], "n_pairs": 10}
    m = {"layers": [2, 4], "retrieval": [{}, {}]}
    attach_stats(m, report)
    assert m["gain_vs_layer0"] == [None, None]
    assert probe_figures.gain_text(None).startswith("n/a")
    m0 = {"layers": [0, 4], "retrieval": [{}, {}]}
    attach_stats(m0, report)
    assert m0["gain_vs_layer0"][1]["diff"] == 0.1
    assert probe_figures.gain_text(m0["gain_vs_layer0"][1]) == "+0.1000 [+0.0500, +0.1500]"


def test_a_template_left_with_one_pair_after_the_anchor_filter_is_dropped(monkeypatch):
    """Single-pair templates were found before anchored pairs were dropped, so a template could
    be left with one pair, which ranks first every time."""
    from bvvlab.corpus import concepts as C

    pairs = [p for p in C.eval_pairs("test")]
    template = pairs[0].template
    same = [i for i, p in enumerate(pairs) if p.template == template]
    victims = {(pairs[i].en, pairs[i].ru) for i in same[1:]}  # all but one pair of the template get an anchor
    monkeypatch.setattr(probe_items, "anchor_strings", lambda a, b: {"X"} if (a, b) in victims else set())
    for anchors in ("drop", "apart"):
        notes: list[str] = []
        its = probe_items.sentence_items(limit=None, anchors=anchors, notes=notes)
        sizes: dict = {}
        for it in its:
            if it.gallery.startswith("template:") and it.lang == "en":
                sizes[it.gallery, it.anchored] = sizes.get((it.gallery, it.anchored), 0) + 1
        assert sizes and min(sizes.values()) >= 2, anchors
        assert any(template in n for n in notes), anchors
