"""What notebooks/01 shows is what the model gets: un-snaked bits are the recipe's images, a
projected string equals its matrix row, the PCA cache round-trips, scripts are labelled right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bvvlab.glyph import views as ev
from bvvlab.glyph.bitmaps import RECIPE_32, render_bits, render_images
from bvvlab.glyph.embeddings import glyph_bits, glyph_matrix, pca_components

TOKENS = (["A", "a", "Ж", "ж", "中", "é", "e\u0301", "the", "ell", "При", "单元", "<s>", "<0xF0>", "\n", " ", "ffi"]
          + [chr(c) for c in range(0x41, 0x5B)] + [chr(c) for c in range(0x430, 0x450)] + ["ab", "ба", "xyz", "!?"])


def test_unsnake_inverts_the_polar_snake():
    assert np.array_equal(ev.unsnake(render_bits(TOKENS), 32), render_images(TOKENS))
    assert np.array_equal(ev.model_view_images(TOKENS[:5]), render_images(TOKENS[:5]))


@pytest.mark.parametrize("dim", [None, 16])
def test_project_equals_the_matrix_rows(dim, monkeypatch, tmp_path):
    monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path))
    matrix = glyph_matrix(TOKENS, dim=dim, cache=False, progress=False)
    pca = ev.glyph_pca(TOKENS)
    got = ev.project(TOKENS[::3], pca, RECIPE_32, dim)
    assert got.shape == matrix[::3].shape
    assert float((got - matrix[::3]).abs().max()) <= 1e-6  # same PCA, same float32 arithmetic
    # a string that is not a token gets a unit vector in the same space
    assert torch.allclose(ev.project(["cat"], pca, RECIPE_32, dim).norm(dim=1), torch.ones(1))


def test_glyph_pca_is_the_recipe_pca_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path))
    mean, comps, var = pca_components(glyph_bits(TOKENS))  # the recipe's bits; byte tokens as fullwidth hex
    first = ev.glyph_pca(TOKENS)
    assert np.array_equal(first.components, comps) and np.array_equal(first.explained_variance, var)
    (cached,) = (tmp_path / "glyph_pca").glob("*.npz")
    again = ev.glyph_pca(TOKENS)
    assert np.array_equal(again.components, comps) and np.array_equal(again.mean, mean)
    cached.write_bytes(b"damaged")
    assert np.array_equal(ev.glyph_pca(TOKENS).components, comps)  # rebuilt, not trusted
    assert abs(first.explained_ratio.sum() - 1) < 1e-9


def test_token_script():
    cases = {"the": "Latin", "При": "Cyrillic", "单元": "CJK", "αβ": "Greek", "é": "Latin", "e\u0301": "Latin",
             "the,": "Latin", "aж": "mixed", "12": "digits/punct/symbols", " ": "digits/punct/symbols",
             "<s>": "special", "<0xF0>": "special", "<unused_65535>": "special", "한": "Hangul", "ש": "Hebrew"}
    assert {t: ev.token_script(t) for t in cases} == cases


def test_nearest_ranks_by_cosine_then_id():
    matrix = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.6, 0.8], [1.0, 0], [0, 1.0]]), dim=1)
    vocab = ["a", "b", "c", "d"]
    got = ev.nearest(torch.tensor([[1.0, 0]]), matrix, vocab, k=3)
    assert [t for t, _ in got[0]] == ["a", "c", "b"] and got[0][0][1] == pytest.approx(1.0)


def test_identical_groups_are_identical_glyph_bits():
    tokens = ["кот", "кст", "cat", "O", "Ο", "О", "o", "ab", "xyz", "<unused_9>"]
    matrix = glyph_matrix(tokens, cache=False, progress=False)
    bits = render_bits(tokens)
    expected = {frozenset(t for j, t in enumerate(tokens) if (bits[j] == bits[i]).all() and not t.startswith("<unused"))
                for i in range(len(tokens))}
    got = ev.identical_groups(matrix, tokens)
    assert {frozenset(g) for g in got} == {g for g in expected if len(g) > 1}
    assert ["кот", "кст"] in got and ["O", "Ο", "О"] in got  # resize drops columns; homoglyphs across scripts


def test_save_figure_works_offline(tmp_path):
    """The HTML loads plotly.js from a file beside it (the installed plotly's bundle), never a URL."""
    import re

    import plotly
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    page = ev.save_figure(fig, tmp_path, "a")
    ev.save_figure(fig, tmp_path, "b")
    html = page.read_text(encoding="utf-8")
    assert re.findall(r'<script[^>]*src="([^"]+)"', html) == ["plotly.min.js"]
    assert "cdn" not in html.lower() and "https://cdn" not in html
    assert (tmp_path / "plotly.min.js").read_text(encoding="utf-8") == get_plotlyjs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "a.json", "b.html", "b.json", "plotly.min.js"]
    assert go.Figure(plotly.io.from_json((tmp_path / "a.json").read_text(encoding="utf-8"))) == fig


def test_labels_show_blank_glyphs_and_code_points():
    assert ev.visible(" ") == "[U+0020]" and ev.visible("\n") == "[U+000A]" and ev.visible("") == ""
    assert ev.visible("e\u0301") == "e[U+0301]" and ev.visible("é") == "é" and ev.visible("<s>") == "<s>"
    assert ev.code_points("A") == "U+0041" and ev.code_points("А") == "U+0410"
    assert ev.code_points("abcdef") == "U+0061 U+0062 U+0063 U+0064 …"


def test_gallery_titles_are_escaped_and_tell_lookalikes_apart():
    """`<s>` was a blank title (plotly read it as a strike-through tag); `é` and `e\\u0301`, `A`
    and `А` had identical titles: every title is now distinct, escaped, with code points."""
    toks = ["<s>", "é", "e\u0301", "A", "А", " ", "\n", "<0xF0>"]
    fig = ev.gallery_figure(toks, ev.model_view_images(toks), cols=4)
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == len(set(titles)) == len(toks)
    assert titles[0].startswith("&lt;s&gt;<br>") and "<s>" not in titles[0]
    assert "U+00E9" in titles[1] and "U+0065 U+0301" in titles[2] and "U+0410" in titles[4]
    assert titles[5].startswith("[U+0020]") and titles[7].startswith("&lt;0xF0&gt;")


def test_similarity_labels_are_rounded_not_float32_noise():
    words = ["cat", "cot", "<s>"]
    vectors = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.93, 0.3675], [0.2, 0.98]]), dim=1)
    fig = ev.similarity_figure(words, vectors)
    heat = fig.data[0]
    assert all(isinstance(t, str) and len(t.split(".")[1]) == 2 for row in heat.text for t in row)
    assert heat.text[0][1] == f"{float(vectors[0] @ vectors[1]):.2f}"
    assert "0000000" not in fig.to_json() and list(heat.x) == ["cat", "cot", "&lt;s&gt;"]


def test_neighbour_table_shows_blank_tokens_visibly():
    fig = ev.neighbours_figure(["a"], [[(" ", 0.91), ("\u0301", 0.5), ("<s>", 0.25)]])
    cells = fig.data[0].cells.values
    assert [c[0] for c in cells] == ["a", "[U+0020] (0.91)", "[U+0301] (0.50)", "&lt;s&gt; (0.25)"]


def test_spectrum_ticks_are_plain_exponents():
    """A variance ratio is not a physical unit: no SI prefixes ("100µ") on its log axis."""
    pca = ev.GlyphPCA(np.zeros(4), np.eye(4), np.array([1.0, 1e-2, 1e-4, 1e-6]))
    fig = ev.spectrum_figure(pca, dim=2)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.tickformat == ".0e"
    assert fig.layout.yaxis.exponentformat == "e"


def test_recipe_for_carries_the_layout():
    assert ev.recipe_for("compact") is None
    assert ev.recipe_for("compact", 32, "raqm").layout == "raqm"
    assert ev.recipe_for("bvv241-max", 32, "raqm").max_angle == 7.0
    assert ev.recipe_for("compact", 64).size == 64
    with pytest.raises(ValueError, match="not a glyph layout"):
        ev.recipe_for("compact", 32, "Raqm")
    with pytest.raises(ValueError, match="not a recipe size"):
        ev.recipe_for("compact", 48)
