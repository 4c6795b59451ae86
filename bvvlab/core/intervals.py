"""Intervals every floor shares: a bootstrap of a ratio of sums (bits per character over
validation windows, and the paired gap of two models on the same windows), a t-interval over
seeds, and the clip of a probability interval to [0, 1].

Here, in the lowest floor, because the trainer (train) computes bits/char and the report (app)
summarises it; analysis/stats.py keeps the probing statistics (concept bootstraps, permutation
nulls). The bootstraps are scipy.stats.bootstrap (percentile method, the units resampled with
replacement), so their definition is scipy's, not ours.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _percentile(data: tuple[np.ndarray, ...], statistic, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if len(data[0]) < 2:  # one unit: no spread to resample (scipy refuses); the interval is the point
        v = float(statistic(*data, axis=-1))
        return v, v
    res = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=n_boot, confidence_level=level,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_interval(num: Sequence[float], den: Sequence[float], n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> dict[str, float]:
    """sum(num) / sum(den) with a percentile bootstrap over units (num[i], den[i]) resampled
    together: bits/char over validation windows (num: bits, den: characters), each window a
    unit. Windows are contiguous stretches of the text and neighbours are not independent (lag-1
    correlation of the demo's per-window bits/char: 0.24; blocks of 5-40 windows widened its gap
    interval by about 20%), so the interval is somewhat too narrow: read it as the spread over
    which text was held out, not over training seeds."""
    n, d = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if n.size == 0 or n.shape != d.shape or d.sum() <= 0:
        raise ValueError(f"ratio_interval: {n.size} numerators for {d.size} denominators (sum {d.sum()}): "
                         "give one per unit, with characters > 0")

    def stat(a, b, axis=-1):
        return a.sum(axis=axis) / b.sum(axis=axis)

    lo, hi = _percentile((n, d), stat, n_boot, seed, level)
    return {"value": float(n.sum() / d.sum()), "low": lo, "high": hi, "n": int(n.size), "level": level}


def paired_gap_interval(num_a: Sequence[float], num_b: Sequence[float], den: Sequence[float], n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """The relative gap of model A over model B, sum(a)/sum(b) - 1 (the characters cancel: both
    models scored the same windows), with a percentile bootstrap over the windows resampled
    together for both models. A positive gap: A needs more bits per character than B.
    `significant`: the interval excludes 0."""
    a, b = np.asarray(num_a, dtype=np.float64), np.asarray(num_b, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape or len(den) != a.size:
        raise ValueError(f"paired_gap_interval: {a.size} and {b.size} windows (and {len(den)} lengths): the two "
                         "models must be scored on the same windows")

    def stat(x, y, axis=-1):
        return x.sum(axis=axis) / y.sum(axis=axis) - 1.0

    lo, hi = _percentile((a, b), stat, n_boot, seed, level)
    # one window (or windows all alike) gives a zero-width interval: no evidence of a spread, so
    # nothing to call significant (as seed_interval says of one seed)
    return {"value": float(a.sum() / b.sum() - 1.0), "low": lo, "high": hi, "n": int(a.size), "level": level,
            "significant": bool(a.size >= 2 and lo < hi and (lo > 0 or hi < 0))}


def seed_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean over seeds with a Student t-interval (n - 1 degrees of freedom); one seed gives no
    interval (low = high = the value, `n` = 1, `significant` False)."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("seed_interval: no values")
    mean = float(x.mean())
    if x.size < 2:
        return {"value": mean, "low": mean, "high": mean, "n": 1, "level": level, "significant": False}
    half = float(t.ppf((1 + level) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"value": mean, "low": mean - half, "high": mean + half, "n": int(x.size), "level": level,
            "significant": bool(mean - half > 0 or mean + half < 0)}


def clip_probability(low: float, high: float) -> tuple[float, float]:
    """A probability's interval kept inside [0, 1] (a normal interval near 0 reached below it:
    [-0.008, 0.133], issue 24)."""
    return max(0.0, float(low)), min(1.0, float(high))
