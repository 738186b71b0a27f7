"""Forecast error once actuals arrive: the transformer scores its own earlier forecasts (se_forecast_mae_kw)."""

from __future__ import annotations

import math
import re
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import requests

from smart_energy.components.features import FEATURES
from helpers import PYTHON, free_port, start, stop, wait_http
from smart_energy.serving.monitors import ForecastErrorTracker

H0 = datetime(2007, 1, 10, 12, tzinfo=timezone.utc)


def row(lag1: float, lag2: float) -> np.ndarray:
    r = np.full(len(FEATURES), 0.5)
    r[FEATURES.index("usage_lag_1h")], r[FEATURES.index("usage_lag_2h")] = lag1, lag2
    return r


def test_tracker_scores_a_forecast_when_the_next_hour_reveals_its_actual():
    t = ForecastErrorTracker(FEATURES, window=3)
    t.record(["m"], [H0], np.array([row(1.0, 0.8)]), [1.5])
    assert t.mae() == (None, None, 0)
    t.record(["m"], [H0 + timedelta(hours=1)], np.array([row(2.0, 1.0)]), [1.7])  # actual of H0 = 2.0
    assert t.mae() == (pytest.approx(0.5), pytest.approx(1.0), 1)  # |1.5-2.0|; persistence |1.0-2.0|
    t.record(["m"], [H0 + timedelta(hours=3)], np.array([row(3.0, 2.0)]), [2.0])  # H0+2 never forecast: no score
    assert t.mae()[2] == 1
    t.record(["other"], [H0 + timedelta(hours=1)], np.array([row(9.0, 9.0)]), [1.0])  # another meter: no score
    assert t.mae()[2] == 1


def test_tracker_skips_missing_actuals_and_bounds_memory():
    t = ForecastErrorTracker(FEATURES, window=2, max_pending=3)
    t.record(["m"], [H0], np.array([row(1.0, 1.0)]), [1.0])
    t.record(["m"], [H0 + timedelta(hours=1)], np.array([row(math.nan, 1.0)]), [1.0])
    assert t.mae()[2] == 0
    for i in range(10):
        t.record([f"m{i}"], [H0], np.array([row(1.0, 1.0)]), [1.0])
    assert len(t._pending) <= 3


@pytest.fixture
def private_servers(trained, tmp_path):
    """Predictor + transformer on a private copy of the trained feature repo (this test pushes new hours)."""
    settings, model_dir, _ = trained
    repo = tmp_path / "feature_repo"
    shutil.copytree(settings.feature_repo, repo)
    from dataclasses import replace

    mine = replace(settings, feature_repo=repo)
    from smart_energy.components.feast_store import apply, open_feature_store

    # the copied registry names the session's parquet (an absolute path): point it at the copy's, so that
    # pushing here cannot change what the session's other servers and tests read
    apply(open_feature_store(mine), mine)
    port, predictor_port = free_port(), free_port()
    env = mine.as_env()
    procs = [start([PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir), "--http_port",
                    str(predictor_port)], tmp_path / "p.log", env=env),
             start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir), "--http_port", str(port),
                    "--predictor_host", f"127.0.0.1:{predictor_port}"], tmp_path / "t.log", env=env)]
    try:
        wait_http(f"http://127.0.0.1:{predictor_port}/v2/health/ready", timeout=90, proc=procs[0])
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=90, proc=procs[1])
        yield mine, f"http://127.0.0.1:{port}"
    finally:
        for p in procs:
            stop(p)


def test_transformer_exports_forecast_and_baseline_mae_after_actuals_arrive(private_servers, shared_data):
    from smart_energy.components.feast_store import open_feature_store, push
    from smart_energy.components.ingest import ingest_file

    settings, url = private_servers
    hourly = ingest_file(shared_data).hourly
    online_hour = pd.read_parquet(settings.feature_repo / "data" / "hourly_features.parquet")["event_timestamp"].max()
    body = {"instances": [{"meter_id": "household-1"}]}
    first = requests.post(f"{url}/v1/models/energy-forecaster:predict", json=body, timeout=10).json()
    forecast = first["predictions"][0]
    # the hour forecast ends; its readings (and the next hour's features) are pushed to Feast
    push(open_feature_store(settings), hourly[hourly["timestamp"] <= online_hour])
    second = requests.post(f"{url}/v1/models/energy-forecaster:predict", json=body, timeout=10)
    assert second.status_code == 200, second.text
    actual = hourly.set_index("timestamp").loc[online_hour, "global_active_power_kw"]
    persistence = hourly.set_index("timestamp").loc[online_hour - pd.Timedelta(hours=1), "global_active_power_kw"]
    text = requests.get(f"{url}/metrics", timeout=5).text
    version = first["model_version"]
    got = float(re.search(rf'se_forecast_mae_kw{{model_version="{version}"}} (\S+)', text).group(1))
    base = float(re.search(r'se_baseline_mae_kw{baseline="persistence"} (\S+)', text).group(1))
    assert got == pytest.approx(abs(forecast - actual), rel=1e-6)
    assert base == pytest.approx(abs(persistence - actual), rel=1e-6)
    assert f'se_forecast_scored_hours{{model_version="{version}"}} 1.0' in text
