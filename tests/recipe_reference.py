"""The embedding recipe of docs/recipe.md section 3, written out literally, step by step.

This is the *reference* that `bvvlab.glyph.bitmaps` must match bit for bit. It is deliberately naive:
one Pillow canvas per token, the global `random` / `numpy.random` generators re-seeded on
every call exactly as the published notebook does, Pillow's own rotate / paste / GaussianBlur /
resize, and a Python `sorted` over (r, theta, x, y) tuples for the polar snake. Nothing here is
optimised or shared with the fast implementation except `RecipeParams` (the numbers) and the
font loader (the pinned font file itself). Used by tests/test_glyphs.py and bench/.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bvvlab.glyph.bitmaps import RecipeParams
from bvvlab.glyph.font import load_font


def is_easy(token: str) -> bool:
    """Recipe 3.3: every code point in 0x0000-0x024F or 0x0370-0x058F (Latin, Greek, Cyrillic, Armenian)."""
    return all(0x0000 <= ord(c) <= 0x024F or 0x0370 <= ord(c) <= 0x058F for c in token)


def render_canvas(token: str, params: RecipeParams) -> Image.Image:
    """Recipe 3.2: white "L" canvas, size*len wide; char i centred in cell i by its own bbox."""
    s = params.size
    font = load_font(s)
    img = Image.new("L", (s * len(token), s), 255)
    draw = ImageDraw.Draw(img)
    for i, ch in enumerate(token):
        try:
            left, top, right, bottom = font.getbbox(ch)
            w, h = right - left, bottom - top
            x = s * i + (s - w) // 2
            y = (s - h) // 2 - top
            draw.text((x, y), ch, font=font, fill=0)
        except Exception:  # noqa: BLE001 - recipe: a character that fails to render is left blank
            pass
    return img


def augment(img: Image.Image, token: str, params: RecipeParams) -> Image.Image:
    """Recipe 3.3: re-seed both generators with 42, rotate, shift, noise, blur, threshold to mode "1"."""
    random.seed(params.seed)
    np.random.seed(params.seed)
    if is_easy(token):
        max_angle, max_shift, noise, blur = params.max_angle, params.max_shift, params.noise, params.blur
    else:
        max_angle, max_shift, noise, blur = 0.0, 0, params.complex_noise, 0.0
    angle = random.uniform(-max_angle, max_angle)
    dx = random.randint(-max_shift, max_shift)
    dy = random.randint(-max_shift, max_shift)
    img = img.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=255)
    shifted = Image.new("L", img.size, 255)
    shifted.paste(img, (dx, dy))
    arr = np.array(shifted)
    mask = np.random.rand(arr.shape[0], arr.shape[1]) < noise
    arr[mask] = 0
    img = Image.fromarray(arr)  # uint8 -> mode "L"
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    thresholded = np.array(img) >= 128  # True = white; pixel < 128 -> black
    return Image.fromarray(thresholded)  # bool array -> mode "1"


def resize(img: Image.Image, params: RecipeParams) -> Image.Image:
    """Recipe 3.4: wider than a cell -> resized to size x size (mode "1" => Pillow uses NEAREST)."""
    s = params.size
    if img.width > s:
        img = img.resize((s, s))
    return img


def polar_snake(img: Image.Image) -> np.ndarray:
    """Recipe 3.5: pixels sorted by (r, theta, x, y) around (W/2, H/2); 1 for ink (black)."""
    w, h = img.size
    cx, cy = w / 2, h / 2
    arr = np.array(img)  # mode "1" -> bool, True = white
    coords = sorted((math.hypot(x - cx, y - cy), math.atan2(y - cy, x - cx), x, y)
                    for x in range(w) for y in range(h))
    return np.array([0 if arr[y, x] else 1 for _, _, x, y in coords], dtype=bool)


def render_bits_reference(tokens: list[str], params: RecipeParams = RecipeParams()) -> np.ndarray:
    """Recipe 3.2-3.5 for each token: (N, size*size) bool bit vectors in polar-snake order."""
    rows = []
    for token in tokens:
        img = render_canvas(token, params)
        img = augment(img, token, params)
        img = resize(img, params)
        assert img.mode == "1" and img.size == (params.size, params.size)
        rows.append(polar_snake(img))
    return np.stack(rows) if rows else np.zeros((0, params.size * params.size), dtype=bool)


def embed_reference(tokens: list[str], params: RecipeParams = RecipeParams(), n_components: int | None = None):
    """Recipe 3.6-3.7: float32 bits -> sklearn PCA(n_components).fit_transform -> L2 rows."""
    from sklearn.decomposition import PCA

    bits = render_bits_reference(tokens, params).astype(np.float32)
    n = n_components or params.size * params.size
    z = PCA(n_components=n).fit_transform(bits)
    return z / np.linalg.norm(z, axis=1, keepdims=True)
