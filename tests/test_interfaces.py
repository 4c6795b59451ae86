"""Frozen input interfaces other than glyphs (issue 23): the codes are unique, widen exactly and
decode back; every kind trains, records its matrix and resumes bit-identically; bad input is one
line; the ablation runner's statistics."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bvvlab.app import ablation as A
from bvvlab.cli import main
from bvvlab.glyph import interfaces as I
from bvvlab.glyph.embeddings import matrix_hash
from bvvlab.train import loop as TR

FAST = dict(preset="tiny", train_chars=20_000, val_chars=4_000, seq_len=32, batch_size=4, log_every=1,
            eval_every=2, eval_batches=2, progress=False)


# ---------------------------------------------------------------------------------------------
# the codes


@pytest.mark.parametrize("order", I.ORDERS)
def test_id_bits_are_unique_and_decode_back_to_the_id(order):
    bits = I.id_bits(1000, 10, order)
    assert bits.shape == (1000, 10) and len(np.unique(bits, axis=0)) == 1000
    assert np.array_equal(I.decode_id_bits(bits, order), np.arange(1000))
    one = I.id_bits(2, 4, order)[1]  # id 1: the lowest bit only
    assert one.tolist() == ([False] * 3 + [True] if order == "msb" else [True] + [False] * 3)
    wide = I.id_bits(70_000, 80, order)  # more columns than 64: the high ones are zero
    assert np.array_equal(I.decode_id_bits(wide[:, -64:] if order == "msb" else wide[:, :64], order),
                          np.arange(70_000))


@pytest.mark.parametrize("n", [8, 16, 64])
def test_random_bits_are_unique_seeded_and_balanced(n):
    V = 250 if n == 8 else 3000  # n=8: 250 of the 256 codes, every row must still differ
    a, b, c = I.random_bits(V, n, 0), I.random_bits(V, n, 0), I.random_bits(V, n, 1)
    assert a.shape == (V, n) and len(np.unique(a, axis=0)) == V
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    if n == 64:
        assert abs(a.mean() - 0.5) < 0.01


def test_widening_repeats_each_column_exactly_and_rows_have_unit_norm():
    for kind, n in (("id-bits", 16), ("random-bits", 64), ("float", 32)):
        m, meta = I.interface_matrix(kind, 500, 128, n)
        code = I.code_matrix(I.InterfaceSpec(**meta["interface"]), 500)
        r = 128 // n
        assert m.shape == (500, 128) and m.dtype == torch.float32
        for j in range(128):
            assert torch.equal(m[:, j], m[:, (j // r) * r])  # each block of r columns is one code column
        assert torch.equal(m[:, ::r] / m[:, ::r].abs().max(), code / code.abs().max())
        assert torch.allclose(m.norm(dim=1), torch.ones(500), atol=1e-6)
        assert len(torch.unique(m, dim=0)) == 500  # unique codes stay unique after widening
        assert meta["matrix_hash"] == matrix_hash(m) and meta["code_hash"] == matrix_hash(code)


def test_values_and_scale_options():
    m01, _ = I.interface_matrix("id-bits", 8, 8, 4, values="01", scale=1.0)
    assert set(m01.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(m01[5, ::2], torch.tensor([0.0, 1.0, 0.0, 1.0]))  # 5 = 0101, msb first
    mpm, _ = I.interface_matrix("id-bits", 8, 8, 4, values="pm1", scale=2.0)
    assert torch.equal(mpm[5, ::2], torch.tensor([-2.0, 2.0, -2.0, 2.0]))


def test_default_dims():
    assert I.default_dim("id-bits", 65536, 1024) == 16  # the published 16-bit code
    assert I.default_dim("id-bits", 5000, 256) == 16  # 13 bits needed, 16 the smallest divisor above
    assert I.default_dim("random-bits", 5000, 256) == 64
    assert I.default_dim("id-bits", 5000, 96) == 16


@pytest.mark.parametrize("args, words", [
    (("bits", 100, 64, 16), "not a known interface"),
    (("id-bits", 100, 64, 12), "does not divide the model width 64"),
    (("id-bits", 1000, 64, 8), "256 codes but the vocabulary has 1,000 tokens"),
    (("random-bits", 1000, 64, 8), "256 codes but the vocabulary has 1,000 tokens"),
    (("glyph", 100, 64, 16), "is not a frozen code"),
])
def test_impossible_codes_are_one_line(args, words):
    with pytest.raises(ValueError, match=words) as exc:
        I.interface_matrix(*args)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------------------------------
# models with each kind


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["glyph", "trainable", "id-bits", "random-bits", "float"])
def test_each_kind_trains_records_its_matrix_and_resumes_bit_identically(kind, tmp_path):
    """4 steps straight vs the same run cut at step 2 and resumed: the same final weights; the
    frozen buffer is the code (its hash in config.json and meta.json) and never changes."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    cfg = dict(FAST, steps=4, save_every=2, keep_last=3, interface=kind)
    TR.train(TR.make_config(**cfg, out=str(full)))
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step_0000004")
    TR.train(TR.make_config(**cfg, out=str(cut), resume=True))
    assert _digest(full) == _digest(cut / "checkpoints" / "step_0000004")
    config = json.loads((full / "config.json").read_text())
    meta = json.loads((full / "meta.json").read_text())
    w = load_file(full / "model.safetensors")["model.embed_tokens.weight"]
    w0 = load_file(full / "checkpoints" / "step_0000002" / "model.safetensors")["model.embed_tokens.weight"]
    if kind == "trainable":
        assert config["frozen_embedding"] is False and config["interface"] == "trainable"
        assert not torch.equal(w, w0)  # it trains
        return
    assert config["frozen_embedding"] is True and torch.equal(w, w0)
    assert config["embedding_hash"] == matrix_hash(w) == meta["matrix_hash"]
    if kind == "glyph":
        assert config["interface"] == "glyph"
        return
    n = meta["embedding"]["interface"]["n"]
    assert config["interface"] == meta["embedding"]["interface_label"] and config["interface"].startswith(f"{kind}:{n}")
    assert meta["embedding"]["glyph_matrix_hash"] != meta["matrix_hash"]
    rebuilt, _ = I.interface_matrix(kind, w.shape[0], w.shape[1], n)
    assert torch.equal(rebuilt, w)
    if kind == "id-bits":
        bits = (w[:, :: w.shape[1] // n] > 0).numpy()
        assert np.array_equal(I.decode_id_bits(bits), np.arange(w.shape[0]))


def test_interfaces_share_the_transformer_init():
    """Same seed, other interface: every tensor but the input matrix is equal at step 0."""
    from types import SimpleNamespace

    from bvvlab.glyph.tokenizer import BYTE_TOKENS, hf_tokenizer

    tok = hf_tokenizer(["<pad>", "<s>", "</s>", "<unk>"] + list(BYTE_TOKENS) + [chr(c) for c in range(128)], [])
    emb = SimpleNamespace(tokenizer=tok, matrix=torch.nn.functional.normalize(torch.randn(len(tok), 64), dim=1),
                          meta={})
    states = {}
    for kind in ("glyph", "id-bits", "float"):
        cfg = TR.make_config(interface=kind, seed=3)
        from bvvlab.train.setup import with_interface

        states[kind] = TR.build_model(cfg, with_interface(cfg, emb)).state_dict()
    for kind in ("id-bits", "float"):
        differ = [k for k in states["glyph"] if not torch.equal(states["glyph"][k], states[kind][k])]
        assert differ == [TR.EMBED_KEY]


# ---------------------------------------------------------------------------------------------
# bad input through the command


def _cli_error(capsys, *argv) -> str:
    rc = main(["train", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_interface_keys_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    fast = [f"{k}={v}" for k, v in FAST.items()]
    assert "is not a known interface" in _cli_error(capsys, "--out", str(out), *fast, "interface=bits")
    assert "does not divide the model width 64" in _cli_error(capsys, "--out", str(out), *fast,
                                                             "interface=id-bits", "interface_dim=12")
    assert "frozen=false" in _cli_error(capsys, "--out", str(out), *fast, "interface=id-bits", "frozen=false")
    assert "interface_order" in _cli_error(capsys, "--out", str(out), *fast, "interface_order=middle")
    err = _cli_error(capsys, "--out", str(out), "--steps", "2", *fast, "interface=random-bits", "interface_dim=4")
    assert "16 codes but the vocabulary has" in err
    assert not out.exists()


@pytest.mark.slow
def test_resume_or_fusion_across_interfaces_is_refused(tmp_path, capsys):
    glyph, bits = tmp_path / "glyph", tmp_path / "bits"
    TR.train(TR.make_config(**FAST, steps=2, out=str(glyph)))
    TR.train(TR.make_config(**FAST, steps=2, out=str(bits), interface="id-bits"))
    before = sorted((p, p.stat().st_mtime_ns) for p in glyph.rglob("*"))
    err = _cli_error(capsys, "--out", str(glyph), "--resume", "--steps", "4", "interface=id-bits")
    assert "different model config" in err and "interface (saved 'glyph')" in err
    assert sorted((p, p.stat().st_mtime_ns) for p in glyph.rglob("*")) == before
    rc = main(["fuse", str(glyph), str(bits), "--out", str(tmp_path / "fused")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "interfaces glyph vs id-bits:16" in err, err
    assert not (tmp_path / "fused").exists()
    # two experts on the same code fuse
    bits2 = tmp_path / "bits2"
    TR.train(TR.make_config(**FAST, steps=2, out=str(bits2), interface="id-bits", lr=3e-3))
    assert main(["fuse", str(bits), str(bits2), "--out", str(tmp_path / "fused")]) == 0


# ---------------------------------------------------------------------------------------------
# the ablation's statistics


def test_t_interval_and_gap_fit():
    r = A._t_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["n"] == 3
    assert math.isclose(r["high"] - 2.0, 4.302652729911275 * 1.0 / math.sqrt(3))  # t(0.975, 2) s / sqrt(n)
    assert A._t_interval([1.5])["low"] is None
    t = [1e3, 1e4, 1e5]
    fit = A.gap_fit(t, [6.0, 4.0, 2.0])  # gap = 12 - 2 log10(t): 0 at 1e6
    assert math.isclose(fit["b"], -2.0) and math.isclose(fit["a"], 12.0) and math.isclose(fit["meet_tokens"], 1e6)
    assert fit["verdict"] == "meets"
    assert A.gap_fit(t, [2.0, 4.0, 6.0])["verdict"].startswith("diverges")
    assert A.gap_fit([1e3], [1.0])["meet_tokens"] is None
    flat = A.gap_fit(t, [1.0, 1.0 - 1e-9, 1.0 - 2e-9])  # meets at 10 ** 1e9 tokens: no number, a verdict
    assert flat["meet_tokens"] is None and flat["verdict"].startswith("meets only beyond")
    with pytest.raises(ValueError, match="must be > 0"):
        A.gap_fit([0, 10], [1.0, 2.0])
    # a gap that changes sign inside the measured range then grows: it diverges, and says where it
    # crossed (the demo's glyph vs float-64 went -1.8% -> +1.8%; the crossing branch was unreachable)
    cross = A.gap_fit(t, [-2.0, 0.0, 2.0])
    assert cross["verdict"].startswith("diverges") and math.isclose(cross["crossed_tokens"], 1e4)
    assert "changed sign at about 10,000 tokens" in cross["verdict"]
    assert A.gap_fit(t, [2.0, 4.0, 6.0])["crossed_tokens"] is None


def test_crossing_uncertainty_fits_each_seed_and_bootstraps_over_seeds():
    """Seeds whose gaps are 12 - 2 log10(t) + c_s all meet; the per-seed fits are exact, the
    slope's interval is a point, and every bootstrap resample meets between the seeds' budgets."""
    t = [1e3, 1e4, 1e5]
    curves = {s: {tok: 12 - 2 * math.log10(tok) + c for tok in t} for s, c in zip((0, 1, 2), (-1.0, 0.0, 1.0))}
    u = A.crossing_uncertainty(curves, n_boot=200, seed=0)
    meets = [f["meet_tokens"] for f in u["per_seed"]]
    assert all(f["verdict"] == "meets" for f in u["per_seed"])
    assert all(math.isclose(m, 10 ** ((12 + c) / 2)) for m, c in zip(meets, (-1.0, 0.0, 1.0)))
    assert math.isclose(u["slope"]["mean"], -2.0) and math.isclose(u["slope"]["high"], -2.0)
    b = u["bootstrap"]
    assert b["share_meets"] == 1.0 and b["distinct_resamples"] == 10
    lo, mid, hi = b["meet_tokens_p2.5_p50_p97.5"]
    assert min(meets) - 1e-6 <= lo <= mid <= hi <= max(meets) + 1e-6
    assert A.crossing_uncertainty(curves, n_boot=200, seed=0) == u  # seeded
    # one seed diverging: the share of resamples that meet drops below 1, and some diverge
    curves[2] = {tok: -12 + 2 * math.log10(tok) + 3 for tok in t}
    b = A.crossing_uncertainty(curves, n_boot=400, seed=1)["bootstrap"]
    assert 0 < b["share_meets"] < 1 and b["share_diverges"] > 0
    # nearly flat resamples meet beyond 1e15 tokens: counted as meeting, their percentile is None
    flat = {s: {tok: 1.0 + c - 1e-9 * math.log10(tok) for tok in t} for s, c in zip((0, 1, 2), (0.0, 0.1, 0.2))}
    b = A.crossing_uncertainty(flat, n_boot=100, seed=0)["bootstrap"]
    assert b["share_meets"] == b["share_meets_beyond_1e15"] == 1.0
    assert b["meet_tokens_p2.5_p50_p97.5"] == [None, None, None]
    # seeds that cross inside the range: the share that crossed is no longer always 0
    crossing = {s: {tok: -8 + 2 * math.log10(tok) + c for tok in t} for s, c in zip((0, 1, 2), (-0.5, 0.0, 0.5))}
    assert A.crossing_uncertainty(crossing, n_boot=100, seed=0)["bootstrap"]["share_crossed"] == 1.0
    # a later window with fewer than two budgets: no fit, no bootstrap
    assert A.crossing_uncertainty(curves, min_tokens=1e5)["bootstrap"] is None


def test_summary_pairs_final_gaps_by_seed(tmp_path):
    """summarize's final gaps are paired by seed; its extra pairs get their own gap series."""
    def run(name, seed, bpc, hist):
        d = tmp_path / "runs" / name / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "ablation.json").write_text(json.dumps({
            "name": name, "seed": seed, "interface": name, "val_bpc": bpc, "tokens": 300,
            "history": [{"step": i, "tokens": tok, "val_bpc": v} for i, (tok, v) in enumerate(hist)]}))

    for s, d in ((0, 0.0), (1, 0.1)):
        run("glyph", s, 4.4 + d, [(100, 5.5 + d), (200, 5.0 + d)])
        run("id-bits", s, 4.4 + d, [(100, 5.5 + d), (200, 5.0 + d)])
        run("trainable", s, 4.0 + d, [(100, 5.0 + d), (200, 4.5 + d)])
    summ = A.summarize(tmp_path)
    fg = summ["final_gap_pct_paired"]
    assert fg["glyph vs id-bits"]["mean"] == 0.0 and fg["glyph vs id-bits"]["n"] == 2
    assert math.isclose(fg["id-bits vs trainable"]["per_seed"][1], 100 * 0.4 / 4.1)
    more = summ["gaps_more"]["id-bits vs trainable"]
    assert [p["tokens"] for p in more["points"]] == [100, 200] and more["fit_uncertainty"]["per_seed"]


def test_series_entries_and_base_keys():
    assert A.series_entry("random-bits:128") == ("random-bits-128", {"interface": "random-bits", "interface_dim": 128})
    assert A.series_entry("glyph") == ("glyph", {"interface": "glyph"})
    with pytest.raises(ValueError, match="not a known interface"):
        A.series_entry("pixels")
    with pytest.raises(ValueError, match="sets seed"):
        A.run_series("/nonexistent/never", {"seed": 1})


@pytest.mark.slow
def test_ablate_command_runs_the_series_once_and_summarizes(tmp_path, capsys):
    """Two interfaces x two seeds: every run of a seed reads the same training shard; the summary
    has both interfaces over both seeds and the paired gap; a re-run trains nothing again."""
    out = tmp_path / "series"
    argv = ["ablate", "--out", str(out), "--series", "glyph", "id-bits", "--seeds", "0", "1", "--no-suites",
            "--no-probe", *[f"{k}={v}" for k, v in FAST.items()], "steps=4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["interfaces"]) == {"glyph", "id-bits"} and "gap glyph vs id-bits" in printed
    assert all(row["val_bpc"]["n"] == 2 and row["seeds"] == [0, 1] for row in summary["interfaces"].values())
    gap = summary["gaps"]["id-bits"]
    assert gap["seeds"] == [0, 1] and [p["tokens"] for p in gap["points"]] == [256]  # the step-2 evaluation
    for s in (0, 1):
        shards = {json.loads((out / "runs" / n / f"seed{s}" / "meta.json").read_text())["data"]["train"]["key"]
                  for n in ("glyph", "id-bits")}
        assert len(shards) == 1  # one data order per seed
    assert (out / "gap.html").exists() and (out / "plotly.min.js").exists()
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/model.safetensors")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/model.safetensors")} == before
