"""The vendored font is the pinned one, covers the scripts the recipe needs, and fails loudly."""

import gzip
import hashlib
import io

import pytest
from fontTools.ttLib import TTFont

from bvvlab.glyph import font


def test_font_hash_matches_pin():
    data = gzip.decompress(font.font_path().read_bytes())
    assert hashlib.sha256(data).hexdigest() == font.FONT_SHA256
    assert font.font_sha256() == font.FONT_SHA256


def test_font_covers_ascii_cyrillic_cjk():
    cmap = TTFont(io.BytesIO(font.font_bytes())).getBestCmap()
    ranges = {"ASCII": range(0x20, 0x7F), "Cyrillic": range(0x0400, 0x0500), "CJK": range(0x4E00, 0xA000)}
    for name, rng in ranges.items():
        missing = [hex(cp) for cp in rng if cp not in cmap]
        assert not missing, f"{name} glyphs missing: {missing[:10]}"


def test_render_is_binary_and_sized():
    """Unifont outlines are pixel-aligned: at 32 px the ink is pure black/white, 16 or 32 wide."""
    f = font.load_font(32)
    assert f.getbbox("A")[2] - f.getbbox("A")[0] == 16
    assert f.getbbox("中")[2] - f.getbbox("中")[0] == 32
    mask = f.getmask("Aж中")
    assert set(bytes(mask)) <= {0, 255}


def test_missing_font_is_one_clear_line(broken_font):
    broken_font.unlink()
    with pytest.raises(font.FontError, match=r"missing: restore it with `git checkout") as exc:
        font.load_font(32)
    assert "\n" not in str(exc.value)


def test_altered_font_is_detected(broken_font):
    data = bytearray(gzip.decompress(broken_font.read_bytes()))
    data[5000] ^= 0xFF
    broken_font.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(font.FontError, match=r"has SHA-256 .* expected .*`git checkout") as exc:
        font.load_font(32)
    assert "\n" not in str(exc.value)


def test_corrupt_gzip_is_detected(broken_font):
    broken_font.write_bytes(b"not a gzip file")
    with pytest.raises(font.FontError, match="not a valid gzip"):
        font.font_bytes()


def test_layout_is_basic_by_default_and_raqm_on_request():
    assert font.load_font(32).layout_engine == font.ImageFont.Layout.BASIC
    if not font.features.check("raqm"):
        pytest.skip("this Pillow has no libraqm (the error is tested below)")
    assert font.load_font(32, "raqm").layout_engine == font.ImageFont.Layout.RAQM


def test_raqm_without_libraqm_is_one_clear_line(monkeypatch):
    """Pillow silently falls back to BASIC when RAQM is asked for and libraqm is missing: say so instead."""
    monkeypatch.setattr(font.features, "check", lambda name: False if name == "raqm" else True)
    with pytest.raises(font.FontError, match=r"layout='raqm' needs Pillow with libraqm.*layout='basic'") as exc:
        font.load_font(32, "raqm")
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="layout='fancy' is not a glyph layout"):
        font.load_font(32, "fancy")
