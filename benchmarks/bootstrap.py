"""The benches' paired bootstrap over origin days (``dayahead_candidates`` and the ``peers`` section).

No side effects on import: tests import it without the candidate harness's environment defaults.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def day_bootstrap(pairs: pd.DataFrame, diff: np.ndarray, n: int = 2000, relative_to: np.ndarray | None = None
                  ) -> tuple[float, float, float]:
    """Mean of ``diff`` and its 90 % interval, resampling whole origin days (pairs of one day are correlated);
    with ``relative_to`` (per pair, e.g. a reference's absolute errors), of ``sum(diff) / sum(relative_to)``."""
    day = pd.DatetimeIndex(pairs["event_timestamp"]).floor("D").asi8
    days, where = np.unique(day, return_inverse=True)
    base = np.ones(len(diff)) if relative_to is None else np.asarray(relative_to, dtype=float)
    sums, counts = np.bincount(where, diff, len(days)), np.bincount(where, base, len(days))
    pick = np.random.default_rng(7).integers(0, len(days), (n, len(days)))
    boot = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    return float(np.quantile(boot, 0.05)), float(diff.sum() / base.sum()), float(np.quantile(boot, 0.95))
