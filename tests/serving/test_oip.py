"""Open Inference Protocol conformance: third-party clients (tritonclient, JSON and binary), answers checked
against the OIP OpenAPI document (tests/serving/oip/rest_predict_v2.yaml, from kserve/kserve), errors as
``{"error": ...}`` on every route, and the versioned routes for the version the metadata lists."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests
import yaml

from smart_energy.components.features import FEATURES

pytestmark = [pytest.mark.servers, pytest.mark.slow]
NAME = "energy-forecaster"
METER = "household-1"
SPEC = Path(__file__).parent / "oip" / "rest_predict_v2.yaml"
ENTITY = {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": [METER]}]}


@functools.cache
def _components() -> dict:
    return yaml.safe_load(SPEC.read_text())["components"]


def check_oip(body: dict, schema: str) -> None:
    """``body`` is valid against the OIP document's ``components/schemas/<schema>``."""
    jsonschema.validate(body, {"$ref": f"#/components/schemas/{schema}", "components": _components()},
                        cls=jsonschema.Draft4Validator)


def test_the_spec_check_can_fail():
    with pytest.raises(jsonschema.ValidationError):
        check_oip({"model_name": NAME, "outputs": [], "parameters": None}, "inference_response")
    with pytest.raises(jsonschema.ValidationError):
        check_oip({"error": {"detail": "Not Found"}}, "inference_error_response")


def feature_tensors(row) -> list[dict]:
    return [{"name": f, "datatype": "FP32", "shape": [1], "data": [float(v)]} for f, v in zip(FEATURES, row)]


@pytest.fixture(scope="module")
def row(feature_rows):
    return feature_rows[FEATURES].dropna().iloc[-1].to_numpy(dtype=np.float64)


def _request(which: str, row) -> dict:
    return ENTITY if which == "url" else {"inputs": feature_tensors(row)}


@pytest.mark.parametrize("which", ["url", "predictor_url"])
def test_v2_answers_follow_the_spec_with_no_content_type(served, which, row):
    base = getattr(served, which)
    # the body as `curl -d` (form content type) and tritonclient's JSON mode (none) send it: V2 bodies are JSON
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "application/json"}):
        resp = requests.post(f"{base}/v2/models/{NAME}/infer", data=json.dumps(_request(which, row)),
                             headers=headers, timeout=10)
        assert resp.status_code == 200, (headers, resp.text)
        assert resp.headers["content-type"] == "application/json"
        body = resp.json()
        check_oip(body, "inference_response")
        assert body["model_version"] == served.metadata["version"]
        assert "parameters" not in body or body["parameters"]
    check_oip(requests.get(f"{base}/v2/models/{NAME}", timeout=5).json(), "metadata_model_response")
    check_oip(requests.get(f"{base}/v2", timeout=5).json(), "metadata_server_response")


@pytest.mark.parametrize("which", ["url", "predictor_url"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_json_and_binary(served, which, binary, row):
    import tritonclient.http as triton

    base = getattr(served, which)
    client = triton.InferenceServerClient(url=base.removeprefix("http://"), network_timeout=10.0)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
        metadata = client.get_model_metadata(NAME)
        assert metadata["versions"] == [served.metadata["version"]]
        if which == "url":
            tensor = triton.InferInput("meter_id", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([METER.encode()], dtype=np.object_), binary_data=binary)
            inputs, output = [tensor], "forecast_kw"
        else:
            inputs, output = [], "output-0"
            for name, value in zip(FEATURES, row):
                tensor = triton.InferInput(name, [1], "FP32")
                tensor.set_data_from_numpy(np.array([value], dtype=np.float32), binary_data=binary)
                inputs.append(tensor)
        result = client.infer(NAME, inputs, outputs=[triton.InferRequestedOutput(output, binary_data=binary)],
                              request_id="req-7")
        forecast = result.as_numpy(output)
        assert forecast.shape == (1,) and 0 < float(forecast[0]) < 25
        answer = result.get_response()
        if not binary:  # the binary tensor extension moves "data" out of the JSON the spec describes
            check_oip(answer, "inference_response")
        assert answer["id"] == "req-7" and answer["model_version"] == served.metadata["version"]
        assert ("binary_data_size" in answer["outputs"][0].get("parameters", {})) == binary
        assert ("data" in answer["outputs"][0]) != binary
        # the same model through the version the metadata lists
        versioned = client.infer(NAME, inputs, model_version=served.metadata["version"])
        assert np.allclose(versioned.as_numpy(output), forecast)
        with pytest.raises(triton.InferenceServerException, match="no version"):
            client.infer(NAME, inputs, model_version="v0")
        with pytest.raises(triton.InferenceServerException, match="unknown output"):
            client.infer(NAME, inputs, outputs=[triton.InferRequestedOutput("nope")])
    finally:
        client.close()


@pytest.mark.parametrize("which", ["url", "predictor_url"])
def test_errors_are_error_objects_on_every_route(served, which, row):
    base = getattr(served, which)
    version = served.metadata["version"]
    cases = [
        ("get", "/no/such/route", None, {}, 404),
        ("delete", f"/v2/models/{NAME}/infer", None, {}, 405),
        ("get", f"/v2/models/{NAME}/infer", None, {}, 405),
        ("get", "/v2/models/other-model", None, {}, 404),
        ("post", "/v2/models/other-model/infer", _request(which, row), {}, 404),
        ("post", f"/v2/models/{NAME}/versions/v0/infer", _request(which, row), {}, 404),
        ("get", f"/v2/models/{NAME}/versions/v0", None, {}, 404),
        ("post", f"/v2/models/{NAME}/infer", {"inputs": [{"name": "x", "shape": [1]}]}, {}, 400),
        ("post", f"/v2/models/{NAME}/infer", _request(which, row), {"Inference-Header-Content-Length": "xyz"}, 400),
        ("post", f"/v2/models/{NAME}/infer", _request(which, row), {"Inference-Header-Content-Length": "-5"}, 400),
        ("post", f"/v2/models/{NAME}/infer", _request(which, row), {"Inference-Header-Content-Length": "99999"}, 400),
        ("post", f"/v2/repository/models/{NAME}/unload", None, {}, 403),
    ]
    for method, path, body, headers, status in cases:
        resp = requests.request(method, base + path, data=None if body is None else json.dumps(body),
                                headers=headers, timeout=10)
        assert resp.status_code == status, (method, path, resp.text)
        answer = resp.json()
        assert isinstance(answer.get("error"), str) and answer["error"] and "detail" not in answer, (path, answer)
        check_oip(answer, "inference_error_response")
    assert requests.get(f"{base}/v2/models/{NAME}/versions/{version}", timeout=5).json()["name"] == NAME
    assert requests.get(f"{base}/v2/models/{NAME}/versions/{version}/ready", timeout=5).status_code == 200
    resp = requests.post(f"{base}/v2/models/{NAME}/versions/{version}/infer", json=_request(which, row), timeout=10)
    assert resp.status_code == 200 and resp.json()["model_version"] == version
