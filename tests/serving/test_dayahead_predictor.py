"""The predictor serves a day-ahead model: one row per (origin, lead) in, ``p10_kw``/``p50_kw``/``p90_kw`` out,
the numbers of the in-process calibrated booster, never crossing."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from helpers import PYTHON, free_port, start, stop, wait_http
from smart_energy.components.dayahead import DAYAHEAD_FEATURES, calibrate, expand_leads, raw_quantiles, train_dayahead
from smart_energy.components.features import build_feature_frame
from smart_energy.components.ingest import load_hourly
from smart_energy.components.registry import load_booster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dayahead_predictor(trained, tmp_path_factory, shared_data):
    settings, _, _ = trained
    root = tmp_path_factory.mktemp("dayahead-serving")
    train_dayahead(shared_data, root / "model", settings, holdout_weeks=4)
    port = free_port()
    proc = start([PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir", str(root / "model"), "--http_port",
                  str(port)], root / "predictor.log", env=settings.as_env())
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=90, proc=proc)
        yield f"http://127.0.0.1:{port}", root / "model"
    finally:
        stop(proc)


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
    booster, meta = load_booster(model_dir)
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
