"""The fast renderer gives the literal recipe's bits exactly (docs/recipe.md section 3, steps 2-5).

`tests/recipe_reference.py` is the recipe written out step by step with Pillow; every test here
compares `bvvlab.glyph.bitmaps` against it (or against the Pillow call it replaces) for equality, not
closeness.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from recipe_reference import is_easy, render_bits_reference

from bvvlab.glyph import bitmaps as glyphs
from bvvlab.glyph import font
from bvvlab.glyph.bitmaps import (
    RECIPE_32,
    RECIPE_64,
    RECIPE_MAX,
    RecipeParams,
    render_bits,
    render_images,
)
from bvvlab.glyph.tokenizer import BYTE_TOKENS, SPECIAL_TOKENS


def _chars(rng: random.Random, ranges: list[tuple[int, int]], k: int) -> list[str]:
    pool = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]
    return rng.sample(pool, min(k, len(pool)))


def sample_tokens(seed: int = 0) -> list[str]:
    """A deterministic mix of what vocabularies hold: every script the recipe treats differently,
    combining marks, controls, n-grams of 2-5 characters (single and mixed scripts), specials."""
    rng = random.Random(seed)
    latin = [(0x20, 0x7E), (0xA0, 0x24F)]
    greek_cyr = [(0x370, 0x3FF), (0x400, 0x52F)]
    cjk = [(0x4E00, 0x9FFF)]
    other = [(0x530, 0x58F), (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0xAC00, 0xD7A3),
             (0x2000, 0x2BFF), (0xF900, 0xFFFD)]
    combining = [(0x300, 0x36F), (0x1AB0, 0x1AFF), (0x20D0, 0x20FF)]
    controls = [(0x00, 0x1F), (0x7F, 0x9F)]
    toks = [chr(c) for lo, hi in latin + controls + combining for c in range(lo, hi + 1)]  # ~930
    toks += _chars(rng, greek_cyr, 300) + _chars(rng, cjk, 400) + _chars(rng, other, 400)
    toks += list(SPECIAL_TOKENS) + [f"<special_token_{i}>" for i in (23, 99, 255)] + list(BYTE_TOKENS[:8])
    toks += ["<unused_12>", "<unused_65535>", "<unused_131071>", "\n", "\t", " ", "  ", "\r\n", "a\nb"]
    # outside the BMP font (emoji, CJK ext. B: the .notdef glyph) and a lone surrogate
    toks += ["\U0001F642", "\U00020000x", "ab\U0001F600", "a\udfffb"]
    letters = {"lat": [(0x61, 0x7A), (0xE0, 0xFF)], "cyr": [(0x430, 0x44F)], "grk": [(0x3B1, 0x3C9)],
               "cjk": cjk, "mark": combining[:1], "any": latin + greek_cyr + cjk + other + combining}
    for _ in range(1000):  # n-grams: one script, or mixed
        script = rng.choice(["lat", "lat", "cyr", "cyr", "grk", "cjk", "any", "any"])
        n = rng.randint(2, 5)
        toks.append("".join(_chars(rng, letters[script], 1)[0] for _ in range(n)))
    for _ in range(100):  # base letter + combining marks, marks first, marks alone
        base = _chars(rng, letters["lat"] + letters["cyr"], 1)[0]
        marks = "".join(_chars(rng, combining[:1], 1)[0] for _ in range(rng.randint(1, 2)))
        toks.append(rng.choice([base + marks, marks + base, marks]))
    return list(dict.fromkeys(toks))


TOKENS = sample_tokens()


def _assert_same(tokens: list[str], params: RecipeParams) -> None:
    ref = render_bits_reference(tokens, params)
    fast = render_bits(tokens, params)
    assert fast.dtype == np.bool_ and fast.shape == (len(tokens), params.size ** 2)
    bad = [tokens[i] for i in np.nonzero((ref != fast).any(axis=1))[0]]
    assert not bad, f"{len(bad)} tokens differ from the literal recipe, e.g. {bad[:5]!r}"


def test_sample_spans_what_the_issue_asks():
    assert len(TOKENS) >= 3000
    lengths = {len(t) for t in TOKENS}
    assert {1, 2, 3, 4, 5} <= lengths and max(lengths) >= 15
    assert any(is_easy(t) and len(t) > 1 for t in TOKENS) and any(not is_easy(t) and len(t) > 1 for t in TOKENS)
    assert "<pad>" in TOKENS and "<unused_12>" in TOKENS and "\x00" in TOKENS and "\u0301" in TOKENS


@pytest.mark.slow
def test_bits_identical_to_literal_recipe_size_32():
    _assert_same(TOKENS, RECIPE_32)


@pytest.mark.slow
def test_bits_identical_to_literal_recipe_max_variant():
    """bvv241-max numbers (7 degrees, shift 3, noise 0.03): they only change easy tokens."""
    _assert_same([t for t in TOKENS if is_easy(t)][::2] + TOKENS[1000:1200], RECIPE_MAX)


def test_bits_identical_to_literal_recipe_size_64():
    _assert_same(TOKENS[::10], RECIPE_64)


def test_other_seeds_and_numbers_also_match():
    """The constants are derived, not hard-coded: a different seed, blur and shift still match."""
    _assert_same(TOKENS[::25], RecipeParams(seed=7, max_angle=10.0, max_shift=4, noise=0.05, blur=1.2,
                                            complex_noise=0.02))


def test_images_are_bits_before_the_snake():
    imgs = render_images(TOKENS[:200])
    bits = render_bits(TOKENS[:200])
    assert np.array_equal(imgs.reshape(200, -1)[:, glyphs.snake_order(32)], bits)


def test_snake_starts_at_the_centre():
    order = glyphs.snake_order(32)
    assert sorted(order.tolist()) == list(range(1024))
    assert order[0] == 16 * 32 + 16  # r = 0
    assert set(order[1:5].tolist()) == {15 * 32 + 16, 17 * 32 + 16, 16 * 32 + 15, 16 * 32 + 17}  # r = 1


@pytest.mark.parametrize("width", [32, 64, 160])
def test_batched_blur_equals_pillow_per_image(width):
    rng = np.random.default_rng(width)
    imgs = np.where(rng.random((40, 32, width)) < 0.3, 0, 255).astype(np.uint8)
    batched = glyphs.gaussian_blur(imgs, 0.5)
    single = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(0.5))) for im in imgs])
    assert np.array_equal(batched, single)


@pytest.mark.parametrize("width,angle,dx,dy", [(32, 3.1, 1, -2), (96, -3.9, -2, 2), (64, 0.0, 0, 0)])
def test_geometry_gather_equals_pillow_rotate_and_paste(width, angle, dx, dy):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (32, width), dtype=np.uint8)
    pil = Image.fromarray(img).rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=255)
    shifted = Image.new("L", pil.size, 255)
    shifted.paste(pil, (dx, dy))
    gather = glyphs.geometry_gather(32, width, angle, dx, dy)
    flat = np.append(img.reshape(-1), 255)
    ours = img if gather is None else flat[np.where(gather < 0, flat.size - 1, gather)].reshape(32, width)
    assert np.array_equal(ours, np.asarray(shifted))


def test_global_random_state_untouched():
    """The recipe re-seeds the global generators; bvvlab must not (callers' seeds stay theirs)."""
    random.seed(123)
    np.random.seed(123)
    py, npy = random.getstate(), np.random.get_state()
    render_bits(["ab", "中", "<pad>"])
    assert random.getstate() == py
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), npy))


@pytest.mark.parametrize("bad", ["", None, 5])
def test_bad_token_is_one_clear_line(bad):
    with pytest.raises(ValueError, match="token 1 is .*non-empty string"):
        render_bits(["a", bad])


def test_missing_font_stops_rendering_with_one_line(broken_font):
    broken_font.unlink()
    with pytest.raises(font.FontError, match="missing") as exc:
        render_bits(["a"])
    assert "\n" not in str(exc.value)


def test_altered_font_stops_rendering(broken_font):
    import gzip

    data = bytearray(gzip.decompress(broken_font.read_bytes()))
    data[100_000] ^= 0x01
    broken_font.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(font.FontError, match="SHA-256"):
        render_bits(["a"])


def test_glyph_atlas_is_saved_reloaded_and_damage_is_rebuilt(tmp_path, monkeypatch, caplog):
    """A new process reuses the rendered glyphs from disk; a damaged file is reported and redone."""
    monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(glyphs, "_ATLASES", {})
    toks = TOKENS[::7]
    expected = render_bits(toks)
    files = list((tmp_path / "glyph_atlas").glob("*.npz"))
    assert len(files) == 1

    def no_render(*a, **k):
        raise AssertionError("rendered again although the atlas is on disk")

    monkeypatch.setattr(glyphs, "_ATLASES", {})  # a "new process"
    with monkeypatch.context() as m:
        m.setattr(glyphs.GlyphAtlas, "_render_batch", no_render)
        assert np.array_equal(render_bits(toks), expected)
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    monkeypatch.setattr(glyphs, "_ATLASES", {})
    with caplog.at_level("WARNING", logger="bvvlab.glyph.bitmaps"):
        assert np.array_equal(render_bits(toks), expected)
    assert len(caplog.records) == 1 and "damaged" in caplog.records[0].getMessage()


def test_blur_radius_half_never_changes_a_bit():
    """Documented finding (glyphs module docstring): the recipe's blur is a no-op after the threshold."""
    import dataclasses

    easy = [t for t in TOKENS if is_easy(t)]
    assert np.array_equal(render_bits(easy), render_bits(easy, dataclasses.replace(RECIPE_32, blur=0.0)))
    assert not np.array_equal(render_bits(easy), render_bits(easy, dataclasses.replace(RECIPE_32, blur=1.5)))


@pytest.mark.slow
def test_atlas_draws_each_character_as_the_recipe_does():
    """The atlas takes each character's ink box from one `getmask2` call instead of the recipe's
    `getbbox` + `ImageDraw.text`: the same box and the same pixels, for a stride over the whole
    Basic Multilingual Plane (every character was checked once; see the glyphs docstring) and
    for what falls outside it (emoji, CJK extension B, a lone surrogate, a line break)."""
    s = 32
    chars = [chr(c) for c in range(0, 0x10000, 5)] + ["\U0001F642", "\U00020000", "\udfff", "\n", "\u0301", "\u20dd"]
    at = glyphs.GlyphAtlas(s)
    at._render(chars, progress=False)
    f = font.load_font(s)
    pad = 2 * s
    for ch in chars:
        canvas = Image.new("L", (2 * pad + s, 2 * pad + s), 255)
        try:  # recipe 3.2, verbatim, with the cell at (pad, pad)
            left, top, right, bottom = f.getbbox(ch)
            x, y = pad + (s - (right - left)) // 2, pad + (s - (bottom - top)) // 2 - top
            ImageDraw.Draw(canvas).text((x, y), ch, font=f, fill=0)
        except Exception:  # noqa: BLE001
            pass
        expected = np.asarray(canvas) < 128
        ours = np.zeros_like(expected)
        k = at.index[ch]
        ours[pad:pad + s, pad:pad + s] = at.cells[k]
        if k in at.overflow:
            mask, top, left = at.overflow[k]
            ours[pad + top:pad + top + mask.shape[0], pad + left:pad + left + mask.shape[1]] |= mask
        assert np.array_equal(ours, expected), f"U+{ord(ch):04X} is drawn differently from the recipe"


def test_blur_certificate_is_right():
    """`blur_keeps_binary`: radius 0.5 (the recipe's) provably changes no bit of a binary image,
    checked here on random binary images of the recipe's shapes, borders included; a radius it
    refuses does change some bit (so the blur is then computed)."""
    assert glyphs.blur_keeps_binary(0.5) and not glyphs.blur_keeps_binary(1.2)
    assert glyphs.blur_is_identity(0.0, 32, 32) and not glyphs.blur_is_identity(0.5, 6, 32)
    rng = np.random.default_rng(0)
    for width in (32, 64, 96, 448):
        for density in (0.02, 0.3, 0.5, 0.7, 0.98):
            img = np.where(rng.random((32, width)) < density, 0, 255).astype(np.uint8)
            out = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.5)))
            assert np.array_equal(out < 128, img < 128)
    lone = np.full((32, 32), 255, dtype=np.uint8)
    lone[16, 16] = 0
    assert np.asarray(Image.fromarray(lone).filter(ImageFilter.GaussianBlur(1.2)))[16, 16] >= 128


def test_skipping_a_certified_blur_changes_nothing(monkeypatch):
    """The direct gather (blur certified) and the full pipeline (blur computed) give the same bits."""
    toks = [t for t in TOKENS if is_easy(t)][::3]
    direct = render_bits(toks)
    monkeypatch.setattr(glyphs, "blur_is_identity", lambda radius, h, w: radius <= 0)
    assert np.array_equal(render_bits(toks), direct)


_HAS_RAQM = font.features.check("raqm")


@pytest.mark.slow
@pytest.mark.skipif(not _HAS_RAQM, reason="this Pillow has no libraqm (the one-line error is tested without it)")
def test_raqm_layout_is_the_authors_default_pillow_call(monkeypatch):
    """layout="raqm" gives the bits of the literal recipe drawn with the author's own font call,
    `ImageFont.truetype(unifont, 32)` with no layout named (RAQM wherever libraqm is present),
    and differs from BASIC on lone combining marks (dotted circle) and some controls."""
    import dataclasses
    import io

    import recipe_reference
    from PIL import ImageFont

    authors = ImageFont.truetype(io.BytesIO(font.font_bytes()), 32)
    assert authors.layout_engine == ImageFont.Layout.RAQM
    monkeypatch.setattr(recipe_reference, "load_font", lambda size: authors)
    raqm = dataclasses.replace(RECIPE_32, layout="raqm")
    _assert_same(TOKENS, raqm)
    differ = (render_bits(TOKENS, raqm) != render_bits(TOKENS, RECIPE_32)).any(axis=1)
    assert differ[TOKENS.index("\u0301")] and not differ[TOKENS.index("A")]


def test_raqm_without_libraqm_fails_rendering_in_one_line(monkeypatch):
    import dataclasses

    monkeypatch.setattr(font.features, "check", lambda name: False if name == "raqm" else True)
    with pytest.raises(font.FontError, match="layout='raqm' needs Pillow with libraqm") as exc:
        render_bits(["a"], dataclasses.replace(RECIPE_32, layout="raqm"))
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="is not a glyph layout"):
        RecipeParams(layout="RAQM ")


def test_layout_is_in_the_params_and_so_in_every_cache_key(tmp_path, monkeypatch):
    """The layout rides in RecipeParams.as_dict(): the matrix cache key, the saved matrix's
    metadata and the embedding's provenance (meta["recipe"]) all carry it."""
    import dataclasses

    from bvvlab.glyph.embeddings import cache_key

    raqm = dataclasses.replace(RECIPE_32, layout="raqm")
    assert RECIPE_32.as_dict()["layout"] == "basic" and raqm.as_dict()["layout"] == "raqm"
    toks = ["a", "b", "\u0301"]
    assert cache_key(toks, RECIPE_32, 8) != cache_key(toks, raqm, 8)
    if _HAS_RAQM:  # the glyph atlas on disk is per layout too
        monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path))
        monkeypatch.setattr(glyphs, "_ATLASES", {})
        render_bits(toks)
        render_bits(toks, raqm)
        assert len(list((tmp_path / "glyph_atlas").glob("*.npz"))) == 2


@pytest.mark.skipif(not _HAS_RAQM, reason="this Pillow has no libraqm")
def test_raqm_matrix_is_cached_apart_and_records_its_layout(tmp_path, monkeypatch):
    """A RAQM matrix of the same tokens is a different cache file, and says so in its metadata."""
    import dataclasses
    import json

    from bvvlab.glyph import embeddings as E

    monkeypatch.setenv("BVVLAB_CACHE", str(tmp_path))
    toks = ["a", "b", "\u0301", "\x00", "ab", "xyz"]
    raqm = dataclasses.replace(RECIPE_32, layout="raqm")
    basic_m, raqm_m = E.glyph_matrix(toks, 4, progress=False), E.glyph_matrix(toks, 4, raqm, progress=False)
    assert not np.array_equal(basic_m.numpy(), raqm_m.numpy())
    paths = {E.cache_path(toks, RECIPE_32, 4), E.cache_path(toks, raqm, 4)}
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    layouts = {json.loads(E.load_matrix_meta(p)["params"])["layout"] for p in paths}
    assert layouts == {"basic", "raqm"}
