"""Issue 28: the probes' statistics (stratified permutation null, bootstrap, CSLS, debiased CKA,
RSA), words in context, the glyph-disjoint clone, and their bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bvvlab.analysis import activations, contexts, probe, stats
from bvvlab.analysis.items import Item, ProbeError
from bvvlab.core.errors import CorpusError
from bvvlab.corpus import clone
from bvvlab.corpus import concepts as C


def _items(n: int, langs=("en", "ru")) -> list[Item]:
    return [Item(f"{langs[0]}{i}", langs[0], str(i)) for i in range(n)] + \
           [Item(f"{langs[1]}{i}", langs[1], str(i)) for i in range(n)]


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ----------------------------------------------------------------------------- ranks and nulls


def test_rank_matrix_counts_ties_against_the_true_item():
    S = np.array([[1.0, 1.0, 0.0], [0.2, 0.5, 0.5], [3.0, 2.0, 1.0]])
    assert stats.rank_matrix(S).tolist() == [[2, 2, 3], [3, 2, 2], [1, 2, 3]]


def test_identical_pairs_beat_the_null_and_random_pairs_do_not():
    rng = np.random.default_rng(0)
    n = 120
    X = rng.standard_normal((n, 32))
    same = np.concatenate([X, X])[None]
    rand = np.concatenate([X, rng.standard_normal((n, 32))])[None]
    perms = stats.permutations(n, 400, seed=1)
    ident = stats.retrieval_null([stats.centred_cosine(same[0][:n], same[0][n:])], perms)[0][0]
    noise = stats.retrieval_null([stats.centred_cosine(rand[0][:n], rand[0][n:])], perms)[0][0]
    assert ident["top1"]["value"] == 1.0 and ident["mrr"]["p"] == pytest.approx(1 / 401)
    assert ident["median_rank"]["value"] == 1 and ident["auc"]["value"] == 1.0
    # under the null, the mean MRR of a random pairing is the analytic chance H_n / n
    assert noise["mrr"]["null_mean"] == pytest.approx(sum(1 / k for k in range(1, n + 1)) / n, rel=0.05)
    assert noise["mrr"]["p"] > 0.01 and noise["mrr"]["low"] < noise["mrr"]["value"] < noise["mrr"]["high"]


def test_family_wise_p_is_never_below_the_per_layer_p():
    rng = np.random.default_rng(2)
    n = 80
    sims = [rng.standard_normal((n, n)) + (1.5 * np.eye(n) if k == 2 else 0) for k in range(5)]
    out, _ = stats.retrieval_null(sims, stats.permutations(n, 300, seed=0))
    for r in out:
        assert r["mrr"]["p_fwe"] >= r["mrr"]["p"] - 1e-12
    assert out[2]["mrr"]["p_fwe"] < 0.01


def test_strata_are_large_enough_and_permutations_stay_inside_them():
    keys = [(i % 7, i % 3) for i in range(100)] + [(99, 99)]  # one singleton key
    s = stats.length_strata(keys, min_size=8)
    assert np.bincount(s).min() >= 8
    for a in range(len(keys)):
        for b in range(len(keys)):
            if keys[a] == keys[b]:
                assert s[a] == s[b]
    P = stats.permutations(len(keys), 50, s, seed=0)
    assert (s[P] == s[None, :]).all()
    assert sorted(P[0].tolist()) == list(range(len(keys)))


def test_the_stratified_null_absorbs_a_length_confound_the_plain_null_does_not():
    """Trap (b) of issue 28: vectors that carry only each word's length look aligned against a
    plain null; against a null that re-pairs only within a length, they do not."""
    rng = np.random.default_rng(0)
    n = 200
    lengths = rng.integers(2, 10, n)
    onehot = np.eye(10)[lengths] * 3
    A = onehot + rng.standard_normal((n, 10))
    B = onehot + rng.standard_normal((n, 10))
    S = [stats.centred_cosine(A, B)]
    plain = stats.retrieval_null(S, stats.permutations(n, 500, seed=0))[0][0]["mrr"]
    strata = stats.length_strata([(int(x),) for x in lengths], min_size=8)
    strat = stats.retrieval_null(S, stats.permutations(n, 500, strata, seed=0))[0][0]["mrr"]
    assert plain["p"] < 0.01 < strat["p"]
    assert strat["null_mean"] > plain["null_mean"]


def test_zero_permutations_are_one_line():
    with pytest.raises(ProbeError) as e:
        stats.permutations(10, 0)
    assert "--permutations" in _one_line(e)


# ----------------------------------------------------------------------------- bootstrap, CSLS, CKA, RSA


def test_paired_bootstrap_of_a_model_against_itself_and_a_shift():
    a = np.random.default_rng(0).random(100)
    same = stats.paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["low"] == 0 == same["high"]
    up = stats.paired_bootstrap(a + 0.5, a)
    assert up["diff"] == pytest.approx(0.5) and up["low"] == pytest.approx(0.5) and up["p"] < 0.01
    with pytest.raises(ProbeError):
        stats.paired_bootstrap(a, a[:10])


def test_csls_demotes_a_hub():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((50, 50)) * 0.1 + np.eye(50) * 0.5
    S[:, 7] += 0.6  # column 7 is close to every query: a hub
    top = lambda M: (M.argmax(1) == np.arange(50)).mean()  # noqa: E731
    assert top(stats.csls(S, 10)) > top(S)


def test_debiased_cka_is_near_zero_for_unrelated_wide_representations():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((60, 256)), rng.standard_normal((60, 256))
    from bvvlab.analysis.metrics import linear_cka

    assert linear_cka(X, Y) > 0.5  # the biased estimate at n << d
    assert abs(stats.debiased_cka(X, Y)) < 0.05
    Q = np.linalg.qr(rng.standard_normal((256, 256)))[0]
    assert stats.debiased_cka(X, 2 * X @ Q) == pytest.approx(1.0)


def test_crosslingual_cka_and_rsa_nulls():
    rng = np.random.default_rng(0)
    n = 60
    A = rng.standard_normal((n, 16))
    Q = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    perms = stats.permutations(n, 200, seed=0)
    for fn in (stats.cka_null, stats.rsa_null):
        hit = fn(A, A @ Q + 0.1 * rng.standard_normal((n, 16)), perms)
        miss = fn(A, rng.standard_normal((n, 16)), perms)
        assert hit["value"] > 0.8 and hit["p"] == pytest.approx(1 / 201)
        assert miss["p"] > 0.01 and miss["value"] < hit["null_high"] + 0.2
    # the permuted CKA equals the direct debiased CKA of the re-paired rows
    Xc, Yc = A - A.mean(0), (A @ Q)[perms[3]] - (A @ Q)[perms[3]].mean(0)
    direct = stats.debiased_cka(Xc, Yc)
    via = stats.cka_null(A - A.mean(0), A @ Q - (A @ Q).mean(0), perms[3:4])
    assert via["null_mean"] == pytest.approx(direct, abs=1e-4)


def test_layer_report_carries_a_null_and_an_interval_for_every_figure():
    rng = np.random.default_rng(0)
    n = 40
    X = rng.standard_normal((n, 8))
    pooled = np.stack([np.concatenate([X, rng.standard_normal((n, 8))]), np.concatenate([X, X])])
    rep = stats.layer_report(pooled, _items(n), n_perm=100, keys=[(1, 1, 1, 1)] * n)
    for layer in rep["layers"]:
        for kind in ("cosine", "csls"):
            for k in stats.RETRIEVAL_STATS:
                assert {"value", "null_mean", "null_high", "p", "p_fwe", "low", "high"} <= set(layer[kind][k])
    assert rep["layers"][1]["gain_mrr_vs_layer0"]["low"] > 0
    with pytest.raises(ProbeError) as e:
        stats.layer_report(pooled[:, :4], _items(2), n_perm=10)
    assert "at least 4" in _one_line(e)


# ----------------------------------------------------------------------------- words in context


def test_find_word_takes_every_form_and_case():
    cat = C.LEXICON["cat"]
    ru = contexts.lang_forms(cat, "ru")
    assert contexts.find_word("Ну. Кошка спит.", ru, 4) == (4, 9)
    en = contexts.lang_forms(cat, "en")
    assert contexts.find_word("Look. Cats are old.", en, 6) == (6, 10)
    assert contexts.find_word("Look. The dog.", en, 6) is None
    sleep = contexts.lang_forms(C.LEXICON["sleep"], "en")
    assert contexts.find_word("Look. I want to sleep.", sleep, 6) == (16, 21)  # "to" is not the verb


def test_concept_contexts_never_start_with_the_word_and_are_held_out():
    cs = contexts.concept_contexts(["cat"], k=4, limit=4)
    assert {it.pair for it in cs.items} >= {"cat"} and all(it.heldout == (it.pair == "cat") for it in cs.items)
    for text, (a, b), o in zip(cs.texts, cs.chars, cs.owner):
        assert a > 0 and text[:a].strip()  # a preceding sentence
        it = cs.items[o]
        assert text[a:b].lower() in contexts.lang_forms(C.LEXICON[it.pair], it.lang)
    for cid in {it.pair for it in cs.items}:
        for p in contexts.concept_sentences(cid, 4):
            assert C.heldout_split(p) in ("test", "validation")  # never in training text


def test_clone_contexts_are_the_clones_of_the_english_ones():
    cs = contexts.concept_contexts([], ("en", clone.CLONE_LANG), k=3, limit=3)
    m = clone.CloneCorpus().mapping
    en = [t for t, o in zip(cs.texts, cs.owner) if cs.items[o].lang == "en"]
    cl = [t for t, o in zip(cs.texts, cs.owner) if cs.items[o].lang == clone.CLONE_LANG]
    assert cl == [clone.clone_text(t, m) for t in en]
    assert not any(ch.isascii() and ch.isalpha() for t in cl for ch in t)


def test_unknown_language_and_zero_contexts_are_one_line():
    with pytest.raises(ProbeError) as e:
        contexts.concept_contexts([], ("en", "de"), k=2, limit=2)
    assert "'de'" in _one_line(e)
    with pytest.raises(ProbeError):
        contexts.concept_contexts([], k=0, limit=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
    from bvvlab.models.checkpoints import save_checkpoint
    from bvvlab.models.model import BVVForCausalLM, config_from_preset

    cs = contexts.concept_contexts([], k=3, limit=12)
    texts = cs.texts + [it.text for it in cs.items] + ["Кошка спит. The cat sleeps."]
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), texts)
    tok = hf_tokenizer(tokens, [])
    cfg = config_from_preset("tiny", vocab_size=len(tok))
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.manual_seed(0)
    model = BVVForCausalLM.from_glyphs(cfg, glyphs).eval()
    return save_checkpoint(model, tok, tmp_path_factory.mktemp("ctx") / "m", {"purpose": "test"}), cs


def test_span_pooling_is_the_mean_of_the_word_tokens(tiny):
    ckpt, cs = tiny
    lm = activations.load_model(ckpt)
    spans, lengths = contexts.token_spans(lm.tokenizer, cs.texts[:6], cs.chars[:6])
    span = activations.hidden_states(lm, cs.texts[:6], "span", batch_size=4, max_tokens=None, spans=spans).pooled
    toks = activations.hidden_states(lm, cs.texts[:6], "tokens", batch_size=4, max_tokens=None).pooled
    start = np.concatenate([[0], np.cumsum(lengths)])
    for i, (a, b) in enumerate(spans):
        np.testing.assert_allclose(span[:, i], toks[:, start[i] + a:start[i] + b].mean(1), atol=1e-5)
    st, word = contexts.context_states(lm, cs)
    assert st.pooled.shape[1] == len(cs.items) and set(word) == set(range(len(cs.items)))
    with pytest.raises(ProbeError) as e:
        contexts.token_spans(lm.tokenizer, cs.texts[:1], cs.chars[:1], max_tokens=2)
    assert "max_tokens" in _one_line(e)


def test_cli_words_in_context_write_a_null_for_every_retrieval_figure(tiny, tmp_path, capsys):
    from bvvlab.cli import main

    ckpt, _ = tiny
    out = tmp_path / "p"
    assert main(["probe", str(ckpt), "--items", "concepts", "--limit", "12", "--contexts", "3", "--permutations", "50",
                 "--folds", "2", "--no-umap", "--no-latent", "--heldout", "", "--jobs", "0", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    mod = next(iter(m["models"].values()))
    assert m["meta"]["items_kind"] == "contexts" and m["meta"]["permutations"] == 50
    for r in mod["retrieval"]:
        for k in ("top1", "mrr"):
            assert {"null_mean", "null_high", "p", "low", "high"} <= set(r["null"][k])
    assert (out / "retrieval_null.html").is_file() and "statistics" in (out / "metrics.md").read_text()
    assert main(["probe", str(ckpt), "--items", "lemmas", "--limit", "12", "--permutations", "0", "--folds", "2",
                 "--no-umap", "--no-latent", "--heldout", "", "--jobs", "0", "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "permutations=0" in err[0]


def test_an_item_over_max_tokens_is_one_line(tiny):
    ckpt, cs = tiny
    items = [x for i in range(3) for x in (Item(f"The cat sleeps on the mat {i}.", "en", f"a{i}"),
                                           Item(f"Кошка спит {i}.", "ru", f"a{i}"))]
    with pytest.raises(ProbeError) as e:
        probe.probe_models([str(ckpt)], items, folds=2, latent=False, max_tokens=3, jobs=0)
    assert "--max-tokens" in _one_line(e)


# ----------------------------------------------------------------------------- the clone


def test_clone_map_is_one_to_one_and_shares_no_glyph():
    m = clone.clone_map()
    assert len(set(m.values())) == 52 and not set(m.values()) & clone.RESERVED
    inv = {v: k for k, v in m.items()}
    text = "The Cat sleeps, 42 times."
    assert clone.clone_text(clone.clone_text(text, m), inv) == text
    assert clone.clone_text("Cat", m)[0] == m["C"] and m["C"] != m["c"]
    assert clone.clone_ngrams(["th", "he", "a1", "x"], m) == [m["t"] + m["h"], m["h"] + m["e"]]


def test_bad_clone_maps_are_one_line():
    with pytest.raises(CorpusError) as e:
        clone.check_clone_map({"a": "\u0561", "b": "\u0561"})
    assert "not one-to-one" in _one_line(e)
    with pytest.raises(CorpusError) as e:
        clone.check_clone_map({"a": "\u0430"})  # Cyrillic a: the other language's glyph
    assert "share no glyph" in _one_line(e)
    with pytest.raises(CorpusError) as e:
        clone.check_clone_map({"a": "b"})
    assert "share no glyph" in _one_line(e)
    with pytest.raises(CorpusError):
        clone.clone_map("klingon")


def test_clone_en_source_mixes_english_and_a_latin_free_clone():
    import itertools

    from bvvlab.corpus.sources import iter_documents, split_spec

    docs = list(itertools.islice(iter_documents("clone-en?holdout=suite", "train", seed=3), 40))
    langs = {d.lang for d in docs}
    assert langs == {"en", clone.CLONE_LANG}
    for d in docs:
        if d.lang == clone.CLONE_LANG:
            assert not any(ch.isascii() and ch.isalpha() for ch in d.text)
    again = list(itertools.islice(iter_documents("clone-en?holdout=suite", "train", seed=3), 40))
    assert [d.text for d in again] == [d.text for d in docs]
    held = C.mention_pattern(C.suite_holdout())
    assert not any(held.search(d.text) for d in docs if d.lang == "en")
    with pytest.raises(CorpusError):
        split_spec("clone-en?share=2")


# ----------------------------------------------------------------------------- transfer, control task, tuned lens


def test_a_shared_category_code_transfers_and_a_script_specific_one_does_not():
    from bvvlab.analysis import transfer

    rng = np.random.default_rng(0)
    cats = [f"c{i % 4}" for i in range(80)]
    centre = rng.standard_normal((4, 16)) * 3
    other = rng.standard_normal((4, 16)) * 3  # Russian encodes the categories with other directions
    en = np.stack([centre[int(c[1])] for c in cats]) + rng.standard_normal((80, 16))
    ru_shared = np.stack([centre[int(c[1])] for c in cats]) + rng.standard_normal((80, 16))
    ru_own = np.stack([other[int(c[1])] for c in cats]) + rng.standard_normal((80, 16))
    items = [Item(f"e{i}", "en", str(i), c) for i, c in enumerate(cats)] + \
            [Item(f"r{i}", "ru", str(i), c) for i, c in enumerate(cats)]
    good = transfer.transfer_probe(np.concatenate([en, ru_shared]), items)
    bad = transfer.transfer_probe(np.concatenate([en, ru_own]), items)
    assert good["accuracy"] > 0.9 and good["selectivity"] > 0.5
    assert bad["accuracy"] < 0.6
    cv = transfer.selectivity_cv(np.concatenate([en, ru_shared]), items, folds=4)
    assert cv["accuracy"] > 0.9 and cv["control_accuracy"] < 0.5  # control labels cannot generalise to new concepts
    ctrl = transfer.control_labels([it.pair for it in items], [it.label for it in items], seed=1)
    assert all(ctrl[i] == ctrl[i + 80] for i in range(80))  # one label per word type, in both languages


def test_tuned_lens_is_exact_at_the_last_layer_and_reads_every_layer(tiny):
    from bvvlab.analysis import tuned_lens

    ckpt, cs = tiny
    lm = activations.load_model(ckpt)
    lens = tuned_lens.fit_tuned_lens(lm, cs.texts[:30])
    assert lens.layers == list(range(lm.n_layers + 1)) and lens.n_tokens > 100
    ids = lm.tokenizer(cs.texts[0], return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
        got = lens.apply(lm, out.hidden_states[-1], lm.n_layers)
    torch.testing.assert_close(got, out.logits, atol=1e-4, rtol=1e-4)
    view = tuned_lens.tuned_latent(lm, lens, n=5)
    assert {"answer", "counterpart", "control"} <= set(view) and len(view["control"]["mean"]) == lm.n_layers + 1


def test_a_checkpoint_series_is_in_step_order_and_shares_one_tokenizer(tmp_path):
    for step in (100, 20, 3):
        d = tmp_path / "checkpoints" / f"step_{step:07d}"
        d.mkdir(parents=True)
        (d / "tokenizer.json").write_text("{}")
    assert [p.name for p in probe.checkpoint_series(tmp_path)] == ["step_0000003", "step_0000020", "step_0000100"]
    (tmp_path / "checkpoints" / "step_0000020" / "tokenizer.json").write_text('{"other": 1}')
    with pytest.raises(ProbeError) as e:
        probe.checkpoint_series(tmp_path)
    assert "different tokenizer" in _one_line(e)
    with pytest.raises(ProbeError) as e:
        probe.checkpoint_series(tmp_path / "checkpoints" / "step_0000003")
    assert "no step_N" in _one_line(e)
