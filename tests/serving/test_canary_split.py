"""The canary with real traffic splitting: the rollout controller steers a weighted proxy the way KServe would.

Each model version is its own predictor process (``python -m smart_energy.serving.predictor``), all behind
Debian's haproxy (``balance roundrobin``, weights set through its runtime API, no retries, no redispatch), which
stands in for Knative's split between the revisions of the InferenceService's predictor. ``KnativeRevisionSplit``
turns each patched InferenceService into proxy weights the way KServe and Knative route (read from KServe's
ksvc reconciler and status propagation): every new ``storageUri`` is a new revision, up after
``REVISION_STARTUP_SECONDS``; the *latest ready* revision gets ``canaryTrafficPercent`` (all the traffic
without it) and the last rolled-out revision the rest; a latest revision that takes 100 % becomes the
rolled-out one. One transformer (``python -m smart_energy.serving.transformer``) calls the proxy; a real
Prometheus scrapes it (1 s) with the label isvc="energy-forecaster"; the real ``Rollout`` with the real
``PrometheusClient`` patches a recording in-memory InferenceService (checked against kserve's model).

A client thread sends real meter_id requests (eight meters a request) the whole time and records every
answer. A replay thread moves the online store on by one hour every ``HOUR_SECONDS`` for each meter, so
the transformer scores each version's forecasts against the actuals (``se_forecast_mae_kw``), as the
closed loop does. Versions: v1 and v3 are a booster trained on shuffled targets, v2 the model trained for
tests/serving, v4 and v5 a stand-in for KServe's stock xgboost server (V2 answers without model_version).
"""

from __future__ import annotations

import collections
import json
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from helpers import PYTHON, RecordingInferenceService, free_port, start, stop, wait_http
from smart_energy.components.rollout_policy import (ATTRIBUTION_IMPOSSIBLE, MODEL_VERSION_ANNOTATION,
                                                     REJECTED_ANNOTATION, canary_patch, merge_patch, storage_uri)
from smart_energy.components.settings import Settings
from smart_energy.serving.rollout import Rollout
from smart_energy.serving.rollout_clients import PrometheusClient, load_inference_service

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(420)]

HAPROXY = "/usr/sbin/haproxy"
ISVC = "energy-forecaster"
ARTIFACTS = "s3://smart-energy"
PREDICT = f"/v1/models/{ISVC}:predict"
METERS = [f"meter-{k}" for k in range(8)]
HOUR_SECONDS = 0.25  # one replayed hour of every meter's readings
REQUESTS_PER_SECOND = 80
REVISION_STARTUP_SECONDS = 0.5  # a new revision's pods take this long to be ready
HOLD_SECONDS = 3.0
MIN_REQUESTS = 3  # a 10 % step of a 3 s window at ~20 requests/s (a busy machine) still counts
SHARE_TOLERANCE = 0.06  # measured candidate share vs canaryTrafficPercent / 100
STOCK_KW = {"v4": 0.25, "v5": 0.75}  # each stock stand-in answers its own constant: who answered is visible
STEP_LINES: list[str] = []

# KServe's stock xgboost server, as the transformer sees it: V2 only, outputs named output-0, model_version null
STOCK_SERVER = '''
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, NAME, KW = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])


class Stock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms wait for an ACK

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{NAME}/ready"):
            return self._send(200, {"name": NAME, "ready": True} if "models" in self.path else {"ready": True})
        self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != f"/v2/models/{NAME}/infer":
            return self._send(404, {"error": "not found"})
        rows = body["inputs"][0]["shape"][0]
        self._send(200, {"model_name": NAME, "model_version": None, "id": body.get("id"),
                         "outputs": [{"name": "output-0", "shape": [rows], "datatype": "FP32", "data": [KW] * rows}]})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Stock).serve_forever()
'''


# --------------------------------------------------------------------------- the proxy and the split


class WeightedProxy:
    """haproxy on 127.0.0.1: one server per model version, weights changed through the runtime API (no reload)."""

    def __init__(self, tmp: Path, backends: dict[str, int], first: str):
        self.socket, self.port = tmp / "haproxy.sock", free_port()
        servers = "".join(f"    server {v} 127.0.0.1:{port} weight {100 if v == first else 0}\n"
                          for v, port in backends.items())
        config = tmp / "haproxy.cfg"
        config.write_text(
            f"global\n    stats socket {self.socket} mode 600 level admin\n"
            "defaults\n    mode http\n    retries 0\n    timeout connect 2s\n    timeout client 30s\n"
            "    timeout server 10s\n"  # no option redispatch: a failing server's errors reach the client
            f"frontend isvc\n    bind 127.0.0.1:{self.port}\n    default_backend revisions\n"
            f"backend revisions\n    balance roundrobin\n{servers}")
        self.proc = start([HAPROXY, "-db", "-f", str(config)], tmp / "haproxy.log")
        self.weights = {v: 100 if v == first else 0 for v in backends}
        self.lock = threading.Lock()

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(4096):
                out += chunk
        return out.decode()

    def set_weights(self, percent: dict[str, int]) -> None:
        """``{version: percent}``; every other server 0. Raised weights first, so no instant has none."""
        with self.lock:
            wanted = {v: int(percent.get(v, 0)) for v in self.weights}
            order = sorted(wanted, key=lambda v: wanted[v] <= self.weights[v])
            answer = self.command("; ".join(f"set weight revisions/{v} {wanted[v]}" for v in order))
            assert answer.strip() == "", answer
            self.weights = wanted


class KnativeRevisionSplit:
    """What Knative routes for each state of the InferenceService (KServe's Serverless mode), applied to the proxy.

    Route (KServe's ksvc reconciler): with ``canaryTrafficPercent`` p and a rolled-out revision, a target on the
    latest revision (Knative: the latest *ready* one) gets p % and one on the last rolled-out revision 100 - p;
    without p, the latest ready revision gets 100 %. Status (KServe's PropagateStatus): the latest ready revision,
    once it has 100 % through the latest target, becomes the rolled-out one (the one before it, the previous);
    a rolled-out latest revision below 100 % whose split is over itself alone falls back to the previous. A
    revision serves the version named by its storageUri.
    """

    def __init__(self, proxy: WeightedProxy, obj: dict):
        self.proxy = proxy
        self.lock = threading.RLock()
        self.revisions: dict[str, tuple[str, float]] = {}  # name -> (version, ready at)
        self.created = self.rolled_out = self.previous = None
        self.uri: str | None = None
        self.percent: int | None = None
        self.routes: list[tuple[float, dict[str, int]]] = []  # (monotonic time, {version: percent})
        self.apply(obj, startup=0.0)

    def apply(self, obj: dict, startup: float = REVISION_STARTUP_SECONDS) -> None:
        predictor = obj["spec"]["predictor"]
        with self.lock:
            uri = predictor["model"]["storageUri"]
            if uri != self.uri:  # a new predictor template: a new revision
                self.uri = uri
                self.created = f"{ISVC}-predictor-{len(self.revisions) + 1:05d}"
                self.revisions[self.created] = (uri.rstrip("/").rsplit("/", 1)[1], time.monotonic() + startup)
                if startup:
                    threading.Timer(startup + 0.01, self.reconcile).start()
            self.percent = predictor.get("canaryTrafficPercent")
            self.reconcile()

    def reconcile(self) -> None:
        with self.lock:
            now = time.monotonic()
            ready = [name for name, (_, at) in self.revisions.items() if at <= now][-1]
            for _ in range(3):  # the status change re-routes; a few passes settle it
                p = self.percent
                if p is not None and self.rolled_out:
                    targets = [(ready, p, True)] + ([(self.rolled_out, 100 - p, False)] if p < 100 else [])
                else:
                    targets = [(ready, 100, True)]
                per_revision = collections.Counter()
                for name, percent, _ in targets:
                    per_revision[name] += percent
                before = (self.rolled_out, self.previous)
                for name, percent, latest in targets:
                    if not latest:
                        continue
                    if self.rolled_out != ready:
                        if percent == 100:
                            self.previous, self.rolled_out = self.rolled_out, ready
                    elif ready == self.created and percent < 100 and per_revision[name] == 100 and self.previous:
                        self.rolled_out = self.previous
                if (self.rolled_out, self.previous) == before:
                    break
            weights = collections.Counter()
            for name, percent, _ in targets:
                weights[self.revisions[name][0]] += percent
            weights = {v: w for v, w in weights.items() if w}
            if not self.routes or self.routes[-1][1] != weights:
                self.proxy.set_weights(weights)
                self.routes.append((time.monotonic(), weights))


def isvc_object(version: str) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": ISVC, "namespace": "smart-energy", "annotations": {MODEL_VERSION_ANNOTATION: version}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}, "runtime": "smart-energy-xgboost",
                                         "protocolVersion": "v2",
                                         "storageUri": storage_uri(ARTIFACTS, ISVC, version)}}},
    }


# --------------------------------------------------------------------------- traffic and actuals


@dataclass
class Answer:
    sent: float
    done: float
    status: int
    version: str | None
    kw: float | None


class Client(threading.Thread):
    """Real meter_id requests to the transformer at ~REQUESTS_PER_SECOND until stopped (bounded); every answer kept."""

    def __init__(self, url: str, max_requests: int = REQUESTS_PER_SECOND * 400):
        super().__init__(daemon=True)
        self.url, self.max_requests = url, max_requests
        self.answers: list[Answer] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        body = {"instances": [{"meter_id": m} for m in METERS]}
        with requests.Session() as session:
            for _ in range(self.max_requests):
                if self.stopped.is_set():
                    return
                sent = time.monotonic()
                try:
                    resp = session.post(self.url + PREDICT, json=body, timeout=5)
                    answer = resp.json() if resp.status_code == 200 else {}
                    self.answers.append(Answer(sent, time.monotonic(), resp.status_code, answer.get("model_version"),
                                               (answer.get("predictions") or [None])[0]))
                except (requests.RequestException, ValueError):
                    self.answers.append(Answer(sent, time.monotonic(), 0, None, None))
                time.sleep(max(0.0, 1 / REQUESTS_PER_SECOND - (time.monotonic() - sent)))

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.sent >= start and a.done <= end]


class Replay(threading.Thread):
    """Every HOUR_SECONDS, each meter's next hour of the household's feature rows goes to the online store."""

    def __init__(self, settings: Settings, frame: pd.DataFrame, max_ticks: int = 4000):
        super().__init__(daemon=True)
        from smart_energy.components.feast_store import open_feature_store

        self.store, self.frame, self.max_ticks = open_feature_store(settings), frame, max_ticks
        usable = len(frame) - 200  # rows with their weekly lags
        self.starts = [200 + k * (usable // (2 * len(METERS))) for k in range(len(METERS))]
        self.tick = 0
        self.stopped = threading.Event()

    def rows(self, tick: int) -> pd.DataFrame:
        span = len(self.frame) - 200
        picked = [self.frame.iloc[200 + (s - 200 + tick) % span] for s in self.starts]
        out = pd.DataFrame(picked).reset_index(drop=True)
        out["meter_id"] = METERS
        out["created"] = pd.Timestamp.now(tz="UTC").floor("s")
        return out

    def push(self) -> None:
        from feast.data_source import PushMode

        from smart_energy.components.feast_store import PUSH_SOURCE

        self.store.push(PUSH_SOURCE, self.rows(self.tick), to=PushMode.ONLINE)
        self.tick += 1

    def run(self) -> None:
        while self.tick < self.max_ticks and not self.stopped.wait(HOUR_SECONDS):
            self.push()


def shuffled_target_model(frame: pd.DataFrame, dest: Path, version: str) -> Path:
    """A booster that passed no real check: the household's features, each hour's target shuffled."""
    from smart_energy.components.features import FEATURES
    from smart_energy.components.registry import write_model_dir
    from smart_energy.components.train import fit_booster, time_split

    rows = frame.sort_values("event_timestamp").reset_index(drop=True)
    following = rows["event_timestamp"].shift(-1) == rows["event_timestamp"] + pd.Timedelta(hours=1)
    rows["target_kw"] = rows["usage_lag_1h"].shift(-1).where(following)  # hour H's actual is H+1's first lag
    rows = rows.dropna(subset=["target_kw"]).reset_index(drop=True)
    rows["target_kw"] = np.random.default_rng(3).permutation(rows["target_kw"].to_numpy())
    booster, _ = fit_booster(*time_split(rows), {"num_boost_round": 100})
    write_model_dir(booster, {"name": ISVC, "version": version, "features": FEATURES}, dest)
    return dest


def relabelled(model_dir: Path, dest: Path, version: str) -> Path:
    """``model_dir`` under another version label (model.json, hence its sha256, unchanged; the manifest rewritten)."""
    from smart_energy.components.registry import write_manifest

    shutil.copytree(model_dir, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    (dest / "metadata.json").write_text(json.dumps(meta | {"version": version}))
    write_manifest(dest)
    return dest


# --------------------------------------------------------------------------- the servers


@dataclass
class Stack:
    proxy: WeightedProxy
    prometheus: str
    client: Client
    replay: Replay


@pytest.fixture(scope="module")
def stack(trained, tmp_path_factory):
    from smart_energy.components.feast_store import apply, open_feature_store

    settings, model_dir, _ = trained
    load_inference_service(isvc_object("v1"))  # kserve's and kubernetes' models imported before any timing
    tmp = tmp_path_factory.mktemp("canary-split")
    repo = tmp / "feature_repo"  # a private online store: this module pushes new hours into it
    shutil.copytree(settings.feature_repo, repo)
    mine = replace(settings, feature_repo=repo)
    apply(open_feature_store(mine), mine)
    frame = pd.read_parquet(repo / "data" / "hourly_features.parquet").sort_values("event_timestamp")
    frame = frame.reset_index(drop=True)
    dirs = {"v1": shuffled_target_model(frame, tmp / "v1", "v1"), "v2": relabelled(model_dir, tmp / "v2", "v2")}
    dirs["v3"] = relabelled(dirs["v1"], tmp / "v3", "v3")
    env = mine.as_env()
    # one CPU each, as a predictor pod with a 1-CPU limit gets: three predictors, the transformer and Prometheus share
    # this machine, and two XGBoost threads fighting for busy CPUs cost ~20 ms a predict instead of ~5
    predictor_env = {**env, "SE_XGB_THREADS": "1"}
    procs, ports = [], {}
    try:
        for version, folder in dirs.items():
            ports[version] = free_port()
            procs.append(start([PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir", str(folder),
                                "--http_port", str(ports[version])], tmp / f"predictor-{version}.log",
                               env=predictor_env))
        script = tmp / "stock_server.py"
        script.write_text(STOCK_SERVER)
        for version, kw in STOCK_KW.items():
            ports[version] = free_port()
            procs.append(start([sys.executable, str(script), str(ports[version]), ISVC, str(kw)],
                               tmp / f"stock-{version}.log"))
        for proc, (version, port) in zip(procs, ports.items()):
            wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120, proc=proc)
        proxy = WeightedProxy(tmp, ports, first="v1")
        procs.append(proxy.proc)
        wait_http(f"http://127.0.0.1:{proxy.port}/v2/health/ready", timeout=30, proc=proxy.proc)
        replay = Replay(mine, frame)
        replay.push()  # every meter has its first hour before the first request
        transformer_port = free_port()
        procs.append(start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir),
                            "--http_port", str(transformer_port), "--predictor_host", f"127.0.0.1:{proxy.port}"],
                           tmp / "transformer.log", env=env))
        wait_http(f"http://127.0.0.1:{transformer_port}/v2/health/ready", timeout=120, proc=procs[-1])
        prometheus_port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                          f"  - job_name: transformer\n    static_configs:\n"
                          f"      - targets: ['127.0.0.1:{transformer_port}']\n        labels: {{isvc: {ISVC}}}\n")
        procs.append(start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{prometheus_port}"], tmp / "prometheus.log"))
        url = f"http://127.0.0.1:{prometheus_port}"
        wait_http(f"{url}/-/ready", timeout=60, proc=procs[-1])
        client = Client(f"http://127.0.0.1:{transformer_port}")
        replay.start()
        client.start()
        try:
            yield Stack(proxy, url, client, replay)
        finally:
            client.stopped.set()
            replay.stopped.set()
            client.join(timeout=10)
            replay.join(timeout=10)
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture
def settings() -> Settings:
    # latency is not what these tests are about (a busy 2-CPU machine stalls now and then): errors and MAE are
    return replace(Settings(), artifact_uri=ARTIFACTS, model_name=ISVC, inference_service=ISVC,
                   canary_steps="10,25,50,100", canary_hold_seconds=HOLD_SECONDS, max_error_rate=0.01,
                   max_p99_latency_seconds=2.0, max_mae_ratio=1.05)


def serve(stack: Stack, obj: dict) -> tuple[KnativeRevisionSplit, RecordingInferenceService]:
    split = KnativeRevisionSplit(stack.proxy, obj)
    return split, RecordingInferenceService(obj, split.apply)


def settle(stack: Stack, production: str, mae: bool = True, timeout: float = 30.0) -> None:
    """Wait until Prometheus' window shows only ``production`` (and its MAE, when it reports one)."""
    client = PrometheusClient(stack.prometheus, isvc=ISVC)
    window = int(HOLD_SECONDS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {v: n for v, n in client.requests_by_version(window).items() if n > 0}
        if set(seen) == {production} and seen[production] >= 4 * MIN_REQUESTS and (
                not mae or client.version_metrics(production, window).mae_kw is not None):
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus never saw {production} alone: {client.requests_by_version(window)}")


def run_rollout(stack: Stack, isvc: RecordingInferenceService, settings: Settings, candidate: str,
                production: str) -> tuple[Rollout, str, list[str], float]:
    lines: list[str] = []
    rollout = Rollout(isvc, PrometheusClient(stack.prometheus, isvc=ISVC), settings, candidate=candidate,
                      production=production, min_requests=MIN_REQUESTS, poll_seconds=0.5,
                      log=lambda line: lines.append(f"{time.monotonic():.2f} {line}"))
    started = time.monotonic()
    outcome = rollout.run()
    return rollout, outcome, lines, started


def step_table(name: str, stack: Stack, split: KnativeRevisionSplit, isvc: RecordingInferenceService,
               candidate: str, started: float, ended: float) -> list[tuple[object, int, float]]:
    """One row per patch: its percent, the seconds until the next patch, and the candidate's measured share from
    the moment the proxy applied that patch's split to the next patch. Printed, and returns (percent, n, share)."""
    rows = []
    answered = stack.client.between(started, ended)
    STEP_LINES.append(f"{name} ({len(answered) / (ended - started):.0f} requests/s of {len(METERS)} meters, "
                      f"{sum(a.status == 200 for a in answered)}/{len(answered)} answered 200)")
    STEP_LINES.append(f"  {'patch':>8} {'at s':>6} {'held s':>7} {'route ms':>9} {'answers':>8} "
                      f"{candidate + ' share':>9}")
    times = isvc.patch_times + [ended]
    for i, (at, body) in enumerate(zip(isvc.patch_times, isvc.patches)):
        percent = body["spec"]["predictor"]["canaryTrafficPercent"]
        routed = next((t for t, _ in split.routes if t >= at), at)
        answers = [a for a in stack.client.between(routed, times[i + 1]) if a.status == 200]
        share = sum(a.version == candidate or a.kw == STOCK_KW.get(candidate) for a in answers) / max(len(answers), 1)
        rows.append((percent, len(answers), share))
        label = "null" if percent is None else percent
        STEP_LINES.append(f"  {label!s:>8} {at - started:6.2f} {times[i + 1] - at:7.2f} {1000 * (routed - at):9.0f} "
                          f"{len(answers):8d} {share:9.3f}")
    for line in STEP_LINES[-len(isvc.patches) - 2:]:
        print(line)
    return rows


# --------------------------------------------------------------------------- the tests


def test_a_better_candidate_steps_through_every_split_and_is_promoted(stack, settings):
    split, isvc = serve(stack, isvc_object("v1"))  # production: the shuffled-target model
    settle(stack, "v1")
    rollout, outcome, lines, started = run_rollout(stack, isvc, settings, candidate="v2", production="v1")
    ended = time.monotonic()
    assert outcome == "promoted", "\n".join(lines)
    assert isvc.percents() == [10, 25, 50, 100, None]  # None: removed, the promoted revision takes it all
    rows = step_table("better candidate v2 over production v1 (shuffled targets): promoted", stack, split, isvc, "v2",
                      started, ended)
    for percent, answers, share in rows[:4]:
        assert answers >= 30 and share == pytest.approx(percent / 100, abs=SHARE_TOLERANCE), rows
    final = isvc.get()
    assert final["spec"]["predictor"]["model"]["storageUri"] == storage_uri(ARTIFACTS, ISVC, "v2")
    assert final["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] == "v2"
    assert split.routes[-1][1] == {"v2": 100} and split.revisions[split.rolled_out][0] == "v2"
    during = stack.client.between(started, ended)
    assert len(during) >= 150 and {a.status for a in during} == {200}
    assert {a.version for a in during} == {"v1", "v2"}


def test_a_worse_candidate_is_rolled_back_while_production_keeps_answering(stack, settings):
    split, isvc = serve(stack, isvc_object("v2"))
    settle(stack, "v2")
    rollout, outcome, lines, started = run_rollout(stack, isvc, settings, candidate="v3", production="v2")
    rolled_back = isvc.patch_times[1] if len(isvc.patches) > 1 else time.monotonic()
    time.sleep(2.0)  # production alone from here on
    ended = time.monotonic()
    assert outcome == "rolled-back", "\n".join(lines)
    assert any("MAE ratio" in line for line in lines), "\n".join(lines)
    assert isvc.percents() == [10, 0, 0]
    step_table("worse candidate v3 (shuffled targets) over production v2: rolled back", stack, split, isvc, "v3",
               started, ended)
    final = isvc.get()
    assert final["metadata"]["annotations"][REJECTED_ANNOTATION] == "v3"
    assert final["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] == "v2"
    assert final["spec"]["predictor"]["model"]["storageUri"] == storage_uri(ARTIFACTS, ISVC, "v2")
    during = stack.client.between(started, ended)
    assert {a.status for a in during} == {200}, collections.Counter(a.status for a in during)
    assert any(a.version == "v3" for a in during)  # the candidate did serve its share
    # from the first rollback patch on (allowing for requests in flight), only production answers
    after = stack.client.between(rolled_back + 0.1, ended)
    assert len(after) >= 20 and {a.version for a in after} == {"v2"}, \
        collections.Counter(a.version for a in after)
    assert split.revisions[split.rolled_out][0] == "v2"
    mae = PrometheusClient(stack.prometheus, isvc=ISVC)
    good, bad = mae.version_metrics("v2", 3).mae_kw, mae.version_metrics("v3", 3).mae_kw
    print(f"  MAE at the end: v2 {good:.3f} kW, v3 {bad:.3f} kW")
    assert bad > settings.max_mae_ratio * good


def test_a_predictor_without_model_version_is_refused_not_judged(stack, settings):
    """The stock server's answers carry no model_version: the transformer labels them "unknown". A fresh rollout
    is refused before any patch; an interrupted one (resumed at 25 %) is refused at its step and production
    gets all the traffic back. Neither version is marked rejected."""
    split, isvc = serve(stack, isvc_object("v4"))
    settle(stack, "unknown", mae=False)
    rollout, outcome, lines, _ = run_rollout(stack, isvc, settings, candidate="v5", production="v4")
    assert outcome == "refused" and isvc.patches == [], "\n".join(lines)
    assert rollout.refusal.startswith(ATTRIBUTION_IMPOSSIBLE) and "production v4 0;" in rollout.refusal
    STEP_LINES.append("stock-shaped predictor, fresh rollout: refused before any patch\n"
                      f"  rollout: error: {rollout.refusal}")
    print(STEP_LINES[-1])

    # an earlier run had put v5 at 25 % (the split is real: the stand-ins answer their own constants)
    at_25 = merge_patch(isvc.get(), canary_patch(storage_uri(ARTIFACTS, ISVC, "v5"), "v5", 25))
    split.apply(at_25)
    isvc = RecordingInferenceService(at_25, split.apply)
    time.sleep(REVISION_STARTUP_SECONDS + HOLD_SECONDS)
    before = [a for a in stack.client.between(time.monotonic() - HOLD_SECONDS, time.monotonic()) if a.status == 200]
    assert sum(a.kw == STOCK_KW["v5"] for a in before) / len(before) == pytest.approx(0.25, abs=SHARE_TOLERANCE)
    rollout, outcome, lines, started = run_rollout(stack, isvc, settings, candidate="v5", production="v4")
    assert outcome == "refused", "\n".join(lines)
    assert rollout.refusal.startswith(ATTRIBUTION_IMPOSSIBLE) and "candidate v5 0;" in rollout.refusal
    assert isvc.percents() == [0, 0]
    restored = isvc.patch_times[0]
    time.sleep(2.0)
    ended = time.monotonic()
    step_table("stock-shaped predictor, canary resumed at 25 %: refused at the step, production back to 100 %",
               stack, split, isvc, "v5", started, ended)
    STEP_LINES.append(f"  rollout: error: {rollout.refusal}")
    print(STEP_LINES[-1])
    final = isvc.get()
    annotations, predictor = final["metadata"]["annotations"], final["spec"]["predictor"]
    assert REJECTED_ANNOTATION not in annotations and annotations[MODEL_VERSION_ANNOTATION] == "v4"
    assert predictor["model"]["storageUri"] == storage_uri(ARTIFACTS, ISVC, "v4")
    assert predictor["canaryTrafficPercent"] == 0
    after = stack.client.between(restored + 0.1, ended)
    assert len(after) >= 20 and {a.kw for a in after} == {STOCK_KW["v4"]}
    assert {a.status for a in stack.client.between(started, ended)} == {200}
    assert {a.version for a in after} == {"unknown"}
