"""The drift window holds one row per (meter, feature hour): repeats cannot fill it; a known shift is drift
(and ``se_drift_detected`` says 1), rows from the training distribution are not."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client import REGISTRY

from smart_energy.components.features import DRIFT_FEATURES, FEATURES
from smart_energy.components.registry import load_drift_detector
from smart_energy.serving.monitors import DriftMonitor
from smart_energy.serving.transformer.model import publish_drift

USAGE = [f for f in FEATURES if f.startswith("usage_") and not f.startswith("usage_std")]
T0 = datetime(2007, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def detector_and_rows(trained):
    settings, model_dir, metadata = trained
    frame = pd.read_parquet(settings.feature_repo / "data" / "hourly_features.parquet")
    window = metadata["training_window"]
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    training = frame[(stamps >= pd.Timestamp(window["start"])) & (stamps <= pd.Timestamp(window["end"]))]
    rows = training[FEATURES].dropna().to_numpy(dtype=np.float64)
    assert len(rows) > 300
    assert metadata["drift"]["features"] == DRIFT_FEATURES
    return load_drift_detector(model_dir), rows


def _monitor(detector, window=168) -> DriftMonitor:
    return DriftMonitor(detector, FEATURES, window, on_result=publish_drift, watched=DRIFT_FEATURES, share=0.5)


def _keys(n: int) -> list:
    return [("household-1", T0 + timedelta(hours=i)) for i in range(n)]


def _gauge(feature: str) -> float | None:
    return REGISTRY.get_sample_value("se_drift_detected", {"feature": feature})


def test_rows_shifted_by_a_known_amount_are_drift(detector_and_rows):
    detector, rows = detector_and_rows
    sample = rows[np.random.default_rng(7).choice(len(rows), 168, replace=False)].copy()
    sample[:, [FEATURES.index(f) for f in USAGE]] += 1.5  # every household draws 1.5 kW more, all day
    monitor = _monitor(detector)
    monitor.observe(sample, keys=_keys(len(sample)))
    status = monitor.check()
    assert status["status"] == "drift" and status["window_rows"] == 168
    assert "usage_lag_1h" in status["drifted_features"]
    assert _gauge("usage_lag_1h") == 1.0
    assert _gauge("hour_of_day") is None  # the calendar is not watched: it drifts because time passes


def test_one_drifted_feature_is_not_data_drift(detector_and_rows):
    detector, rows = detector_and_rows
    sample = rows[np.random.default_rng(7).choice(len(rows), 168, replace=False)].copy()
    sample[:, FEATURES.index("reactive_lag_1h")] += 1.0  # one watched feature moves, the usage does not
    monitor = _monitor(detector)
    monitor.observe(sample, keys=_keys(len(sample)))
    status = monitor.check()
    assert status["drifted_features"] == ["reactive_lag_1h"] and status["status"] == "no_drift"
    assert _gauge("reactive_lag_1h") == 1.0


def test_rows_from_the_training_distribution_are_not_drift(detector_and_rows):
    detector, rows = detector_and_rows
    sample = rows[np.random.default_rng(11).choice(len(rows), 168, replace=False)]
    monitor = _monitor(detector)
    monitor.observe(sample, keys=_keys(len(sample)))
    status = monitor.check()
    assert status["status"] == "no_drift" and status["drifted_features"] == []
    assert _gauge("usage_lag_1h") == 0.0


def test_repeated_rows_count_once(detector_and_rows):
    detector, rows = detector_and_rows
    monitor = _monitor(detector, window=48)
    one = rows[:1] + 3.0  # far out of distribution: 48 copies of it would be drift
    for _ in range(60):
        monitor.observe(one, keys=[("household-1", T0)])
    for _ in range(60):
        monitor.observe(one)  # feature rows without a meter: keyed by their values
    assert monitor.check()["window_rows"] == 2
    assert monitor.check()["status"] == "warming_up"


def test_the_window_keeps_the_newest_distinct_rows(detector_and_rows):
    detector, rows = detector_and_rows
    monitor = _monitor(detector, window=48)
    monitor.observe(rows[:100], keys=_keys(100))
    assert monitor.check()["window_rows"] == 48


@pytest.mark.servers
@pytest.mark.slow
def test_a_dashboard_polling_one_meter_does_not_fill_the_window(served):
    body = {"instances": [{"meter_id": "household-1"}]}
    url = f"{served.url}/v1/models/energy-forecaster:predict"
    requests.post(url, json=body, timeout=10)
    time.sleep(6)  # one drift check (every 5 s) sees that row
    before = requests.post(url, json=body, timeout=10).json()["drift"]["window_rows"]
    for _ in range(30):
        assert requests.post(url, json=body, timeout=10).status_code == 200
    time.sleep(6)
    after = requests.post(url, json=body, timeout=10).json()["drift"]
    assert after["window_rows"] == before, after
