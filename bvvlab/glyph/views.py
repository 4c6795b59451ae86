"""Looking at the frozen glyph embedding (docs/recipe.md section 3): what notebooks/01 shows.

* `unsnake` turns the polar-snake bit vectors back into images, so the gallery shows exactly the
  bits the PCA sees (after the recipe's seeded augmentation, threshold and resize).
* `glyph_pca` is the recipe's PCA over the whole vocabulary (3.6), kept with its explained
  variance for the spectrum; `project` embeds *any* string as if it were a token (render,
  same PCA, first `dim` components, L2), so words that are not tokens can be compared too.
* `token_script` labels a token by the Unicode script of its letters, for the 2-D map.

Figures are plotly.graph_objects (no pandas).
"""

from __future__ import annotations

import hashlib
import html
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from bvvlab.core.atomic import ensure_dir, write_atomic
from bvvlab.core.outputs import write_figure
from bvvlab.core.runinfo import cache_dir
from bvvlab.glyph.bitmaps import RECIPE_32, RecipeParams, snake_order
from bvvlab.glyph.tokenizer import is_reserved_name

SCRIPT_COLORS = {
    "Latin": "#1f77b4", "Cyrillic": "#d62728", "Greek": "#9467bd", "CJK": "#2ca02c", "Kana": "#17becf",
    "Hangul": "#bcbd22", "Arabic": "#8c564b", "Hebrew": "#e377c2", "other script": "#ff7f0e",
    "mixed": "#7f7f7f", "digits/punct/symbols": "#aec7e8", "special": "#000000",
}
_SCRIPT_WORDS = {"LATIN": "Latin", "CYRILLIC": "Cyrillic", "GREEK": "Greek", "CJK": "CJK", "HIRAGANA": "Kana",
                 "KATAKANA": "Kana", "HANGUL": "Hangul", "ARABIC": "Arabic", "HEBREW": "Hebrew"}


def _char_script(ch: str) -> str | None:
    """Script of one letter, or None for marks (they inherit their base's script), digits,
    punctuation, symbols, spaces and controls."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    return _SCRIPT_WORDS.get(name.split(" ")[0], "other script") if name else "other script"


def token_script(token: str) -> str:
    """The script of a token's letters ("Latin", "Cyrillic", "CJK", ...), "mixed" when several,
    "digits/punct/symbols" when it has no letter, "special" for layout names and byte tokens."""
    if is_reserved_name(token):
        return "special"
    scripts = {s for s in map(_char_script, token) if s is not None}
    if not scripts:
        return "digits/punct/symbols"
    return scripts.pop() if len(scripts) == 1 else "mixed"


def recipe_for(vocab: str, size: int = 32, layout: str = "basic") -> RecipeParams | None:
    """Recipe numbers for a notebook's (vocab kind, glyph size, layout): None lets
    `prepare_vocabulary` pick the kind's own (32 px, BASIC; bvv241-max's stronger augmentation);
    64 gives RECIPE_64; layout="raqm" draws with Pillow's RAQM engine (bvvlab.glyph.font)."""
    import dataclasses

    from bvvlab.glyph.bitmaps import RECIPE_64, RECIPE_MAX

    if size not in (32, 64):
        raise ValueError(f"glyph size {size} is not a recipe size: use 32 (1024 dims) or 64 (4096 dims)")
    if size == 32 and layout == "basic":
        return None
    params = RECIPE_64 if size == 64 else RECIPE_MAX if vocab == "bvv241-max" else RECIPE_32
    return dataclasses.replace(params, layout=layout)  # an unknown layout fails here, in one line


def base_vocabulary(embedded) -> list[str]:
    """The whole vocabulary the PCA of `embedded` was fitted on: the base vocabulary of a
    compact one (whose rows are taken from the base matrix), else its own tokens."""
    from bvvlab.glyph import tokenizer as tk

    if embedded.meta.get("vocab_kind") == "compact":
        return tk.tokenizer_vocab(tk.build_tokenizer(embedded.meta.get("base", "bvv241-2-3")))
    return tk.tokenizer_vocab(embedded.tokenizer)


# --- labels --------------------------------------------------------------------------------

# characters that draw nothing (or nothing on their own) in a label: spaces, controls, format
# characters, marks, separators, unassigned, private use, surrogates
_INVISIBLE = ("Zs", "Zl", "Zp", "Cc", "Cf", "Cn", "Co", "Cs", "Mn", "Mc", "Me")


def visible(token: str) -> str:
    """A token as readable text: visible characters as themselves, every character that would
    print as nothing (space, control, combining mark, ...) as `[U+XXXX]`, so a blank glyph's
    token never shows as an empty cell (" " -> "[U+0020]", "e\u0301" -> "e[U+0301]")."""
    return "".join(f"[U+{ord(c):04X}]" if unicodedata.category(c) in _INVISIBLE else c for c in token)


_SHOWN_AS = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\u00a0": "\u237d"}  # ␣ ↵ ⇥ ⍽


def short_label(token: str, limit: int = 6) -> str:
    """A token in at most `limit` readable units for a narrow cell: a space as "␣", a newline as
    "↵", a tab as "⇥" (the usual typographic signs), another invisible character as its whole
    `[U+XXXX]` (never cut inside it: `visible(" ")[:6]` showed "[U+002"), a special token such as
    `<s>` or a byte token `<0xE2>` whole; "…" ends a cut label."""
    if len(token) > 2 and token[0] == "<" and token[-1] == ">":
        return token
    units = [_SHOWN_AS.get(c) or (f"[U+{ord(c):04X}]" if unicodedata.category(c) in _INVISIBLE else c)
             for c in token]
    return "".join(units[:limit]) + ("\u2026" if len(units) > limit else "")


def code_points(token: str, limit: int = 4) -> str:
    """"U+0065 U+0301": what tells apart tokens that look alike (`é` vs `e\u0301`, Latin `A`
    vs Cyrillic `А`); at most `limit` code points, then "…"."""
    cps = " ".join(f"U+{ord(c):04X}" for c in token[:limit])
    return cps + (" …" if len(token) > limit else "")


def plotly_label(text: str) -> str:
    """`text` escaped for plotly, which reads a subset of HTML in titles, tick labels, table
    cells and hover text (a token `<s>` became a strike-through tag and showed nothing)."""
    return html.escape(text, quote=False)


def token_title(token: str) -> str:
    """A subplot title for a token: its visible form over its code points, HTML-escaped."""
    return f"{plotly_label(visible(token))}<br><sup>{code_points(token)}</sup>"


# --- images --------------------------------------------------------------------------------

def unsnake(bits: np.ndarray, size: int) -> np.ndarray:
    """(N, size*size) polar-snake bit vectors -> (N, size, size) images (inverse of recipe 3.5)."""
    bits = np.asarray(bits)
    images = np.zeros((bits.shape[0], size * size), dtype=bits.dtype)
    images[:, snake_order(size)] = bits
    return images.reshape(-1, size, size)


def model_view_images(tokens: Sequence[str], params: RecipeParams = RECIPE_32) -> np.ndarray:
    """What the model's input is made of: the recipe's bits for `tokens`, un-snaked to images."""
    from bvvlab.glyph.embeddings import (
        glyph_bits,  # byte tokens drawn as the matrix draws them
    )

    return unsnake(glyph_bits(list(tokens), params), params.size)


def gallery_figure(tokens: Sequence[str], images: np.ndarray, cols: int = 8,
                   title: str = "token glyphs as the model sees them (after augmentation)") -> go.Figure:
    rows = -(-len(tokens) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[token_title(t) for t in tokens],
                        horizontal_spacing=0.01, vertical_spacing=0.08)
    for i, img in enumerate(images):
        fig.add_trace(go.Heatmap(z=img[::-1].astype(np.uint8), colorscale=[[0, "white"], [1, "black"]],
                                 showscale=False, hoverinfo="skip"), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    fig.update_layout(title=title, template="plotly_white", height=160 * rows + 80, margin={"t": 100})
    fig.update_annotations(font_size=12)
    return fig


# --- the recipe's PCA ----------------------------------------------------------------------

@dataclass
class GlyphPCA:
    """The PCA of recipe 3.6 over a whole vocabulary (see `bvvlab.glyph.embeddings.pca_components`)."""

    mean: np.ndarray  # (D,) mean bit vector
    components: np.ndarray  # (D, D) principal axes as columns, by decreasing variance
    explained_variance: np.ndarray  # (D,) variance along each axis

    @property
    def explained_ratio(self) -> np.ndarray:
        total = self.explained_variance.sum()
        return self.explained_variance / total if total > 0 else self.explained_variance


def glyph_pca(tokens: Sequence[str], params: RecipeParams = RECIPE_32, cache: bool = True) -> GlyphPCA:
    """The recipe's PCA of `tokens` (the whole vocabulary the matrix was built from), cached
    under `cache_dir()/glyph_pca/` by the same content key as the matrix."""
    from bvvlab.glyph.embeddings import cache_key, glyph_bits, pca_components

    tokens = list(tokens)
    path = cache_dir() / "glyph_pca" / f"{cache_key(tokens, params, params.dim)}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as f:
                return GlyphPCA(f["mean"], f["components"], f["explained_variance"])
        except (OSError, ValueError, KeyError):
            pass  # damaged: rebuilt below
    pca = GlyphPCA(*pca_components(glyph_bits(tokens, params)))  # the bits the matrix is fitted on
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, mean=pca.mean, components=pca.components, explained_variance=pca.explained_variance)
        tmp.replace(path)
    return pca


def project(strings: Sequence[str], pca: GlyphPCA, params: RecipeParams = RECIPE_32,
            dim: int | None = None) -> torch.Tensor:
    """Glyph vectors of arbitrary strings, as if each were a token of the vocabulary: recipe
    bits, the vocabulary's PCA, the first `dim` components, L2 rows (the same arithmetic as
    `bvvlab.glyph.embeddings.pca_embed`, so a token's vector equals its matrix row)."""
    from bvvlab.glyph.embeddings import (
        glyph_bits,  # byte tokens drawn as the matrix draws them
    )

    dim = pca.components.shape[1] if dim is None else dim
    v = torch.from_numpy(np.ascontiguousarray(pca.components[:, :dim]))
    x = torch.from_numpy(np.ascontiguousarray(glyph_bits(list(strings), params)).view(np.uint8)).to(torch.float32)
    scores = x @ v.to(torch.float32)
    scores -= (torch.from_numpy(pca.mean) @ v).to(torch.float32)
    return torch.nn.functional.normalize(scores, dim=1)


def spectrum_figure(pca: GlyphPCA, dim: int | None = None, title: str = "PCA spectrum of the glyph bits") -> go.Figure:
    ratio = pca.explained_ratio
    k = np.arange(1, len(ratio) + 1)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=k, y=ratio, mode="lines", name="explained variance ratio"))
    fig.add_trace(go.Scatter(x=k, y=np.cumsum(ratio), mode="lines", name="cumulative", line={"dash": "dot"}),
                  secondary_y=True)
    if dim is not None:
        fig.add_vline(x=dim, line={"color": "grey", "dash": "dash"}, annotation_text=f"dim={dim}")
    # a ratio: plain exponents (1e-4), not plotly's SI prefixes ("100µ")
    fig.update_yaxes(type="log", title_text="ratio", tickformat=".0e", exponentformat="e", secondary_y=False)
    fig.update_yaxes(range=[0, 1.02], title_text="cumulative", secondary_y=True)
    fig.update_xaxes(title_text="component")
    fig.update_layout(title=title, template="plotly_white", height=380)
    return fig


# --- neighbours ----------------------------------------------------------------------------

def nearest(queries: torch.Tensor, matrix: torch.Tensor, vocab: Sequence[str], k: int = 8) -> list[list[tuple[str, float]]]:
    """The `k` vocabulary tokens whose rows have the highest cosine with each query (rows are
    L2-normalised, so cosine = dot product); ties go to the lower id."""
    sims = queries.to(torch.float32) @ matrix.to(torch.float32).T
    out = []
    for row in sims:
        order = np.lexsort((np.arange(len(row)), -row.numpy()))[:k]  # by cosine desc, then id
        out.append([(vocab[i], float(row[i])) for i in order])
    return out


def neighbours_figure(words: Sequence[str], neighbours: list[list[tuple[str, float]]],
                      title: str = "nearest vocabulary tokens in glyph space") -> go.Figure:
    cells = [[plotly_label(visible(w)) for w in words]]
    cells += [[f"{plotly_label(visible(n[j][0]))} ({n[j][1]:.2f})" if j < len(n) else "" for n in neighbours]
              for j in range(max(map(len, neighbours), default=0))]
    header = ["word"] + [f"#{j + 1}" for j in range(len(cells) - 1)]
    fig = go.Figure(go.Table(header={"values": header}, cells={"values": cells}))
    fig.update_layout(title=title, height=60 + 30 * len(words) + 60)
    return fig


def similarity_figure(words: Sequence[str], vectors: torch.Tensor,
                      title: str = "cosine between glyph vectors of words") -> go.Figure:
    # float64 rounded values and preformatted text: float32 cosines printed as "0.9300000071525574"
    sims = np.round((vectors @ vectors.T).numpy().astype(np.float64), 4)
    labels = [plotly_label(visible(w)) for w in words]
    fig = go.Figure(go.Heatmap(z=sims, x=labels, y=labels, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
                               text=[[f"{v:.2f}" for v in row] for row in sims], texttemplate="%{text}",
                               hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, template="plotly_white", height=120 + 36 * len(words))
    return fig


def identical_groups(matrix: torch.Tensor, vocab: Sequence[str]) -> list[list[str]]:
    """Groups of tokens whose input vectors are bit-identical, largest first (unused
    placeholders left out). Recipe section 3: tokens that render alike get the same vector:
    homoglyphs across scripts (Latin O, Greek Ο, Cyrillic О), marks that leave their own cell
    blank, and multi-character tokens that differ only in columns the nearest resize to 32 px
    drops (it keeps one column in three of a 3-character token: "кот" = "кст")."""
    groups: dict[bytes, list[str]] = {}
    rows = np.ascontiguousarray(matrix.detach().cpu().numpy())
    for i, t in enumerate(vocab):
        if not t.startswith("<unused_"):
            groups.setdefault(rows[i].tobytes(), []).append(t)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g))


# --- 2-D map -------------------------------------------------------------------------------

def script_map(matrix: torch.Tensor, vocab: Sequence[str], max_points: int = 4000, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids, 2-D coordinates, scripts) of up to `max_points` tokens (a seeded sample when the
    vocabulary is larger; unused placeholders left out), placed by a 2-component PCA of their
    input vectors: a linear view, so distances are the model's own geometry."""
    from sklearn.decomposition import PCA

    ids = np.array([i for i, t in enumerate(vocab) if not t.startswith("<unused_")])
    if len(ids) > max_points:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=max_points, replace=False))
    xy = PCA(n_components=2, random_state=seed).fit_transform(matrix[torch.from_numpy(ids)].numpy())
    return ids, xy, [token_script(vocab[i]) for i in ids]


def script_map_figure(ids: np.ndarray, xy: np.ndarray, scripts: Sequence[str], vocab: Sequence[str],
                      title: str = "input vectors (2-D PCA), coloured by script") -> go.Figure:
    fig = go.Figure()
    scripts = np.asarray(scripts)
    for name, color in SCRIPT_COLORS.items():
        sel = scripts == name
        if sel.any():
            fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"{name} ({int(sel.sum())})",
                                       marker={"size": 4, "color": color, "opacity": 0.7},
                                       text=[f"{plotly_label(visible(vocab[i]))} ({code_points(vocab[i])})"
                                             for i in ids[sel]], hoverinfo="text"))
    fig.update_layout(title=title, template="plotly_white", height=560, xaxis_title="PC 1", yaxis_title="PC 2")
    return fig


def save_figure(fig: go.Figure, out_dir: str | Path, name: str) -> Path:
    """`out_dir/name.html` and `name.json`. The page loads `plotly.min.js` written once beside it
    (not the CDN): the figures must open offline, like the rest of the workbench."""
    out = ensure_dir(out_dir)
    write_figure(fig, out / f"{name}.html")  # the bundle checked before it is reused (bvvlab.core.outputs)
    write_atomic(out / f"{name}.json", fig.to_json())
    return out / f"{name}.html"


def sha256_of(strings: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(strings), ensure_ascii=False).encode("utf-8")).hexdigest()
