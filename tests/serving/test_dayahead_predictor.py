"""A day-ahead model served: the predictor takes one row per (origin, lead) and answers ``p10_kw``/``p50_kw``/
``p90_kw`` (the in-process calibrated booster's numbers, never crossing); the transformer turns a meter's Feast
row into those 24 rows and answers the next 24 hours with prices, load windows and the model's savings."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import requests

from helpers import predictor_and_transformer
from smart_energy.components.dayahead import DAYAHEAD_FEATURES, calibrate, expand_leads, load_dayahead, raw_quantiles
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.features import build_feature_frame
from smart_energy.components.settings import Settings
from smart_energy.components.ingest import load_hourly
from smart_energy.components.registry import read_metadata
from smart_energy.components.tariffs import get_tariff

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dayahead_servers(tmp_path_factory, shared_data, dayahead_model):
    from smart_energy.components.feast_store import open_feature_store, publish

    root = tmp_path_factory.mktemp("dayahead-serving")
    settings = Settings(feature_repo=copy_feature_repo(root / "feature_repo"), artifact_uri=(root / "a").as_uri())
    # the session's day-ahead model (trained with --holdout-weeks 4 on the shared file), and the features its
    # training published to Feast, published here too
    shutil.copytree(dayahead_model["model_dir"], root / "model")
    publish(load_hourly(shared_data), open_feature_store(settings), settings)
    with predictor_and_transformer(root, root / "model", settings.as_env()) as (predictor, transformer):
        yield predictor, root / "model", transformer


@pytest.fixture(scope="module")
def dayahead_predictor(dayahead_servers):
    return dayahead_servers[:2]


def test_v2_answers_one_output_per_quantile_with_the_boosters_numbers(dayahead_predictor, shared_data):
    url, model_dir = dayahead_predictor
    rows = build_feature_frame(load_hourly(shared_data)).tail(1)
    pairs = expand_leads(rows)
    matrix = pairs[DAYAHEAD_FEATURES].to_numpy(dtype=np.float64)
    body = {"inputs": [{"name": "rows", "datatype": "FP32", "shape": list(matrix.shape),
                        "data": [None if np.isnan(v) else float(v) for v in matrix.ravel()]}]}
    answer = requests.post(f"{url}/v2/models/energy-forecaster/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: np.asarray(o["data"]) for o in answer.json()["outputs"]}
    assert list(outputs) == ["p10_kw", "p50_kw", "p90_kw"] and all(len(v) == 24 for v in outputs.values())
    booster, meta = load_dayahead(model_dir)
    expected = calibrate(raw_quantiles(booster, pairs.astype({f: "float32" for f in DAYAHEAD_FEATURES})),
                         meta["conformal_kw"])
    for i, name in enumerate(outputs):
        np.testing.assert_allclose(outputs[name], expected[:, i], rtol=1e-5, atol=1e-5)
    assert (outputs["p10_kw"] <= outputs["p50_kw"]).all() and (outputs["p50_kw"] <= outputs["p90_kw"]).all()
    meta_route = requests.get(f"{url}/v2/models/energy-forecaster", timeout=10).json()
    assert [o["name"] for o in meta_route["outputs"]] == ["p10_kw", "p50_kw", "p90_kw"]


def test_v1_answers_named_quantiles_and_refuses_an_unknown_output(dayahead_predictor, shared_data):
    url, _ = dayahead_predictor
    pairs = expand_leads(build_feature_frame(load_hourly(shared_data)).tail(1))
    instances = [[None if np.isnan(v) else float(v) for v in row] for row in pairs[DAYAHEAD_FEATURES].to_numpy()]
    answer = requests.post(f"{url}/v1/models/energy-forecaster:predict", json={"instances": instances}, timeout=10)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 24 and set(predictions[0]) == {"p10_kw", "p50_kw", "p90_kw"}
    body = {"inputs": [{"name": "rows", "datatype": "FP32", "shape": [1, len(DAYAHEAD_FEATURES)],
                        "data": instances[0]}], "outputs": [{"name": "output-0"}]}
    refused = requests.post(f"{url}/v2/models/energy-forecaster/infer", json=body, timeout=10)
    assert refused.status_code == 400 and "p10_kw" in refused.json()["error"]


def test_the_transformer_answers_a_meter_with_its_next_24_hours_and_advice(dayahead_servers, shared_data):
    predictor_url, model_dir, url = dayahead_servers
    answer = requests.post(f"{url}/v1/models/energy-forecaster:predict",
                           json={"instances": [{"meter_id": "household-1"}]}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (forecast,) = body["forecasts"]
    rows = forecast["next_24h"]
    assert forecast["meter_id"] == "household-1" and forecast["tariff"] == "hp-hc" and len(rows) == 24
    assert rows[0]["timestamp"].startswith("2007-03-01T00:00") and rows[-1]["timestamp"].startswith("2007-03-01T23")
    # the same numbers as the predictor on the rows built from the data (Feast's online row is that row)
    pairs = expand_leads(build_feature_frame(load_hourly(shared_data)).tail(1))
    booster, meta = load_dayahead(model_dir)
    expected = calibrate(raw_quantiles(booster, pairs.astype({f: "float32" for f in DAYAHEAD_FEATURES})),
                         meta["conformal_kw"])
    np.testing.assert_allclose([[r["p10_kw"], r["p50_kw"], r["p90_kw"]] for r in rows], expected, rtol=1e-5, atol=1e-5)
    prices = get_tariff("hp-hc").prices
    assert [r["price_eur_per_kwh"] for r in rows] == [prices["offpeak"] if h >= 22 or h < 6 else prices["peak"]
                                                      for h in range(24)]
    assert len(forecast["peak_hours"]) == 16
    windows = {load["name"]: load["recommended_window"] for load in forecast["loads"]}
    assert windows["kitchen"] is None and windows["laundry"] and windows["water_heater_ac"]
    assert forecast["savings"] == read_metadata(model_dir)["advice"]["household-1"]["savings"]["hp-hc"]
    assert body["model_version"] == meta["version"]
    # V2: one output per quantile, [meters, 24]
    v2 = requests.post(f"{url}/v2/models/energy-forecaster/infer", json={"inputs": [
        {"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": ["household-1"]}]}, timeout=10)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert list(outputs) == ["p10_kw", "p50_kw", "p90_kw"] and outputs["p50_kw"]["shape"] == [1, 24]
    np.testing.assert_allclose(np.ravel(outputs["p50_kw"]["data"]), expected[:, 1], rtol=1e-5, atol=1e-5)


def test_the_transformer_refuses_feature_rows_for_a_day_ahead_model(dayahead_servers):
    _, _, url = dayahead_servers
    answer = requests.post(f"{url}/v1/models/energy-forecaster:predict", json={"instances": [[0.5] * 23]}, timeout=10)
    assert answer.status_code == 400 and answer.json()["reason"] == "entity_required"


def test_the_transformer_answers_a_stale_meter_with_its_profile_for_24_hours(dayahead_servers, shared_data):
    """A meter silent for 63 h: its next 24 hours are its weekly profile, a point forecast (P10 = P50 = P90), flagged."""
    from smart_energy.components.feast_store import open_feature_store, push
    from test_stale_meters import profile_kw, silent_after

    _, model_dir, url = dayahead_servers
    settings = Settings(feature_repo=model_dir.parent / "feature_repo", artifact_uri=(model_dir.parent / "a").as_uri())
    silent = silent_after(load_hourly(shared_data), "silent-63h", 63)
    push(open_feature_store(settings), silent, offline=False)
    answer = requests.post(f"{url}/v1/models/energy-forecaster:predict",
                           json={"instances": [{"meter_id": "silent-63h"}, {"meter_id": "household-1"}]}, timeout=10)
    assert answer.status_code == 200, answer.text
    stale, healthy = answer.json()["forecasts"]
    assert stale["fallback"] == "profile" and stale["stale_hours"] == 63 and stale["fallback_reason"] == "meter_silent"
    assert "fallback" not in healthy
    rows = stale["next_24h"]
    assert rows[0]["timestamp"].startswith("2007-03-03T15:00")
    expected = [profile_kw(silent, pd.Timestamp(r["timestamp"])) for r in rows]
    for name in ("p10_kw", "p50_kw", "p90_kw"):
        assert [r[name] for r in rows] == pytest.approx(expected, rel=1e-9)
    v2 = requests.post(f"{url}/v2/models/energy-forecaster/infer", json={"inputs": [
        {"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": ["silent-63h"]}]}, timeout=10)
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["parameters"]["fallback"] == "profile" and body["parameters"]["stale_hours"] == "63"
    p50 = next(o for o in body["outputs"] if o["name"] == "p50_kw")
    assert np.ravel(p50["data"]) == pytest.approx(expected, rel=1e-9)
