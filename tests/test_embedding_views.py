"""What notebooks/01 shows is what the model gets: un-snaked bits are the recipe's images, a
projected string equals its matrix row, the PCA cache round-trips, scripts are labelled right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bvvlab import embedding_views as ev
from bvvlab.embeddings import glyph_bits, glyph_matrix, pca_components
from bvvlab.glyphs import RECIPE_32, render_bits, render_images

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
