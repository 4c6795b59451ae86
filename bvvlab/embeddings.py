"""Glyph bits -> PCA -> L2 rows: the frozen embedding matrix (bvv-recipe.md section 3, steps 6-7).

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
hash is recorded wherever a matrix is used: models can only be fused when it matches.

Cache: `glyph_matrix` stores results as safetensors under `cache_dir()/embeddings/`, keyed by
sha256 over the token strings, the font hash, the recipe parameters, `dim` and the code
versions; the file carries its own matrix hash, so a damaged file is detected, reported in one
log line and rebuilt.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bvvlab.glyphs import (GLYPHS_VERSION, RECIPE_32, RECIPE_64, RECIPE_MAX, RecipeParams, render_bits)
from bvvlab.runinfo import cache_dir, run_meta, write_json_atomic

__all__ = ["RecipeParams", "RECIPE_32", "RECIPE_64", "RECIPE_MAX", "pca_embed", "glyph_matrix", "matrix_hash",
           "save_matrix", "load_matrix", "load_matrix_meta", "Embedded", "prepare_vocabulary", "load_embedded",
           "add_cli"]

log = logging.getLogger(__name__)

# bump when the PCA / normalisation changes the numbers; part of the cache key
EMBEDDINGS_VERSION = "1"
MATRIX_FILE = "glyph_matrix.safetensors"
_TENSOR_NAME = "glyph_matrix"
_NULL_RTOL = 1e-12  # components with eigenvalue below this fraction of the largest are zeroed


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


def pca_embed(bits: np.ndarray, dim: int | None = None) -> torch.Tensor:
    """Recipe 3.6-3.7: (N, D) bits -> first `dim` PCA scores (default D) -> L2-normalised rows, float32."""
    n, d = bits.shape
    dim = d if dim is None else dim
    if not 1 <= dim <= d:
        raise ValueError(f"dim={dim} is out of range: pass 1 <= dim <= {d} (size*size)")
    mean, comps, _ = pca_components(bits)
    v = torch.from_numpy(np.ascontiguousarray(comps[:, :dim]))
    x = torch.from_numpy(np.ascontiguousarray(bits).view(np.uint8)).to(torch.float32)
    scores = x @ v.to(torch.float32)
    scores -= (torch.from_numpy(mean) @ v).to(torch.float32)  # centring, as PCA.transform does
    return torch.nn.functional.normalize(scores, dim=1)


# ---------------------------------------------------------------------------------------------
# hashes and files

def matrix_hash(matrix: torch.Tensor) -> str:
    """sha256 over dtype, shape and the row-major bytes: the identity of a frozen matrix."""
    arr = np.ascontiguousarray(matrix.detach().cpu().numpy())
    h = hashlib.sha256(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def tokens_hash(tokens: Sequence[str]) -> str:
    """sha256 of the id-ordered token strings (JSON, ASCII-escaped so any str hashes)."""
    return hashlib.sha256(json.dumps(list(tokens), ensure_ascii=True).encode("ascii")).hexdigest()


def save_matrix(path: str | Path, matrix: torch.Tensor, **meta: Any) -> str:
    """Write `matrix` as safetensors (atomically) with `meta` and its own hash; returns the hash."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = matrix.detach().cpu().to(torch.float32).contiguous()
    digest = matrix_hash(matrix)
    metadata = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    metadata["matrix_hash"] = digest
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({_TENSOR_NAME: matrix}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    """Content address of a matrix: tokens, font, recipe numbers, dim and code versions."""
    from bvvlab.font import font_sha256

    material = {"tokens": tokens_hash(tokens), "font_sha256": font_sha256(), "params": params.as_dict(),
                "dim": dim, "glyphs_version": GLYPHS_VERSION, "embeddings_version": EMBEDDINGS_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def cache_path(tokens: Sequence[str], params: RecipeParams, dim: int) -> Path:
    return cache_dir() / "embeddings" / f"{cache_key(tokens, params, dim)}.safetensors"


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
    t = time.perf_counter()
    bits = render_bits(tokens, params, progress=progress)
    timings["render_s"] = time.perf_counter() - t
    t = time.perf_counter()
    matrix = pca_embed(bits, dim)
    timings["pca_s"] = time.perf_counter() - t
    if path is not None:
        save_matrix(path, matrix, key=path.stem, rows=len(tokens), dim=dim, params=params.as_dict())
    timings.update(cache_hit=False, build_s=time.perf_counter() - t0)
    return matrix
