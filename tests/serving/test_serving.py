"""Predictor + transformer started as processes on 127.0.0.1, called over HTTP with V1 and V2."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import requests

from smart_energy.components.features import DRIFT_FEATURES, FEATURES
from conftest import booster_predict

pytestmark = [pytest.mark.servers, pytest.mark.slow]
NAME = "energy-forecaster"
METER = "household-1"


def v1(url, body, **kw):
    return requests.post(f"{url}/v1/models/{NAME}:predict", json=body, timeout=10, **kw)


def v2(url, body, **kw):
    return requests.post(f"{url}/v2/models/{NAME}/infer", json=body, timeout=10, **kw)


def v2_entity(meter_ids):
    return {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [len(meter_ids)], "data": meter_ids}]}


def rows_matrix(feature_rows, n=5):
    # recent rows, one with missing lags (XGBoost's missing values) from the first week
    picked = feature_rows.iloc[[5, *range(len(feature_rows) - n + 1, len(feature_rows))]]
    return picked[FEATURES].to_numpy(dtype=np.float64)


def as_json_rows(matrix):
    return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]


def test_v1_entity_request_gives_forecast_version_and_drift(served, feature_rows):
    resp = v1(served.url, {"instances": [{"meter_id": METER}]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == served.metadata["version"]
    assert body["meter_ids"] == [METER]
    # one meter's online row is one (meter, hour) row: far from the rows a K-S test needs
    assert body["drift"]["status"] == "warming_up" and body["drift"]["window_rows"] < 24
    # the online row is the newest materialised feature row of the meter
    latest = feature_rows[feature_rows["meter_id"] == METER].iloc[[-1]][FEATURES].to_numpy(dtype=np.float64)
    assert body["predictions"] == pytest.approx(booster_predict(served.model_dir, latest), abs=1e-6)


def test_v2_entity_request_matches_v1(served):
    first = v1(served.url, {"instances": [{"meter_id": METER}]}).json()["predictions"]
    resp = v2(served.url, v2_entity([METER]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == served.metadata["version"]
    assert body["outputs"][0]["name"] == "forecast_kw"
    assert body["outputs"][0]["data"] == pytest.approx(first, abs=1e-9)
    assert body["parameters"]["drift_status"] == "warming_up"  # the same (meter, hour) row again: counted once


def test_entity_request_with_the_online_hour_is_accepted(served, feature_rows):
    hour = feature_rows[feature_rows["meter_id"] == METER]["event_timestamp"].max()
    resp = v1(served.url, {"instances": [{"meter_id": METER, "timestamp": hour.isoformat()}]})
    assert resp.status_code == 200, resp.text


def test_feature_rows_through_transformer_match_direct_xgboost(served, feature_rows):
    matrix = rows_matrix(feature_rows)
    assert np.isnan(matrix).any()
    expected = booster_predict(served.model_dir, matrix)
    listed = v1(served.url, {"instances": as_json_rows(matrix)})
    named = v1(served.url, {"instances": [dict(zip(FEATURES, row)) for row in as_json_rows(matrix)]})
    tensor = v2(served.url, {"inputs": [{"name": "features", "datatype": "FP64", "shape": list(matrix.shape),
                                         "data": [v for row in as_json_rows(matrix) for v in row]}]})
    for resp in (listed, named):
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == pytest.approx(expected, abs=1e-6)
    assert tensor.status_code == 200, tensor.text
    assert tensor.json()["outputs"][0]["data"] == pytest.approx(expected, abs=1e-6)


def test_local_predictor_agrees_with_direct_xgboost_call(served, feature_rows):
    matrix = rows_matrix(feature_rows, n=20)
    expected = np.asarray(booster_predict(served.model_dir, matrix), dtype=np.float32)
    resp = v1(served.predictor_url, {"instances": as_json_rows(matrix)})
    assert resp.status_code == 200, resp.text
    # bit-for-bit: the same float32 the booster returns
    assert np.array_equal(np.asarray(resp.json()["predictions"], dtype=np.float32), expected)
    columns = as_json_rows(matrix.T)
    per_feature = {"parameters": {"content_type": "pd"},
                   "inputs": [{"name": f, "datatype": "FP32", "shape": [len(matrix)], "data": col}
                              for f, col in zip(FEATURES, columns)]}
    resp = v2(served.predictor_url, per_feature)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == served.metadata["version"]
    assert np.array_equal(np.asarray(body["outputs"][0]["data"], dtype=np.float32), expected)


@pytest.mark.parametrize("which", ["url", "predictor_url"])
def test_v2_metadata_and_health(served, which):
    base = getattr(served, which)
    meta = requests.get(f"{base}/v2/models/{NAME}", timeout=5).json()
    assert meta["name"] == NAME
    assert meta["versions"] == [served.metadata["version"]]
    names = [t["name"] for t in meta["inputs"] if t["name"] not in ("meter_id", "timestamp")]
    assert names == served.metadata["features"] == FEATURES
    assert requests.get(f"{base}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{base}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{base}/v2/models/{NAME}/ready", timeout=5).json()["ready"] is True
    assert requests.get(f"{base}/v1/models/{NAME}", timeout=5).json()["ready"] is True


def test_metrics_on_the_http_port(served, feature_rows):
    window_rows = feature_rows[FEATURES].dropna().tail(40).to_numpy()
    assert v1(served.url, {"instances": as_json_rows(window_rows)}).status_code == 200
    assert v1(served.url, {"instances": [{"meter_id": METER}]}).status_code == 200
    assert v1(served.url, {"instances": [{"meter_id": "no-such-meter"}]}).status_code == 404
    version = served.metadata["version"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the drift thread checks the window about once a second
        text = requests.get(f"{served.url}/metrics", timeout=5).text
        if "se_drift_p_value{" in text:
            break
        time.sleep(0.5)
    for needle in (f'se_requests_total{{code="200",model_version="{version}",protocol="v1"}}',
                   f'se_request_duration_seconds_bucket{{le="0.005",model_version="{version}"}}',
                   f'se_prediction_kw_count{{model_version="{version}"}}',
                   'se_drift_p_value{feature="usage_lag_1h"}', 'se_drift_detected{feature="reactive_lag_1h"}',
                   "se_feast_lookup_duration_seconds_count", 'se_errors_total{reason="unknown_meter"}',
                   "request_predict_seconds_count"):  # the last is KServe's own
        assert needle in text, needle
    drift = v1(served.url, {"instances": [{"meter_id": METER}]}).json()["drift"]
    # checked (not warming up), and the verdict matches the features it names; whether 40 consecutive hours
    # drift from the training window is test_drift_window's business (exact, with known shifts)
    assert drift["window_rows"] >= 24 and drift["status"] in ("drift", "no_drift")
    assert set(drift["drifted_features"]) <= set(served.metadata["drift"]["features"])
    assert drift["status"] == ("drift" if len(drift["drifted_features"]) >= len(DRIFT_FEATURES) / 2 else "no_drift")
    assert "se_drift_p_value{feature=\"hour_of_day\"}" not in text
    assert "request_predict_seconds_count" in requests.get(f"{served.predictor_url}/metrics", timeout=5).text
