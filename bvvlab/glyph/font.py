"""The vendored, pinned GNU Unifont (recipe section 3, step 1).

The recipe renders token glyphs with Pillow's `ImageFont.truetype(unifont, 32)`. We vendor
Debian's `fonts-unifont` 1:15.0.01 `unifont.otf` (gzipped, `data/fonts/`, see its README) so
that no apt, download or system font is needed and every machine builds the identical
embedding. The author used the 14.0.01 TTF; 15.0.01 differs only in glyphs added or revised
upstream, which changes the matrix for those tokens (documented in data/fonts/README.md).

Layout engine: Pillow's BASIC layout by default. RAQM (Pillow's own default where libraqm is
present, hence what the author's code used on such a machine: docs/recipe.md 3.1) shapes some
scripts differently, draws a dotted circle under a lone combining mark and fails outright on a
few characters such as NUL, so BASIC keeps the rendering identical on every machine (and
matches the author's code run under BASIC bit for bit). `layout="raqm"` is offered for
reproducing a matrix built with RAQM; it needs a Pillow with libraqm (`features.check("raqm")`).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from pathlib import Path

from PIL import ImageFont, features

from bvvlab.core.errors import BVVError
from bvvlab.core.runinfo import data_dir

FONT_VERSION = "1:15.0.01-2 (Debian fonts-unifont)"
FONT_FILE = "fonts/unifont-15.0.01.otf.gz"
# SHA-256 of the decompressed unifont.otf from fonts-unifont_1:15.0.01-2_all.deb
FONT_SHA256 = "db1960227adcb14640063e7384fdcd2867aaf819d9ca4866bca289d4db9a9f67"
# Pillow layout engines a glyph can be drawn with (module docstring); "basic" is the default
LAYOUTS = ("basic", "raqm")


class FontError(BVVError, RuntimeError):
    """The vendored font is missing or altered; the message names the file and the fix."""


def font_path() -> Path:
    return data_dir() / FONT_FILE


@functools.lru_cache(maxsize=2)
def _font_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FontError(f"font file {path} is missing: restore it with `git checkout -- data/{FONT_FILE}` "
                        "(or re-extract it as data/fonts/README.md shows)")
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise FontError(f"font file {path} is not a valid gzip file ({exc}): restore it with "
                        f"`git checkout -- data/{FONT_FILE}`") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != FONT_SHA256:
        raise FontError(f"font file {path} has SHA-256 {digest[:12]}..., expected {FONT_SHA256[:12]}... "
                        f"(GNU Unifont {FONT_VERSION}): restore it with `git checkout -- data/{FONT_FILE}`")
    return data


def font_bytes() -> bytes:
    """The verified OTF bytes (raises FontError if missing or altered)."""
    return _font_bytes(font_path())


def font_sha256() -> str:
    """Hash of the font actually in use: part of every embedding cache key and meta.json."""
    font_bytes()
    return FONT_SHA256


def check_layout(layout: str) -> None:
    """ValueError for a name that is not a layout; FontError (one line) for "raqm" on a Pillow
    built without libraqm, where Pillow would otherwise fall back to BASIC without a word."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not a glyph layout: use 'basic' (the default) or 'raqm'")
    if layout == "raqm" and not features.check("raqm"):
        raise FontError("layout='raqm' needs Pillow with libraqm, and this Pillow has none "
                        "(features.check('raqm') is False): install libraqm (e.g. `apt-get install libraqm0`, "
                        "then reinstall Pillow) or use layout='basic'")


def layout_version(layout: str) -> str | None:
    """The shaping library's version behind a layout (None for BASIC): part of cache keys."""
    return features.version("raqm") if layout == "raqm" else None


@functools.lru_cache(maxsize=8)
def _load(path: Path, size: int, layout: str) -> ImageFont.FreeTypeFont:
    engine = ImageFont.Layout.RAQM if layout == "raqm" else ImageFont.Layout.BASIC
    return ImageFont.truetype(io.BytesIO(_font_bytes(path)), size, layout_engine=engine)


def load_font(size: int = 32, layout: str = "basic") -> ImageFont.FreeTypeFont:
    """Pillow font at `size` px (32 for the 1024-dim recipe, 64 for 4096-dim), drawn with the
    `layout` engine ("basic" by default, or "raqm"; see the module docstring)."""
    check_layout(layout)
    return _load(font_path(), size, layout)
