"""The benches' paired bootstrap over origin days: what the peers section's intervals rest on."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from helpers import REPO

sys.path.insert(0, str(REPO))
from benchmarks.bootstrap import day_bootstrap  # noqa: E402


def pairs_of(days: int, per_day: int = 24) -> pd.DataFrame:
    stamps = pd.date_range("2007-02-01", periods=days * per_day, freq="h", tz="UTC")
    return pd.DataFrame({"event_timestamp": stamps})


def test_a_constant_difference_has_no_width() -> None:
    pairs = pairs_of(28)
    lo, mid, hi = day_bootstrap(pairs, np.full(len(pairs), -0.02))
    assert np.allclose([lo, mid, hi], -0.02)


def test_whole_days_are_resampled_not_pairs() -> None:
    # each day's 24 pairs share one difference: a bootstrap over pairs would be ~5x narrower than over days
    pairs = pairs_of(28)
    day_values = np.random.default_rng(1).normal(0.0, 0.1, 28)
    diff = np.repeat(day_values, 24)
    lo, mid, hi = day_bootstrap(pairs, diff)
    assert np.isclose(mid, diff.mean())
    expected = 2 * 1.645 * day_values.std() / np.sqrt(28)  # the 90 % width of a mean of 28 independent days
    assert 0.7 * expected < hi - lo < 1.3 * expected


def test_relative_to_gives_the_ratio_of_sums() -> None:
    pairs = pairs_of(10)
    rng = np.random.default_rng(2)
    reference = rng.uniform(0.5, 1.5, len(pairs))
    ours = reference * 0.95
    lo, mid, hi = day_bootstrap(pairs, reference - ours, relative_to=reference)
    assert np.isclose(mid, 0.05)  # 5 % better than the reference, every pair
    assert np.isclose(lo, 0.05) and np.isclose(hi, 0.05)
    lo, mid, hi = day_bootstrap(pairs, reference - rng.permutation(ours), relative_to=reference)
    assert np.isclose(mid, 0.05) and lo < 0.05 < hi
