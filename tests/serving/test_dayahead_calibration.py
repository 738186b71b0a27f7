"""Issue 22's must-show: the band served is the band ``evaluate`` measures.

Nine days of the shared file's held-out February are replayed through the running predictor + transformer as
the loop does it: each hour's readings are pushed to Feast's online store, and the transformer is asked for
the meter's next 24 hours. The transformer calibrates the predictor's raw quantiles on the meter's own
scores (``components/calibration.py``), learning the actuals from the next online rows; ``evaluate``'s
``score_hourly`` scores the same hours from the same readings offline. Every (origin, lead) band evaluate
scores is the band served at that origin (float32 precision), rolling once a day of scores exists, training
before and flagged; the served bands' coverage and pinball metrics are evaluate's on the pairs scored so far.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import predictor_and_transformer
from smart_energy.components.calibration import BUCKET_MIN_PAIRS, LEAD_BUCKETS, calibrate, pinball_rows
from smart_energy.components.dayahead import DAYAHEAD_FEATURES, load_dayahead, raw_quantiles, score_hourly
from smart_energy.components.feast_store import copy_feature_repo, open_feature_store, publish, push
from smart_energy.components.ingest import load_hourly
from smart_energy.components.settings import Settings

pytestmark = pytest.mark.slow

START = pd.Timestamp("2007-02-10 00:00", tz="UTC")  # inside the fixture model's 4 held-out weeks
HOURS = 9 * 24
TAIL_HOURS = 24 * 7 * 5 + 2  # what the loop pushes from (smart_energy.loop.TAIL_HOURS)
METER = "household-1"
# the first origin of the replay at which every lead bucket holds its minimum of scores: at origin k, bucket
# (lo, hi) has sum over its leads L of (k - L + 1) scores with a known target
FIRST_ROLLING = max(next(k for k in range(HOURS) if sum(max(0, k - lead + 1) for lead in range(lo, hi + 1)) >= minimum)
                    for (_, lo, hi), minimum in zip(LEAD_BUCKETS, BUCKET_MIN_PAIRS))


@pytest.fixture(scope="module")
def replay(tmp_path_factory, shared_data, dayahead_model):
    root = tmp_path_factory.mktemp("dayahead-calibration")
    settings = Settings(feature_repo=copy_feature_repo(root / "feature_repo"), artifact_uri=(root / "a").as_uri())
    shutil.copytree(dayahead_model["model_dir"], root / "model")
    hourly = load_hourly(shared_data)
    history, data = hourly[hourly["timestamp"] < START], hourly[(hourly["timestamp"] >= START) & (
        hourly["timestamp"] < START + pd.Timedelta(hours=HOURS))]
    assert len(data) == HOURS and data["is_complete"].all()  # the slice has no hole: every hour is asked
    store = open_feature_store(settings)
    publish(history, store, settings)
    with predictor_and_transformer(root, root / "model", settings.as_env()) as (predictor, transformer):
        url = f"{transformer}/v1/models/energy-forecaster:predict"
        timeline = pd.concat([history, data], ignore_index=True)
        served = {}
        with requests.Session() as http:
            for k in range(HOURS):  # the readings before origin START + k h are known: push, then ask
                known = timeline.iloc[max(0, len(history) + k - TAIL_HOURS):len(history) + k]
                latest = push(store, known, offline=False)
                origin = START + pd.Timedelta(hours=k)
                assert latest["event_timestamp"].iloc[0] == origin
                answer = http.post(url, json={"instances": [{"meter_id": METER}]}, timeout=30)
                assert answer.status_code == 200, answer.text
                (forecast,) = answer.json()["forecasts"]
                served[origin] = forecast
            v2 = http.post(f"{transformer}/v2/models/energy-forecaster/infer", json={
                "inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": [METER]}]}, timeout=30)
            metrics = http.get(f"{transformer}/metrics", timeout=30).text
        model_, metadata = load_dayahead(root / "model")
        _, pairs, forecast = score_hourly(model_, metadata, data, history, settings)
        yield {"served": served, "pairs": pairs, "forecast": forecast, "v2": v2, "metrics": metrics,
               "predictor": predictor, "model": model_, "metadata": metadata}


def test_the_served_band_is_evaluates_band_at_every_origin(replay):
    served, pairs, forecast = replay["served"], replay["pairs"], replay["forecast"]
    got = np.array([[served[o]["next_24h"][lead - 1][q] for q in ("p10_kw", "p50_kw", "p90_kw")]
                    for o, lead in zip(pairs["event_timestamp"], pairs["lead_hours"])])
    assert pairs["event_timestamp"].nunique() == HOURS and len(pairs) > 200 * 24
    np.testing.assert_allclose(got, forecast, rtol=2e-6, atol=2e-6)  # FP32 across the wire
    # rolling once every lead bucket has a day of origins' scores (leads 13-24: from the 42nd origin), training
    # before
    flags = [served[START + pd.Timedelta(hours=k)]["calibration"] for k in range(HOURS)]
    first_rolling = flags.index("rolling")
    assert first_rolling == FIRST_ROLLING == 42
    assert set(flags[:first_rolling]) == {"training"} and set(flags[first_rolling:]) == {"rolling"}
    shifts = [served[START + pd.Timedelta(hours=k)]["calibration_shift_kw"] for k in range(HOURS)]
    assert list(shifts[0]) == [name for name, _, _ in LEAD_BUCKETS]
    assert shifts[0]["13-24"] == shifts[0]["1"] == pytest.approx(replay["metadata"]["conformal_kw"])
    assert shifts[30]["1"] != shifts[30]["13-24"] == shifts[0]["13-24"]  # lead 1 rolls first
    for name, _, _ in LEAD_BUCKETS:  # the shifts move with the meter's week
        assert len({round(s[name], 6) for s in shifts[first_rolling:]}) > 20, name


def test_v2_carries_the_calibration_and_the_same_band(replay):
    body = replay["v2"].json()
    assert replay["v2"].status_code == 200, body
    last = replay["served"][START + pd.Timedelta(hours=HOURS - 1)]
    assert body["parameters"]["calibration"] == "rolling"
    assert [float(s) for s in body["parameters"]["calibration_shift_kw"].split(";")] == pytest.approx(
        list(last["calibration_shift_kw"].values()))
    p90 = next(o for o in body["outputs"] if o["name"] == "p90_kw")
    np.testing.assert_allclose(np.ravel(p90["data"]), [r["p90_kw"] for r in last["next_24h"]], rtol=1e-9)


def test_the_served_coverage_and_pinball_metrics_are_evaluates_on_the_pairs_scored(replay):
    pairs, forecast = replay["pairs"], replay["forecast"]
    # the last request revealed the actuals up to the hour before its origin
    scored = (pairs["target_timestamp"] < START + pd.Timedelta(hours=HOURS - 1)).to_numpy()
    actual, band, lead = pairs["target_kw"].to_numpy()[scored], forecast[scored], pairs["lead_hours"].to_numpy()[scored]
    samples = {(s.name, s.labels["lead_bucket"]): s.value for family in text_string_to_metric_families(
        replay["metrics"]) for s in family.samples if s.name.startswith("se_dayahead_")
        and s.labels.get("model_version") == replay["metadata"]["version"] and "lead_bucket" in s.labels}
    for name, lo, hi in LEAD_BUCKETS:
        rows = (lead >= lo) & (lead <= hi)
        assert samples[("se_dayahead_scored_pairs", name)] == rows.sum()
        covered = np.mean((band[rows, 0] <= actual[rows]) & (actual[rows] <= band[rows, 2]))
        assert samples[("se_dayahead_coverage", name)] == pytest.approx(covered, abs=1e-9)
        assert samples[("se_dayahead_pinball_kw", name)] == pytest.approx(
            pinball_rows(actual[rows], band[rows]).mean(), rel=1e-5)
    counted = {s.labels["calibration"]: s.value for family in text_string_to_metric_families(replay["metrics"])
               for s in family.samples if s.name == "se_dayahead_bands_total"}
    assert counted == {"training": FIRST_ROLLING, "rolling": HOURS - FIRST_ROLLING + 1}  # + the V2 request


def test_a_direct_predictor_call_answers_the_training_calibration_flagged(replay):
    origin = START + pd.Timedelta(hours=HOURS - 1)
    pairs = replay["pairs"]
    rows = pairs[pairs["event_timestamp"] == pairs["event_timestamp"].max()]
    matrix = rows[DAYAHEAD_FEATURES].to_numpy(dtype=np.float64)
    answer = requests.post(f"{replay['predictor']}/v1/models/energy-forecaster:predict", json={
        "instances": [[None if np.isnan(v) else float(v) for v in row] for row in matrix]}, timeout=10).json()
    assert answer["calibration"] == "training"
    assert answer["calibration_shift_kw"] == pytest.approx(replay["metadata"]["conformal_kw"])
    expected = calibrate(raw_quantiles(replay["model"], rows.astype({f: "float32" for f in DAYAHEAD_FEATURES})),
                         replay["metadata"]["conformal_kw"])
    np.testing.assert_allclose([[p["p10_kw"], p["p50_kw"], p["p90_kw"]] for p in answer["predictions"]], expected,
                               rtol=1e-5, atol=1e-5)
    assert replay["served"][origin]["calibration"] == "rolling"
