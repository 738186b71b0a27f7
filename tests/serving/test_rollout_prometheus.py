"""The rollout controller against a real Prometheus server (Debian's `prometheus`, 1 s scrapes).

Prometheus scrapes two real transformers (`python -m smart_energy.serving.transformer`) in front of the model
trained once for tests/serving under its own version labels: one in front of a real predictor
serving it as v2 (healthy), and v3's in front of a predictor that is down (made to fail: every
request answers 503). As on a cluster, where one transformer fronts both predictor revisions, the
transformer labels its metrics with the version of the predictor that answered (v2, whatever its
own metadata says), and with its own when none answered (v3). Prometheus adds the InferenceService's
label (isvc="energy-forecaster") to both targets, as the cluster's PodMonitor does, and the controller
scopes its queries with it.
A bounded loop sends them real entity requests. Everything runs on 127.0.0.1 and is stopped by pid.
The InferenceService is an in-memory object (no cluster here) that applies each merge patch and
checks it against kserve's model.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import replace

import pytest
import requests

from smart_energy.components.settings import Settings
from helpers import PYTHON, RecordingInferenceService, free_port, start, stop, wait_http
from smart_energy.components.rollout_policy import (ATTRIBUTION_IMPOSSIBLE, MODEL_VERSION_ANNOTATION,
                                                     REJECTED_ANNOTATION, storage_uri)
from smart_energy.serving.rollout import Rollout
from smart_energy.serving.rollout_clients import PrometheusClient

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.timeout(240)]
ISVC_PATH = "/v1/models/energy-forecaster:predict"
ENTITY = {"instances": [{"meter_id": "household-1"}]}
ISVC = "energy-forecaster"
# the bad version fails on its error rate; the latency limit only has to hold for a healthy one on a busy
# 2-CPU machine (where the production default, 50 ms, is sometimes a GC pause away)
P99_LIMIT_SECONDS = 0.25


def in_memory_inference_service(uri: str, version: str) -> RecordingInferenceService:
    """The InferenceService serving ``version`` from ``uri``, behind get/patch as the Kubernetes API would."""
    return RecordingInferenceService({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "energy-forecaster", "namespace": "smart-energy",
                     "annotations": {MODEL_VERSION_ANNOTATION: version}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}, "runtime": "smart-energy-xgboost",
                                         "protocolVersion": "v2", "storageUri": uri}}},
    })


def _version_dir(model_dir, dest, version):
    """The trained model under another version label (model.json, hence its sha256, unchanged)."""
    from smart_energy.components.registry import write_manifest

    shutil.copytree(model_dir, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    (dest / "metadata.json").write_text(json.dumps(meta | {"version": version}))
    write_manifest(dest)  # a deliberate change: sealed again
    return dest


@pytest.fixture(scope="module")
def targets(trained, tmp_path_factory):
    """{version: transformer port}: v2 healthy (its predictor serves v2), v3 failing (its predictor is down)."""
    settings, model_dir, _ = trained
    tmp = tmp_path_factory.mktemp("canary")
    env = settings.as_env()
    procs, ports = [], {}
    try:
        predictor_port = free_port()
        procs.append(start([PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir",
                            str(_version_dir(model_dir, tmp / "v2", "v2")), "--http_port", str(predictor_port)],
                           tmp / "predictor.log", env=env))
        wait_http(f"http://127.0.0.1:{predictor_port}/v2/health/ready", timeout=90, proc=procs[0])
        dead_port = free_port()  # nothing listens here: v3's predictor is down
        # the healthy transformer holds production's metadata (the trained version): its metrics still say v2
        for version, metadata_dir, upstream in (("v2", model_dir, predictor_port),
                                                ("v3", _version_dir(model_dir, tmp / "v3", "v3"), dead_port)):
            port = free_port()
            proc = start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(metadata_dir), "--http_port",
                          str(port), "--predictor_host", f"127.0.0.1:{upstream}"], tmp / f"transformer-{version}.log",
                         env=env)
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/v2/health/live", timeout=90, proc=proc)
            ports[version] = port
        yield ports
    finally:
        for proc in procs:
            stop(proc)


@pytest.fixture(scope="module")
def prometheus(targets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        + "".join(f"  - job_name: target-{v}\n    static_configs:\n      - targets: ['127.0.0.1:{p}']\n"
                  f"        labels: {{isvc: {ISVC}}}\n" for v, p in targets.items())
    )
    proc = start(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                  f"--web.listen-address=127.0.0.1:{port}"], tmp / "prometheus.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/-/ready", timeout=60, proc=proc)
        yield url
    finally:
        stop(proc)


def _traffic(port: int, stop_event: threading.Event, max_requests: int = 3000) -> None:
    """Real requests at ~40/s until told to stop (bounded)."""
    with requests.Session() as session:
        for _ in range(max_requests):
            if stop_event.is_set():
                return
            try:
                session.post(f"http://127.0.0.1:{port}{ISVC_PATH}", json=ENTITY, timeout=2)
            except requests.RequestException:
                pass
            time.sleep(0.025)


@pytest.fixture(scope="module")
def traffic(targets, prometheus):
    stop_event = threading.Event()
    threads = [threading.Thread(target=_traffic, args=(p, stop_event), daemon=True) for p in targets.values()]
    for t in threads:
        t.start()
    client = PrometheusClient(prometheus, isvc=ISVC)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until Prometheus has a few seconds of both versions
        if all((client.query(f'sum(increase(se_requests_total{{model_version="{v}"}}[3s]))') or 0) > 10
               for v in targets):
            break
        time.sleep(0.5)
    else:
        pytest.fail("Prometheus never saw traffic from both targets")
    yield
    stop_event.set()
    for t in threads:
        t.join(timeout=5)


@pytest.fixture
def settings() -> Settings:
    return replace(Settings(), artifact_uri="s3://smart-energy", canary_steps="50,100", canary_hold_seconds=3.0,
                   max_error_rate=0.01, max_p99_latency_seconds=P99_LIMIT_SECONDS, max_mae_ratio=1.05)


def test_prometheus_sees_the_healthy_and_the_bad_version(prometheus, traffic):
    client = PrometheusClient(prometheus, isvc=ISVC)
    good, bad = client.version_metrics("v2", 5), client.version_metrics("v3", 5)
    assert good.requests > 10 and good.error_rate == 0 and good.p99_latency_seconds < P99_LIMIT_SECONDS
    assert bad.requests > 10 and bad.error_rate > 0.99  # every request is a 503 (rate() extrapolates a little)
    assert (good.mae_kw, bad.mae_kw) == (None, None)  # no actuals have arrived in this test
    by_version = client.requests_by_version(5)
    assert set(by_version) == {"v2", "v3"} and min(by_version.values()) > 10
    assert client.total_requests(5) > 20  # whatever the version
    # another InferenceService's series are not these
    other = PrometheusClient(prometheus, isvc="energy-forecaster-dayahead")
    assert other.requests_by_version(5) == {} and other.version_metrics("v2", 5).requests == 0


def test_promotes_the_healthy_candidate(prometheus, traffic, settings):
    # production (v3, failing) must be attributed its traffic for the canary to start; only the candidate is judged
    isvc = in_memory_inference_service(storage_uri(settings.artifact_uri, "energy-forecaster", "v3"), "v3")
    lines: list[str] = []
    outcome = Rollout(isvc, PrometheusClient(prometheus, isvc=ISVC), settings, candidate="v2", production="v3",
                      min_requests=5, poll_seconds=1.0, log=lines.append).run()
    assert outcome == "promoted", "\n".join(lines)
    percents = [p["spec"]["predictor"].get("canaryTrafficPercent", "absent") for p in isvc.patches]
    assert percents == [50, 100, None]  # None: removed, all traffic to the promoted revision
    final = isvc.get()
    assert final["spec"]["predictor"]["model"]["storageUri"] == storage_uri(settings.artifact_uri, ISVC, "v2")
    assert "canaryTrafficPercent" not in final["spec"]["predictor"]
    assert final["metadata"]["annotations"][MODEL_VERSION_ANNOTATION] == "v2"


def test_rolls_back_the_bad_candidate(prometheus, traffic, settings):
    isvc = in_memory_inference_service(storage_uri(settings.artifact_uri, "energy-forecaster", "v2"), "v2")
    lines: list[str] = []
    started = time.monotonic()
    outcome = Rollout(isvc, PrometheusClient(prometheus, isvc=ISVC), settings, candidate="v3", production="v2",
                      min_requests=5, poll_seconds=1.0, log=lines.append).run()
    assert outcome == "rolled-back", "\n".join(lines)
    assert time.monotonic() - started < settings.canary_hold_seconds * 3
    assert any("error rate" in line or "p99" in line for line in lines), "\n".join(lines)
    assert [p["spec"]["predictor"].get("canaryTrafficPercent") for p in isvc.patches] == [50, 0, 0]
    final = isvc.get()
    assert final["spec"]["predictor"]["model"]["storageUri"] == storage_uri(settings.artifact_uri, ISVC, "v2")
    assert final["metadata"]["annotations"][REJECTED_ANNOTATION] == "v3"
    # the same candidate is not tried again
    again = Rollout(isvc, PrometheusClient(prometheus, isvc=ISVC), settings, candidate="v3", production="v2",
                    log=lines.append)
    assert again.run() == "rejected-before"


def test_refuses_when_production_is_not_among_the_versions_prometheus_sees(prometheus, traffic, settings):
    """Traffic is counted (v2 and v3), none of it for production v1: no canary step could be judged."""
    isvc = in_memory_inference_service(storage_uri(settings.artifact_uri, ISVC, "v1"), "v1")
    rollout = Rollout(isvc, PrometheusClient(prometheus, isvc=ISVC), settings, candidate="v4", production="v1",
                      min_requests=5, poll_seconds=1.0, log=lambda _: None)
    assert rollout.run() == "refused" and isvc.patches == []
    assert rollout.refusal.startswith(ATTRIBUTION_IMPOSSIBLE) and "production v1 0" in rollout.refusal
