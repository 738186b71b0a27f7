"""components/calibration.py: the one calibration path. Per meter, a meter with too few recent scores gets the
training calibration (flagged), and the online window serves the offline band on the same pairs."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from smart_energy.components.calibration import (BUCKET_OF_LEAD, HORIZON, LEAD_BUCKETS, MIN_CALIBRATION_PAIRS,
                                                 ROLLING, TRAINING, OnlineCalibration, calibrate, conformity,
                                                 rolling_band)


def synthetic_pairs(meter: str, start: str, origins: int, seed: int, spread: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Every (origin, lead) of ``origins`` hourly origins: raw quantiles around an hourly actual."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range(start, periods=origins + HORIZON, freq="h", tz="UTC")
    actual = pd.Series(rng.gamma(2.0, 0.5, len(hours)), index=hours)
    rows = []
    for o in hours[:origins]:
        for lead in range(1, HORIZON + 1):
            rows.append((meter, o, lead, o + pd.Timedelta(hours=lead - 1)))
    pairs = pd.DataFrame(rows, columns=["meter_id", "event_timestamp", "lead_hours", "target_timestamp"])
    pairs["target_kw"] = actual.reindex(pairs["target_timestamp"]).to_numpy()
    p50 = pairs["target_kw"].to_numpy() + rng.normal(0, spread, len(pairs))
    raw = np.column_stack([p50 - spread * rng.uniform(0.2, 1.5, len(pairs)), p50,
                           p50 + spread * rng.uniform(0.2, 1.5, len(pairs))])
    return pairs, raw


def test_a_meter_with_too_few_scores_gets_the_training_calibration_flagged():
    long, long_raw = synthetic_pairs("long", "2007-01-01", 24 * 4, seed=1, spread=0.4)
    new, new_raw = synthetic_pairs("new", "2007-01-04", 20, seed=2, spread=2.0)  # < a day of origins known
    pairs = pd.concat([long, new], ignore_index=True)
    raw = np.vstack([long_raw, new_raw])
    band, shift, how = rolling_band(raw, pairs, fallback=0.123)
    is_new = (pairs["meter_id"] == "new").to_numpy()
    assert set(how[is_new]) == {TRAINING} and np.all(shift[is_new] == 0.123)
    np.testing.assert_array_equal(band[is_new], calibrate(new_raw, 0.123))
    late = ~is_new & (pairs["event_timestamp"] >= pd.Timestamp("2007-01-03", tz="UTC")).to_numpy()
    assert set(how[late]) == {ROLLING} and set(how[~is_new & ~late]) >= {TRAINING}
    # per meter: the long meter's band is what it gets alone (the new meter's wide scores are not pooled in)
    alone, alone_shift, _ = rolling_band(long_raw, long, fallback=0.123)
    np.testing.assert_array_equal(band[~is_new], alone)
    # the shift at an origin for a lead is the 0.8 quantile of the meter's scores of that lead's bucket with a
    # target in the 7 days before it
    origin = pd.Timestamp("2007-01-04 05:00", tz="UTC")
    lead = long["lead_hours"].to_numpy()
    for name, lo, hi in LEAD_BUCKETS:
        known = (long["target_timestamp"] < origin).to_numpy() & (lead >= lo) & (lead <= hi)
        at = (long["event_timestamp"] == origin).to_numpy() & (lead >= lo) & (lead <= hi)
        assert known.sum() >= MIN_CALIBRATION_PAIRS * (hi - lo + 1) / HORIZON
        expected = np.quantile(conformity(long["target_kw"].to_numpy()[known], long_raw[known]), 0.8)
        assert np.all(alone_shift[at] == expected), name
    assert len(set(alone_shift[(long["event_timestamp"] == origin).to_numpy()])) == len(LEAD_BUCKETS)


def test_the_online_window_serves_the_offline_band_and_forgets_the_least_recent_meter():
    pairs, raw = synthetic_pairs("m", "2007-01-01", 24 * 3, seed=3, spread=0.5)
    offline, offline_shift, offline_how = rolling_band(raw, pairs, fallback=0.3)
    online = OnlineCalibration(0.3, lag_columns={1: 0}, max_meters=2)
    actual = pairs.set_index("target_timestamp")["target_kw"].groupby(level=0).first()
    hours = pairs["event_timestamp"].drop_duplicates().tolist()
    for origin in hours:
        # the online row of hour H carries H-1's actual (usage_lag_1h, column 0 here)
        row = np.array([[actual.get(origin - timedelta(hours=1), np.nan)]])
        at = (pairs["event_timestamp"] == origin).to_numpy()
        band, shift, rolling = online.serve(["m"], [origin], row, raw[at])
        np.testing.assert_allclose(band, offline[at], rtol=1e-6, atol=1e-6)  # float32 storage
        leads = pairs["lead_hours"].to_numpy()[at]
        np.testing.assert_allclose(shift[0][BUCKET_OF_LEAD[leads]], offline_shift[at], rtol=1e-6)
        assert list(np.where(rolling[0][BUCKET_OF_LEAD[leads]], ROLLING, TRAINING)) == list(offline_how[at])
    assert set(offline_how[-HORIZON:]) == {ROLLING} and TRAINING in set(offline_how)
    scored = online.scores()
    assert set(scored) == {"1", "2-3", "4-6", "7-12", "13-24"} and all(0 <= c <= 1 for c, _, _ in scored.values())
    last = pairs["target_timestamp"] < hours[-1]
    assert scored["1"][2] == int((last & (pairs["lead_hours"] == 1)).sum())
    # two more meters: "m" is the least recently asked, dropped; it starts again from the training calibration
    for meter in ("a", "b"):
        online.serve([meter], [hours[-1]], np.array([[np.nan]]), raw[:HORIZON])
    _, shift, rolling = online.serve(["m"], [hours[-1] + timedelta(hours=1)], np.array([[np.nan]]), raw[:HORIZON])
    assert not rolling.any() and (shift == 0.3).all()
