"""Bad input gets a 4xx naming the problem and one log line; a dead predictor gets a 503 and recovery; fuzzing and a
soak find no 5xx; the README lists the codes the servers answer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from smart_energy.components.features import FEATURES
from conftest import start_predictor
from helpers import stop, wait_http
from smart_energy.serving.logic import MAX_BATCH_ROWS, MAX_BODY_BYTES

pytestmark = [pytest.mark.servers, pytest.mark.slow]
NAME = "energy-forecaster"
ROW = [0.5] * len(FEATURES)
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"


def _ids(n):
    return {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [n], "data": ["household-1"] * n}]}


BAD = [
    # (id, path, raw body, status, words the message must contain)
    # V1 bodies are parsed by KServe itself ("Unrecognized request format: <orjson's reason>")
    ("malformed-json-v1", V1, b'{"instances": [', 400, "request format: unexpected end"),
    ("malformed-json-v2", V2, b'{"inputs": [', 400, "malformed JSON"),
    ("not-an-object", V1, b"[1, 2]", 400, "JSON object"),
    ("missing-instances", V1, b'{"rows": []}', 400, "missing field 'instances'"),
    ("instances-not-list", V1, b'{"instances": 3}', 400, "must be a list"),
    ("empty-batch-v1", V1, b'{"instances": []}', 400, "empty batch"),
    ("empty-batch-v2", V2, json.dumps({"inputs": []}).encode(), 400, "empty"),
    ("oversized-batch-v1", V1, json.dumps({"instances": [{"meter_id": "household-1"}] * (MAX_BATCH_ROWS + 1)}).encode(),
     413, "maximum"),
    ("oversized-batch-v2", V2, json.dumps(_ids(MAX_BATCH_ROWS + 1)).encode(), 413, "maximum"),
    ("unknown-meter", V1, b'{"instances": [{"meter_id": "no-such-meter"}]}', 404, "no online features"),
    ("unknown-meter-v2", V2, json.dumps({"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1],
                                                     "data": ["ghost"]}]}).encode(), 404, "'ghost'"),
    ("stale-hour", V1, b'{"instances": [{"meter_id": "household-1", "timestamp": "2030-01-01T00:00:00Z"}]}', 422,
     "not the requested"),
    ("bad-timestamp", V1, b'{"instances": [{"meter_id": "household-1", "timestamp": "yesterday"}]}', 400,
     "ISO-8601"),
    ("meter-id-wrong-type", V1, b'{"instances": [{"meter_id": 17}]}', 400, "expected a string"),
    ("meter-id-not-bytes", V2, json.dumps({"inputs": [{"name": "meter_id", "datatype": "INT64", "shape": [1],
                                                       "data": [1]}]}).encode(), 400, "BYTES"),
    ("missing-feature", V1, json.dumps({"instances": [dict(zip(FEATURES[1:], ROW))]}).encode(), 400,
     FEATURES[0]),
    ("short-row", V1, json.dumps({"instances": [ROW[:-1]]}).encode(), 400, f"needs {len(FEATURES)} values"),
    ("string-feature", V1, json.dumps({"instances": [["x", *ROW[1:]]]}).encode(), 400, "expected a number"),
    ("bool-feature", V1, json.dumps({"instances": [[True, *ROW[1:]]]}).encode(), 400, "got bool"),
    ("nan-literal", V1, ("{\"instances\": [[NaN, " + ", ".join(["0.5"] * (len(FEATURES) - 1)) + "]]}").encode(), 400,
     "request format"),
    ("inf-number", V1, ("{\"instances\": [[1e999, " + ", ".join(["0.5"] * (len(FEATURES) - 1)) + "]]}").encode(), 400,
     "infinity"),
    ("nan-string-v2", V2, json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, len(FEATURES)],
                                                  "data": ["NaN", *ROW[1:]]}]}).encode(), 400, "expected a number"),
    ("v2-shape-mismatch", V2, json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, len(FEATURES)],
                                                      "data": ROW}]}).encode(), 400, "does not match"),
    ("v2-missing-field", V2, json.dumps({"inputs": [{"name": "x", "shape": [1]}]}).encode(), 400, "datatype"),
    ("v2-not-a-list", V2, b'{"inputs": 7}', 400, "inputs"),
    ("timestamp-overflow", V1,
     b'{"instances": [{"meter_id": "household-1", "timestamp": "9999-12-31T23:59:59-14:00"}]}',
     400, "out of range"),
    ("timestamp-underflow-v2", V2, json.dumps({"inputs": [
        {"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": ["household-1"]},
        {"name": "timestamp", "datatype": "BYTES", "shape": [1], "data": ["0001-01-01T00:00:00+14:00"]}]}).encode(),
     400, "out of range"),
    ("fp32-overflow-v1", V1, json.dumps({"instances": [[1e300, *ROW[1:]]]}).encode(), 400, "FP32"),
    ("fp32-overflow-v2", V2, json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, len(FEATURES)],
                                                     "data": [-4e38, *ROW[1:]]}]}).encode(), 400, "FP32"),
    ("huge-int-v2", V2, ('{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, %d], "data": [1%s, %s]}]}'
                         % (len(FEATURES), "0" * 400, ", ".join(["1"] * (len(FEATURES) - 1)))).encode(), 400, "FP32"),
    ("huge-int-v1", V1, ('{"instances": [[1%s, %s]]}' % ("0" * 400, ", ".join(["1"] * (len(FEATURES) - 1)))).encode(),
     400, "request format"),
    ("unknown-output", V2, json.dumps({**_ids(1), "outputs": [{"name": "nope"}]}).encode(), 400, "unknown output"),
    ("mixed-batch", V1, json.dumps({"instances": [ROW, {"meter_id": "household-1"}]}).encode(), 400, "mixes"),
    ("unknown-field", V1, b'{"instances": [{"meter_id": "household-1", "colour": "red"}]}', 400, "colour"),
]


@pytest.mark.parametrize("path,body,status,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_that_names_the_problem(served, path, body, status, words):
    resp = requests.post(served.url + path, data=body, headers={"content-type": "application/json"}, timeout=10)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"], resp.text


# the cases the predictor meets too (feature rows, timestamps, V2 framing), with the same answer
PREDICTOR_TOO = {"malformed-json-v2", "empty-batch-v1", "empty-batch-v2", "timestamp-overflow", "string-feature",
                 "inf-number", "nan-string-v2", "v2-shape-mismatch", "v2-missing-field", "v2-not-a-list",
                 "fp32-overflow-v1", "fp32-overflow-v2", "huge-int-v1", "huge-int-v2", "unknown-output"}


@pytest.mark.parametrize("path,body,status,words", [b[1:] for b in BAD if b[0] in PREDICTOR_TOO],
                         ids=[b[0] for b in BAD if b[0] in PREDICTOR_TOO])
def test_predictor_answers_bad_input_the_same_way(served, path, body, status, words):
    resp = requests.post(served.predictor_url + path, data=body, headers={"content-type": "application/json"},
                         timeout=10)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"], resp.text


def _log_offsets(served) -> dict[str, int]:
    return {name: (served.logs / f"{name}.log").stat().st_size for name in ("transformer", "predictor")}


def _new_log_lines(served, offsets: dict[str, int]) -> list[str]:
    lines = []
    for name, offset in offsets.items():
        with open(served.logs / f"{name}.log", "rb") as fh:
            fh.seek(offset)
            lines += fh.read().decode(errors="replace").splitlines()
    return lines


def test_refused_requests_log_one_line_each_and_no_traceback(served):
    offsets = _log_offsets(served)
    sent = 0
    for base in (served.url, served.predictor_url):
        for _, path, body, _, _ in BAD:
            assert requests.post(base + path, data=body, headers={"content-type": "application/json"},
                                 timeout=10).status_code < 500
            sent += 1
    time.sleep(0.5)  # let the log handlers flush
    lines = _new_log_lines(served, offsets)
    bad = [line for line in lines if "Traceback" in line or " ERROR " in line]
    assert not bad, "\n".join(bad[:20])
    refusals = [line for line in lines if "_log_refusal" in line]
    assert len(refusals) == sent and all(" 4" in line for line in refusals)


@pytest.mark.parametrize("which", ["url", "predictor_url"])
def test_chunked_body_over_the_limit_is_413(served, which):
    chunk = b" " * 2**20

    def body():  # no content-length: requests sends it chunked
        yield b'{"instances": ['
        for _ in range(5):
            yield chunk
        yield b"]}"

    resp = requests.post(getattr(served, which) + V1, data=body(), headers={"content-type": "application/json"},
                         timeout=30)
    assert resp.status_code == 413 and "bytes" in resp.json()["error"], resp.text


def test_predictor_rejects_entity_rows_and_bad_rows(served):
    resp = requests.post(served.predictor_url + V1, json={"instances": [{"meter_id": "household-1"}]}, timeout=5)
    assert resp.status_code == 400 and "transformer" in resp.json()["error"]
    resp = requests.post(served.predictor_url + V1, json={"instances": [["x", *ROW[1:]]]}, timeout=5)
    assert resp.status_code == 400 and "expected a number" in resp.json()["error"]


def test_oversized_body_is_413(served):
    body = b'{"instances": [' + b"1," * (MAX_BODY_BYTES // 2) + b"1]}"
    resp = requests.post(served.url + V1, data=body, headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 413 and "bytes" in resp.json()["error"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


SOAK_RATE, SOAK_SECONDS, SOAK_MAX_SECONDS = 100, 30, 120  # the bounds: >= 30 s at 100 req/s


def test_soak_mixed_good_and_bad_requests_no_5xx_no_growth(served, capsys):
    """30 s at 100 req/s through the transformer, two good requests (V1, V2) to one bad: no 5xx, flat memory."""
    v2_good = json.dumps({"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1],
                                      "data": ["household-1"]}]}).encode()
    good = [(V1, b'{"instances": [{"meter_id": "household-1"}]}'), (V2, v2_good)]
    bad = [(path, body) for _, path, body, _, _ in BAD if len(body) < 10_000]
    mix = [item for pair in zip(bad, bad[1:] + bad[:1]) for item in (*good, pair[0])]
    procs = {name: served.procs[name].pid for name in ("transformer", "predictor")}
    session = requests.Session()
    codes: dict[int, int] = {}

    def run(n: int, rate: float | None) -> float:
        start = next_at = time.monotonic()
        for i in range(n):
            path, body = mix[i % len(mix)]
            resp = session.post(served.url + path, data=body, headers={"content-type": "application/json"},
                                timeout=10)
            codes[resp.status_code] = codes.get(resp.status_code, 0) + 1
            if rate:
                next_at += 1 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))
            assert time.monotonic() - start < SOAK_MAX_SECONDS
        return time.monotonic() - start

    run(500, None)  # warm-up: allocator pools, metric label sets, the drift window filling up
    before = {name: _rss_kib(pid) for name, pid in procs.items()}
    codes.clear()
    elapsed = run(SOAK_RATE * SOAK_SECONDS, SOAK_RATE)
    growth = {name: (_rss_kib(pid) - before[name]) / 1024 for name, pid in procs.items()}
    sent = sum(codes.values())
    with capsys.disabled():
        print(f"\nsoak: {sent} requests in {elapsed:.1f}s ({sent / elapsed:.0f}/s), "
              f"codes {dict(sorted(codes.items()))}, "
              f"RSS growth transformer {growth['transformer']:+.1f} MiB, predictor {growth['predictor']:+.1f} MiB")
    assert sent == SOAK_RATE * SOAK_SECONDS and elapsed >= SOAK_SECONDS
    assert not [c for c in codes if c >= 500], codes
    assert codes[200] >= sent // 2 and sum(n for c, n in codes.items() if 400 <= c < 500) >= sent // 4
    assert all(g < 20 for g in growth.values()), growth
    assert served.procs["transformer"].poll() is None and served.procs["predictor"].poll() is None


def test_schemathesis_fuzz_finds_no_server_error(served):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    for base in (served.url, served.predictor_url):
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        failures = []
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case):
                resp = case.call(base_url=base, timeout=10)
                if resp.status_code >= 500 or resp.status_code >= 400 and "error" not in resp.json():
                    failures.append(f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:200]}")

            check()
        assert not failures, "\n".join(failures[:10])
    assert served.procs["transformer"].poll() is None and served.procs["predictor"].poll() is None
    # the fuzzer sent unload requests too: still serving
    assert requests.get(f"{served.url}/v2/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{served.predictor_url}/v2/health/ready", timeout=5).status_code == 200


def test_predictor_down_is_503_then_recovers(served):
    body = {"instances": [{"meter_id": "household-1"}]}
    assert requests.post(served.url + V1, json=body, timeout=10).status_code == 200
    stop(served.procs["predictor"])
    offsets = _log_offsets(served)
    try:
        resp = requests.post(served.url + V1, json=body, timeout=10)
        assert resp.status_code == 503
        assert "predictor" in resp.json()["error"] and "unreachable" in resp.json()["error"]
        for _ in range(3):  # failed readiness probes say why, and log no traceback
            ready = requests.get(served.url + "/v2/health/ready", timeout=10)
            assert ready.status_code == 503 and "predictor at" in ready.json()["error"], ready.text
        lines = _new_log_lines(served, {"transformer": offsets["transformer"]})
        bad = [line for line in lines if "Traceback" in line or " ERROR " in line]
        assert not bad, "\n".join(bad[:20])
    finally:
        served.procs["predictor"] = start_predictor(served.model_dir, served.predictor_port, served.env,
                                                    served.logs / "predictor-restarted.log")
    wait_http(f"{served.predictor_url}/v2/health/ready", timeout=90, proc=served.procs["predictor"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        resp = requests.post(served.url + V1, json=body, timeout=10)
        if resp.status_code == 200:
            break
        time.sleep(0.2)
    assert resp.status_code == 200, resp.text
    text = requests.get(served.url + "/metrics", timeout=5).text
    assert 'se_errors_total{reason="predictor_unavailable"}' in text
    assert 'code="503"' in text


def test_readme_status_codes_are_the_ones_the_servers_answer():
    from helpers import REPO

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Serving\n"):text.index("## Kubernetes\n")]
    rows = {int(m[1]): m[2] for m in re.finditer(r"^  \| (\d{3}) \| (.*) \|$", section, re.M)}
    assert {status for _, _, _, status, _ in BAD} <= set(rows)
    assert set(rows) == {400, 403, 404, 405, 413, 422, 502, 503}
    for words in ("NaN", "FP32", "empty batch", "timestamp", "Inference-Header-Content-Length", "wrong type"):
        assert words in rows[400], words
    assert "4 MiB" in rows[413] and "1,000 rows" in rows[413] and "stale" in rows[422]
    assert "NaN" not in rows[422] and "empty" not in rows[422]
