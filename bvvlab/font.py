"""The vendored, pinned GNU Unifont (recipe section 3, step 1).

The recipe renders token glyphs with Pillow's `ImageFont.truetype(unifont, 32)`. We vendor
Debian's `fonts-unifont` 1:15.0.01 `unifont.otf` (gzipped, `data/fonts/`, see its README) so
that no apt, download or system font is needed and every machine builds the identical
embedding. The author used the 14.0.01 TTF; 15.0.01 differs only in glyphs added or revised
upstream, which changes the matrix for those tokens (documented in data/fonts/README.md).

Layout engine: Pillow's BASIC layout, always. RAQM (the default where libraqm is present)
shapes some scripts differently and fails outright on a few characters such as NUL
(stack-notes section 4), so pinning BASIC keeps the rendering identical on every machine.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from pathlib import Path

from PIL import ImageFont

from bvvlab.runinfo import data_dir

FONT_VERSION = "1:15.0.01-2 (Debian fonts-unifont)"
FONT_FILE = "fonts/unifont-15.0.01.otf.gz"
# SHA-256 of the decompressed unifont.otf from fonts-unifont_1:15.0.01-2_all.deb
FONT_SHA256 = "db1960227adcb14640063e7384fdcd2867aaf819d9ca4866bca289d4db9a9f67"


class FontError(RuntimeError):
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


@functools.lru_cache(maxsize=4)
def _load(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(io.BytesIO(_font_bytes(path)), size, layout_engine=ImageFont.Layout.BASIC)


def load_font(size: int = 32) -> ImageFont.FreeTypeFont:
    """Pillow font at `size` px (32 for the 1024-dim recipe, 64 for 4096-dim), BASIC layout."""
    return _load(font_path(), size)
