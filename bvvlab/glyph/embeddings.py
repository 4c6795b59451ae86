"""Glyph bits -> PCA -> L2 rows: the frozen embedding matrix (docs/recipe.md section 3, steps 6-7).

The recipe stacks every token's 1024 bits, fits scikit-learn `PCA(n_components=1024)` on the
whole vocabulary (`fit_transform` on float32) and L2-normalises the rows. `pca_embed` computes
the same projection, faster and deterministically:

* The bits are 0/1, so the Gram matrix `X^T X` (float32 BLAS; every partial sum is an integer
  below 2^24, hence exact) and the column sums are exact integers, and so is
  `M = N X^T X - s s^T = N (N - 1) * covariance` in float64 (entries below 2^53). The
  eigen-decomposition therefore starts from an exactly known matrix, whatever the BLAS; it runs
  on one thread because LAPACK's result depends on the thread count (measured: 1e-8).
* Components are the eigenvectors of M by decreasing eigenvalue (sklearn's order); components
  whose eigenvalue is below 1e-12 of the largest carry no variance (constant pixels, or more
  dimensions than tokens) and are set to exactly zero instead of rounding noise.
* **Sign convention** (the same as scikit-learn's `svd_flip(u_based_decision=False)`): each
  component is flipped so that its largest-magnitude loading is positive (first such pixel on a
  tie). tests/test_embeddings.py checks agreement with sklearn's PCA.
* Scores `(X - mean) V` are computed in float32 (as the recipe's float32 PCA does), rows are
  L2-normalised. `dim` keeps the first `dim` components before normalising, so a smaller model
  gets the leading part of the same PCA.

Determinism: identical inputs give a bit-identical matrix on every run of the same software
stack (same numpy/torch/LAPACK build); across different LAPACK builds the eigenvectors may
differ in the last bits (and within exactly degenerate eigenspaces), which is why the matrix
hash is recorded wherever a matrix is used: models can only be fused when it matches. torch's
LAPACK is MKL, whose results may also depend on the CPU's instruction set; exporting
`MKL_CBWR=COMPATIBLE` before starting Python asks MKL for CPU-independent results (not tested
here: one machine type).

Byte tokens, a deliberate departure from the recipe: the byte-fallback tokens `<0x80>`..`<0xFF>`
that make bvvlab's vocabularies lossless (ids 0xE080-0xE0FF) do not exist in the published
vocabulary, so the recipe says nothing about them. Drawn literally, the six characters of
`<0xB3>` squeezed into one 32 px cell give only 98 distinct bit vectors for the 128 bytes
(`<0xB3>` = `<0xB8>` = `<0xE3>` ...), and a model could not tell those bytes apart. Every
token `<0xHH>` is therefore drawn as its two hex digits in their FULLWIDTH forms (U+FF10-FF19,
U+FF21-FF26: `<0xCA>` -> "ＣＡ"; `bvvlab.glyph.tokenizer.glyph_text`): 128 distinct vectors, none
equal to another token's (checked over the full bvv241-2-3 and bvv241-max vocabularies). The
plain ASCII digits "CA" were used before and gave 33 byte tokens of bvv241-max the bits of
the real n-gram tokens "CA", "FF", ... All other tokens are drawn exactly as recipe 3.2 says, so their bits are
the recipe's; the PCA (3.6) is fitted over the whole vocabulary, so every projected row differs
slightly from a build that drew the byte tokens literally. The rule is part of the cache key
(`GLYPH_TEXT`), so a matrix cached before it is never reused.

Cache: `glyph_matrix` stores results as safetensors under `cache_dir()/embeddings/`, keyed by
sha256 over the token strings, the font hash, the recipe parameters, `dim`, the byte-token
drawing rule and the code versions; the file carries its own matrix hash, so a damaged file is detected, reported in one
log line and rebuilt. Beside it, a dim-independent "basis" (packed bits, mean, components; with
a digest) makes another `dim` of the same vocabulary one projection away.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bvvlab.core.atomic import atomic_dir, write_atomic, write_json_atomic
from bvvlab.core.outputs import check_output, mark_output
from bvvlab.core.runinfo import cache_dir, run_meta
from bvvlab.glyph.bitmaps import (
    GLYPHS_VERSION,
    RECIPE_32,
    RECIPE_64,
    RECIPE_MAX,
    RecipeParams,
    render_bits,
)

__all__ = ["RecipeParams", "RECIPE_32", "RECIPE_64", "RECIPE_MAX", "pca_components", "project", "pca_embed",
           "glyph_strings", "glyph_bits", "glyph_matrix", "matrix_hash",
           "save_matrix", "load_matrix", "load_matrix_meta", "Embedded", "prepare_vocabulary", "load_embedded"]

log = logging.getLogger(__name__)

# bump when the PCA / normalisation changes the numbers; part of the cache key
EMBEDDINGS_VERSION = "1"
# what is drawn for a byte-fallback token (module docstring); part of the cache key
GLYPH_TEXT = "byte tokens <0xHH> drawn as fullwidth HH (U+FF10-FF19, U+FF21-FF26)"
MATRIX_FILE = "glyph_matrix.safetensors"
_TENSOR_NAME = "glyph_matrix"
_NULL_RTOL = 1e-12  # components with eigenvalue below this fraction of the largest are zeroed


# ---------------------------------------------------------------------------------------------
# what is drawn (recipe 3.2, except byte tokens: see the module docstring)

def glyph_strings(tokens: Sequence[str]) -> list[str]:
    """The string drawn for each token: itself, except `<0xHH>` byte tokens, drawn as fullwidth `ＨＨ`."""
    from bvvlab.glyph.tokenizer import glyph_text

    return [glyph_text(t) for t in tokens]


def glyph_bits(tokens: Sequence[str], params: RecipeParams = RECIPE_32, progress: bool = False) -> np.ndarray:
    """Recipe 3.2-3.5 bit vectors (N, size*size) of the tokens as the matrix sees them (`glyph_strings`)."""
    return render_bits(glyph_strings(tokens), params, progress=progress)


# ---------------------------------------------------------------------------------------------
# PCA (recipe 3.6-3.7)

def pca_components(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (D,), components (D, D) as columns by decreasing variance, explained variance (D,)).

    Exact integer covariance, float64 eigh, sklearn's sign convention; see the module docstring.
    """
    n, d = bits.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 tokens, got {n}: pass a vocabulary")
    x = torch.from_numpy(np.ascontiguousarray(bits).view(np.uint8)).to(torch.float32)
    gram = (x.T @ x).to(torch.float64)  # exact: integer partial sums < 2^24
    sums = torch.from_numpy(bits.sum(axis=0, dtype=np.int64)).to(torch.float64)
    m = n * gram - torch.outer(sums, sums)  # = n (n - 1) covariance, exact integers in float64
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LAPACK's blocked eigh rounds differently with more threads
    try:
        evals, evecs = torch.linalg.eigh(m)
    finally:
        torch.set_num_threads(threads)
    evals, evecs = evals.flip(0), evecs.flip(1)  # decreasing variance
    evals = evals.clamp_min(0) / (n * (n - 1.0))
    null = evals <= _NULL_RTOL * evals[0].clamp_min(torch.finfo(torch.float64).tiny)
    evecs[:, null] = 0.0
    evals[null] = 0.0
    top = evecs.abs().argmax(dim=0)  # sign: largest-|.| loading of each component positive
    signs = torch.sign(evecs[top, torch.arange(d)])
    signs[signs == 0] = 1.0
    evecs *= signs
    return (sums / n).numpy(), evecs.numpy(), evals.numpy()


def project(bits: np.ndarray, mean: np.ndarray, comps: np.ndarray, dim: int | None = None) -> torch.Tensor:
    """Recipe 3.6-3.7 given the PCA: first `dim` scores of (bits - mean), float32, L2-normalised rows."""
    d = bits.shape[1]
    dim = d if dim is None else dim
    if not 1 <= dim <= d:
        raise ValueError(f"dim={dim} is out of range: pass 1 <= dim <= {d} (size*size)")
    zero = int((np.abs(comps[:, :dim]).sum(axis=0) == 0).sum())
    if zero and dim != d:  # the full width keeps the recipe's matrix as it is, null directions included
        log.warning("dim=%d is above the rank %d of these %d tokens' glyph bits: the last %d columns are all zero; "
                    "use dim<=%d (or a vocabulary with more distinct glyphs)", dim, dim - zero, bits.shape[0], zero,
                    dim - zero)
    v = torch.from_numpy(np.ascontiguousarray(comps[:, :dim]))
    x = torch.from_numpy(np.ascontiguousarray(bits).view(np.uint8)).to(torch.float32)
    scores = x @ v.to(torch.float32)
    scores -= (torch.from_numpy(mean) @ v).to(torch.float32)  # centring, as PCA.transform does
    return torch.nn.functional.normalize(scores, dim=1)


def pca_embed(bits: np.ndarray, dim: int | None = None) -> torch.Tensor:
    """Recipe 3.6-3.7: (N, D) bits -> first `dim` PCA scores (default D) -> L2-normalised rows, float32."""
    if dim is not None and not 1 <= dim <= bits.shape[1]:
        raise ValueError(f"dim={dim} is out of range: pass 1 <= dim <= {bits.shape[1]} (size*size)")
    mean, comps, _ = pca_components(bits)
    return project(bits, mean, comps, dim)


# ---------------------------------------------------------------------------------------------
# hashes and files

def matrix_hash(matrix: torch.Tensor) -> str:
    """sha256 over dtype, shape and the row-major bytes: the identity of a frozen matrix. For a
    float32 matrix it equals `model.matrix_sha256` (config.json `embedding_hash`), which the
    self-contained modeling file restates (tested); meta.json calls it `matrix_hash`."""
    arr = np.ascontiguousarray(matrix.detach().cpu().numpy())
    h = hashlib.sha256(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def tokens_hash(tokens: Sequence[str]) -> str:
    """The vocabulary's hash (`tokenizer.vocab_hash`: one definition for caches and meta.json)."""
    from bvvlab.glyph.tokenizer import vocab_hash

    return vocab_hash(tokens)


def save_matrix(path: str | Path, matrix: torch.Tensor, **meta: Any) -> str:
    """Write `matrix` as safetensors (atomically) with `meta` and its own hash; returns the hash."""
    from safetensors.torch import save as save_bytes

    path = Path(path)
    matrix = matrix.detach().cpu().to(torch.float32).contiguous()
    digest = matrix_hash(matrix)
    metadata = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    metadata["matrix_hash"] = digest
    write_atomic(path, save_bytes({_TENSOR_NAME: matrix}, metadata=metadata))
    return digest


def load_matrix_meta(path: str | Path) -> dict[str, str]:
    """The metadata stored with a matrix file (strings; JSON for non-string values)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"matrix file {path} does not exist: build it with `bvvlab embed`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        raise ValueError(f"{path} is not a readable safetensors matrix ({type(exc).__name__}): "
                         "rebuild it with `bvvlab embed`") from None


def load_matrix(path: str | Path, vocab_size: int | None = None) -> torch.Tensor:
    """Read a matrix written by `save_matrix`, checking its hash (and its rows against `vocab_size`)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = load_matrix_meta(path)
    try:
        matrix = load_file(str(path))[_TENSOR_NAME]
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable safetensors matrix ({type(exc).__name__}): "
                         "rebuild it with `bvvlab embed`") from None
    expected = meta.get("matrix_hash")
    if expected is not None and matrix_hash(matrix) != expected:
        raise ValueError(f"matrix file {path} is damaged (its hash does not match the one stored in it): "
                         "rebuild it with `bvvlab embed`")
    if vocab_size is not None and matrix.shape[0] != vocab_size:
        raise ValueError(f"matrix {path} has {matrix.shape[0]} rows but the vocabulary has {vocab_size} tokens: "
                         "use the matrix built for this tokenizer (`bvvlab embed`)")
    return matrix


# ---------------------------------------------------------------------------------------------
# the cached matrix

def cache_key(tokens: Sequence[str], params: RecipeParams, dim: int) -> str:
    """Content address of a matrix: tokens, font, recipe numbers, dim, byte-token rule, code versions."""
    from bvvlab.glyph.font import font_sha256

    material = {"tokens": tokens_hash(tokens), "font_sha256": font_sha256(), "params": params.as_dict(),
                "dim": dim, "glyph_text": GLYPH_TEXT, "glyphs_version": GLYPHS_VERSION,
                "embeddings_version": EMBEDDINGS_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cache_path(tokens: Sequence[str], params: RecipeParams, dim: int) -> Path:
    return cache_dir() / "embeddings" / f"{cache_key(tokens, params, dim)}.safetensors"


def _digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(f"{name}{arrays[name].dtype.str}{arrays[name].shape}".encode())
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _basis(tokens: list[str], params: RecipeParams, cache: bool, progress: bool,
           timings: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bits, mean, components) of a vocabulary: what every `dim` of its matrix is projected from.

    Cached (dim-independent, digest-checked) beside the matrices, so asking for another `dim`
    of the same vocabulary costs one projection, not a render and a PCA.
    """
    path = cache_dir() / "embeddings" / f"basis-{cache_key(tokens, params, 0)}.npz" if cache else None
    if path is not None and path.is_file():
        t = time.perf_counter()
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in ("bits", "mean", "comps")}
                ok = np.array_equal(z["digest"], _digest(arrays))
            if ok and arrays["bits"].shape[0] == len(tokens):
                timings.update(basis_cache_hit=True, basis_load_s=time.perf_counter() - t)
                bits = np.unpackbits(arrays["bits"], axis=1, count=params.dim).view(bool)
                return bits, arrays["mean"], arrays["comps"]
        except Exception:  # noqa: BLE001 - a bad cache file is rebuilt, never trusted
            pass
        log.warning("embedding cache file %s is damaged (digest or format check failed): rebuilding it", path)
    t = time.perf_counter()
    bits = glyph_bits(tokens, params, progress=progress)
    timings["render_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mean, comps, _ = pca_components(bits)
    timings["pca_s"] = time.perf_counter() - t
    timings["basis_cache_hit"] = False
    if path is not None:
        arrays = {"bits": np.packbits(bits, axis=1), "mean": mean, "comps": comps}
        try:
            buf = io.BytesIO()
            np.savez(buf, digest=_digest(arrays), **arrays)
            write_atomic(path, buf.getvalue())
        except OSError as exc:  # OutputError included: a cache is optional
            log.warning("could not write the embedding cache %s (%s): continuing without it", path, exc)
    return bits, mean, comps


def glyph_matrix(tokens: Sequence[str], dim: int | None = None, params: RecipeParams = RECIPE_32,
                 cache: bool = True, progress: bool = True, timings: dict | None = None) -> torch.Tensor:
    """The frozen embedding (N, dim) float32 of `tokens` in id order (recipe section 3).

    `dim` (default size*size) keeps the first `dim` principal components, then L2 rows.
    With `cache`, a matrix built before for the same content is loaded (and verified) instead.
    `timings`, if given, receives seconds per stage and whether the cache hit.
    """
    tokens = list(tokens)
    dim = params.dim if dim is None else int(dim)
    if not 1 <= dim <= params.dim:
        raise ValueError(f"dim={dim} is out of range: pass 1 <= dim <= {params.dim} (size {params.size} squared)")
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    path = cache_path(tokens, params, dim) if cache else None
    if path is not None and path.is_file():
        try:
            matrix = load_matrix(path, vocab_size=len(tokens))
            timings.update(cache_hit=True, load_s=time.perf_counter() - t0)
            return matrix
        except (ValueError, FileNotFoundError):
            log.warning("embedding cache file %s is damaged (hash or format check failed): rebuilding it", path)
    bits, mean, comps = _basis(tokens, params, cache, progress, timings)
    t = time.perf_counter()
    matrix = project(bits, mean, comps, dim)
    timings["project_s"] = time.perf_counter() - t
    if path is not None:
        try:
            save_matrix(path, matrix, key=path.stem, rows=len(tokens), dim=dim, params=params.as_dict())
        except OSError as exc:  # a read-only cache must not lose the work just done
            log.warning("could not write the embedding cache %s (%s): continuing without it", path, exc)
    timings.update(cache_hit=False, build_s=time.perf_counter() - t0)
    return matrix


# ---------------------------------------------------------------------------------------------
# a tokenizer and its matrix, together

VOCAB_CHOICES = ("bvv241-2-3", "bvv241-max", "compact")  # or a tokenizer folder
_KIND_PARAMS = {"bvv241-2-3": RECIPE_32, "bvv241-max": RECIPE_MAX}
FULL_KINDS = tuple(sorted(_KIND_PARAMS))  # the full vocabularies a compact one is cut from (`base=`)


def default_params(vocab: str, size: int | None = None) -> RecipeParams:
    """The recipe numbers a vocabulary kind uses (3.3: the 131,072 vocab has its own), at `size`."""
    params = _KIND_PARAMS.get(vocab, RECIPE_32)
    return params if size is None else dataclasses.replace(params, size=int(size))


@dataclass
class Embedded:
    """A tokenizer with its frozen glyph matrix (row i = token id i) and how both were made."""

    tokenizer: Any  # transformers PreTrainedTokenizerFast (TokenizersBackend)
    matrix: torch.Tensor  # (len(tokenizer), dim) float32, L2 rows
    meta: dict = field(default_factory=dict)  # vocab kind, recipe, font hash, matrix hash, timings

    def __post_init__(self) -> None:
        if self.matrix.shape[0] != len(self.tokenizer):
            raise ValueError(f"the matrix has {self.matrix.shape[0]} rows but the tokenizer has "
                             f"{len(self.tokenizer)} tokens: build both with prepare_vocabulary()")
        if "matrix_hash" not in self.meta:
            self.meta["matrix_hash"] = matrix_hash(self.matrix)

    @property
    def matrix_hash(self) -> str:
        return self.meta["matrix_hash"]

    def save(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Tokenizer files + `glyph_matrix.safetensors` + `meta.json` into `out_dir`.

        `out_dir` must be new or empty, or (with `overwrite`) an earlier embedding folder, whose
        files of the same names are replaced and whose other files are kept; anything else (a
        training run, a checkpoint, a user's folder) is refused (`check_out_dir`). The folder is
        built beside `out_dir` and swapped in whole (`atomic_dir`), so a failure or a kill
        leaves what was there untouched.
        """
        out = check_out_dir(out_dir, overwrite)
        with atomic_dir(out, replace=True) as tmp:
            self.tokenizer.save_pretrained(str(tmp))
            save_matrix(tmp / MATRIX_FILE, self.matrix, **{k: self.meta[k] for k in
                                                           ("vocab_kind", "font_sha256", "recipe", "dim") if k in self.meta})
            write_json_atomic(tmp / "meta.json", run_meta(None, **self.meta))
            mark_output(tmp, "embed")
            if out.is_dir():  # overwrite: the folder's other files come along (hard links where possible)
                for f in sorted(out.iterdir()):
                    if not (tmp / f.name).exists():
                        _link_or_copy(f, tmp / f.name)
        return out


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put `src` (a file or a folder) at `dst` without touching `src`: hard links, else copies."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b, follow_symlinks=False)
        except OSError:
            shutil.copy2(a, b, follow_symlinks=False)

    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=link)
    else:
        link(str(src), str(dst))


def _holds_embedding(folder: Path) -> bool:
    """An embedding folder written before markers existed: the matrix and a tokenizer, and no model
    (a training run or checkpoint has config.json / model weights / checkpoints beside them)."""
    if any((folder / n).exists() for n in ("config.json", "model.safetensors", "checkpoints", "metrics.jsonl")):
        return False
    return (folder / MATRIX_FILE).is_file() and (folder / "tokenizer.json").is_file()


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """The output folder, if writing there is allowed (fail before any work is done): new or
    empty, or with `overwrite` an earlier embedding folder (`bvvlab.core.outputs` rule)."""
    return check_output(out_dir, "embed", "embedding folder", overwrite, holds=_holds_embedding)


def _texts_by_lang(corpus: str | Sequence[str] | None, texts: Sequence[str] | None) -> dict[str, list[str]] | None:
    if texts is not None:
        texts = [t for t in texts if t]
        if not texts:
            raise ValueError("texts is empty: pass some text (or leave texts=None for the embedded corpora)")
        return {"texts": list(texts)}
    if corpus is None:
        return None
    from bvvlab.glyph.tokenizer import corpus_texts_by_lang

    names = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    return corpus_texts_by_lang([str(n) for n in names])


def prepare_vocabulary(vocab: str = "compact", corpus: str | Sequence[str] | None = None, dim: int | None = None,
                       params: RecipeParams | None = None, texts: Sequence[str] | None = None, *,
                       base: str = "bvv241-2-3", cache: bool = True, progress: bool = True) -> Embedded:
    """A tokenizer and its frozen glyph matrix (recipe sections 2 and 3).

    vocab: "bvv241-2-3" (65,536 tokens) or "bvv241-max" (131,072), n-grams counted in `texts`,
    else `corpus` (names or files for `bvvlab.corpus.sources`), else the embedded corpora; "compact":
    the tokens that `texts`/`corpus`/the embedded corpora use, out of the standard `base`
    vocabulary, with rows taken from the *full* base matrix so a compact model shares the
    embedding space; or a folder holding any Hugging Face tokenizer, whose token strings (as
    the tokenizer spells them) are rendered. `params` defaults to the kind's recipe numbers.
    """
    from bvvlab.glyph import tokenizer as tk
    from bvvlab.glyph.font import FONT_VERSION, font_sha256

    t0 = time.perf_counter()
    timings: dict[str, Any] = {}
    meta: dict[str, Any] = {"vocab_kind": vocab}
    if vocab in ("bvv241-2-3", "bvv241-max"):
        params = params or default_params(vocab)
        tok = tk.build_tokenizer(vocab, texts_by_lang=_texts_by_lang(corpus, texts))
        matrix = glyph_matrix(tk.tokenizer_vocab(tok), dim, params, cache=cache, progress=progress, timings=timings)
    elif vocab == "compact":
        if base not in _KIND_PARAMS:
            raise ValueError(f"base={base!r} is not a full vocabulary kind: use one of {sorted(_KIND_PARAMS)}")
        params = params or default_params(base)
        full_tok = tk.build_tokenizer(base)  # the standard vocabulary: the shared embedding space
        by_lang = _texts_by_lang(corpus, texts)
        if by_lang is None:
            by_lang = tk.corpus_texts_by_lang()
        tok = tk.compact_tokenizer(full_tok, (t for ts in by_lang.values() for t in ts))
        full = glyph_matrix(tk.tokenizer_vocab(full_tok), dim, params, cache=cache, progress=progress, timings=timings)
        matrix = full[torch.tensor(tk.full_ids_of(tok))].contiguous()
        meta.update(base=base, full_vocab_size=len(full_tok), full_matrix_hash=matrix_hash(full))
    else:
        path = Path(vocab)
        if not path.is_dir():
            raise ValueError(f"--vocab {vocab!r} is neither a kind ({', '.join(VOCAB_CHOICES)}) nor a tokenizer folder: "
                             "pass one of those")
        params = params or default_params(vocab)
        tok = tk.load_tokenizer_dir(path)
        vocab_list = tk.tokenizer_vocab(tok)
        empty = next((i for i, t in enumerate(vocab_list) if not t), None)
        if empty is not None:
            raise ValueError(f"token id {empty} of {path} is an empty string, which has no glyph: "
                             "remove it from the tokenizer")
        matrix = glyph_matrix(vocab_list, dim, params, cache=cache, progress=progress, timings=timings)
        meta.update(vocab_kind="tokenizer-dir", tokenizer_dir=str(path.resolve()))
    timings["total_s"] = time.perf_counter() - t0
    meta.update(vocab_size=len(tok), dim=int(matrix.shape[1]), recipe=params.as_dict(),
                font_sha256=font_sha256(), font_version=FONT_VERSION, glyphs_version=GLYPHS_VERSION,
                embeddings_version=EMBEDDINGS_VERSION, glyph_text=GLYPH_TEXT, vocab_hash=tk.vocab_hash(tk.tokenizer_vocab(tok)),
                corpus=("texts" if texts is not None else corpus if corpus is not None else "embedded"),
                matrix_hash=matrix_hash(matrix), timings=timings)
    return Embedded(tok, matrix, meta)


def load_embedded(path: str | Path) -> Embedded:
    """Read a folder written by `Embedded.save` / `bvvlab embed`, checking rows and hashes."""
    from bvvlab.glyph.tokenizer import load_tokenizer_dir

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"embedding dir {path} does not exist: build it with `bvvlab embed --out {path}`")
    if not (path / MATRIX_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {MATRIX_FILE}: build it with `bvvlab embed --out {path}`")
    tok = load_tokenizer_dir(path)
    matrix = load_matrix(path / MATRIX_FILE, vocab_size=len(tok))
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    digest = matrix_hash(matrix)
    if meta.get("matrix_hash", digest) != digest:
        raise ValueError(f"{path}/meta.json records matrix hash {meta['matrix_hash'][:12]}... but the matrix has "
                         f"{digest[:12]}...: the files come from different builds; rebuild with `bvvlab embed`")
    meta["matrix_hash"] = digest
    return Embedded(tok, matrix, meta)
