"""The frozen matrix: PCA as the recipe's sklearn call computes it (docs/recipe.md 3.6-3.7),
deterministic, cached with damage detection, saved/loaded with clear errors, and the
`bvvlab embed` CLI producing a directory transformers loads."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from test_glyphs import TOKENS

from bvvlab.cli import main as cli_main
from bvvlab.glyph import embeddings as E
from bvvlab.glyph.bitmaps import RECIPE_32, render_bits


@pytest.fixture(scope="module")
def bits() -> np.ndarray:
    return render_bits(TOKENS)  # equal to the literal recipe (test_glyphs)


@pytest.fixture(scope="module")
def pca_bits(bits) -> np.ndarray:
    return bits[::2]  # 1,528 tokens of every kind: enough for a 1024-dim PCA, half the SVD cost


@pytest.fixture(scope="module")
def ours(pca_bits):
    return E.pca_components(pca_bits)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _separated(ev: np.ndarray, rel_gap: float = 1e-7) -> np.ndarray:
    """Components whose eigenvalue is non-null and well apart from its neighbours (unique vectors)."""
    gaps = np.minimum(np.abs(np.diff(ev, prepend=np.inf)), np.abs(np.diff(ev, append=-np.inf)))
    return (ev > 1e-9 * ev[0]) & (gaps > rel_gap * ev[0])


def test_pca_equals_sklearn_components_variances_and_signs(pca_bits, ours):
    mean, comps, ev = ours
    sk = PCA(n_components=pca_bits.shape[1], svd_solver="full").fit(pca_bits.astype(np.float64))
    np.testing.assert_allclose(mean, sk.mean_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ev, sk.explained_variance_, rtol=0, atol=1e-10 * ev[0])
    ok = _separated(ev)
    assert ok.sum() > 0.8 * (ev > 1e-9 * ev[0]).sum()  # all but near-degenerate ones compare one by one
    # sign convention (module docstring): the largest-|.| loading of each component is positive
    top = np.abs(comps).argmax(axis=0)
    assert np.all(comps[top, np.arange(comps.shape[1])][ev > 0] > 0)
    # sklearn's svd_flip uses the same convention, so the vectors agree with their signs
    np.testing.assert_allclose(comps[:, ok].T, sk.components_[ok], rtol=0, atol=1e-9)


def test_embedding_equals_recipe_sklearn_float32_path(pca_bits, ours):
    """Recipe 3.6-3.7 literally: float32 bits, PCA(n_components=1024).fit_transform, L2 rows."""
    z = PCA(n_components=1024).fit_transform(pca_bits.astype(np.float32))
    ref = z / np.linalg.norm(z, axis=1, keepdims=True)
    _, _, ev = ours
    ours = E.pca_embed(pca_bits).numpy()
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    # inner products are what a model sees; they do not depend on the basis inside degenerate
    # eigenspaces, so they compare every component at once
    rows = slice(0, 800)
    np.testing.assert_allclose(ours[rows] @ ours[rows].T, ref[rows] @ ref[rows].T, rtol=0, atol=2e-5)
    # and the leading well-separated components agree column by column, signs included
    ok = np.nonzero(_separated(ev))[0][:100]
    np.testing.assert_allclose(ours[:, ok], ref[:, ok], rtol=0, atol=1e-4)


def test_dim_keeps_the_leading_components_then_normalises(pca_bits, ours):
    mean, comps, _ = ours
    for dim in (16, 300):
        scores = (pca_bits.astype(np.float64) - mean) @ comps[:, :dim]
        expected = scores / np.linalg.norm(scores, axis=1, keepdims=True)
        got = E.pca_embed(pca_bits, dim).numpy()
        assert got.shape == (len(pca_bits), dim)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_null_components_are_exact_zeros():
    """More dimensions than tokens: the components past the rank carry nothing and are 0.0."""
    few = render_bits(TOKENS[:50])
    emb = E.pca_embed(few).numpy()
    assert np.all(emb[:, 49:] == 0.0)
    assert np.linalg.matrix_rank(emb[:, :49]) == 49


@pytest.mark.slow
def test_two_builds_bit_identical_and_thread_count_independent(bits, tmp_cache):
    a = E.glyph_matrix(TOKENS, params=RECIPE_32, cache=False, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        b = E.glyph_matrix(TOKENS, params=RECIPE_32, cache=False, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)
    assert E.matrix_hash(a) == E.matrix_hash(b)
    assert not tmp_cache.joinpath("embeddings").exists()  # cache=False writes nothing


def test_cache_hit_damage_detected_and_rebuilt(tmp_cache, caplog):
    toks = TOKENS[:300]
    t1: dict = {}
    first = E.glyph_matrix(toks, dim=64, cache=True, progress=False, timings=t1)
    files = list((tmp_cache / "embeddings").glob("*.safetensors"))
    assert t1["cache_hit"] is False and len(files) == 1
    t2: dict = {}
    assert torch.equal(E.glyph_matrix(toks, dim=64, cache=True, progress=False, timings=t2), first)
    assert t2["cache_hit"] is True
    # another dim, another recipe or other tokens are other entries
    E.glyph_matrix(toks, dim=32, cache=True, progress=False)
    E.glyph_matrix(toks[:-1], dim=64, cache=True, progress=False)
    assert len(list((tmp_cache / "embeddings").glob("*.safetensors"))) == 3
    for damage in ("flip", "truncate"):
        raw = bytearray(files[0].read_bytes())
        if damage == "flip":
            raw[-5] ^= 0x40  # one bit of the last float
        else:
            raw = raw[:100]
        files[0].write_bytes(bytes(raw))
        caplog.clear()
        t3: dict = {}
        with caplog.at_level(logging.WARNING, logger="bvvlab.glyph.embeddings"):
            again = E.glyph_matrix(toks, dim=64, cache=True, progress=False, timings=t3)
        assert t3["cache_hit"] is False and torch.equal(again, first)
        msgs = [r.getMessage() for r in caplog.records]
        assert len(msgs) == 1 and "damaged" in msgs[0] and "rebuilding" in msgs[0] and "\n" not in msgs[0]
        t4: dict = {}
        E.glyph_matrix(toks, dim=64, cache=True, progress=False, timings=t4)
        assert t4["cache_hit"] is True  # repaired


@pytest.mark.slow
def test_other_dims_reuse_the_cached_basis_and_damage_is_rebuilt(tmp_cache, caplog, monkeypatch):
    toks = TOKENS[:300]
    full = E.pca_embed(render_bits(toks))
    assert torch.equal(E.glyph_matrix(toks, cache=True, progress=False), full)
    basis = list((tmp_cache / "embeddings").glob("basis-*.npz"))
    assert len(basis) == 1
    with monkeypatch.context() as m:  # another dim: no render, no PCA, same numbers
        m.setattr(E, "render_bits", lambda *a, **k: pytest.fail("rendered although the basis is cached"))
        t: dict = {}
        got = E.glyph_matrix(toks, dim=40, cache=True, progress=False, timings=t)
    assert t["basis_cache_hit"] is True
    assert torch.equal(got, E.pca_embed(render_bits(toks), 40))
    raw = bytearray(basis[0].read_bytes())
    raw[len(raw) // 2] ^= 0x10
    basis[0].write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="bvvlab.glyph.embeddings"):
        again = E.glyph_matrix(toks, dim=41, cache=True, progress=False)
    assert len(caplog.records) == 1 and "damaged" in caplog.records[0].getMessage()
    assert torch.equal(again, E.pca_embed(render_bits(toks), 41))


def test_save_load_round_trip_and_errors(tmp_path):
    m = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    p = tmp_path / "m.safetensors"
    digest = E.save_matrix(p, m, vocab_kind="test", recipe=RECIPE_32.as_dict())
    assert digest == E.matrix_hash(m)
    assert torch.equal(E.load_matrix(p), m)
    assert json.loads(E.load_matrix_meta(p)["recipe"]) == RECIPE_32.as_dict()
    with pytest.raises(ValueError, match="has 10 rows but the vocabulary has 11 tokens") as exc:
        E.load_matrix(p, vocab_size=11)
    assert "\n" not in str(exc.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.load_matrix(tmp_path / "nope.safetensors")
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged"):
        E.load_matrix(p)
    p.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        E.load_matrix(p)


def test_matrix_hash_sees_values_shape_and_dtype():
    m = torch.zeros(4, 6)
    assert E.matrix_hash(m) == E.matrix_hash(m.clone())
    assert E.matrix_hash(m) != E.matrix_hash(m.reshape(6, 4))
    assert E.matrix_hash(m) != E.matrix_hash(m.double())
    m2 = m.clone()
    m2[3, 5] = 1e-30
    assert E.matrix_hash(m) != E.matrix_hash(m2)


def test_bad_dim_is_one_clear_line():
    with pytest.raises(ValueError, match=r"dim=2000 is out of range: pass 1 <= dim <= 1024"):
        E.glyph_matrix(["a", "b"], dim=2000, cache=False)
    with pytest.raises(ValueError, match="dim=0 is out of range"):
        E.pca_embed(np.zeros((3, 4), dtype=bool), 0)


def _tiny_hf_tokenizer(path):
    """A non-bvv tokenizer (WordLevel over byte-level-style spellings), saved as HF files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "Ġthe", "hello", "中文", "дом", "ĠcafÃ©", "x", "\u0301e"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>").save_pretrained(str(path))
    return words


def test_any_tokenizer_dir_is_rendered_in_id_order(tmp_path, tmp_cache):
    words = _tiny_hf_tokenizer(tmp_path / "tok")
    emb = E.prepare_vocabulary(str(tmp_path / "tok"), progress=False)
    assert len(emb.tokenizer) == len(words) and emb.matrix.shape == (len(words), 1024)
    assert torch.equal(emb.matrix, E.pca_embed(render_bits(words)))  # row i = glyph of token id i
    assert emb.meta["vocab_kind"] == "tokenizer-dir" and emb.meta["matrix_hash"] == E.matrix_hash(emb.matrix)
    out = emb.save(tmp_path / "out")
    back = E.load_embedded(out)
    assert torch.equal(back.matrix, emb.matrix) and back.matrix_hash == emb.matrix_hash
    assert back.tokenizer.convert_ids_to_tokens(2) == "Ġthe"


def test_not_a_tokenizer_and_unknown_kind(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a tokenizer dir"):
        E.prepare_vocabulary(str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="neither a kind .* nor a tokenizer folder"):
        E.prepare_vocabulary("bvv999", progress=False)


def test_save_refuses_non_empty_dir_and_keeps_its_files(tmp_path, tmp_cache):
    words = _tiny_hf_tokenizer(tmp_path / "tok")
    emb = E.prepare_vocabulary(str(tmp_path / "tok"), dim=16, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # a folder that is not an embedding folder is never replaced (issue 26 item 5)
        with pytest.raises(FileExistsError, match="not empty and holds something other than an embedding folder"):
            emb.save(out, overwrite=overwrite)
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    out = emb.save(tmp_path / "emb")
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds an embedding folder: pass --overwrite"):
        emb.save(out)
    emb.save(out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine" and (out / E.MATRIX_FILE).is_file()
    assert E.load_embedded(out).matrix.shape == (len(words), 16)


def test_failed_overwrite_leaves_the_earlier_folder_intact_and_no_temp_folder(tmp_path, tmp_cache, monkeypatch):
    """A save that dies after the tokenizer files were written (here: the matrix write) leaves the
    folder saved before byte for byte, keeps the user's file, and leaves no temporary folder."""
    words = _tiny_hf_tokenizer(tmp_path / "tok")
    out = E.prepare_vocabulary(str(tmp_path / "tok"), dim=16, progress=False).save(tmp_path / "out")
    (out / "keep.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = E.prepare_vocabulary(str(tmp_path / "tok"), dim=8, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a Ctrl-C mid-save raises

    monkeypatch.setattr(E, "save_matrix", killed)
    with pytest.raises(KeyboardInterrupt):
        other.save(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out", "tok"]
    monkeypatch.undo()
    other.save(out, overwrite=True)  # the same overwrite, not interrupted: the new matrix, the user's file kept
    assert E.load_embedded(out).matrix.shape == (len(words), 8) and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "out", "tok"]


def test_mismatched_matrix_and_tokenizer_is_one_clear_line(tmp_path, tmp_cache):
    _tiny_hf_tokenizer(tmp_path / "tok")
    emb = E.prepare_vocabulary(str(tmp_path / "tok"), dim=8, progress=False)
    out = emb.save(tmp_path / "out")
    E.save_matrix(out / E.MATRIX_FILE, torch.zeros(5, 8))
    with pytest.raises(ValueError, match="has 5 rows but the vocabulary has 9 tokens"):
        E.load_embedded(out)
    with pytest.raises(ValueError, match="rows but the tokenizer has"):
        E.Embedded(emb.tokenizer, torch.zeros(3, 8))


def test_cli_refuses_non_empty_out_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep")
    assert cli_main(["embed", "--vocab", "bvv241-2-3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not empty" in err and "--overwrite" in err
    assert (out / "x").read_text() == "keep" and len(list(out.iterdir())) == 1


def test_cli_missing_font_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import shutil

    from bvvlab.core.runinfo import data_dir
    from bvvlab.glyph import font

    shutil.copytree(data_dir() / "fonts", tmp_path / "data" / "fonts")
    (tmp_path / "data" / font.FONT_FILE).unlink()
    _tiny_hf_tokenizer(tmp_path / "tok")
    monkeypatch.setenv("BVVLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path / "cache"))
    font._font_bytes.cache_clear()
    font._load.cache_clear()
    try:
        rc = cli_main(["embed", "--vocab", str(tmp_path / "tok"), "--out", str(tmp_path / "out"), "--quiet"])
    finally:
        font._font_bytes.cache_clear()
        font._load.cache_clear()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "font file" in err and "missing" in err
    assert not (tmp_path / "out").exists()


# --- the full 65,536-token build, once per module -----------------------------------------

@pytest.fixture(scope="module")
def full_cli_dir(tmp_path_factory):
    """`bvvlab embed --vocab bvv241-2-3 --out DIR` exactly as the issue writes it."""
    root = tmp_path_factory.mktemp("embed")
    mp = pytest.MonkeyPatch()
    mp.setenv("BVVLAB_CACHE", str(root / "cache"))
    try:
        assert cli_main(["embed", "--vocab", "bvv241-2-3", "--out", str(root / "out"), "--quiet"]) == 0
        yield root / "out"
    finally:
        mp.undo()


@pytest.mark.slow
def test_cli_bvv241_2_3_dir_loads_with_transformers(full_cli_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(full_cli_dir))
    assert len(tok) == 65_536
    assert tok.convert_ids_to_tokens(ord("ж")) == "ж" and tok.convert_ids_to_tokens(0xE000) == "<pad>"
    matrix = E.load_matrix(full_cli_dir / E.MATRIX_FILE, vocab_size=len(tok))
    assert matrix.shape == (65_536, 1024) and matrix.dtype == torch.float32
    np.testing.assert_allclose(matrix.norm(dim=1).numpy(), 1.0, atol=1e-5)
    meta = json.loads((full_cli_dir / "meta.json").read_text())
    assert meta["matrix_hash"] == E.matrix_hash(matrix) and meta["vocab_kind"] == "bvv241-2-3"
    assert meta["font_sha256"] and meta["recipe"] == RECIPE_32.as_dict() and "render_s" in meta["timings"]
    assert "bvvlab_version" in meta and "packages" in meta  # run_meta common part
    # recipe 3 consequence: tokens that render identically get identical rows, others do not
    ids = list(range(0, 65_536, 23))
    sample_bits = render_bits(E.glyph_strings(tok.convert_ids_to_tokens(ids)))  # byte tokens: fullwidth hex digits
    _, first, inverse = np.unique(np.packbits(sample_bits, axis=1), axis=0, return_index=True, return_inverse=True)
    rows = matrix[torch.tensor(ids)]
    assert len(first) < len(ids)  # the sample has some glyph twins (e.g. unassigned code points)
    assert torch.equal(rows, rows[torch.tensor(first[inverse.ravel()])])
    assert len(torch.unique(rows, dim=0)) == len(first)
    # the 128 byte-fallback tokens (ids 0xE080-0xE0FF) get 128 different rows (module docstring)
    assert tok.convert_ids_to_tokens(0xE080) == "<0x80>" and tok.convert_ids_to_tokens(0xE0FF) == "<0xFF>"
    assert len(torch.unique(matrix[0xE080:0xE100], dim=0)) == 128


@pytest.mark.slow
def test_compact_rows_come_from_the_full_matrix(full_cli_dir, monkeypatch):
    monkeypatch.setenv("BVVLAB_CACHE", str(full_cli_dir.parent / "cache"))  # full matrix is cached there
    full = E.load_embedded(full_cli_dir)
    texts = ["hello the test", "привет мир, это тест", "emoji 🙂 and 中文"]
    compact = E.prepare_vocabulary("compact", texts=texts, progress=False)
    from bvvlab.glyph.tokenizer import full_ids_of

    ids = full_ids_of(compact.tokenizer)
    assert len(compact.tokenizer) == len(ids) < 1000
    assert compact.meta["full_matrix_hash"] == full.matrix_hash  # the shared embedding space
    assert torch.equal(compact.matrix, full.matrix[torch.tensor(ids)])
    for text in texts:  # lossless, and each compact id maps to the full id of the same token
        enc = compact.tokenizer.encode(text, add_special_tokens=False)
        assert compact.tokenizer.decode(enc) == text
        assert [ids[i] for i in enc] == full.tokenizer.encode(text, add_special_tokens=False)


# --- byte tokens: drawn as fullwidth hex digits (a documented departure from the recipe) ---------

def test_byte_tokens_are_drawn_as_fullwidth_hex_digits_and_nothing_else_changes(tmp_cache):
    """In a lossless vocabulary the 128 byte tokens get pairwise distinct bit vectors (drawn
    literally they give only 98), while every other token is drawn exactly as the recipe says."""
    from bvvlab.glyph.tokenizer import BYTE_TOKENS, bvv241_vocab

    vocab = bvv241_vocab(65_536, ["th", "the", "ей"])  # lossless: byte tokens at 0xE080-0xE0FF
    assert tuple(vocab[0xE080:0xE100]) == BYTE_TOKENS
    drawn = E.glyph_strings(vocab)
    assert drawn[0xE080:0xE100] == ["".join(chr(ord(c) + 0xFEE0) for c in f"{b:02X}") for b in range(0x80, 0x100)]
    assert drawn[:0xE080] == vocab[:0xE080] and drawn[0xE100:] == vocab[0xE100:]

    others = vocab[0:0xE100:97][:-1] + vocab[0xE000:0xE080] + vocab[0xE100::211]  # no byte tokens
    tokens = list(BYTE_TOKENS) + others
    bits = E.glyph_bits(tokens)
    byte_rows = np.packbits(bits[:128], axis=1)
    assert len(np.unique(byte_rows, axis=0)) == 128
    assert len(np.unique(np.packbits(render_bits(list(BYTE_TOKENS)), axis=1), axis=0)) == 98  # literal: twins
    assert np.array_equal(bits[128:], render_bits(others))  # the recipe's bits (test_glyphs)

    matrix = E.glyph_matrix(tokens, progress=False)
    assert torch.equal(matrix, E.pca_embed(bits))
    assert len(torch.unique(matrix[:128], dim=0)) == 128


def test_cache_key_names_the_byte_token_rule(monkeypatch):
    """A matrix cached under another drawing rule (e.g. byte tokens drawn as ASCII hex) is not reused."""
    toks = ["a", "<0x80>"]
    key = E.cache_key(toks, RECIPE_32, 1024)
    monkeypatch.setattr(E, "GLYPH_TEXT", "byte tokens <0xHH> drawn as HH")  # the previous rule
    assert E.cache_key(toks, RECIPE_32, 1024) != key


def test_dim_above_the_rank_says_so(caplog):
    """Issue 10: `--dim` above the rank of the glyph bits gave all-zero columns without a word."""
    bits = np.zeros((6, 16), dtype=bool)
    for i in range(6):
        bits[i, i] = True  # 6 tokens: at most 5 directions of variance
    with caplog.at_level("WARNING", logger=E.log.name):
        m = E.pca_embed(bits, dim=8)
    assert int((m.abs().sum(0) == 0).sum()) == 3
    assert "above the rank 5" in caplog.text and "use dim<=5" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger=E.log.name):
        E.pca_embed(bits, dim=4)
    assert caplog.text == ""


@pytest.mark.slow
def test_cli_layout_raqm_is_recorded(tmp_path):
    """`bvvlab embed --layout raqm` draws with Pillow's RAQM engine and says so in the provenance."""
    from PIL import features

    from bvvlab.cli import main as cli_main

    if not features.check("raqm"):
        pytest.skip("this Pillow has no libraqm")
    from bvvlab.glyph import tokenizer as T

    tok = T.hf_tokenizer(["<pad>", "<s>", "</s>", "<unk>", "a", "b", "\u0301", "e\u0301"], [], lossless=False)
    tok.save_pretrained(tmp_path / "tok")
    outs = {}
    for layout in ("basic", "raqm"):
        assert cli_main(["embed", "--vocab", str(tmp_path / "tok"), "--layout", layout, "--out",
                         str(tmp_path / layout), "--quiet"]) == 0
        outs[layout] = E.load_embedded(tmp_path / layout)
        assert json.loads((tmp_path / layout / "meta.json").read_text())["recipe"]["layout"] == layout
    assert outs["basic"].matrix_hash != outs["raqm"].matrix_hash  # a lone combining mark draws differently
