"""Frozen input interfaces other than glyphs: id bits, random bits, float codes (issue 23).

The later papers (docs/recipe.md section 10; arXiv 2507.04886 v4, 2507.07129 v3) ask whether a
frozen embedding needs any content beyond identity, comparing on one backbone:

* ``glyph``: the Unicode glyph matrix (recipe section 3), bvvlab's default;
* ``trainable``: a trainable, randomly initialised embedding (the same as ``frozen=false``);
* ``id-bits``: the n-bit binary code of the token id (n = ceil(log2 V) at least);
* ``random-bits``: n random bits per token, seeded, every row unique;
* ``float``: the random-bits code through PCA to n dimensions, rows L2-normalised.

An n-wide code is widened to the model width d by a non-trainable
``repeat_interleave(d / n)`` (column j of the code fills columns j*r .. j*r + r - 1, r = d / n:
the published rule). Here the widening is done ONCE, when the model is built: the (V, d) result
is the model's frozen buffer exactly as the glyph matrix is, so a forward costs the same
`F.embedding` gather with no copy per step, checkpoints store it, its sha256 is the config's
`embedding_hash`, fusion refuses experts whose matrices differ, and probe/eval need no change.
(The alternative, a (V, n) buffer widened in every forward, needs a (B, T, d) copy per step,
since an expand view of a repeat is not contiguous; `bench/bench_interfaces.py` measures the
two.) Where n does not divide d the request is refused (one line naming the divisors); an
unset n takes the smallest divisor of d that is large enough (documented in `default_dim`).

Choices the papers leave open, as options (the defaults are this module's, not the author's):

* bit order of the id code, ``order``: ``msb`` (default: bit 0 is the most significant, so the
  code reads as the binary number left to right) or ``lsb`` (bit 0 is the id's lowest bit);
* the value a bit takes, ``values``: ``pm1`` (default: 0 -> -1, 1 -> +1, every column centred
  and of equal energy) or ``01``;
* the scale, ``scale``: None (default) scales the widened rows so that a ``pm1`` or ``float``
  row has L2 norm 1, like a glyph row and like the trainable init (std 1/sqrt(d)); a ``01``
  row gets the same factor (norm sqrt(popcount/n) <= 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from bvvlab.glyph.embeddings import matrix_hash, pca_embed

__all__ = ["KINDS", "CODED", "ORDERS", "VALUES", "InterfaceSpec", "default_dim", "id_bits", "decode_id_bits",
           "random_bits", "code_matrix", "widen", "interface_matrix"]

KINDS = ("glyph", "trainable", "id-bits", "random-bits", "float")
CODED = ("id-bits", "random-bits", "float")  # the kinds built here (glyph: embeddings.py; trainable: no matrix)
ORDERS = ("msb", "lsb")
VALUES = ("pm1", "01")
_EXACT_DRAW_BITS = 24  # up to this n, distinct codes are drawn as distinct integers (no redraw loop)


@dataclass(frozen=True)
class InterfaceSpec:
    """What a frozen code is: enough to rebuild it bit for bit (recorded in meta.json)."""

    kind: str
    n: int
    order: str = "msb"
    values: str = "pm1"
    scale: float | None = None
    seed: int = 0

    def label(self) -> str:
        """Short name for tables and `BVVConfig.interface`, e.g. ``id-bits:16:msb:pm1``."""
        tail = f":{self.order}" if self.kind == "id-bits" else f":seed{self.seed}"
        vals = "" if self.kind == "float" else f":{self.values}"
        return f"{self.kind}:{self.n}{tail}{vals}" + ("" if self.scale is None else f":x{self.scale:g}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"interface={kind!r} is not a known interface: use one of {', '.join(KINDS)}")
    return kind


def divisors(width: int) -> list[int]:
    return [k for k in range(1, width + 1) if width % k == 0]


def default_dim(kind: str, vocab_size: int, width: int) -> int:
    """n when none is given: id-bits takes the smallest divisor of `width` that is >= ceil(log2 V)
    (65,536 tokens at d 1024: 16, the published code; unused high bits are then constant);
    random-bits and float take 64 (the smallest published random code) where 64 divides the width
    and 2^64 > V, else the id-bits rule."""
    need = max(1, math.ceil(math.log2(max(vocab_size, 2))))
    if kind in ("random-bits", "float") and width % 64 == 0:
        return 64
    fit = [k for k in divisors(width) if k >= need]
    if not fit:
        raise ValueError(f"a {vocab_size:,}-token vocabulary needs codes of at least {need} bits but the model width "
                         f"is {width}: use interface=glyph or trainable, or a wider model")
    return fit[0]


def check_dim(kind: str, n: int, vocab_size: int, width: int) -> None:
    """One line for each impossible request: n not dividing the width, too few codes for V."""
    if n <= 0:
        raise ValueError(f"interface_dim={n}: give a positive number of bits")
    if width % n:
        ok = ", ".join(str(k) for k in divisors(width) if k >= 2)
        raise ValueError(f"interface_dim={n} does not divide the model width {width} (the code is widened by "
                         f"repeat_interleave(width / n)): use one of {ok}")
    if kind in ("id-bits", "random-bits") and n < 63 and vocab_size > 2 ** n:
        raise ValueError(f"interface_dim={n} gives {2 ** n:,} codes but the vocabulary has {vocab_size:,} tokens: "
                         f"use interface_dim>={math.ceil(math.log2(vocab_size))} (dividing {width})")
    if kind == "float" and n > vocab_size:
        raise ValueError(f"interface_dim={n} is more PCA components than the {vocab_size} tokens can give: "
                         f"use interface_dim<={vocab_size}")


def id_bits(vocab_size: int, n: int, order: str = "msb") -> np.ndarray:
    """(V, n) bool: row i is the n-bit binary code of i (`order` msb: column 0 is bit n-1)."""
    if order not in ORDERS:
        raise ValueError(f"interface_order={order!r}: use one of {', '.join(ORDERS)}")
    if n < 63 and vocab_size > 2 ** n:
        raise ValueError(f"{n} bits give {2 ** n:,} codes but the vocabulary has {vocab_size:,} tokens: "
                         f"use at least {math.ceil(math.log2(vocab_size))} bits")
    ids = np.arange(vocab_size, dtype=np.uint64)[:, None]
    shifts = np.arange(n, dtype=np.uint64)  # lsb: column j = bit j
    bits = ((ids >> np.minimum(shifts, 63)) & 1).astype(bool) & (shifts < 64)
    return np.ascontiguousarray(bits[:, ::-1]) if order == "msb" else bits


def decode_id_bits(bits: np.ndarray, order: str = "msb") -> np.ndarray:
    """The ids of an `id_bits` code (the inverse; tests check the round trip)."""
    b = np.asarray(bits, dtype=np.uint64)
    if order == "msb":
        b = b[:, ::-1]
    return (b << np.arange(b.shape[1], dtype=np.uint64)).sum(axis=1)


def random_bits(vocab_size: int, n: int, seed: int = 0) -> np.ndarray:
    """(V, n) bool random codes, every row distinct, from `numpy.random.default_rng(seed)`.

    Up to 24 bits: V distinct integers below 2^n (`Generator.choice` without replacement), as
    bits. Wider: uniform bits, any duplicate row redrawn (from the same generator, so the code is
    a function of (V, n, seed)) until none is left (at n >= 64 a duplicate has probability < 1e-9)."""
    if n < 63 and vocab_size > 2 ** n:
        raise ValueError(f"{n} bits give {2 ** n:,} codes but the vocabulary has {vocab_size:,} tokens: "
                         f"use at least {math.ceil(math.log2(vocab_size))} bits")
    rng = np.random.default_rng(seed)
    if n <= _EXACT_DRAW_BITS:
        values = rng.choice(2 ** n, size=vocab_size, replace=False).astype(np.uint64)[:, None]
        return ((values >> np.arange(n, dtype=np.uint64)) & 1).astype(bool)
    bits = rng.integers(0, 2, size=(vocab_size, n), dtype=np.uint8).astype(bool)
    while True:
        _, first = np.unique(bits, axis=0, return_index=True)
        dup = np.setdiff1d(np.arange(vocab_size), first)
        if dup.size == 0:
            return bits
        bits[dup] = rng.integers(0, 2, size=(dup.size, n), dtype=np.uint8).astype(bool)


def code_matrix(spec: InterfaceSpec, vocab_size: int) -> torch.Tensor:
    """The (V, n) float32 code before widening: bits mapped to values, or PCA + L2 for float."""
    if spec.kind == "id-bits":
        bits = id_bits(vocab_size, spec.n, spec.order)
    elif spec.kind in ("random-bits", "float"):
        bits = random_bits(vocab_size, spec.n, spec.seed)
    else:
        raise ValueError(f"interface={spec.kind!r} has no code: use one of {', '.join(CODED)}")
    if spec.kind == "float":  # the same codes, PCA to n dimensions, L2 rows (the published n_FLOAT)
        return pca_embed(bits, dim=spec.n)
    if spec.values not in VALUES:
        raise ValueError(f"interface_values={spec.values!r}: use one of {', '.join(VALUES)}")
    x = torch.from_numpy(bits.astype(np.float32))
    return x * 2 - 1 if spec.values == "pm1" else x


def widen(code: torch.Tensor, width: int, scale: float) -> torch.Tensor:
    """(V, n) -> (V, width): `repeat_interleave(width / n)` along the columns, times `scale`."""
    n = code.shape[1]
    if width % n:
        raise ValueError(f"a {n}-wide code does not divide the model width {width}: use n dividing {width}")
    return (code.repeat_interleave(width // n, dim=1) * scale).contiguous()


def interface_matrix(kind: str, vocab_size: int, width: int, n: int | None = None, order: str = "msb",
                     values: str = "pm1", scale: float | None = None, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """(the (V, width) float32 frozen matrix of a coded interface, its meta for meta.json).

    The meta names the spec (enough to rebuild the matrix), the hash of the n-wide code and the
    hash of the widened matrix (= the model's `embedding_hash`)."""
    check_kind(kind)
    if kind not in CODED:
        raise ValueError(f"interface={kind!r} is not a frozen code: use one of {', '.join(CODED)}")
    if order not in ORDERS:
        raise ValueError(f"interface_order={order!r}: use one of {', '.join(ORDERS)}")
    if values not in VALUES:
        raise ValueError(f"interface_values={values!r}: use one of {', '.join(VALUES)}")
    n = default_dim(kind, vocab_size, width) if n is None else int(n)
    check_dim(kind, n, vocab_size, width)
    spec = InterfaceSpec(kind, n, order, values, scale, seed)
    code = code_matrix(spec, vocab_size)
    factor = scale if scale is not None else (1.0 / math.sqrt(width // n) if kind == "float" else 1 / math.sqrt(width))
    matrix = widen(code, width, factor)
    meta = {"interface": spec.as_dict(), "label": spec.label(), "code_hash": matrix_hash(code),
            "matrix_hash": matrix_hash(matrix), "widen": f"repeat_interleave({width // n}) x {factor:.6g}"}
    return matrix, meta
