"""``Inference-Header-Content-Length`` that is not the JSON part's length gets 400 naming the header, through the
real servers on 127.0.0.1: in JSON mode (``Content-Type: application/json``, which KServe parses before our code
sees the header, and answered 200) and in binary mode (no or a binary content type)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from smart_energy.components.features import FEATURES

pytestmark = [pytest.mark.servers, pytest.mark.slow]
NAME = "energy-forecaster"
BAD = ["xyz", "-1", "1.5", "0", "", "²", "99999"]
MODES = {"json": {"content-type": "application/json"}, "binary": {},
         "octet-stream": {"content-type": "application/octet-stream"}}


def body_for(which: str, feature_rows) -> bytes:
    if which == "url":  # the transformer: one meter
        request = {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": ["household-1"]}]}
    else:
        row = feature_rows[FEATURES].dropna().iloc[-1].to_numpy(dtype=np.float64)
        request = {"inputs": [{"name": f, "datatype": "FP32", "shape": [1], "data": [float(v)]}
                              for f, v in zip(FEATURES, row)]}
    return json.dumps(request).encode()


@pytest.mark.parametrize("which", ["url", "predictor_url"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_bad_header_length_is_400_naming_it(served, feature_rows, which, mode):
    base, body = getattr(served, which), body_for(which, feature_rows)
    answers = {value: requests.post(f"{base}/v2/models/{NAME}/infer", data=body, timeout=10,
                                    headers={**MODES[mode], "Inference-Header-Content-Length": value})
               for value in BAD}
    assert {value: resp.status_code for value, resp in answers.items()} == dict.fromkeys(BAD, 400), \
        {value: resp.text[:200] for value, resp in answers.items()}
    for value, resp in answers.items():
        answer = resp.json()
        assert answer["reason"] == "bad_header", answer
        assert answer["error"].startswith(f"inference-header-content-length: {value!r} must be the byte length")
        assert "an integer between 1 and" in answer["error"], answer


@pytest.mark.parametrize("which", ["url", "predictor_url"])
def test_a_header_that_is_the_whole_json_body_is_still_answered(served, feature_rows, which):
    """The control: the same bodies with the header right (the JSON part is the whole body) are answered."""
    base, body = getattr(served, which), body_for(which, feature_rows)
    for mode in MODES:
        resp = requests.post(f"{base}/v2/models/{NAME}/infer", data=body, timeout=10,
                             headers={**MODES[mode], "Inference-Header-Content-Length": str(len(body))})
        assert resp.status_code == 200, (mode, resp.text)
        assert resp.json()["model_version"] == served.metadata["version"]
