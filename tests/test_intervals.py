"""bvvlab.core.intervals: the intervals the report prints beside bits/char, gaps and seeds."""

import numpy as np
import pytest
from scipy.stats import t

from bvvlab.core import intervals as IV


def test_ratio_interval_is_the_ratio_of_sums_and_narrows_with_more_windows():
    rng = np.random.default_rng(0)
    chars = rng.integers(50, 150, size=400).astype(float)
    bits = chars * rng.normal(2.0, 0.3, size=400)
    r = IV.ratio_interval(bits, chars, seed=1)
    assert r["value"] == pytest.approx(bits.sum() / chars.sum())
    assert r["low"] < r["value"] < r["high"] and r["n"] == 400
    few = IV.ratio_interval(bits[:40], chars[:40], seed=1)
    assert few["high"] - few["low"] > r["high"] - r["low"]
    assert IV.ratio_interval(bits, chars, seed=1) == r  # seeded: the same interval twice


def test_one_window_has_no_spread_and_bad_lengths_are_refused():
    assert IV.ratio_interval([10.0], [5.0]) == {"value": 2.0, "low": 2.0, "high": 2.0, "n": 1, "level": 0.95}
    with pytest.raises(ValueError, match="one per unit"):
        IV.ratio_interval([1.0, 2.0], [1.0])
    # a gap over one window (or identical windows) is a point, not evidence: never "significant"
    one = IV.paired_gap_interval([10.0], [9.0], [5])
    assert one["low"] == one["high"] and one["significant"] is False
    assert IV.paired_gap_interval([10.0] * 4, [9.0] * 4, [5] * 4)["significant"] is False


def test_paired_gap_sees_a_small_consistent_difference_that_unpaired_noise_would_hide():
    """Model A pays 1% more bits on every window of widely varying difficulty: the paired gap is
    +1% and significant, though the windows' spread is far wider than 1%."""
    rng = np.random.default_rng(0)
    b = rng.uniform(50, 500, size=200)
    a = b * 1.01
    g = IV.paired_gap_interval(a, b, np.ones(200))
    assert g["value"] == pytest.approx(0.01) and g["significant"]
    assert g["low"] == pytest.approx(0.01) and g["high"] == pytest.approx(0.01)
    noisy = IV.paired_gap_interval(b * rng.normal(1.0, 0.2, 200), b, np.ones(200))
    assert noisy["low"] < 0 < noisy["high"] and not noisy["significant"]


def test_seed_interval_is_student_t():
    x = [0.1, 0.12, 0.08]
    s = IV.seed_interval(x)
    half = t.ppf(0.975, 2) * np.std(x, ddof=1) / np.sqrt(3)
    assert s["value"] == pytest.approx(0.1) and s["high"] - s["value"] == pytest.approx(half)
    assert s["n"] == 3 and s["significant"]
    assert IV.seed_interval([0.2]) == {"value": 0.2, "low": 0.2, "high": 0.2, "n": 1, "level": 0.95,
                                       "significant": False}


def test_probability_intervals_stay_in_zero_one():
    assert IV.clip_probability(-0.008, 0.133) == (0.0, 0.133)
    assert IV.clip_probability(0.9, 1.02) == (0.9, 1.0)
