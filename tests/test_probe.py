"""Probing (issue 11): metrics on constructed vectors with known answers, hidden states of real
(tiny, untrained) models, the logit lens, figures, the command line and its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bvvlab.analysis import activations, latent, maps, probe, workers
from bvvlab.analysis import figures as probe_figures
from bvvlab.analysis import items as probe_items
from bvvlab.analysis import metrics as probe_metrics
from bvvlab.glyph.tokenizer import bvv241_vocab, compact_vocab, hf_tokenizer
from bvvlab.models import checkpoints
from bvvlab.models.checkpoints import save_checkpoint
from bvvlab.models.model import BVVForCausalLM, config_from_preset, to_llama

EXTRA = ["The cat sleeps on the warm windowsill today.", "Кошка спит."]


def _texts() -> list[str]:
    lat = [p["prompt"] + p["answer"] for d in ("en2ru", "ru2en") for p in latent.translation_prompts(d)]
    return [it.text for it in probe_items.concept_items()] + lat + EXTRA


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained tiny frozen-embedding checkpoint (RMSNorm + SwiGLU, so it maps onto Llama)
    with a compact bvv241 tokenizer over the lexicon; and its Llama twin as a plain HF directory."""
    tokens, _ = compact_vocab(bvv241_vocab(65536, []), _texts())
    tok = hf_tokenizer(tokens, [])
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", vocab_size=len(tok), norm_type="rmsnorm", mlp_type="swiglu")
    glyphs = F.normalize(torch.randn(len(tok), cfg.hidden_size, generator=torch.Generator().manual_seed(0)), dim=-1)
    model = BVVForCausalLM.from_glyphs(cfg, glyphs).eval()
    root = tmp_path_factory.mktemp("probe")
    ckpt = save_checkpoint(model, tok, root / "bvv", {"purpose": "test"})
    llama_dir = root / "llama"
    to_llama(model).save_pretrained(llama_dir)
    tok.save_pretrained(llama_dir)
    return model, tok, ckpt, llama_dir


# ----------------------------------------------------------------------------- constructed vectors


def _pairs(n: int, d: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    items = [probe_items.Item(f"en{i}", "en", str(i), f"c{i % 4}") for i in range(n)] + \
            [probe_items.Item(f"ru{i}", "ru", str(i), f"c{i % 4}") for i in range(n)]
    return X, items, rng


def test_identical_sets_retrieve_perfectly_and_cka_is_one():
    X, items, _ = _pairs(50)
    r = probe_metrics.retrieval(np.concatenate([X, X]), items)
    assert r["top1_en2ru"] == r["top1_ru2en"] == 1.0 and r["mrr_en2ru"] == 1.0
    assert r["chance_top1"] == pytest.approx(1 / 50)
    assert probe_metrics.linear_cka(X, X) == pytest.approx(1.0)
    assert probe_metrics.linear_cka(X, X @ np.linalg.qr(np.random.default_rng(1).standard_normal((16, 16)))[0] * 3) == pytest.approx(1.0)
    M = probe_metrics.cka_matrix(np.stack([X, X[:, ::-1]]), np.stack([X]))
    assert M.shape == (2, 1) and np.allclose(M, 1.0)


def test_shuffled_pairing_sits_at_chance():
    n = 300
    X, items, rng = _pairs(n)
    Y = rng.standard_normal((n, 16))  # the "translations" share nothing with their English side
    r = probe_metrics.retrieval(np.concatenate([X, Y]), items)
    assert r["chance_top1"] == pytest.approx(1 / n)
    assert r["top1"] < 5 / n
    assert r["mrr_en2ru"] == pytest.approx(r["chance_mrr_en2ru"], abs=0.03)
    # the chance MRR of one correct item among n is H_n / n
    assert r["chance_mrr_en2ru"] == pytest.approx(sum(1 / k for k in range(1, n + 1)) / n)
    assert probe_metrics.linear_cka(X, Y) < 0.2


def test_centring_removes_a_language_offset_and_lda_removes_a_language_direction():
    X, items, rng = _pairs(80)
    shift = 20 * rng.standard_normal(16)
    Z = np.concatenate([X + 0.3 * rng.standard_normal(X.shape), X + shift])
    assert probe_metrics.retrieval(Z, items, centre=False)["top1"] < 0.5  # the offset dominates raw cosine
    assert probe_metrics.retrieval(Z, items, centre=True)["top1"] > 0.9
    langs = [it.lang for it in items]
    neutral = probe_metrics.remove_language_directions(Z, langs, "lda")
    assert probe_metrics.probe_accuracy(neutral, langs, [it.pair for it in items], folds=5)["accuracy"] < 0.7
    assert probe_metrics.probe_accuracy(Z, langs, [it.pair for it in items], folds=5)["accuracy"] == 1.0


def test_language_direction_of_a_layer_with_one_vector_per_language_is_the_mean_difference():
    """Last-token pooling of words that all end in one token gives one vector per language: the
    within-language scatter is 0 and solve() raised "Singular matrix"; what is left is the offset."""
    rng = np.random.default_rng(1)
    a, b = rng.integers(-4, 5, (2, 8)).astype(float)  # exact means: the scatter is exactly 0
    Z = np.concatenate([np.tile(a, (5, 1)), np.tile(b, (5, 1))])
    langs = ["en"] * 5 + ["ru"] * 5
    for method in ("lda", "mean"):
        assert np.allclose(probe_metrics.remove_language_directions(Z, langs, method), 0)


def test_probe_finds_a_planted_category_and_not_a_random_one():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 40).astype(str)
    X = rng.standard_normal((160, 8)) + 4 * np.eye(8)[y.astype(int)]
    groups = [str(i // 2) for i in range(160)]
    assert probe_metrics.probe_accuracy(X, y, groups)["accuracy"] > 0.95
    r = probe_metrics.probe_accuracy(rng.standard_normal((160, 8)), y, groups)
    assert abs(r["accuracy"] - 0.25) < 0.15 and r["chance"] <= 0.3
    assert probe_metrics.silhouette(X, y) > 0.3 and probe_metrics.silhouette(X, y[rng.permutation(160)]) < 0.05


# ----------------------------------------------------------------------------- models


@pytest.mark.slow
def test_untrained_model_sits_near_chance(tiny):
    _, _, ckpt, _ = tiny
    items = probe_items.concept_items(heldout=["cat", "dog", "red"])
    metrics, states, _ = probe.probe_models([str(ckpt)], items, latent=False)
    m = metrics["models"]["bvv"]
    assert m["layers"] == [0, 1, 2] and states["bvv"].pooled.shape[:2] == (3, len(items))
    for r in m["retrieval"]:
        assert r["top1"] < 0.05 and r["chance_top1"] == pytest.approx(1 / 306)
        assert "top1_en2ru_heldout" in r and "top1_en2ru_trained" in r
    assert metrics["cka"]["bvv"]["matrix"][0][0] == pytest.approx(1.0)
    assert m["logit_lens"]["available"] and m["logit_lens"]["kl_to_final"][-1] == pytest.approx(0.0, abs=1e-6)


def test_logit_lens_at_the_last_layer_is_the_logits(tiny):
    model, tok, ckpt, llama_dir = tiny
    for path in (ckpt, llama_dir):
        lm = activations.load_model(path)
        ids = torch.tensor([tok("Кошка спит.", add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = lm.model(input_ids=ids, output_hidden_states=True)
            lens = activations.lens_logits(lm.norm, lm.head, out.hidden_states[-1], lm.n_layers, lm.n_layers)
        assert torch.equal(lens, out.logits), path


def test_left_padded_pooling_equals_the_unpadded_item(tiny):
    _, _, ckpt, llama_dir = tiny
    texts = ["cat", "Кошка спит.", EXTRA[0]]
    for path in (ckpt, llama_dir):
        lm = activations.load_model(path)
        for pooling in ("last", "mean"):
            batched = activations.hidden_states(lm, texts, pooling, batch_size=8).pooled
            alone = np.concatenate([activations.hidden_states(lm, [t], pooling).pooled for t in texts], axis=1)
            np.testing.assert_allclose(batched, alone, atol=2e-5, rtol=1e-4)


def test_states_stream_to_a_memory_mapped_file(tiny, tmp_path):
    lm = activations.load_model(tiny[2])
    ram = activations.hidden_states(lm, ["cat", "dog", "кошка"]).pooled
    mm = activations.hidden_states(lm, ["cat", "dog", "кошка"], memmap=tmp_path / "h.npy").pooled
    assert isinstance(mm, np.memmap) and np.array_equal(np.asarray(mm), ram)
    assert np.array_equal(np.load(tmp_path / "h.npy"), ram)


def test_latent_language_view_has_one_point_per_layer(tiny):
    lm = activations.load_model(tiny[2])
    r = latent.latent_language(lm, "en2ru", n=10, n_boot=50)
    assert r["available"] and len(r["answer"]["mean"]) == 3
    assert all(lo <= m <= hi for lo, m, hi in zip(r["answer"]["lo"], r["answer"]["mean"], r["answer"]["hi"]))


def test_latent_language_does_not_depend_on_the_batching(tiny):
    lm = activations.load_model(tiny[2])
    a = latent.latent_language(lm, "ru2en", n=12, n_boot=50, batch_size=12)
    b = latent.latent_language(lm, "ru2en", n=12, n_boot=50, batch_size=3)  # more batches, other padding
    assert a["answer"]["mean"] == pytest.approx(b["answer"]["mean"], rel=1e-4, abs=1e-7)
    assert a["counterpart"]["mean"] == pytest.approx(b["counterpart"]["mean"], rel=1e-4, abs=1e-7)


def test_probes_fitted_in_worker_processes_equal_the_fits_here(tiny, monkeypatch):
    import os

    with workers.probe_pool(2) as pool:  # the pool really is other processes
        assert os.getpid() not in {pool.submit(os.getpid).result() for _ in range(4)}
    lm = activations.load_model(tiny[2])
    items = probe_items.concept_items(heldout=["cat", "dog"])[:120]
    st = activations.hidden_states(lm, items)
    here = probe_metrics.layer_metrics(st, items, folds=3, jobs=0)
    there = probe_metrics.layer_metrics(st, items, folds=3, jobs=2)
    assert here == there and len(here["probe_category"]) == 3
    assert list(here) == ["layers", "n_items", "retrieval", "retrieval_raw", "retrieval_neutral", "probe_category",
                          "probe_language", "probe_language_neutral", "silhouette_category", "silhouette_language"]
    monkeypatch.setattr(probe_metrics, "WINDOW_BYTES", 16)  # large states go layer by layer: the same numbers
    assert probe_metrics.layer_metrics(st, items, folds=3, jobs=2) == here
    assert all(r["available"] and 0 <= r["accuracy"] <= 1 for r in here["probe_language"])


def test_a_probe_error_in_a_worker_reaches_the_caller_as_one_line():
    X = np.random.default_rng(0).standard_normal((12, 4))
    with workers.probe_pool(2) as pool:
        f = pool.submit(probe_metrics.probe_accuracy, X, ["a", "b"] * 6, ["g1", "g2"] * 6, 5)
        with pytest.raises(probe_items.ProbeError, match="2 groups .* but 5 cross-validation folds"):
            f.result()


def test_a_worker_that_dies_is_one_line_and_negative_jobs_are_refused():
    import os

    with pytest.raises(probe_items.ProbeError, match="worker process died .*--jobs 0"):
        with workers.probe_pool(2) as pool:
            pool.submit(os._exit, 1).result()  # as an out-of-memory kill would
    with pytest.raises(probe_items.ProbeError, match="jobs=-1"):
        with workers.probe_pool(-1):
            pass


def test_an_interrupt_stops_the_workers_at_once():
    import time

    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with workers.probe_pool(2) as pool:
            for _ in range(4):
                pool.submit(time.sleep, 60)  # a fit that would take a minute
            procs = list(pool._processes.values())
            raise KeyboardInterrupt  # Ctrl-C while the workers fit
    assert time.perf_counter() - t < 20 and len(procs) == 2 and not any(p.is_alive() for p in procs)


def test_slider_figure_holds_one_frame_per_layer(tiny):
    lm = activations.load_model(tiny[2])
    items = probe_items.concept_items()[:40]
    st = activations.hidden_states(lm, items)
    fig = probe_figures.slider_figure(maps.layer_maps(st, "pca"), items, st.layers)
    assert len(fig.frames) == 3 == len(fig.layout.sliders[0].steps)
    assert [f.name for f in fig.frames] == ["0", "1", "2"]
    for frame in fig.frames:  # every item once per frame, its word on hover, its language as the symbol
        assert sum(len(t.x) for t in frame.data) == 40
        hover = [h for t in frame.data for h in t.text]
        assert sorted(h.split(" (")[0] for h in hover) == sorted(it.text for it in items)
        assert {s for t in frame.data for s in t.marker.symbol} == set(probe_figures._SYMBOLS[:2])
    assert np.array_equal(fig.data[0].x, fig.frames[0].data[0].x)


def test_lens_without_a_final_norm_says_so_in_one_line(tiny):
    lm = activations.load_model(tiny[2])
    lm.norm, lm.lens_reason = None, "no final norm found (looked for ln_f, norm, final_layernorm)"
    st = activations.hidden_states(lm, ["cat", "кошка"], lens=True)
    assert not st.lens["available"] and "\n" not in st.lens["reason"] and "final norm" in st.lens["reason"]


# ----------------------------------------------------------------------------- bad input, one line each


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_items_without_a_translation_are_refused():
    items = [probe_items.Item("cat", "en", "cat", "animals"), probe_items.Item("кошка", "ru", "cat", "animals"),
             probe_items.Item("dog", "en", "dog", "animals")]
    with pytest.raises(probe_items.ProbeError) as e:
        probe_items.check_translations(items)
    assert "no translation" in _one_line(e) and "'dog'" in str(e.value)


def test_fewer_groups_than_folds_are_refused(tiny):
    items = probe_items.concept_items()[:6]  # 3 concepts
    with pytest.raises(probe_items.ProbeError) as e:
        probe.probe_models([str(tiny[2])], items, folds=5)
    assert "3 groups" in _one_line(e) and "--folds" in str(e.value)


def test_layer_out_of_range_is_refused(tiny):
    lm = activations.load_model(tiny[2])
    with pytest.raises(probe_items.ProbeError) as e:
        activations.hidden_states(lm, ["cat"], layers=[3])
    assert "out of range" in _one_line(e) and "0..2" in str(e.value)
    assert activations.check_layers([-1, 0], 2) == [2, 0]


def test_a_directory_that_is_not_a_causal_lm_is_refused(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    DistilBertModel(DistilBertConfig(vocab_size=50, dim=8, n_layers=1, n_heads=2,
                                     hidden_dim=16)).save_pretrained(tmp_path / "encoder")
    with pytest.raises(probe_items.ProbeError) as e:
        activations.load_model(tmp_path / "encoder")
    assert "not a causal LM" in _one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception) as e:
        activations.load_model(tmp_path / "empty")
    assert "holds no checkpoint" in _one_line(e)


def test_token_level_cka_needs_one_tokenizer(tiny, tmp_path):
    model, tok, ckpt, _ = tiny
    tokens, _ = compact_vocab(bvv241_vocab(65536, ["ca", "at", "ко"]), _texts())
    tok2 = hf_tokenizer(tokens, ["ca", "at", "ко"])
    cfg = config_from_preset("tiny", vocab_size=len(tok2))
    other = save_checkpoint(BVVForCausalLM.from_glyphs(cfg, F.normalize(torch.randn(len(tok2), 64), dim=-1)), tok2,
                            tmp_path / "other")
    items = probe_items.concept_items()[:20]
    metrics, _, _ = probe.probe_models([str(ckpt), str(other)], items, folds=2, latent=False)  # item by item: fine
    assert np.array(metrics["cka"]["other"]["matrix"]).shape == (3, 3)
    with pytest.raises(probe_items.ProbeError) as e:
        probe.probe_models([str(ckpt), str(other)], items, folds=2, latent=False, cka_level="token")
    assert "same tokenization" in _one_line(e)


def test_file_items_read_csv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text("text,label,lang,pair\ncat,animals,en,1\nкошка,animals,,1\n", encoding="utf-8")
    items = probe_items.file_items(tmp_path / "a.csv")
    assert [(i.text, i.lang, i.pair, i.label) for i in items] == [("cat", "en", "1", "animals"),
                                                                   ("кошка", "ru", "1", "animals")]
    (tmp_path / "b.jsonl").write_text('{"text": "dog", "pair": 2}\n{"text": "собака", "pair": 2}\n', encoding="utf-8")
    assert [i.lang for i in probe_items.file_items(tmp_path / "b.jsonl")] == ["en", "ru"]
    (tmp_path / "c.csv").write_text("word\ncat\n", encoding="utf-8")
    with pytest.raises(probe_items.ProbeError) as e:
        probe_items.file_items(tmp_path / "c.csv")
    assert "'text' column" in _one_line(e)


# ----------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_writes_metrics_table_and_figures(tiny, tmp_path, capsys):
    from bvvlab.cli import main

    _, _, ckpt, llama_dir = tiny
    out = tmp_path / "run"
    rc = main(["probe", str(ckpt), str(llama_dir), "--items", "concepts", "--limit", "30", "--out", str(out),
               "--no-umap", "--pooling", "mean"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["models"]) == {"bvv", "llama"} and m["meta"]["map_method"] == "pca"
    # the Llama twin computes the same function: the same metrics and CKA ~ 1 on the diagonal
    a, b = m["models"]["bvv"], m["models"]["llama"]
    assert [r["top1"] for r in a["retrieval"]] == pytest.approx([r["top1"] for r in b["retrieval"]], abs=0.02)
    assert np.diag(np.array(m["cka"]["llama"]["matrix"])) == pytest.approx(1.0, abs=1e-4)
    for f in ("metrics.md", "metrics_by_layer.html", "map_bvv.html", "cka_llama.html", "plotly.min.js"):
        assert (out / f).is_file(), f
    assert "| layer |" in (out / "metrics.md").read_text()


def test_cli_refuses_an_existing_out_and_a_layer_out_of_range(tiny, tmp_path, capsys):
    from bvvlab.cli import main

    _, _, ckpt, _ = tiny
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # an empty folder may be written into; this one holds something
    assert main(["probe", str(ckpt), "--out", str(out), "--no-umap"]) == 2  # no overwrite without asking
    assert "is not empty and holds something other than a probe result" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert main(["probe", str(ckpt), "--out", str(tmp_path / "x"), "--layers", "9", "--no-umap"]) == 2
    assert "out of range" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["probe", str(ckpt), "--out", str(tmp_path / "x"), "--jobs", "-1", "--no-umap"]) == 2
    err = capsys.readouterr().err
    assert "--jobs -1" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_large_states_stream_to_a_temporary_file_on_their_own(tiny, monkeypatch):
    lm = activations.load_model(tiny[2])
    ram = activations.hidden_states(lm, ["cat", "dog"]).pooled
    monkeypatch.setattr(activations, "MEMMAP_BYTES", 16)
    mm = activations.hidden_states(lm, ["cat", "dog"]).pooled
    assert isinstance(mm, np.memmap) and np.array_equal(np.asarray(mm), ram)


# ----------------------------------------------------------------------------- fused checkpoints


@pytest.fixture(scope="module")
def fused(tiny, tmp_path_factory):
    """The tiny expert and a deeper one on the same frozen matrix, fused (bvvlab fuse) as a + b."""
    from bvvlab.train.fusion import fuse

    model, tok, ckpt, _ = tiny
    torch.manual_seed(1)
    cfg = config_from_preset("tiny", vocab_size=len(tok), num_hidden_layers=3)
    other = BVVForCausalLM.from_glyphs(cfg, model.model.embed_tokens.weight.detach().clone()).eval()
    root = tmp_path_factory.mktemp("probe-fused")
    other_dir = save_checkpoint(other, tok, root / "b")
    fuse([ckpt, other_dir], "bayes", root / "fused", names=["a", "b"])
    return root / "fused", ckpt, other_dir


def test_a_fused_checkpoint_is_probed_expert_by_expert(fused):
    """Each expert of a fused directory is probed on its own hidden states, picked by the fused
    model's (expert, layer) labels: the same states, and the same logit lens, as the expert's own
    checkpoint."""
    fused_dir, ckpt_a, ckpt_b = fused
    lms = activations.load_models(fused_dir)
    assert [(lm.name, lm.expert, lm.n_layers) for lm in lms] == [("fused/a", "a", 2), ("fused/b", "b", 3)]
    assert lms[0].model is lms[1].model  # one fused model loaded once
    texts = ["cat", "Кошка спит.", EXTRA[0]]
    for lm, own in zip(lms, (ckpt_a, ckpt_b)):
        ref = activations.load_model(own)
        got = activations.hidden_states(lm, texts, "last", batch_size=8, lens=True)
        want = activations.hidden_states(ref, texts, "last", batch_size=8, lens=True)
        np.testing.assert_allclose(got.pooled, want.pooled, atol=1e-5, rtol=1e-5)
        assert got.lens["median_rank"] == want.lens["median_rank"]
        assert got.lens["kl_to_final"][-1] == pytest.approx(0.0, abs=1e-6)
    one = activations.load_model(f"{fused_dir}{checkpoints.EXPERT_SEP}b")
    assert (one.expert, one.n_layers, one.name) == ("b", 3, "fused/b")


def test_a_fused_checkpoint_without_an_expert_or_with_an_unknown_one_is_one_line(fused, tiny):
    fused_dir, *_ = fused
    for spec, words in ((fused_dir, "probe one at a time"), (f"{fused_dir}::zz", "no expert 'zz'"),
                        (f"{tiny[2]}::a", "not a fused checkpoint")):
        with pytest.raises(probe_items.ProbeError, match=words) as ei:
            activations.load_model(spec)
        assert "\n" not in str(ei.value)


@pytest.mark.slow
def test_cli_probes_a_fused_checkpoint(fused, tmp_path):
    """`bvvlab probe FUSED_DIR` probes every expert (NAME/EXPERT), with finite metrics."""
    from bvvlab.cli import main

    fused_dir, *_ = fused
    out = tmp_path / "run"
    assert main(["probe", str(fused_dir), "--items", "concepts", "--limit", "20", "--out", str(out), "--no-umap",
                 "--no-latent", "--folds", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["models"]) == {"fused/a", "fused/b"}
    assert [m["models"][k]["expert"] for k in ("fused/a", "fused/b")] == ["a", "b"]
    for k, n in (("fused/a", 3), ("fused/b", 4)):
        r = m["models"][k]["retrieval"]
        assert len(r) == n and all(np.isfinite(x["top1"]) and np.isfinite(x["mrr_en2ru"]) for x in r)
    assert np.array(m["cka"]["fused/b"]["matrix"]).shape == (3, 4)


def test_heldout_auto_reads_what_the_training_held_out(tiny, tmp_path, capsys):
    model, tok, _, llama_dir = tiny
    held = save_checkpoint(model, tok, tmp_path / "held", {"train_config": {"corpus": {
        "libreoffice-en-ru?holdout=suite": 0.5, "concepts?holdout=suite": 0.4, "instructions?holdout=suite": 0.1}}})
    # a run of an earlier bvvlab, whose LibreOffice text was not filtered: nothing was held out of all of it
    older = save_checkpoint(model, tok, tmp_path / "older", {"train_config": {"corpus": {
        "libreoffice-en-ru": 0.5, "concepts?holdout=suite": 0.5}}})
    assert checkpoints.trained_holdout(older) == []
    named = save_checkpoint(model, tok, tmp_path / "named", {"train_config": {"corpus": {"concepts?holdout=cat+dog": 1.0}}})
    plain = save_checkpoint(model, tok, tmp_path / "plain", {"train_config": {"corpus": {"concepts": 1.0}}})
    suite = probe_items.resolve_heldout("suite")
    assert checkpoints.trained_holdout(held) == suite and checkpoints.trained_holdout(plain) == [] and checkpoints.trained_holdout(llama_dir) is None
    # auto: the trained checkpoints agree; a model that records no training (an HF directory) is skipped
    assert probe_items.resolve_heldout("auto", [held, llama_dir]) == suite
    assert probe_items.resolve_heldout("auto", [plain]) == [] and probe_items.resolve_heldout("", [held]) == []
    assert probe_items.resolve_heldout("dog,cat") == ["cat", "dog"] == probe_items.resolve_heldout(["cat", "dog"])
    items = probe_items.load_items("concepts", probe_items.resolve_heldout("auto", [held]), limit=10)
    assert {it.pair for it in items if it.heldout} == set(suite)
    with pytest.raises(probe_items.ProbeError, match="different held-out concepts") as ei:
        probe_items.resolve_heldout("auto", [held, named])
    assert "\n" not in str(ei.value)
    with pytest.raises(probe_items.ProbeError, match=r"unknown concept id\(s\) \['kat'\].*--heldout cat,dog"):
        probe_items.resolve_heldout("kat")
    # a model initialised from another (growth, --from) saw its parent's data too: holdouts intersect
    grown = save_checkpoint(model, tok, tmp_path / "grown", {"train_config": {
        "corpus": {"concepts?holdout=suite": 1.0}, "init_from": str(plain)}})
    assert checkpoints.trained_holdout(grown) == []
    from_hf = save_checkpoint(model, tok, tmp_path / "from_hf", {"train_config": {
        "corpus": {"concepts?holdout=suite": 1.0}, "init_from": str(llama_dir)}})
    assert checkpoints.trained_holdout(from_hf) is None  # its parent records no training: not judged
    child = save_checkpoint(model, tok, tmp_path / "child", {"train_config": {
        "corpus": {"concepts?holdout=cat+dog": 1.0}, "init_from": str(held)}})
    assert checkpoints.trained_holdout(child) == []  # cat and dog are not in the suite: the parent saw them


def test_eval_warns_when_heldout_rows_were_trained(tiny, tmp_path):
    from bvvlab.eval import runner as R

    model, tok, _, llama_dir = tiny
    held = save_checkpoint(model, tok, tmp_path / "held", {"train_config": {"corpus": {"concepts?holdout=suite": 1.0}}})
    plain = save_checkpoint(model, tok, tmp_path / "plain", {"train_config": {"corpus": {"concepts": 1.0}}})
    tasks, _ = R.resolve_suite("concepts-category/heldout", limit=3)
    warnings = R.heldout_warnings([str(held), str(plain), str(llama_dir)], tasks)
    assert len(warnings) == 1 and warnings[0].startswith(str(plain)) and "concepts?holdout=suite" in warnings[0]
    trained_only, _ = R.resolve_suite("concepts-category/trained", limit=3)
    assert R.heldout_warnings([str(plain)], trained_only) == []


@pytest.mark.slow  # numba compiles umap's kernels on the first call (tens of seconds)
def test_umap_and_aligned_umap_maps_share_an_orientation():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 6
    X = np.concatenate([c + rng.normal(size=(20, 16)) for c in centres]).astype(np.float32)
    labels = np.repeat(np.arange(3), 20)
    st = activations.States(np.stack([X, X, X]), [0, 1, 2])  # three identical layers: the maps must agree
    items = [probe_items.Item(f"w{i}", "en", "", str(labels[i])) for i in range(len(X))]
    from sklearn.metrics import silhouette_score

    for method in ("umap", "aligned-umap"):
        layer_maps_ = maps.layer_maps(st, method, seed=0)
        assert len(layer_maps_) == 3 and all(m.shape == (60, 2) and np.abs(m).max() <= 1 + 1e-9 for m in layer_maps_)
        assert silhouette_score(layer_maps_[0], labels) > 0.5, method  # the clusters stay apart in 2-D
        assert max(float(np.abs(layer_maps_[k] - layer_maps_[0]).mean()) for k in (1, 2)) < 0.15, method  # one orientation
        fig = probe_figures.slider_figure(layer_maps_, items, st.layers)
        assert len(fig.frames) == 3
    with pytest.raises(probe_items.ProbeError, match="use one of pca, umap, aligned-umap"):
        maps.layer_maps(st, "tsne")
