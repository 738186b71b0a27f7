"""Serving benchmark (`make bench`, section "serving"): wrk on loopback against three servers in one run.

- predictor alone (KServe V1, one feature row per request), for reference
- ``smart-energy serve`` end to end: its public port -> transformer (V1 entity request: Feast online lookup, drift
  window, predictor call) -> predictor, the path a client calls
- seed-style baseline: a FastAPI endpoint that builds a pandas DataFrame from the JSON and calls xgboost

Latency is measured at a fixed rate of 200 req/s. wrk2 is not packaged here, so the rate comes from
wrk's Lua ``delay()`` hook: one thread, a few connections, and a schedule of one request every
5 ms per thread (a request that is late makes the next ones go at once). Latency is timed from
the actual send, so -- unlike wrk2 -- queueing behind a stall is not added (no coordinated-omission
correction); at this rate the servers are mostly idle, so it matters little. Throughput is wrk
without the delay (1 thread, 8 connections). Every run is bounded (seconds, not requests).

``python -m benchmarks.serving_bench --ab --data FILE``: issue 23's steps side by side instead, in one run,
alternated (``--rounds``): ``serve`` as it is, then undoing one step at a time: no online-row cache, no batching
of predictor calls, the old proxy hop (``--hop proxy``), the old thread
default (2 XGBoost threads on this box, libgomp's default wait policy); plus the seed-style API, and CPU ms per
request of each process.
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
if not __package__:  # run as a script: import from the repository's root (pyarrow installs a `benchmarks` of its own)
    sys.path.insert(0, str(REPO))
RATE = 200
RATE_SECONDS = 10
MAX_SECONDS = 8
MAX_CONNECTIONS = 8
RATE_CONNECTIONS = 4
TRAIN_MINUTES = 6 * 7 * 1440
TARGETS = {"predictor_p99_ms": 5.0, "end_to_end_p99_ms": 15.0, "end_to_end_max_p99_ms": 30.0, "throughput_ratio": 3.0}
E2E, PREDICTOR, SEED = "serve: public port end to end", "predictor alone", "seed-style FastAPI+pandas"

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


def _setup(shared: Path, work: Path):
    """Train, and everything the cases need: (work dir, settings, model dir, feature values, env)."""
    import pandas as pd

    if shutil.which("wrk") is None:
        raise SystemExit("wrk not installed (make system-deps)")
    work = Path(tempfile.mkdtemp(prefix="serving-", dir=work))
    print("\n== serving: training a model for the benchmark ...", flush=True)
    settings, model_dir, metadata = _train(shared, work)
    features = metadata["features"]
    row = pd.read_parquet(settings.feature_repo / "data" / "hourly_features.parquet").dropna(subset=features).iloc[-1]
    values = [float(row[f]) for f in features]
    env = {**settings.as_env(), "SE_BENCH_MODEL_DIR": str(model_dir)}
    return work, settings, model_dir, dict(zip(features, values)), env


def _serve(model_dir: Path, work: Path, env: dict, tag: str, extra: list[str] = ()):
    """``smart-energy serve`` on free ports: (process, public port)."""
    from helpers import free_port, start

    port = free_port()
    cmd = [sys.executable, "-m", "smart_energy.cli", "serve", "--model-dir", str(model_dir), "--port", str(port),
           "--predictor-port", str(free_port()), "--transformer-port", str(free_port()), *extra]
    return start(cmd, work / f"serve-{tag}.log", env=env), port


def _baseline(work: Path, env: dict):
    from helpers import free_port, start

    port = free_port()
    return start([sys.executable, "-m", "uvicorn", "benchmarks.serving_bench:make_baseline_app", "--factory",
                  "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                 work / "baseline.log", env=env), port


def bench(big: Path, work: Path, run_case, shared: Path) -> dict:
    """Train a model on a slice of ``shared``, serve it three ways, load each with wrk; print and return results."""
    import requests

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import free_port, start, stop, wait_http  # the same process handling as the tests

    work, settings, model_dir, row, env = _setup(shared, work)
    predictor_port = free_port()
    procs = {"predictor": start([sys.executable, "-m", "smart_energy.serving.predictor", "--model_dir",
                                 str(model_dir), "--http_port", str(predictor_port)], work / "predictor.log", env=env)}
    procs["serve"], serve_port = _serve(model_dir, work, env, "handoff")
    procs["baseline"], baseline_port = _baseline(work, env)
    name = settings.model_name
    cases = {
        PREDICTOR: (f"http://127.0.0.1:{predictor_port}/v1/models/{name}:predict", {"instances": [list(row.values())]}),
        E2E: (f"http://127.0.0.1:{serve_port}/v1/models/{name}:predict",
              {"instances": [{"meter_id": settings.meter_id}]}),
        SEED: (f"http://127.0.0.1:{baseline_port}/predict", {"features": row}),
    }
    results: dict[str, dict] = {}
    try:
        wait_http(f"http://127.0.0.1:{predictor_port}/v2/health/ready", timeout=120, proc=procs["predictor"])
        wait_http(f"http://127.0.0.1:{serve_port}/v2/health/ready", timeout=120, proc=procs["serve"])
        wait_http(f"http://127.0.0.1:{baseline_port}/docs", timeout=120, proc=procs["baseline"])
        for label, (url, body) in cases.items():
            resp = requests.post(url, json=body, timeout=10)
            resp.raise_for_status()
            run_wrk(url, body, work, 2, MAX_CONNECTIONS, None)  # warm-up
            before = _call_requests(f"http://127.0.0.1:{serve_port}/metrics")
            results[label] = {"fixed": run_wrk(url, body, work, RATE_SECONDS, RATE_CONNECTIONS, RATE)}
            middle = _call_requests(f"http://127.0.0.1:{serve_port}/metrics")
            results[label]["max"] = run_wrk(url, body, work, MAX_SECONDS, MAX_CONNECTIONS, None)
            after = _call_requests(f"http://127.0.0.1:{serve_port}/metrics")
            if label == E2E:  # requests per predictor call (serving/batching.py), paced and at max rate
                results[label]["fixed"]["per_call"] = (middle[1] - before[1]) / max(1.0, middle[0] - before[0])
                results[label]["max"]["per_call"] = (after[1] - middle[1]) / max(1.0, after[0] - middle[0])
    finally:
        for proc in procs.values():
            stop(proc)
    _print(results)
    return results


def _call_requests(metrics_url: str) -> tuple[float, float]:
    """(predictor calls, requests they carried) from the transformer's ``se_predictor_call_requests``."""
    import requests

    found = {"count": 0.0, "sum": 0.0}
    for line in requests.get(metrics_url, timeout=10).text.splitlines():
        for key in found:
            if line.startswith(f"se_predictor_call_requests_{key} "):
                found[key] = float(line.split()[-1])
    return found["count"], found["sum"]


_OFF = ["--online-row-cache", "off", "--predictor-batching", "off"]
AB_VARIANTS = {  # label: (serve's extra flags, extra environment)
    "serve (this version)": ([], {}),
    "serve --online-row-cache off": (["--online-row-cache", "off"], {}),
    "serve, cache off, --predictor-batching off": (_OFF, {}),
    "serve, cache+batching off, --hop proxy": (_OFF + ["--hop", "proxy"], {}),
    # the old default on this 2-core box: 2 threads, libgomp's own wait policy ("" is not PASSIVE, and not set)
    "serve, all off, proxy, 2 XGBoost threads": (_OFF + ["--hop", "proxy"], {"SE_XGB_THREADS": "2",
                                                                             "OMP_WAIT_POLICY": ""}),
}


def ab(shared: Path, work: Path, rounds: int, variants: list[str] | None = None) -> dict:
    """Each variant of ``serve`` (and the seed-style API) at max rate, alternated ``rounds`` times, in one run."""
    import requests

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import stop, wait_http

    work, settings, model_dir, row, env = _setup(shared, work)
    name = settings.model_name
    entity = {"instances": [{"meter_id": settings.meter_id}]}
    procs, urls = {}, {}
    try:
        for i, label in enumerate(variants or AB_VARIANTS):
            extra, extra_env = AB_VARIANTS[label]
            procs[label], port = _serve(model_dir, work, {**env, **extra_env}, str(i), extra)
            urls[label] = (f"http://127.0.0.1:{port}/v1/models/{name}:predict", entity)
        procs[SEED], port = _baseline(work, env)
        urls[SEED] = (f"http://127.0.0.1:{port}/predict", {"features": row})
        for label, proc in procs.items():
            url, body = urls[label]
            base = url.split("/v1/")[0].removesuffix("/predict")
            wait_http(base + ("/docs" if label == SEED else "/v2/health/ready"), timeout=180, proc=proc)
            assert requests.post(url, json=body, timeout=10).status_code == 200
            run_wrk(url, body, work, 2, MAX_CONNECTIONS, None)  # warm-up
        results: dict[str, list[dict]] = {label: [] for label in urls}
        for _ in range(rounds):
            for label, (url, body) in urls.items():
                pids = _process_tree(procs[label].pid)
                before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                result = run_wrk(url, body, work, MAX_SECONDS, MAX_CONNECTIONS, None)
                result["cpu_ms"] = {name: (_cpu_seconds(pid) - before[name]) * 1000 / result["requests"]
                                    for name, pid in pids.items()}
                results[label].append(result)
    finally:
        for proc in procs.values():
            stop(proc)
    print(f"\n== serving A/B: wrk -t1 -c{MAX_CONNECTIONS} -d{MAX_SECONDS}s, alternated {rounds}x; CPU ms per request "
          f"by process (utime+stime from /proc) ==")
    seed = sum(r["rps"] for r in results[SEED]) / rounds
    for label, runs in results.items():
        rates = " / ".join(f"{r['rps']:.0f}" for r in runs)
        p99 = " / ".join(f"{r['p99_ms']:.1f}" for r in runs)
        mean = sum(r["rps"] for r in runs) / rounds
        cpu = "  ".join(f"{name} {' / '.join(format(r['cpu_ms'][name], '.2f') for r in runs)}"
                        for name in runs[0]["cpu_ms"])
        print(f"{label:52} req/s {rates:12} p99 ms {p99:12} x seed {mean / seed:.2f}  {cpu}")
    return results


def _process_tree(pid: int) -> dict[str, int]:
    """``serve`` (or the baseline) and its children by role."""
    out = {"serve" if Path(f"/proc/{pid}/cmdline").read_bytes().find(b"serve") >= 0 else "server": pid}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        out["transformer" if b"transformer" in cmdline else "predictor"] = int(child)
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _print(results: dict) -> None:
    print(f"\n== serving: wrk on 127.0.0.1, {RATE} req/s for {RATE_SECONDS}s ({RATE_CONNECTIONS} connections, Lua "
          f"delay() pacing), then max throughput for {MAX_SECONDS}s ({MAX_CONNECTIONS} connections) ==")
    print(f"{'':32}{'rate/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max req/s':>11}{'p99@max ms':>12}")
    for label, r in results.items():
        f, m = r["fixed"], r["max"]
        print(f"{label:32}{f['rps']:>8.0f}{f['p50_ms']:>9.2f}{f['p95_ms']:>9.2f}{f['p99_ms']:>9.2f}"
              f"{m['rps']:>11.0f}{m['p99_ms']:>12.2f}")
    pred, e2e, base = (results[k] for k in (PREDICTOR, E2E, SEED))

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    ratio = e2e["max"]["rps"] / base["max"]["rps"]
    print(f"end to end through serve / seed-style API, max rate: {ratio:.1f}x (target >= "
          f"{TARGETS['throughput_ratio']}x) {verdict(ratio >= TARGETS['throughput_ratio'])}")
    print(f"end-to-end p99 @ {RATE}/s: {e2e['fixed']['p99_ms']:.2f} ms (target <= {TARGETS['end_to_end_p99_ms']} ms) "
          f"{verdict(e2e['fixed']['p99_ms'] <= TARGETS['end_to_end_p99_ms'])}")
    print(f"requests per predictor call (batching): {e2e['fixed'].get('per_call', 0):.2f} at {RATE}/s, "
          f"{e2e['max'].get('per_call', 0):.2f} at max rate")
    print(f"end-to-end p99 @ max rate: {e2e['max']['p99_ms']:.2f} ms (target <= {TARGETS['end_to_end_max_p99_ms']} ms)"
          f" {verdict(e2e['max']['p99_ms'] <= TARGETS['end_to_end_max_p99_ms'])}")
    print(f"predictor alone (reference): {pred['max']['rps'] / base['max']['rps']:.1f}x the seed-style API's max rate; "
          f"p99 @ {RATE}/s {pred['fixed']['p99_ms']:.2f} ms (target <= {TARGETS['predictor_p99_ms']} ms) "
          f"{verdict(pred['fixed']['p99_ms'] <= TARGETS['predictor_p99_ms'])}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared UCI slice")
    parser.add_argument("--ab", action="store_true", help="issue 23's steps side by side instead of the section")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", action="append", choices=list(AB_VARIANTS), help="only these (--ab)")
    args = parser.parse_args()
    from benchmarks import require_file

    require_file(args.data, "--data")
    with tempfile.TemporaryDirectory() as tmp:
        if args.ab:
            ab(args.data, Path(tmp), args.rounds, args.variant)
        else:
            bench(Path(), Path(tmp), None, args.data)
