"""Where a transformer request's time goes (issue 23, step one: measure each step's share first).

``python -m benchmarks.profile_transformer [--seconds 10] [--out DIR] [--py-spy PATH]`` from the repo root.

Trains a model and materialises its features as ``serving_bench`` does, then starts on 127.0.0.1:

- the predictor, as ``serving_bench`` starts it;
- the transformer, through this file's ``--child transformer`` mode: the same ``main()`` of
  ``smart_energy.serving.transformer``, with perf_counter timers wrapped around each step of a request
  (parse_v1/v2, the Feast read, the staleness plan, the drift window, the predictor request's build and
  serialisation, the HTTP round trip, new TCP connections to the predictor, postprocess, the error tracker)
  and a cProfile of its main thread that SIGUSR1 turns on and off (off: the stats and timers are written);
- ``serve``'s proxy hop, through ``--child proxy``: ``serving.supervise.Proxy`` in uvicorn as ``serve`` runs it,
  in front of that transformer (no supervised children: the hop alone);
- for comparison, a second predictor with ``SE_XGB_THREADS=1``, a plain transformer and a proxy in front of it.

Then, every run bounded (wrk -t1, ``--seconds`` each): the three paths' rates side by side, alternated twice,
with each process's CPU seconds per request (from /proc, per thread for the transformer) and the TCP
connections to the predictor; the step timers at 1 and 8 connections; the cProfile under load (8 connections);
and, given ``--py-spy``, a py-spy sampling profile of the transformer (no cProfile overhead). Results go to
``DIR`` (``profile.json``, ``transformer.prof``, ``pyspy.txt``) and a summary is printed.

The shares, not the absolute rates, are the finding when other work shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "household_power_consumption_2006-12_2007-02.txt"

# ---------------------------------------------------------------------------------------------- child: transformer

TIMES: dict[str, list] = defaultdict(lambda: [0, 0.0])


def _record(name: str, start: float) -> None:
    entry = TIMES[name]
    entry[0] += 1
    entry[1] += time.perf_counter() - start


def _timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _record(name, start)
    wrapper.__wrapped__ = fn
    return wrapper


def _atimed(name, fn):
    async def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            _record(name, start)
    wrapper.__wrapped__ = fn
    return wrapper


def _instrument() -> None:
    """Timers around each step (sync steps: their own time; async ones: wall time, awaits included)."""
    import httpcore
    import httpx
    import orjson
    from types import SimpleNamespace

    import kserve.inference_client as client
    from kserve.protocol.infer_type import InferRequest, InferResponse
    from kserve.protocol.rest.v1_endpoints import V1Endpoints
    from kserve.protocol.rest.v2_endpoints import V2Endpoints

    import smart_energy.serving.transformer.model as tm
    from smart_energy.serving.dataplane import ServingDataPlane
    from smart_energy.serving.monitors import ForecastErrorTracker
    from smart_energy.serving.server import ServingMiddleware

    for name in ("parse_v1", "parse_v2", "predictor_request", "check_hours"):
        setattr(tm, name, _timed(name, getattr(tm, name)))
    tm.OnlineFeatureReader.read = _timed("feast read (OnlineFeatureReader.read)", tm.OnlineFeatureReader.read)
    tm.OnlineFeatureReader.profiles = _timed("feast profiles (stale rows only)", tm.OnlineFeatureReader.profiles)
    tm.Planner.plan = _timed("staleness plan (Planner.plan)", tm.Planner.plan)
    tm.DriftMonitor.observe = _timed("drift window observe", tm.DriftMonitor.observe)
    ForecastErrorTracker.record = _timed("error tracker record", ForecastErrorTracker.record)
    ForecastErrorTracker.mae = _timed("error tracker mae", ForecastErrorTracker.mae)
    for step in ("preprocess", "predict", "postprocess"):
        setattr(tm.EnergyTransformer, step, _atimed(f"EnergyTransformer.{step}", getattr(tm.EnergyTransformer, step)))
    InferRequest.to_rest = _timed("InferRequest.to_rest (client serialisation)", InferRequest.to_rest)
    InferResponse.from_rest = classmethod(_timed("InferResponse.from_rest", InferResponse.from_rest.__func__))
    client.orjson = SimpleNamespace(dumps=_timed("orjson.dumps (predictor request)", orjson.dumps),
                                    loads=_timed("orjson.loads (predictor answer)", orjson.loads))
    httpx.AsyncClient.send = _atimed("httpx send (round trip to predictor)", httpx.AsyncClient.send)
    conn = httpcore._async.connection.AsyncHTTPConnection
    conn._connect = _atimed("httpcore new TCP connection", conn._connect)
    for cls, name in ((ServingDataPlane, "decode"), (ServingDataPlane, "encode")):
        setattr(cls, name, _timed(f"dataplane.{name}", getattr(cls, name)))
    ServingDataPlane.infer = _atimed("dataplane.infer", ServingDataPlane.infer)
    V1Endpoints.predict = _atimed("V1 route handler", V1Endpoints.predict)
    V2Endpoints.infer = _atimed("V2 route handler", V2Endpoints.infer)
    ServingMiddleware.__call__ = _atimed("app (ServingMiddleware and below)", ServingMiddleware.__call__)


def _child_transformer(args: list[str]) -> int:
    sys.argv = ["smart_energy.serving.transformer", *args]  # before KServe's parser is imported
    import cProfile

    out = Path(os.environ["SE_PROF_DIR"])
    _instrument()
    profiler = {"p": None}

    def toggle(signum, frame):
        if profiler["p"] is None:
            TIMES.clear()
            profiler["p"] = cProfile.Profile()
            profiler["p"].enable()
        else:
            profiler["p"].disable()
            profiler["p"].dump_stats(out / "transformer.prof")
            profiler["p"] = None
            _dump_times(out / "times-profiled.json")

    def dump(signum, frame):  # the timers since the last dump, then start again
        _dump_times(out / "times.json")
        TIMES.clear()

    signal.signal(signal.SIGUSR1, toggle)
    signal.signal(signal.SIGUSR2, dump)
    from smart_energy.serving.transformer.__main__ import main
    return main(args)


def _dump_times(path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: {"count": c, "seconds": s} for k, (c, s) in TIMES.items()}))
    tmp.replace(path)


def _child_proxy(port: int, backend: str) -> int:
    import uvicorn

    from smart_energy.serving.supervise import Child, Proxy, Supervisor

    transformer = Child("transformer", "", [], "", {})
    transformer.ready = transformer.was_ready = True
    app = Proxy(Supervisor([]), transformer, backend)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")  # as serve_supervised runs it
    return 0


# ---------------------------------------------------------------------------------------------- driver


def _cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _connections(port: int) -> dict[str, int]:
    proc = subprocess.run(["ss", "-Htan", f"( dport = :{port} )"], capture_output=True, text=True)
    states: dict[str, int] = defaultdict(int)
    for line in proc.stdout.splitlines():
        states[line.split()[0]] += 1
    return dict(states)


def _measured_wrk(url, body, work, seconds, connections, pids: dict[str, int], predictor_port: int) -> dict:
    from benchmarks.serving_bench import run_wrk

    before = {name: _cpu(pid) for name, pid in pids.items()}
    box = {}

    def sample():
        time.sleep(seconds / 2)
        box["conns"] = _connections(predictor_port)

    import threading
    sampler = threading.Thread(target=sample)
    sampler.start()
    result = run_wrk(url, body, work, seconds, connections, None)
    sampler.join()
    after = {name: _cpu(pid) for name, pid in pids.items()}
    cpu = {}
    for name, pid in pids.items():
        threads = {tid: after[name].get(tid, 0.0) - before[name].get(tid, 0.0) for tid in after[name]}
        cpu[name] = {"total_s": sum(threads.values()), "main_thread_s": threads.get(pid, 0.0),
                     "other_threads_s": sum(v for t, v in threads.items() if t != pid)}
        cpu[name]["ms_per_request"] = 1000 * cpu[name]["total_s"] / max(result["requests"], 1)
    result["cpu"] = cpu
    result["predictor_connections"] = box.get("conns", {})
    return result


def _wait_file(path: Path, since: float, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime >= since:
            return json.loads(path.read_text())
        time.sleep(0.1)
    raise SystemExit(f"the transformer wrote no {path.name}")


def _profile_summary(path: Path, top: int = 15) -> dict:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt
    rows = []
    groups: dict[str, float] = defaultdict(float)
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        rows.append({"function": f"{_short(filename)}:{line}({func})", "calls": nc, "tottime_s": tt, "cumtime_s": ct})
        group = _group(filename, func)
        if group in ("builtins/C calls", "frozen/other") and callers:  # a C call counts for the code calling it
            for (cfile, _, cfunc), caller in callers.items():
                cgroup = _group(cfile, cfunc)
                groups[group if cgroup in ("builtins/C calls", "frozen/other") else cgroup] += caller[2]
        else:
            groups[group] += tt
    rows.sort(key=lambda r: r["cumtime_s"], reverse=True)
    by_self = sorted(rows, key=lambda r: r["tottime_s"], reverse=True)
    return {"total_s": total, "top_cumulative": rows[:top + 10], "top_self": by_self[:top + 10],
            "groups_self_s": dict(sorted(groups.items(), key=lambda kv: -kv[1]))}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _group(filename: str, func: str) -> str:
    if filename == "~":
        if "poll" in func or "select" in func or "control" in func:
            return "event loop wait (idle)"
        return "builtins/C calls"
    if filename.startswith("<"):
        return "frozen/other"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].replace(".py", "")
    if "/work/main/" in filename:
        return "smart_energy: " + "/".join(filename.split("/work/main/", 1)[1].split("/")[-2:])
    return "stdlib: " + _short(filename).split("/", 1)[0].replace(".py", "")


def _pyspy(pyspy: str, pid: int, seconds: int, out: Path) -> Path | None:
    raw = out / "pyspy.txt"
    proc = subprocess.run([pyspy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250", "-f", "raw",
                           "-o", str(raw), "--nonblocking"], capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0 or not raw.exists():
        print(f"py-spy failed: {proc.stderr[-500:]}", flush=True)
        return None
    return raw


STEP_ROWS = [  # (label, timers summed): the transformer's own steps, disjoint, in request order
    ("KServe decode + parse_v1/v2", ["dataplane.decode", "parse_v1", "parse_v2"]),
    ("Feast online read (OnlineFeatureReader.read)", ["feast read (OnlineFeatureReader.read)"]),
    ("staleness plan + check_hours", ["staleness plan (Planner.plan)", "check_hours",
                                      "feast profiles (stale rows only)"]),
    ("drift window observe", ["drift window observe"]),
    ("predictor request build (numpy -> InferInput)", ["predictor_request"]),
    ("client serialisation (to_rest + orjson.dumps)", ["InferRequest.to_rest (client serialisation)",
                                                       "orjson.dumps (predictor request)"]),
    ("answer decode (orjson.loads + from_rest)", ["orjson.loads (predictor answer)", "InferResponse.from_rest"]),
    ("postprocess (metrics, error tracker, V1 dict)", ["EnergyTransformer.postprocess"]),
    ("KServe encode", ["dataplane.encode"]),
]
PYSPY_STEPS = [  # (label, substrings of a frame "func (file:line)"): inclusive shares of the transformer's samples
    ("uvicorn httptools protocol (HTTP parse/write)", ["(uvicorn/protocols/http/httptools_impl.py"]),
    ("ServingMiddleware and below (the app)", ["ServingMiddleware.__call__"]),
    ("KServe V1 route handler", ["V1Endpoints.predict"]),
    ("EnergyTransformer.preprocess", ["EnergyTransformer.preprocess"]),
    ("  Feast online read", ["OnlineFeatureReader.read"]),
    ("  staleness plan", ["Planner.plan"]),
    ("  drift observe", ["DriftMonitor.observe"]),
    ("  predictor_request build", ["predictor_request (serving/transformer/model.py"]),
    ("EnergyTransformer.predict (HTTP client)", ["EnergyTransformer.predict"]),
    ("  to_rest serialisation", ["InferRequest.to_rest"]),
    ("  httpx/httpcore client", ["(httpx/_client.py"]),
    ("  httpcore's failed `import sniffio` (current_async_library)", ["current_async_library"]),
    ("EnergyTransformer.postprocess", ["EnergyTransformer.postprocess"]),
    ("prometheus_client (anywhere)", ["(prometheus_client/"]),
    ("drift-monitor thread (_run)", ["DriftMonitor._run"]),
    ("asyncio event loop machinery only", ["__NONE__"]),
]


def _pyspy_shares(raw: Path) -> dict:
    """Inclusive share of the samples (py-spy skips idle ones) with a frame matching each step."""
    total, hits = 0, defaultdict(int)
    loop_only = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        if "EpollSelector.select" in stack.rsplit(";", 1)[-1]:  # the loop waiting: idle, whatever py-spy says
            continue
        total += n
        matched = False
        for label, needles in PYSPY_STEPS:
            if any(needle in stack for needle in needles):
                hits[label] += n
                matched = True
        if not matched:
            loop_only += n
    hits["asyncio event loop machinery only"] = loop_only
    return {"samples": total, "shares": {k: hits[k] / total for k, _ in PYSPY_STEPS} if total else {}}


def analyse(out: Path) -> str:
    """Markdown tables from a run's ``profile.json``, ``transformer.prof`` and ``pyspy.txt``."""
    report = json.loads((out / "profile.json").read_text())
    lines = ["### Rates side by side (wrk -t1 -c8, %ss each, alternated twice)" % report["seconds"], "",
             "| path | req/s | p99 ms | CPU ms/req predictor (other threads) | transformer (other threads) | proxy "
             "| connections to the predictor (ESTAB, TIME-WAIT) |", "|---|---|---|---|---|---|---|"]
    for label, runs in report["rates"].items():
        for r in runs:
            c = dict(r["cpu"])
            if "SE_XGB_THREADS=1" in label:  # that case's processes are the second set
                for n in ("predictor", "transformer", "proxy"):
                    c[n] = c.get(f"{n}1", {"total_s": 0.0, "main_thread_s": 0.0, "other_threads_s": 0.0})
            per = lambda n, k: 1000 * c[n][k] / max(r["requests"], 1)  # noqa: E731
            conns = r["predictor_connections"]
            lines.append(f"| {label} | {r['rps']:.0f} | {r['p99_ms']:.1f} | {per('predictor', 'total_s'):.2f} "
                         f"({per('predictor', 'other_threads_s'):.2f}) | {per('transformer', 'total_s'):.2f} "
                         f"({per('transformer', 'other_threads_s'):.2f}) | {per('proxy', 'total_s'):.2f} | "
                         f"{conns.get('ESTAB', 0)}, {conns.get('TIME-WAIT', 0)} |")
    for key in ("timers_c1", "timers_c8"):
        if key not in report:
            continue
        t, r = report[key]["times"], report[key]["wrk"]
        n = max(t.get("V1 route handler", {}).get("count", 0), 1)
        cpu_ms = 1000 * r["cpu"]["transformer"]["main_thread_s"] / max(r["requests"], 1)
        lines += ["", f"### Transformer steps, timers, {key[-2:]} connections ({r['rps']:.0f} req/s; transformer "
                  f"main thread {cpu_ms:.3f} ms CPU per request)", "",
                  "| step | ms per request | share of the main thread's CPU |", "|---|---|---|"]
        ours = 0.0
        for label, names in STEP_ROWS:
            ms = sum(1000 * t.get(k, {}).get("seconds", 0.0) for k in names) / n
            ours += ms
            lines.append(f"| {label} | {ms:.3f} | {100 * ms / cpu_ms:.1f}% |")
        lines.append(f"| **our steps together** | {ours:.3f} | {100 * ours / cpu_ms:.1f}% |")
        lines.append(f"| rest: uvicorn, Starlette/FastAPI, KServe, httpx/httpcore, asyncio | {cpu_ms - ours:.3f} | "
                     f"{100 * (cpu_ms - ours) / cpu_ms:.1f}% |")
        wall = lambda k: 1000 * t.get(k, {}).get("seconds", 0.0) / max(t.get(k, {}).get("count", 0), 1)  # noqa
        conn = t.get("httpcore new TCP connection", {}).get("count", 0)
        lines.append(f"| (wall) HTTP round trip to the predictor | {wall('httpx send (round trip to predictor)'):.3f}"
                     f" | new TCP connections: {conn} for {n} requests |")
        lines.append(f"| (wall) app, ServingMiddleware and below | {wall('app (ServingMiddleware and below)'):.3f} | |")
    prof = out / "transformer.prof"
    if prof.exists():
        s = _profile_summary(prof)
        busy = s["total_s"] - s["groups_self_s"].get("event loop wait (idle)", 0.0)
        lines += ["", f"### cProfile of the transformer's main thread under load (8 connections), self time by "
                  f"package ({busy:.2f}s busy of {s['total_s']:.2f}s; C calls counted for their caller)", "",
                  "| package | share of busy time |", "|---|---|"]
        for group, sec in s["groups_self_s"].items():
            if group != "event loop wait (idle)" and sec / busy >= 0.005:
                lines.append(f"| {group} | {100 * sec / busy:.1f}% |")
        lines += ["", "### Top 15 functions by cumulative time (cProfile)", "",
                  "| cumulative s | share of busy | self s | calls | function |", "|---|---|---|---|---|"]
        shown = 0
        for row in s["top_cumulative"]:
            if shown == 15:
                break
            lines.append(f"| {row['cumtime_s']:.3f} | {100 * row['cumtime_s'] / busy:.0f}% | {row['tottime_s']:.3f} "
                         f"| {row['calls']} | `{row['function']}` |")
            shown += 1
        lines += ["", "### Top 15 functions by self time (cProfile)", "",
                  "| self s | share of busy | calls | function |", "|---|---|---|---|"]
        for row in [r for r in s["top_self"] if "poll" not in r["function"]][:15]:
            lines.append(f"| {row['tottime_s']:.3f} | {100 * row['tottime_s'] / busy:.1f}% | {row['calls']} "
                         f"| `{row['function']}` |")
    raw = out / "pyspy.txt"
    if raw.exists():
        p = _pyspy_shares(raw)
        lines += ["", f"### py-spy (sampling, all threads, epoll waits excluded): inclusive share of {p['samples']} "
                  f"samples", "", "| step | share |", "|---|---|"]
        lines += [f"| {k} | {100 * v:.1f}% |" for k, v in p["shares"].items()]
    return "\n".join(lines)


def _save(out: Path, report: dict) -> None:
    (out / "profile.json").write_text(json.dumps(report, indent=1, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--py-spy", default=None, help="a py-spy binary (e.g. from a throwaway venv)")
    parser.add_argument("--analyse", type=Path, default=None, help="print the tables of an earlier run's DIR")
    parser.add_argument("--child", choices=["transformer", "proxy"], default=None)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.analyse:
        print(analyse(args.analyse))
        return 0
    if args.child == "transformer":
        return _child_transformer([a for a in args.rest if a != "--"])
    if args.child == "proxy":
        rest = [a for a in args.rest if a != "--"]
        return _child_proxy(int(rest[0]), rest[1])

    import pandas as pd
    import requests

    from benchmarks.serving_bench import _train

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import free_port, start, stop, wait_http

    out = args.out or Path(tempfile.mkdtemp(prefix="profile-transformer-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out))
    print(f"== training a model as serving_bench does (results in {out}) ...", flush=True)
    settings, model_dir, metadata = _train(SHARED, work)
    features = metadata["features"]
    row = pd.read_parquet(settings.feature_repo / "data" / "hourly_features.parquet").dropna(subset=features).iloc[-1]
    values = [float(row[f]) for f in features]
    env = {**settings.as_env(), "SE_PROF_DIR": str(out)}
    ports = {k: free_port() for k in ("predictor", "transformer", "proxy", "predictor1", "transformer1", "proxy1")}
    py = sys.executable
    procs = {
        "predictor": start([py, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir),
                            "--http_port", str(ports["predictor"])], out / "predictor.log", env=env),
        "transformer": start([py, "-m", "benchmarks.profile_transformer", "--child", "transformer", "--",
                              "--model_dir", str(model_dir), "--http_port", str(ports["transformer"]),
                              "--predictor_host", f"127.0.0.1:{ports['predictor']}"], out / "transformer.log",
                             env=env),
        "predictor1": start([py, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir),
                             "--http_port", str(ports["predictor1"])], out / "predictor1.log",
                            env={**env, "SE_XGB_THREADS": "1"}),
        # the same path on a predictor with one XGBoost thread: a plain transformer (as serving_bench starts it)
        "transformer1": start([py, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir),
                               "--http_port", str(ports["transformer1"]),
                               "--predictor_host", f"127.0.0.1:{ports['predictor1']}"], out / "transformer1.log",
                              env=env),
        "proxy1": start([py, "-m", "benchmarks.profile_transformer", "--child", "proxy", "--", str(ports["proxy1"]),
                         f"http://127.0.0.1:{ports['transformer1']}"], out / "proxy1.log", env=env),
        "proxy": start([py, "-m", "benchmarks.profile_transformer", "--child", "proxy", "--", str(ports["proxy"]),
                        f"http://127.0.0.1:{ports['transformer']}"], out / "proxy.log", env=env),
    }
    pids = {name: p.pid for name, p in procs.items()}
    name = settings.model_name
    entity = {"instances": [{"meter_id": settings.meter_id}]}
    import numpy as np

    from smart_energy.serving.transformer.model import predictor_request
    v2_body, _ = predictor_request(name, np.array([values]), features, "").to_rest()
    cases = {
        "predictor alone": (f"http://127.0.0.1:{ports['predictor']}/v1/models/{name}:predict", {"instances": [values]}),
        "predictor alone, V2 as the transformer sends it": (
            f"http://127.0.0.1:{ports['predictor']}/v2/models/{name}/infer", v2_body),
        "predictor alone, V2, SE_XGB_THREADS=1": (f"http://127.0.0.1:{ports['predictor1']}/v2/models/{name}/infer",
                                                  v2_body),
        "serve's proxy -> transformer -> predictor": (f"http://127.0.0.1:{ports['proxy']}/v1/models/{name}:predict",
                                                      entity),
        "transformer's own port -> predictor": (f"http://127.0.0.1:{ports['transformer']}/v1/models/{name}:predict",
                                                entity),
        "serve's proxy -> transformer -> predictor, SE_XGB_THREADS=1": (
            f"http://127.0.0.1:{ports['proxy1']}/v1/models/{name}:predict", entity),
        "transformer's own port -> predictor, SE_XGB_THREADS=1": (
            f"http://127.0.0.1:{ports['transformer1']}/v1/models/{name}:predict", entity),
    }
    report: dict = {"seconds": args.seconds, "rates": {k: [] for k in cases}}
    s = args.seconds
    try:
        for key in ("predictor", "predictor1", "transformer", "transformer1", "proxy", "proxy1"):
            wait_http(f"http://127.0.0.1:{ports[key]}/v2/health/ready", timeout=180, proc=procs[key])
        from benchmarks.serving_bench import run_wrk
        for label, (url, body) in cases.items():
            requests.post(url, json=body, timeout=10).raise_for_status()
            run_wrk(url, body, work, 2, 8, None)  # warm-up
        print("== rates side by side (wrk -t1 -c8), alternated twice", flush=True)
        for _ in range(2):
            for label, (url, body) in cases.items():
                r = _measured_wrk(url, body, work, s, 8, pids, ports["predictor"])
                report["rates"][label].append(r)
                _save(out, report)
                print(f"  {label:45} {r['rps']:7.0f} req/s  p99 {r['p99_ms']:6.1f} ms  cpu ms/req "
                      + " ".join(f"{n}={c['ms_per_request']:.2f}" for n, c in r["cpu"].items())
                      + f"  predictor threads other than main {r['cpu']['predictor']['other_threads_s']:.1f}s of "
                      f"{r['cpu']['predictor']['total_s']:.1f}s  predictor conns {r['predictor_connections']}",
                      flush=True)
        url, body = cases["transformer's own port -> predictor"]
        for conns in (1, 8):
            os.kill(pids["transformer"], signal.SIGUSR2)  # reset the timers
            time.sleep(0.5)
            r = _measured_wrk(url, body, work, s, conns, pids, ports["predictor"])
            since = time.time()
            time.sleep(0.3)
            os.kill(pids["transformer"], signal.SIGUSR2)
            report[f"timers_c{conns}"] = {"wrk": r, "times": _wait_file(out / "times.json", since - 0.2)}
            _save(out, report)
            print(f"== timers at {conns} connection(s): {r['rps']:.0f} req/s", flush=True)
        since = time.time()
        os.kill(pids["transformer"], signal.SIGUSR1)  # cProfile on
        time.sleep(0.3)
        r = _measured_wrk(url, body, work, s, 8, pids, ports["predictor"])
        os.kill(pids["transformer"], signal.SIGUSR1)  # off: stats written
        report["cprofile"] = {"wrk": r, "times": _wait_file(out / "times-profiled.json", since)}
        time.sleep(1.0)
        report["cprofile"]["stats"] = _profile_summary(out / "transformer.prof")
        print(f"== cProfile under load: {r['rps']:.0f} req/s (with the profiler's overhead)", flush=True)
        if args.py_spy:
            import threading
            box = {}
            t = threading.Thread(target=lambda: box.update(r=run_wrk(url, body, work, s + 2, 8, None)))
            t.start()
            time.sleep(1.0)
            raw = _pyspy(args.py_spy, pids["transformer"], s, out)
            t.join()
            report["py_spy"] = {"raw": str(raw) if raw else None, "wrk_rps": box.get("r", {}).get("rps")}
    finally:
        for proc in procs.values():
            stop(proc)
    _save(out, report)
    print(analyse(out), flush=True)
    print(f"== written {out / 'profile.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
