"""The fast path answers byte for byte what the plain path answers, in one run.

Fast: ``smart-energy serve`` (its public socket handed to the transformer, online rows cached until the next push, next-hour requests that arrive during a predictor call sharing the next
call), loaded with concurrent requests. Plain: a second transformer on its own port, ``--predictor_batching off
--online_row_cache off`` (a Feast read and a predictor call per request), sent the
same requests one at a time, in front of the same predictor. V1 and V2, entity and feature-row requests, a refused
one; next hour and day ahead. And ``CallBatcher`` itself: answers split back per request, a refused row fails its
own request only; and the online-row cache: a push changes the very next read.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import requests

from helpers import PYTHON, free_port, start, stop, wait_http
from smart_energy.serving.batching import CallBatcher
from smart_energy.serving.logic import RequestError

NAME = "energy-forecaster"
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"
COPIES = 4  # each request sent this many times at once on the fast path
THREADS = 16


# --------------------------------------------------------------------------- CallBatcher alone (no servers)


def _run(coro):
    return asyncio.new_event_loop().run_until_complete(coro)


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    sizes = []

    async def call(rows, headers, response_headers):
        sizes.append(len(rows))
        await asyncio.sleep(0.01)
        response_headers["x-call"] = str(len(sizes))
        return "v7", [("out", "FP32", rows[:, 0] * 2)]

    async def main():
        batcher = CallBatcher(call, max_rows=5)
        mats = [np.full((1 + i % 2, 3), float(i), dtype=np.float32) for i in range(12)]
        heads = [{} for _ in mats]
        answers = await asyncio.gather(*(batcher.submit(m, None, h) for m, h in zip(mats, heads)))
        return mats, heads, answers

    mats, heads, answers = _run(main())
    for m, (version, outputs) in zip(mats, answers):
        assert version == "v7" and outputs[0][0] == "out" and outputs[0][2].tolist() == (m[:, 0] * 2).tolist()
    assert len(sizes) > 1 and max(sizes) > 1 and all(s <= 5 for s in sizes) and sum(sizes) == sum(map(len, mats))
    assert all(h.get("x-call") for h in heads)


def test_a_refused_row_fails_its_own_request_and_a_dead_predictor_fails_all():
    async def call(rows, headers, response_headers):
        await asyncio.sleep(0.005)
        if np.isnan(rows).any():
            raise RequestError("predictor refused a row", status=502, reason="predictor_rejected")
        if (rows < 0).any():
            raise ConnectionError("predictor down")
        return "v1", [("out", "FP32", rows[:, 0])]

    async def main(values):
        batcher = CallBatcher(call, max_rows=100)
        return await asyncio.gather(*(batcher.submit(np.array([[v]], dtype=np.float32)) for v in values),
                                    return_exceptions=True)

    answers = _run(main([1.0, 2.0, float("nan"), 4.0, 5.0]))
    assert isinstance(answers[2], RequestError)
    assert [a[1][0][2].tolist() for i, a in enumerate(answers) if i != 2] == [[1.0], [2.0], [4.0], [5.0]]
    down = _run(main([1.0, -1.0, 3.0]))
    assert isinstance(down[0], ConnectionError) or not isinstance(down[0], Exception)
    assert isinstance(down[1], ConnectionError)


# --------------------------------------------------------------------------- fast vs plain, real servers


def _paths(model_dir, env, root):
    """serve (fast) and a plain transformer on serve's predictor: (processes, fast url, plain url, serve's own
    transformer port)."""
    port, predictor_port, transformer_port, plain_port = free_port(), free_port(), free_port(), free_port()
    serve = start([PYTHON, "-m", "smart_energy.cli", "serve", "--model-dir", str(model_dir), "--port", str(port),
                   "--predictor-port", str(predictor_port), "--transformer-port", str(transformer_port)],
                  root / "serve.log", env=env)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120, proc=serve)
    plain = start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir), "--http_port",
                   str(plain_port), "--predictor_host", f"127.0.0.1:{predictor_port}", "--predictor_batching", "off",
                   "--online_row_cache", "off"], root / "plain.log", env=env)
    wait_http(f"http://127.0.0.1:{plain_port}/v2/health/ready", timeout=120, proc=plain)
    return [serve, plain], f"http://127.0.0.1:{port}", f"http://127.0.0.1:{plain_port}", \
        f"http://127.0.0.1:{transformer_port}"


def _post(session, url, path, body):
    resp = session.post(url + path, data=body, headers={"content-type": "application/json"}, timeout=30)
    return resp.status_code, resp.content


def _settle(urls, probe, timeout=60.0):
    """Both transformers' drift windows hold the same rows and their checks ran: the answers' drift is equal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [json.loads(_post(requests, url, V1, probe)[1])["drift"] for url in urls]
        if seen[0] == seen[1] and (seen[0]["window_rows"] or seen[0]["status"] != "warming_up"):
            time.sleep(6)  # a check that was due runs once more (nothing new: the same status)
            again = [json.loads(_post(requests, url, V1, probe)[1])["drift"] for url in urls]
            if again == seen:
                return
        time.sleep(1)
    raise AssertionError(f"drift status never agreed: {seen}")


def _compare(fast, plain, bodies, probe):
    session = requests.Session()
    for path, body in bodies:  # the same distinct rows reach both drift windows
        _post(session, fast, path, body)
        _post(session, plain, path, body)
    _settle([fast, plain], probe)
    expected = {(path, body): _post(session, plain, path, body) for path, body in bodies}
    work = [item for item in bodies for _ in range(COPIES)]
    threads = min(THREADS, len(work))
    barrier = threading.Barrier(threads)
    local = threading.local()

    def send(item):
        if not hasattr(local, "session"):
            local.session = requests.Session()
            barrier.wait(timeout=30)  # every thread starts at once: requests overlap
        return item, _post(local.session, fast, *item)

    with ThreadPoolExecutor(threads) as pool:
        got = list(pool.map(send, work))
    for item, answer in got:
        assert answer == expected[item], (item, answer, expected[item])
    return expected


def _calls(transformer_url):
    text = requests.get(transformer_url + "/metrics", timeout=10).text
    count = float(next(l.split()[-1] for l in text.splitlines() if l.startswith("se_predictor_call_requests_count")))
    total = float(next(l.split()[-1] for l in text.splitlines() if l.startswith("se_predictor_call_requests_sum")))
    return count, total


@pytest.mark.servers
@pytest.mark.slow
def test_next_hour_fast_path_answers_what_the_plain_path_answers(trained, tmp_path):
    settings, model_dir, metadata = trained
    features = metadata["features"]
    frame = pd.read_parquet(settings.feature_repo / "data" / "hourly_features.parquet").dropna(subset=features)
    rows = frame[features].tail(12).to_numpy(dtype=float).tolist()
    meter = settings.meter_id
    entity_v2 = {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": [meter]}]}
    bodies = [(V1, json.dumps({"instances": [{"meter_id": meter}]})), (V2, json.dumps(entity_v2)),
              (V1, json.dumps({"instances": [{"meter_id": "no-such-meter"}]})),
              (V1, json.dumps({"instances": rows[9:12]}))]
    bodies += [(V1, json.dumps({"instances": [row]})) for row in rows[:6]]
    bodies += [(V2, json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, len(features)],
                                            "data": [v for row in rows[i:i + 2] for v in row]}]}))
               for i in (6, 7)]
    bodies = [(path, body.encode()) for path, body in bodies]
    procs, fast, plain, serve_transformer = _paths(model_dir, settings.as_env(), tmp_path)
    try:
        before = _calls(serve_transformer)
        expected = _compare(fast, plain, bodies, bodies[0][1])
        calls, carried = (a - b for a, b in zip(_calls(serve_transformer), before))
        assert carried > calls, f"no predictor call carried two requests ({calls} calls, {carried} requests)"
        codes = sorted({code for code, _ in expected.values()})
        assert codes == [200, 404], codes
        v1 = json.loads(expected[(V1, bodies[3][1])][1])
        assert len(v1["predictions"]) == 3 and v1["model_version"] == metadata["version"]
    finally:
        for proc in procs:
            stop(proc)


@pytest.mark.servers
@pytest.mark.slow
def test_day_ahead_fast_path_answers_what_the_plain_path_answers(dayahead_model, shared_data, tmp_path):
    from smart_energy.components.feast_store import copy_feature_repo, open_feature_store, publish
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.settings import Settings

    settings = Settings(feature_repo=copy_feature_repo(tmp_path / "feature_repo"),
                        artifact_uri=(tmp_path / "a").as_uri())
    shutil.copytree(dayahead_model["model_dir"], tmp_path / "model")
    publish(load_hourly(shared_data), open_feature_store(settings), settings)
    meter = settings.meter_id
    entity_v2 = {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": [meter]}]}
    bodies = [(V1, json.dumps({"instances": [{"meter_id": meter}]}).encode()), (V2, json.dumps(entity_v2).encode()),
              (V1, json.dumps({"instances": [{"meter_id": "no-such-meter"}]}).encode())]
    procs, fast, plain, _ = _paths(tmp_path / "model", settings.as_env(), tmp_path)
    try:
        expected = _compare(fast, plain, bodies, bodies[0][1])
        forecasts = json.loads(expected[bodies[0]][1])["forecasts"]
        assert len(forecasts) == 1 and expected[bodies[2]][0] == 404
    finally:
        for proc in procs:
            stop(proc)


# --------------------------------------------------------------------------- the online-row cache


def test_cached_rows_are_read_once_and_a_push_changes_the_very_next_read(trained, tmp_path, shared_data):
    from dataclasses import replace

    from smart_energy.components.feast_store import FEATURE_SERVICE, apply, open_feature_store, push
    from smart_energy.components.ingest import ingest_file
    from smart_energy.serving.online import OnlineFeatureReader

    settings, _, metadata = trained
    repo = tmp_path / "feature_repo"
    shutil.copytree(settings.feature_repo, repo)
    mine = replace(settings, feature_repo=repo)
    apply(open_feature_store(mine), mine)  # the copy's own parquet (see test_forecast_error.private_servers)
    reader = OnlineFeatureReader(open_feature_store(mine), FEATURE_SERVICE, metadata["features"])
    assert reader.data_version is not None
    reads = []
    online_read = reader.provider.online_read
    reader.provider.online_read = lambda *args: reads.append(1) or online_read(*args)
    meter = mine.meter_id
    first, (hour,) = reader.read([meter])
    again, (hour_again,) = reader.read([meter])
    assert len(reads) == len(reader._views) and hour_again == hour and np.array_equal(first, again, equal_nan=True)
    hourly = ingest_file(shared_data).hourly
    push(open_feature_store(mine), hourly[hourly["timestamp"] <= pd.Timestamp(hour) + pd.Timedelta(hours=1)])
    after, (new_hour,) = reader.read([meter])
    assert len(reads) == 2 * len(reader._views), "the read after a push came from the cache"
    assert new_hour > hour and not np.array_equal(first, after, equal_nan=True)
