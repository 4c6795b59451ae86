"""Token string -> glyph bit vector, bit-exact with the published recipe (docs/recipe.md section 3).

The recipe (steps 3.2-3.5) renders each token on its own Pillow canvas, re-seeds `random` and
`numpy.random` with 42, rotates, shifts, adds noise, blurs, thresholds, resizes and flattens in
"polar snake" order. Done literally that costs ~1 ms per token. This module gives the *identical*
bits (tests/test_glyphs.py compares it with tests/recipe_reference.py, the literal recipe) by
using what the recipe's structure makes constant:

* Re-seeding on every call means every token gets the same draws: the angle, dx and dy are two
  constants (one set for "easy" tokens, zero for "complex" ones) and the noise mask depends only
  on the canvas width. They are computed once, with private generators seeded the same way.
* Each distinct character is rendered once into an atlas of ink masks, including ink that
  overflows the character's cell (combining marks are drawn left of their origin). The recipe
  calls `font.getbbox(ch)` and then `ImageDraw.text`, which for one line calls
  `font.getmask2` and pastes the mask at the origin plus its offset; both ask FreeType's
  `getsize` for the same box, so one `getmask2` call gives the box and the ink (~35% of the
  per-character cost saved; checked once for all 65,536 BMP characters at sizes 32 and 64,
  and in tests/test_glyphs.py on a stride of them). Unifont's outlines are pixel-aligned, so
  ink is exactly 0/255 and drawing several characters on one canvas is a logical OR of their
  masks (checked at render).
* Nearest-neighbour rotation + paste and the mode "1" resize are fixed pixel gathers per canvas
  width. They are derived exactly by pushing index images through the very same Pillow calls.
* The blur at the recipe's radius 0.5 provably changes no bit (`blur_keeps_binary`: the blur is
  monotone, so lone-pixel probes through Pillow's own GaussianBlur bound every pixel of every
  binary image; a lone black pixel on white blurs to 101, a lone white one on black to 154;
  also seen: no token of the 65,536 or 131,072 recipes changes with blur=0). Then everything
  after the drawing is one gather of size * size canvas pixels per token and an OR with the
  noise (`point_gather`), whatever the token's width. Radii the probes do not certify are
  computed exactly: Pillow's GaussianBlur runs all horizontal box passes, then all vertical
  ones, on uint8 images; with the radius given per axis it is run on mosaics of many tokens at
  once (stacked vertically for the horizontal pass, side by side for the vertical pass), which
  cannot mix tokens because each pass only sees one row (or column) at a time.
* The polar snake is one permutation per size, computed by the recipe's own sort.
* The atlas is also saved under `cache_dir()/glyph_atlas/` (keyed by font hash, size, layout, Pillow
  and FreeType versions, with a content digest), so a new process does not re-rasterise: the
  per-character FreeType call (~20-25 us: Pillow loads each glyph four times and rasterises it
  twice per call) is the one cost no batching removes.

Tokens are grouped by (length, easy/complex) and processed in vectorised chunks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bvvlab.core.runinfo import cache_dir
from bvvlab.glyph.font import check_layout, font_sha256, layout_version, load_font

log = logging.getLogger(__name__)

# bump when anything here changes the bits; part of the embedding cache key
GLYPHS_VERSION = "1"


@dataclass(frozen=True)
class RecipeParams:
    """The numbers of recipe section 3 (defaults: the 65,536-token bvv241-2-3 embedding)."""

    size: int = 32  # cell side in px = font size = output side (3.1: 32 -> 1024 dims, 64 -> 4096)
    max_angle: float = 4.0  # easy tokens: rotation ~ uniform(-max_angle, max_angle) degrees (3.3)
    max_shift: int = 2  # easy tokens: dx, dy ~ randint(-max_shift, max_shift) px (3.3)
    noise: float = 0.01  # easy tokens: probability that a pixel is set black (3.3)
    complex_noise: float = 0.001  # complex tokens: noise probability; no rotation, shift or blur (3.3)
    blur: float = 0.5  # easy tokens: GaussianBlur radius (3.3)
    seed: int = 42  # both generators are re-seeded with this before every token (3.3)
    # Pillow layout engine the characters are drawn with (3.1): "basic" (the same on every
    # machine) or "raqm" (Pillow's default where libraqm is present; bvvlab.glyph.font docstring)
    layout: str = "basic"

    def __post_init__(self) -> None:
        if self.layout not in ("basic", "raqm"):
            check_layout(self.layout)  # raises the one-line ValueError

    @property
    def dim(self) -> int:
        """Bits per token (and the full PCA dimension): size * size."""
        return self.size * self.size

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPE_32 = RecipeParams()  # bvv241-2-3, 65,536 tokens, 1024 dims
RECIPE_MAX = RecipeParams(max_angle=7.0, max_shift=3, noise=0.03)  # bvv241-max, 131,072 tokens
RECIPE_64 = RecipeParams(size=64)  # 64x64 cells, 4096 dims (bvv241-abs style)


def is_easy(token: str) -> bool:
    """Recipe 3.3: every code point in 0x0000-0x024F or 0x0370-0x058F; otherwise "complex"."""
    return all(c <= "\u024f" or "\u0370" <= c <= "\u058f" for c in token)


# ---------------------------------------------------------------------------------------------
# constants implied by the re-seeding

def draws(params: RecipeParams, easy: bool) -> tuple[float, int, int, float, float]:
    """(angle, dx, dy, noise probability, blur radius) every token of this kind gets (3.3).

    Python's generator is re-seeded with `seed` and drawn angle, dx, dy in that order, as the
    recipe does; a private `random.Random` gives the same numbers without touching global state.
    """
    if easy:
        max_angle, max_shift, noise, blur = params.max_angle, params.max_shift, params.noise, params.blur
    else:
        max_angle, max_shift, noise, blur = 0.0, 0, params.complex_noise, 0.0
    rng = random.Random(params.seed)
    angle = rng.uniform(-max_angle, max_angle)
    dx = rng.randint(-max_shift, max_shift)
    dy = rng.randint(-max_shift, max_shift)
    return angle, dx, dy, noise, blur


@functools.lru_cache(maxsize=64)
def noise_mask(height: int, width: int, p: float, seed: int) -> np.ndarray:
    """`numpy.random.seed(seed); numpy.random.rand(H, W) < p` without touching the global generator."""
    mask = np.random.RandomState(seed).rand(height, width) < p
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=64)
def geometry_gather(height: int, width: int, angle: float, dx: int, dy: int) -> np.ndarray | None:
    """Flat source index of every pixel after rotate(angle, NEAREST, no expand) + paste at (dx, dy).

    -1 marks pixels that come from the fill (white). None when the transform is the identity.
    Derived exactly: the pixel index (+1, so 0 means fill) is split into bytes, and each byte
    plane goes through the same Pillow calls as the recipe's canvas.
    """
    n = height * width
    index = np.arange(1, n + 1, dtype=np.int64).reshape(height, width)
    out = np.zeros((height, width), dtype=np.int64)
    for k in range(((n + 1).bit_length() + 7) // 8):
        plane = Image.fromarray(((index >> (8 * k)) & 0xFF).astype(np.uint8))
        rotated = plane.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=0)
        shifted = Image.new("L", rotated.size, 0)
        shifted.paste(rotated, (dx, dy))
        out |= np.asarray(shifted).astype(np.int64) << (8 * k)
    gather = out.reshape(-1) - 1
    if np.array_equal(gather, np.arange(n)):
        return None
    gather.flags.writeable = False
    return gather


@functools.lru_cache(maxsize=64)
def resize_gather(size: int, width: int) -> np.ndarray:
    """Flat source index of each pixel of `img.resize((size, size))` for a mode "1" size x width image.

    Pillow resizes mode "1" with NEAREST, a pure gather; the index is pushed through the same
    call one bit plane at a time.
    """
    n = size * width
    index = np.arange(n, dtype=np.int64).reshape(size, width)
    out = np.zeros((size, size), dtype=np.int64)
    for k in range(max(1, (n - 1).bit_length())):
        plane = Image.fromarray(((index >> k) & 1).astype(bool))  # mode "1"
        out |= np.asarray(plane.resize((size, size))).astype(np.int64) << k
    gather = out.reshape(-1)
    gather.flags.writeable = False
    return gather


@functools.lru_cache(maxsize=8)
def snake_order(size: int) -> np.ndarray:
    """Recipe 3.5: flat pixel indices (y * size + x) sorted by (r, theta, x, y) around the centre."""
    c = size / 2
    coords = sorted((math.hypot(x - c, y - c), math.atan2(y - c, x - c), x, y)
                    for x in range(size) for y in range(size))
    order = np.array([y * size + x for _, _, x, y in coords], dtype=np.int64)
    order.flags.writeable = False
    return order


def gaussian_blur(images: np.ndarray, radius: float, cols: np.ndarray | None = None) -> np.ndarray:
    """Pillow GaussianBlur(radius) of each (H, W) uint8 image in `images` (N, H, W), batched exactly.

    Pillow blurs all rows (horizontal box passes) and then all columns, rounding to uint8 between
    passes. Stacking the images vertically makes one tall image whose rows are exactly the
    images' rows, so a horizontal-only blur of it equals each image's horizontal passes; side by
    side likewise for the vertical-only blur. Columns are independent in the vertical pass, so
    when only some columns are wanted (`cols`: what the recipe's resize keeps) only those are
    blurred vertically, and only those are returned (N, H, len(cols)).
    """
    n, h, w = images.shape
    tall = Image.fromarray(np.ascontiguousarray(images).reshape(n * h, w))
    rows = np.asarray(tall.filter(ImageFilter.GaussianBlur((radius, 0)))).reshape(n, h, w)
    if cols is not None:
        rows = rows[:, :, cols]
        w = len(cols)
    wide = Image.fromarray(np.ascontiguousarray(rows.transpose(1, 0, 2)).reshape(h, n * w))
    out = np.asarray(wide.filter(ImageFilter.GaussianBlur((0, radius))))
    return out.reshape(h, n, w).transpose(1, 0, 2)


def blur_reach(radius: float) -> int:
    """An upper bound on how far (px, per axis) Pillow's GaussianBlur(radius) looks.

    Pillow blurs with 3 box passes per axis; a pass of box radius r reads x - floor(r) - 1 ..
    x + floor(r) + 1, and the box radius it derives from `radius` is at most `radius`.
    """
    return 3 * (int(radius) + 1)


@functools.lru_cache(maxsize=16)
def blur_keeps_binary(radius: float) -> bool:
    """True when GaussianBlur(radius) then the recipe's `< 128` threshold returns every binary
    (0/255) image unchanged, for images at least 2 * blur_reach(radius) + 1 px on each side.

    Each box pass is a weighted sum with non-negative weights, edge pixels repeated, rounded by a
    non-decreasing rule, so the blur is monotone: a darker input never gives a lighter output.
    A black pixel p of a binary image is therefore at most as light after the blur as p in the
    image that is white everywhere else, and a white pixel at least as light as in the image
    black everywhere else. Those lone-pixel responses depend only on p's distance to each
    border, up to the blur's reach, so a probe of side 2 * reach + 1 with the lone pixel at
    every position covers every case. The probes go through Pillow's GaussianBlur batched
    exactly (`gaussian_blur`, tested against Pillow one image at a time). When all probes stay on their side of 128 (radius 0.5:
    101 and 154), the blur cannot change a bit and is skipped; otherwise it is computed.
    """
    n = 2 * blur_reach(radius) + 1
    k = np.arange(n * n)
    ys, xs = np.divmod(k, n)
    probes = np.empty((2, n * n, n, n), dtype=np.uint8)
    probes[0], probes[1] = 255, 0
    probes[0, k, ys, xs], probes[1, k, ys, xs] = 0, 255  # lone black on white, lone white on black
    out = gaussian_blur(probes.reshape(-1, n, n), radius).reshape(2, n * n, n, n)[:, k, ys, xs]
    return bool((out[0] < 128).all() and (out[1] >= 128).all())


def blur_is_identity(radius: float, height: int, width: int) -> bool:
    """No blur, or one that provably changes no bit of a binary height x width image."""
    return radius <= 0 or (min(height, width) >= 2 * blur_reach(radius) + 1 and blur_keeps_binary(radius))


# ---------------------------------------------------------------------------------------------
# the glyph atlas: every character rendered once, exactly as recipe 3.2 draws it

class GlyphAtlas:
    """Ink masks of single characters drawn as recipe 3.2 draws them inside a size x size cell.

    `cells[k]` is the in-cell ink of character k (row 0 is the blank glyph used for characters
    that fail to render); `overflow[k]` holds ink that falls outside the cell as
    (mask, top, left) relative to the cell's top-left corner.
    """

    _BATCH = 1024  # characters drawn per Pillow canvas

    def __init__(self, size: int, layout: str = "basic"):
        self.size = size
        self.layout = layout
        self.font = load_font(size, layout)
        self.index: dict[str, int] = {}
        self.cells = np.zeros((1, size, size), dtype=bool)
        self.overflow: dict[int, tuple[np.ndarray, int, int]] = {}
        self._disk_tried = False

    def lookup(self, chars: Iterable[str], progress: bool = False) -> None:
        """Render the characters not yet in the atlas (after trying the one saved on disk)."""
        missing = sorted(set(chars) - self.index.keys())
        if missing and not self._disk_tried:
            self._disk_tried = True
            self._load()
            missing = [ch for ch in missing if ch not in self.index]
        if not missing:
            return
        self._render(missing, progress)
        try:
            self._save()
        except OSError as exc:  # a read-only cache costs speed, never correctness
            log.warning("could not save the glyph atlas (%s): continuing without it", exc)

    # -- on disk: every character is rendered once per machine, not once per process ----------

    def _path(self) -> Path:
        import PIL
        from PIL import features

        material = {"font": font_sha256(), "size": self.size, "glyphs": GLYPHS_VERSION,
                    "pillow": PIL.__version__, "freetype": features.version("freetype2")}
        if self.layout != "basic":  # BASIC atlases keep the key they always had
            material.update(layout=self.layout, raqm=layout_version(self.layout))
        material = json.dumps(material, sort_keys=True)
        return cache_dir() / "glyph_atlas" / f"{hashlib.sha256(material.encode()).hexdigest()[:32]}.npz"

    def _payload(self) -> dict[str, np.ndarray]:
        slots = sorted(self.overflow)
        chars = json.dumps(sorted(self.index, key=self.index.get), ensure_ascii=True)
        return {
            "chars": np.frombuffer(chars.encode("ascii"), dtype=np.uint8),
            "cells": np.packbits(self.cells.reshape(len(self.cells), -1), axis=1),
            "over_meta": np.array([(k, *self.overflow[k][0].shape, *self.overflow[k][1:]) for k in slots],
                                  dtype=np.int64).reshape(-1, 5),
            "over_bits": np.packbits(np.concatenate([self.overflow[k][0].ravel() for k in slots] or [np.zeros(0, bool)])),
        }

    @staticmethod
    def _digest(payload: dict[str, np.ndarray]) -> np.ndarray:
        h = hashlib.sha256()
        for name in sorted(payload):
            h.update(name.encode())
            h.update(np.ascontiguousarray(payload[name]).tobytes())
        return np.frombuffer(h.digest(), dtype=np.uint8)

    def _save(self) -> None:
        from bvvlab.core.atomic import write_atomic

        payload = self._payload()
        buf = io.BytesIO()
        np.savez(buf, digest=self._digest(payload), **payload)
        write_atomic(self._path(), buf.getvalue())

    def _load(self) -> None:
        try:
            path = self._path()
            if not path.is_file():
                return
        except OSError:
            return
        try:
            with np.load(path) as z:
                payload = {k: z[k] for k in ("chars", "cells", "over_meta", "over_bits")}
                if not np.array_equal(z["digest"], self._digest(payload)):
                    raise ValueError("digest mismatch")
            chars = json.loads(payload["chars"].tobytes().decode("ascii"))
            s = self.size
            cells = np.unpackbits(payload["cells"], axis=1, count=s * s).reshape(-1, s, s).view(bool)
            if len(chars) != len(cells) - 1:
                raise ValueError("size mismatch")
        except Exception as exc:  # noqa: BLE001 - a bad cache file is rebuilt, never trusted
            log.warning("glyph atlas cache %s is damaged (%s): rendering the glyphs again", path, type(exc).__name__)
            return
        over_bits = np.unpackbits(payload["over_bits"]).view(bool)
        overflow, pos = {}, 0
        for k, h, w, top, left in payload["over_meta"].tolist():
            overflow[k] = (over_bits[pos:pos + h * w].reshape(h, w).copy(), top, left)
            pos += h * w
        self.cells, self.overflow = cells, overflow
        self.index = {ch: i + 1 for i, ch in enumerate(chars)}

    def _render(self, missing: list[str], progress: bool) -> None:
        from tqdm.auto import tqdm

        start = len(self.cells)
        self.cells = np.concatenate([self.cells, np.zeros((len(missing), self.size, self.size), dtype=bool)])
        with tqdm(total=len(missing), desc="glyphs", unit="char", disable=not progress, leave=False) as bar:
            for b in range(0, len(missing), self._BATCH):
                batch = missing[b:b + self._BATCH]
                self._render_batch(batch, start + b)
                bar.update(len(batch))
        for k, ch in enumerate(missing):
            self.index[ch] = start + k

    def _ink(self, ch: str) -> tuple[object, int, int] | None:
        """(mask, x, y): the ink recipe 3.2 draws for `ch` and where, relative to the cell; None = blank.

        The recipe calls `font.getbbox(ch)` to centre the character, then `ImageDraw.text`, which
        (for a one-line string) calls `font.getmask2` with these arguments and pastes the mask
        at the drawing origin plus the returned offset. Both ask the C `getsize` for the same
        box (same text, layout and load flags; the mode only matters for "1" and "RGBA"), so the
        bbox is `(offset, offset + mask size)` and one FreeType call gives both: ~35% of the
        per-character cost saved. Checked once against the recipe's own two calls for all
        65,536 BMP characters (sizes 32 and 64); tests/test_glyphs.py repeats it on a stride.
        """
        try:
            mask, (left, top) = self.font.getmask2(ch, "L", None, None, None, 0, "la", 0, (0.0, 0.0),
                                                   stroke_filled=True)
        except Exception:  # noqa: BLE001 - recipe: a character that fails to render is left blank
            return None
        w, h = mask.size
        # drawn at ((s - w) // 2, (s - h) // 2 - top), pasted at that + (left, top)
        return mask, (self.size - w) // 2 + left, (self.size - h) // 2

    def _draw_literal(self, draw: ImageDraw.ImageDraw, ch: str, x: int, y: int) -> bool:
        """Recipe 3.2 verbatim (getbbox, then ImageDraw.text) with the cell at (x, y); False = blank."""
        s = self.size
        try:
            left, top, right, bottom = self.font.getbbox(ch)
            draw.text((x + (s - (right - left)) // 2, y + (s - (bottom - top)) // 2 - top), ch, font=self.font, fill=0)
        except Exception:  # noqa: BLE001 - recipe: a character that fails to render is left blank
            return False
        return True

    def _render_batch(self, batch: list[str], first: int) -> None:
        """Draw the characters whose ink stays inside their cell side by side on one canvas.

        A character's ink box is known before drawing (`_ink`), so the canvas needs no margins;
        the few whose ink leaves the cell (combining marks, glyphs wider than the cell) and line
        breaks are drawn each on a padded canvas of their own.
        """
        s, cols = self.size, 32
        rows = (len(batch) + cols - 1) // cols
        canvas = Image.new("L", (cols * s, rows * s), 255)
        draw = ImageDraw.Draw(canvas)
        alone = []
        for k, ch in enumerate(batch):
            if "\n" in ch:  # ImageDraw.text splits lines: drawn by the recipe's own calls
                alone.append((k, None))
                continue
            ink = self._ink(ch)
            if ink is None:
                continue
            mask, dx, dy = ink
            w, h = mask.size
            if dx < 0 or dy < 0 or dx + w > s or dy + h > s:
                alone.append((k, ink))
                continue
            r, c = divmod(k, cols)
            draw.draw.draw_bitmap((c * s + dx, r * s + dy), mask, 0)  # what ImageDraw.text does with the mask
        _check_binary(canvas)
        dark = np.asarray(canvas) < 128
        self.cells[first:first + len(batch)] = dark.reshape(rows, s, cols, s).transpose(0, 2, 1, 3).reshape(-1, s, s)[:len(batch)]
        for k, ink in alone:
            self._render_alone(batch[k], first + k, ink)

    def _render_alone(self, ch: str, slot: int, ink: tuple[object, int, int] | None) -> None:
        """A glyph whose ink leaves its cell (or a line break): its own canvas, padded by its ink box."""
        s = self.size
        if ink is None:  # a line break: the recipe's own calls, with a generous margin
            pad = 4 * s
        else:
            mask, dx, dy = ink
            w, h = mask.size
            pad = max(s, abs(dx), abs(dy), abs(dx + w), abs(dy + h)) + s
        canvas = Image.new("L", (2 * pad + s, 2 * pad + s), 255)
        draw = ImageDraw.Draw(canvas)
        if ink is None:
            if not self._draw_literal(draw, ch, pad, pad):
                return
        else:
            draw.draw.draw_bitmap((pad + dx, pad + dy), mask, 0)
        _check_binary(canvas)
        self._store(slot, np.asarray(canvas) < 128, pad, pad)

    def _store(self, slot: int, window: np.ndarray, oy: int, ox: int) -> None:
        s = self.size
        self.cells[slot] = window[oy:oy + s, ox:ox + s]
        outside = window.copy()
        outside[oy:oy + s, ox:ox + s] = False
        self._store_overflow(slot, outside, oy, ox)

    def _store_overflow(self, slot: int, outside: np.ndarray, oy: int, ox: int) -> None:
        if outside.any():
            ys, xs = np.nonzero(outside)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            self.overflow[slot] = (outside[y0:y1, x0:x1].copy(), int(y0 - oy), int(x0 - ox))


def _check_binary(canvas: Image.Image) -> None:
    """Ink must be exactly 0/255 for compositing by OR to equal Pillow's blending (Unifont: it is)."""
    if any(canvas.histogram()[1:255]):
        raise RuntimeError("glyph masks are not binary: compositing by OR would not match the recipe")


_ATLASES: dict[tuple[int, str, str], GlyphAtlas] = {}


def atlas(size: int, layout: str = "basic") -> GlyphAtlas:
    """The process-wide atlas for this size, layout and the pinned font (rendered lazily)."""
    check_layout(layout)  # one line if RAQM is asked for and Pillow has no libraqm
    key = (size, font_sha256(), layout)
    if key not in _ATLASES:
        _ATLASES[key] = GlyphAtlas(size, layout)
    return _ATLASES[key]


def forget_atlases() -> None:
    """Drop every in-memory atlas: the next `atlas()` renders (or reads its cache) as a new process would."""
    _ATLASES.clear()


# ---------------------------------------------------------------------------------------------
# the pipeline

def compose(ids: np.ndarray, at: GlyphAtlas) -> np.ndarray:
    """Recipe 3.2 canvases (N, s, L*s), True = ink, for tokens given as atlas ids (N, L)."""
    n, length = ids.shape
    s = at.size
    ink = at.cells[ids].transpose(0, 2, 1, 3).reshape(n, s, length * s)
    if at.overflow:
        over = np.fromiter(at.overflow, dtype=np.int64)
        for r, i in zip(*np.nonzero(np.isin(ids, over))):
            mask, top, left = at.overflow[int(ids[r, i])]
            y0, x0 = top, s * i + left
            ys, xs = slice(max(y0, 0), min(y0 + mask.shape[0], s)), slice(max(x0, 0), min(x0 + mask.shape[1], length * s))
            if ys.start < ys.stop and xs.start < xs.stop:
                ink[r, ys, xs] |= mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return ink


def augment(ink: np.ndarray, params: RecipeParams, easy: bool, timings: dict | None = None,
            cols: np.ndarray | None = None) -> np.ndarray:
    """Recipe 3.3 on canvases (N, s, W) of one kind: rotate + shift, noise, blur, threshold.

    `cols`: only these columns are needed afterwards (the resize keeps s of the W columns);
    the result is then (N, s, len(cols)).
    """
    n, h, w = ink.shape
    angle, dx, dy, p, blur = draws(params, easy)
    t = time.perf_counter()
    gather = geometry_gather(h, w, angle, dx, dy)
    if gather is not None:
        flat = np.concatenate([ink.reshape(n, h * w), np.zeros((n, 1), dtype=bool)], axis=1)
        ink = flat[:, np.where(gather < 0, h * w, gather)].reshape(n, h, w)
    _tick(timings, "rotate+shift", t)
    t = time.perf_counter()
    ink = ink | noise_mask(h, w, p, params.seed)
    _tick(timings, "noise", t)
    if blur > 0:
        t = time.perf_counter()
        gray = np.where(ink, np.uint8(0), np.uint8(255))
        ink = gaussian_blur(gray, blur, cols) < 128
        _tick(timings, "blur", t)
    elif cols is not None:
        ink = ink[:, :, cols]
    return ink


def _tick(timings: dict | None, key: str, t0: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


@functools.lru_cache(maxsize=64)
def point_gather(size: int, width: int, params: RecipeParams, easy: bool, snake: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, inside, noise) for one output bit each, when the blur changes no bit.

    Then recipe 3.3-3.5 after the drawing is a chain of gathers and an OR: rotate + shift
    (geometry_gather; fill = white), noise (per canvas pixel), threshold (a no-op on binary
    ink), resize (resize_gather) and snake. Output bit j is the ink of canvas pixel
    `source[j]` if `inside[j]` (else white), OR `noise[j]`: only size * size canvas pixels
    are ever read, whatever the token's width.
    """
    angle, dx, dy, p, _ = draws(params, easy)
    order = snake_order(size) if snake else np.arange(size * size)
    final = (resize_gather(size, width) if width > size else np.arange(size * size))[order]
    geometry = geometry_gather(size, width, angle, dx, dy)
    source = final if geometry is None else geometry[final]
    inside = source >= 0
    noise = noise_mask(size, width, p, params.seed).reshape(-1)[final]
    out = (np.where(inside, source, 0), inside, noise)
    for a in out:
        a.flags.writeable = False
    return out


def _final_gather(size: int, width: int, order: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(columns kept by the resize or None, flat gather from the kept columns to `order`)."""
    if width <= size:
        return None, order
    src = resize_gather(size, width)
    cols = np.unique(src % width)
    kept = (src // width) * len(cols) + np.searchsorted(cols, src % width)
    return cols, kept[order]


def _render(tokens: list[str], params: RecipeParams, progress: bool, timings: dict | None,
            snake: bool) -> np.ndarray:
    """Recipe 3.2-3.4 for every token, then pixels taken in `order` (flat indices of the s x s image)."""
    s = params.size
    t = time.perf_counter()
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"token {i} is {tok!r}: every token must be a non-empty string")
    at = atlas(s, params.layout)
    at.lookup((ch for tok in tokens for ch in tok), progress=progress)
    groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for i, tok in enumerate(tokens):
        groups[(len(tok), is_easy(tok))].append(i)
    _tick(timings, "atlas+group", t)
    order = snake_order(s) if snake else np.arange(s * s)

    from tqdm.auto import tqdm

    out = np.zeros((len(tokens), len(order)), dtype=bool)
    with tqdm(total=len(tokens), desc="render", unit="tok", disable=not progress, leave=False) as bar:
        for (length, easy), members in sorted(groups.items()):
            width = s * length
            direct = blur_is_identity(draws(params, easy)[4], s, width)
            if direct:  # recipe 3.3-3.5 is one gather per output bit, then an OR
                t = time.perf_counter()
                source, inside, noise = point_gather(s, width, params, easy, snake)
                _tick(timings, "gathers", t)
            else:
                # recipe 3.4 (resize) and 3.5 (snake) are both gathers: fold them into one,
                # over only the columns the resize keeps
                cols, final = _final_gather(s, width, order)
            chunk = max(1, (1 << 24) // (s * width))  # bound memory: ~16M pixels per chunk
            for c in range(0, len(members), chunk):
                rows = np.asarray(members[c:c + chunk], dtype=np.int64)
                t = time.perf_counter()
                ids = np.array([[at.index[ch] for ch in tokens[r]] for r in rows], dtype=np.int64)
                ink = compose(ids, at)
                _tick(timings, "compose", t)
                if direct:
                    t = time.perf_counter()
                    bits = np.take(ink.reshape(len(rows), -1), source, axis=1)
                    out[rows] = (bits & inside) | noise
                    _tick(timings, "gather+noise", t)
                else:
                    ink = augment(ink, params, easy, timings, cols)
                    t = time.perf_counter()
                    out[rows] = np.take(ink.reshape(len(rows), -1), final, axis=1)
                    _tick(timings, "resize+snake", t)
                bar.update(len(rows))
    return out


def render_images(tokens: list[str], params: RecipeParams = RECIPE_32, progress: bool = False,
                  timings: dict | None = None) -> np.ndarray:
    """Recipe 3.2-3.4: (N, size, size) bool images (True = ink), the tokens as the model sees them."""
    return _render(tokens, params, progress, timings, False).reshape(len(tokens), params.size, params.size)


def render_bits(tokens: list[str], params: RecipeParams = RECIPE_32, progress: bool = False,
                timings: dict | None = None) -> np.ndarray:
    """Recipe 3.2-3.5: (N, size*size) bool bit vectors, 1 = ink, in polar-snake order.

    `timings`, if given, accumulates seconds per stage (for bench/bench_embeddings.py).
    """
    return _render(tokens, params, progress, timings, True)
