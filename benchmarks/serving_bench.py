"""Serving benchmark (`make bench`, section "serving"): wrk on loopback against three servers in one run.

- predictor alone (KServe V1, one feature row per request)
- transformer -> predictor end to end (V1 entity request: Feast online lookup, drift window, predictor call)
- seed-style baseline: a FastAPI endpoint that builds a pandas DataFrame from the JSON and calls xgboost

Latency is measured at a fixed rate of 200 req/s. wrk2 is not packaged here, so the rate comes from
wrk's Lua ``delay()`` hook: one thread, a few connections, and a schedule of one request every
5 ms per thread (a request that is late makes the next ones go at once). Latency is timed from
the actual send, so -- unlike wrk2 -- queueing behind a stall is not added (no coordinated-omission
correction); at this rate the servers are mostly idle, so it matters little. Throughput is wrk
without the delay (1 thread, 8 connections). Every run is bounded (seconds, not requests).
"""

from __future__ import annotations

from smart_energy.components.feast_store import copy_feature_repo
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RATE = 200
RATE_SECONDS = 10
MAX_SECONDS = 8
MAX_CONNECTIONS = 8
RATE_CONNECTIONS = 4
TRAIN_MINUTES = 6 * 7 * 1440
TARGETS = {"predictor_p99_ms": 5.0, "end_to_end_p99_ms": 15.0, "throughput_ratio": 3.0}

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } se_timespec; int clock_gettime(int, se_timespec *); ]]
local ts = ffi.new("se_timespec")
local function now_ms() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("SE_BENCH_BODY")):read("*a")
local interval = tonumber(os.getenv("SE_BENCH_INTERVAL_MS") or "0")
local slot = nil
if interval > 0 then
  function delay()
    local t = now_ms()
    slot = math.max(slot or t, t - 10 * interval) + interval
    return math.max(0, slot - t)
  end
end
function done(summary, latency, requests)
  local p = function(q) return latency:percentile(q) / 1000 end
  io.write(string.format('SE_BENCH {"requests": %d, "seconds": %f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %f, "p95_ms": %f, "p99_ms": %f, "max_ms": %f}\n', summary.requests, summary.duration / 1e6,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    p(50), p(95), p(99), latency.max / 1000))
end
"""


def make_baseline_app():
    """The seed design's endpoint: JSON -> pandas DataFrame -> DMatrix -> predict (``uvicorn --factory``)."""
    import pandas as pd
    import xgboost as xgb
    from fastapi import FastAPI

    from smart_energy.components.registry import load_booster

    booster, metadata = load_booster(os.environ["SE_BENCH_MODEL_DIR"])
    features = metadata["features"]
    app = FastAPI()

    @app.post("/predict")
    def predict(payload: dict) -> dict:
        frame = pd.DataFrame([payload["features"]])[features]
        return {"prediction_kw": float(booster.predict(xgb.DMatrix(frame))[0])}

    return app


def run_wrk(url: str, body: dict, work: Path, seconds: int, connections: int, rate: float | None) -> dict:
    body_path = work / f"body-{abs(hash(url))}.json"
    body_path.write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(LUA)
    env = {**os.environ, "SE_BENCH_BODY": str(body_path), "SE_BENCH_INTERVAL_MS": str(1000 / rate if rate else 0)}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 30)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("SE_BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed on {url}:\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(line[len("SE_BENCH "):])
    result["rps"] = result["requests"] / result["seconds"]
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{url}: {result['non_2xx']} non-2xx answers, {result['socket_errors']} socket errors")
    return result


def _train(shared: Path, work: Path):
    from smart_energy.components.settings import Settings
    from smart_energy.components.train import train

    data = work / "train_slice.txt"
    with open(shared) as src, open(data, "w") as dst:
        dst.writelines(itertools.islice(src, TRAIN_MINUTES + 1))
    repo = work / "feature_repo"
    copy_feature_repo(repo)
    settings = Settings(feature_repo=repo, data_root=work / "data", artifact_uri=(work / "artifacts").as_uri())
    metadata = train(data, work / "model", settings)
    return settings, work / "model", metadata


def bench(big: Path, work: Path, run_case, shared: Path) -> dict:
    """Train a model on a slice of ``shared``, serve it three ways, load each with wrk; print and return results."""
    import pandas as pd
    import requests

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import free_port, start, stop, wait_http  # the same process handling as the tests

    if shutil.which("wrk") is None:
        raise SystemExit("wrk not installed (make system-deps)")
    work = Path(tempfile.mkdtemp(prefix="serving-", dir=work))
    print("\n== serving: training a model for the benchmark ...", flush=True)
    settings, model_dir, metadata = _train(shared, work)
    features = metadata["features"]
    row = pd.read_parquet(settings.feature_repo / "data" / "hourly_features.parquet").dropna(subset=features).iloc[-1]
    values = [float(row[f]) for f in features]

    env = {**settings.as_env(), "SE_BENCH_MODEL_DIR": str(model_dir)}
    ports = {k: free_port() for k in ("predictor", "transformer", "baseline")}
    py = sys.executable
    procs = {
        "predictor": start([py, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir),
                            "--http_port", str(ports["predictor"])], work / "predictor.log", env=env),
        "transformer": start([py, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir),
                              "--http_port", str(ports["transformer"]),
                              "--predictor_host", f"127.0.0.1:{ports['predictor']}"], work / "transformer.log",
                             env=env),
        "baseline": start([py, "-m", "uvicorn", "benchmarks.serving_bench:make_baseline_app", "--factory",
                           "--host", "127.0.0.1", "--port", str(ports["baseline"]), "--no-access-log",
                           "--log-level", "warning"], work / "baseline.log", env=env),
    }
    name = settings.model_name
    cases = {
        "predictor alone": (f"http://127.0.0.1:{ports['predictor']}/v1/models/{name}:predict",
                            {"instances": [values]}),
        "transformer->predictor": (f"http://127.0.0.1:{ports['transformer']}/v1/models/{name}:predict",
                                   {"instances": [{"meter_id": settings.meter_id}]}),
        "seed-style FastAPI+pandas": (f"http://127.0.0.1:{ports['baseline']}/predict",
                                      {"features": dict(zip(features, values))}),
    }
    results: dict[str, dict] = {}
    try:
        wait_http(f"http://127.0.0.1:{ports['predictor']}/v2/health/ready", timeout=120, proc=procs["predictor"])
        wait_http(f"http://127.0.0.1:{ports['transformer']}/v2/health/ready", timeout=120, proc=procs["transformer"])
        wait_http(f"http://127.0.0.1:{ports['baseline']}/docs", timeout=120, proc=procs["baseline"])
        for label, (url, body) in cases.items():
            resp = requests.post(url, json=body, timeout=10)
            resp.raise_for_status()
            run_wrk(url, body, work, 2, MAX_CONNECTIONS, None)  # warm-up
            results[label] = {"fixed": run_wrk(url, body, work, RATE_SECONDS, RATE_CONNECTIONS, RATE),
                              "max": run_wrk(url, body, work, MAX_SECONDS, MAX_CONNECTIONS, None)}
    finally:
        for proc in procs.values():
            stop(proc)
    _print(results)
    return results


def _print(results: dict) -> None:
    print(f"\n== serving: wrk on 127.0.0.1, {RATE} req/s for {RATE_SECONDS}s ({RATE_CONNECTIONS} connections, Lua "
          f"delay() pacing), then max throughput for {MAX_SECONDS}s ({MAX_CONNECTIONS} connections) ==")
    print(f"{'':28}{'rate/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max req/s':>11}{'p99@max ms':>12}")
    for label, r in results.items():
        f, m = r["fixed"], r["max"]
        print(f"{label:28}{f['rps']:>8.0f}{f['p50_ms']:>9.2f}{f['p95_ms']:>9.2f}{f['p99_ms']:>9.2f}"
              f"{m['rps']:>11.0f}{m['p99_ms']:>12.2f}")
    pred, e2e, base = (results[k] for k in ("predictor alone", "transformer->predictor", "seed-style FastAPI+pandas"))
    ratio = pred["max"]["rps"] / base["max"]["rps"]
    print(f"predictor p99 @ {RATE}/s: {pred['fixed']['p99_ms']:.2f} ms (target <= {TARGETS['predictor_p99_ms']} ms) "
          f"{'OK' if pred['fixed']['p99_ms'] <= TARGETS['predictor_p99_ms'] else 'MISSED'}")
    print(f"end-to-end p99 @ {RATE}/s: {e2e['fixed']['p99_ms']:.2f} ms (target <= {TARGETS['end_to_end_p99_ms']} ms) "
          f"{'OK' if e2e['fixed']['p99_ms'] <= TARGETS['end_to_end_p99_ms'] else 'MISSED'}")
    print(f"predictor throughput / seed-style baseline: {ratio:.1f}x (target >= {TARGETS['throughput_ratio']}x) "
          f"{'OK' if ratio >= TARGETS['throughput_ratio'] else 'MISSED'}; p99 ratio baseline/predictor @ {RATE}/s: "
          f"{base['fixed']['p99_ms'] / pred['fixed']['p99_ms']:.1f}x")
