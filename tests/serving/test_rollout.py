"""The rollout controller's pure decision function, its patches, and the loop with stub clients."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from smart_energy.components.settings import Settings
from smart_energy.serving import rollout
from smart_energy.components.rollout_policy import (
    ATTRIBUTION_IMPOSSIBLE, MODEL_VERSION_ANNOTATION, REJECTED_ANNOTATION, Decision, Thresholds, VersionMetrics,
    attribution_problem, canary_patch, decide, merge_patch, parse_steps, promote_patch, restore_patches,
    rollback_patches, storage_uri, traffic_patch,
)
from smart_energy.serving.rollout import Rollout
from helpers import RecordingInferenceService
from smart_energy.serving.rollout_clients import UnknownFieldError, check_fields, load_inference_service

STEPS = [10, 25, 50, 100]
T = Thresholds(max_error_rate=0.01, max_p99_latency_seconds=0.05, max_mae_ratio=1.05, min_requests=20)
GOOD = VersionMetrics(requests=100, error_rate=0.0, p99_latency_seconds=0.01, mae_kw=0.40)
PROD = VersionMetrics(requests=900, error_rate=0.0, p99_latency_seconds=0.01, mae_kw=0.40)


def test_healthy_candidate_waits_out_the_hold_then_steps():
    assert decide(GOOD, PROD, 10, STEPS, 100, 300, T).action == "wait"
    assert decide(GOOD, PROD, 10, STEPS, 300, 300, T) == Decision("step", 25, "healthy at 10% for 300s")
    assert decide(GOOD, PROD, 50, STEPS, 301, 300, T).traffic_percent == 100


def test_healthy_candidate_at_the_last_step_is_promoted():
    assert decide(GOOD, PROD, 100, STEPS, 300, 300, T).action == "promote"


@pytest.mark.parametrize("bad,reason", [
    (replace(GOOD, error_rate=0.02), "error rate"),
    (replace(GOOD, p99_latency_seconds=0.2), "p99"),
    (replace(GOOD, mae_kw=0.43), "MAE ratio"),
])
def test_a_breach_rolls_back_without_waiting_for_the_hold(bad, reason):
    decision = decide(bad, PROD, 25, STEPS, 1, 300, T)
    assert decision.action == "rollback" and decision.traffic_percent == 0 and reason in decision.reason


def test_thresholds_are_inclusive_limits():
    edge = replace(GOOD, error_rate=0.01, p99_latency_seconds=0.05, mae_kw=0.42)  # 0.42/0.40 = 1.05
    assert decide(edge, PROD, 10, STEPS, 300, 300, T).action == "step"


def test_too_little_traffic_is_not_judged():
    quiet = replace(GOOD, requests=5, error_rate=1.0, p99_latency_seconds=9.0)
    assert decide(quiet, PROD, 10, STEPS, 999, 300, T).action == "wait"


def test_mae_is_compared_only_when_both_versions_report_it():
    no_actuals = replace(GOOD, mae_kw=None)
    assert decide(no_actuals, PROD, 10, STEPS, 300, 300, T).action == "step"
    assert decide(replace(GOOD, mae_kw=9.9), replace(PROD, mae_kw=None), 10, STEPS, 300, 300, T).action == "step"
    assert decide(replace(GOOD, mae_kw=9.9), None, 10, STEPS, 300, 300, T).action == "step"


@pytest.mark.parametrize("text", ["10,25,50", "0,100", "50,10,100", "10,x,100", "", "10,10,100"])
def test_bad_steps_are_refused(text):
    with pytest.raises(ValueError):
        parse_steps(text)


def test_steps_parse():
    assert parse_steps("10, 25,50,100") == STEPS and parse_steps("100") == [100]


def _uri(version: str, model: str = "energy-forecaster") -> str:
    return storage_uri("s3://b", model, version)


def _isvc() -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "energy-forecaster", "namespace": "smart-energy"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}, "protocolVersion": "v2",
                                         "runtime": "smart-energy-xgboost", "storageUri": _uri("v1")}}},
    }


def test_every_patch_is_a_valid_inference_service_patch():
    obj = _isvc()
    for body in [canary_patch(_uri("v2"), "v2", 10), traffic_patch(25), promote_patch("v2"),
                 *rollback_patches("v2", _uri("v1"), "v1"), *restore_patches(_uri("v1"), "v1")]:
        check_fields(body, "V1beta1InferenceService")
        obj = merge_patch(obj, body)
        isvc = load_inference_service(obj)
    assert isvc.spec.predictor.model.storage_uri == _uri("v1")


def test_rollback_keeps_the_latest_revision_at_zero_until_the_next_canary():
    """The second patch makes a new revision; Knative's "latest" target is the latest *ready* revision (the
    candidate's until the new one is up), so the rolled-out revision must keep 100 % through that patch."""
    first, second = rollback_patches("v2", _uri("v1"), "v1")
    assert first == {"metadata": {"annotations": {REJECTED_ANNOTATION: "v2"}},
                     "spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert second["spec"]["predictor"] == {"canaryTrafficPercent": 0, "model": {"storageUri": _uri("v1")}}
    assert second["metadata"]["annotations"] == {MODEL_VERSION_ANNOTATION: "v1"}
    # the same traffic moves without a verdict: nothing named rejected
    assert restore_patches(_uri("v1"), "v1") == [{"spec": {"predictor": {"canaryTrafficPercent": 0}}}, second]


# --------------------------------------------------------------------------- attribution


def test_attribution_is_refused_before_the_canary_when_production_gets_none_of_the_traffic():
    message = attribution_problem({"unknown": 180.4}, "v2", "v1", 20, canary_started=False, window_seconds=4)
    assert message.startswith(ATTRIBUTION_IMPOSSIBLE)
    assert "180 requests in the last 4s" in message and "production v1 0" in message and "unknown 180" in message
    assert "candidate" not in message  # not served yet
    # whatever else the labels say, production's own version must be among them
    assert attribution_problem({"v0": 50, "unknown": 50}, "v2", "v1", 20, False, 4) is not None


def test_attribution_is_refused_during_a_step_when_neither_version_gets_any():
    message = attribution_problem({"unknown": 95, "v1": 0.0}, "v2", "v1", 20, canary_started=True, window_seconds=3)
    assert message.startswith(ATTRIBUTION_IMPOSSIBLE) and "production v1 0, candidate v2 0" in message
    assert "by model_version: unknown 95" in message


@pytest.mark.parametrize("by_version,started", [
    ({"v1": 300}, False),  # production attributed
    ({"v1": 300, "v2": 30}, True),
    ({"v2": 30, "unknown": 300}, True),  # the candidate is attributed: its own verdict decides
    ({"v1": 1, "unknown": 300}, False),
    ({}, False), ({}, True),  # idle: nothing is proven; the no-verdict rule decides
    ({"unknown": 19}, True),  # below min_requests
])
def test_attribution_is_accepted(by_version, started):
    assert attribution_problem(by_version, "v2", "v1", 20, started, 4) is None


def test_patch_check_catches_mistakes():
    with pytest.raises(UnknownFieldError, match="storageURI"):
        check_fields({"spec": {"predictor": {"model": {"storageURI": "s3://x"}}}}, "V1beta1InferenceService")
    with pytest.raises(UnknownFieldError, match="canaryTrafficPercent"):
        load_inference_service(merge_patch(_isvc(), traffic_patch(150)))


def test_merge_patch_removes_nulls_and_keeps_the_rest():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}


class StubPrometheus:
    """v2's metrics as given, production's PROD; the transformer's counts by version follow them, or ``labels``
    (a callable of the patches so far) says what the transformer counted."""

    def __init__(self, candidate: VersionMetrics, production: VersionMetrics = PROD, labels=None, isvc=None):
        self.candidate, self.production, self.labels, self.isvc = candidate, production, labels, isvc

    def version_metrics(self, version, window_seconds):
        return self.candidate if version == "v2" else self.production

    def requests_by_version(self, window_seconds):
        if self.labels is not None:
            return self.labels(self.isvc.patches if self.isvc else [])
        counts = {"v2": self.candidate.requests, "v1": self.production.requests}
        return {v: n for v, n in counts.items() if n}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _rollout(candidate_metrics, production="v1", obj=None, production_metrics=PROD, labels=None):
    clock, isvc = Clock(), RecordingInferenceService(obj or _isvc())
    settings = replace(Settings(), artifact_uri="s3://b", canary_steps="10,50,100", canary_hold_seconds=60)
    prometheus = StubPrometheus(candidate_metrics, production_metrics, labels, isvc)
    r = Rollout(isvc, prometheus, settings, "v2", production, poll_seconds=10, log=lambda _: None,
                sleep=clock.sleep, clock=clock)
    return r, isvc, clock


def _run(candidate_metrics, production="v1", obj=None, **kwargs):
    r, isvc, clock = _rollout(candidate_metrics, production, obj, **kwargs)
    return r.run(), isvc, clock


def test_loop_steps_through_and_promotes():
    outcome, isvc, clock = _run(GOOD)
    assert outcome == "promoted"
    assert [p["spec"]["predictor"]["canaryTrafficPercent"] for p in isvc.patches] == [10, 50, 100, None]
    assert clock.now >= 3 * 60


def test_loop_rolls_back_a_bad_candidate():
    outcome, isvc, _ = _run(replace(GOOD, error_rate=0.5))
    assert outcome == "rolled-back"
    assert isvc.obj["metadata"]["annotations"][rollout.REJECTED_ANNOTATION] == "v2"
    assert isvc.obj["spec"]["predictor"]["model"]["storageUri"] == _uri("v1")
    assert isvc.obj["spec"]["predictor"]["canaryTrafficPercent"] == 0


def test_loop_gives_up_without_traffic():
    outcome, _, clock = _run(replace(GOOD, requests=0))
    assert outcome == "rolled-back" and clock.now > rollout.MAX_WAIT_HOLDS * 60


def test_an_idle_service_is_not_an_attribution_problem():
    """0 requests in all proves nothing about labels: the no-verdict rule rolls back, as it always did."""
    outcome, isvc, clock = _run(replace(GOOD, requests=0), production_metrics=replace(PROD, requests=0))
    assert outcome == "rolled-back" and clock.now > rollout.MAX_WAIT_HOLDS * 60
    assert isvc.obj["metadata"]["annotations"][rollout.REJECTED_ANNOTATION] == "v2"


def test_refuses_before_any_patch_when_production_traffic_carries_no_version():
    r, isvc, _ = _rollout(GOOD, labels=lambda patches: {"unknown": 400.0})
    assert r.run() == "refused" and isvc.patches == []
    assert r.refusal.startswith(ATTRIBUTION_IMPOSSIBLE) and "unknown 400" in r.refusal


def test_refuses_during_a_step_and_gives_production_all_the_traffic_back():
    # production is attributed until the canary patch; from then on every answer is unlabelled
    r, isvc, _ = _rollout(replace(GOOD, requests=0),
                          labels=lambda patches: {"unknown": 300.0} if patches else {"v1": 300.0})
    assert r.run() == "refused"
    assert r.refusal.startswith(ATTRIBUTION_IMPOSSIBLE) and "candidate v2 0" in r.refusal
    assert [p["spec"]["predictor"]["canaryTrafficPercent"] for p in isvc.patches] == [10, 0, 0]
    predictor, annotations = isvc.obj["spec"]["predictor"], isvc.obj["metadata"]["annotations"]
    assert predictor["model"]["storageUri"] == _uri("v1") and predictor["canaryTrafficPercent"] == 0
    assert annotations[MODEL_VERSION_ANNOTATION] == "v1" and REJECTED_ANNOTATION not in annotations


def test_a_resumed_canary_is_refused_at_its_step():
    obj = merge_patch(_isvc(), canary_patch(_uri("v2"), "v2", 50))
    r, isvc, _ = _rollout(replace(GOOD, requests=0), obj=obj, labels=lambda patches: {"unknown": 300.0})
    assert r.run() == "refused"
    assert isvc.patches == restore_patches(_uri("v1"), "v1")


def test_first_model_is_deployed_without_a_canary():
    outcome, isvc, _ = _run(GOOD, production=None)
    assert outcome == "promoted" and "canaryTrafficPercent" not in isvc.obj["spec"]["predictor"]


def test_resumes_an_interrupted_canary():
    obj = merge_patch(_isvc(), canary_patch(_uri("v2"), "v2", 50))
    outcome, isvc, _ = _run(GOOD, obj=obj)
    assert outcome == "promoted"
    assert [p["spec"]["predictor"]["canaryTrafficPercent"] for p in isvc.patches] == [100, None]


def test_dry_run_prints_the_steps(capsys):
    parser = argparse.ArgumentParser()
    rollout.add_parser(parser.add_subparsers())
    args = parser.parse_args(["rollout", "--dry-run", "--candidate", "v2", "--production", "v1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1. patch inferenceservice smart-energy/energy-forecaster:")
    assert '"canaryTrafficPercent": 10' in out[0] and "/models/energy-forecaster/v2" in out[0]
    for percent in (25, 50, 100):
        assert any(f'"canaryTrafficPercent": {percent}}}' in line for line in out)
    assert any("promote" in line and '"canaryTrafficPercent": null' in line for line in out)
    assert any("on rollback" in line and "rejected-version" in line for line in out)


def test_rollout_cli_reads_the_registry_and_agrees_with_itself(tmp_path):
    """`smart-energy rollout` as a user runs it: pointers from the registry; the dry run never plans what the
    real run would refuse (a candidate that is already production)."""
    import json
    import os
    import subprocess
    import sys

    store = tmp_path / "artifacts"
    for version in ("v1", "v2"):
        folder = store / "models" / "energy-forecaster" / version
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps({"name": "energy-forecaster", "version": version}))
    env = {**os.environ, "SE_ARTIFACT_URI": store.as_uri()}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "smart_energy.cli", "rollout", *args], capture_output=True,
                              text=True, env=env)

    nothing = run("--dry-run")
    assert nothing.returncode == 0 and "no candidate registered" in nothing.stderr and nothing.stdout == ""
    pointers = store / "models" / "energy-forecaster"
    (pointers / "production.json").write_text('{"version": "v1"}')
    (pointers / "candidate.json").write_text('{"version": "v2"}')
    planned = run("--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("1. patch inferenceservice smart-energy/energy-forecaster:")
    assert json.dumps(storage_uri(store.as_uri(), "energy-forecaster", "v2")) in planned.stdout
    assert "MAE v2/v1" in planned.stdout
    (pointers / "candidate.json").write_text('{"version": "v1"}')  # promoted already
    for args in (["--dry-run"], []):
        same = run(*args)
        assert same.returncode == 0 and same.stdout == ""
        assert "v1 is already the production version; nothing to roll out" in same.stderr


def test_rollout_of_another_model_uses_its_pointers_and_its_inference_service(tmp_path):
    """`--model NAME`: NAME's registry pointers, and the InferenceService NAME (the dry run says so)."""
    import json
    import os
    import subprocess
    import sys

    store = tmp_path / "artifacts"
    for name, versions in (("energy-forecaster", ("v1", "v2")), ("energy-forecaster-dayahead", ("d1", "d2"))):
        pointers = store / "models" / name
        pointers.mkdir(parents=True)
        (pointers / "production.json").write_text(json.dumps({"version": versions[0]}))
        (pointers / "candidate.json").write_text(json.dumps({"version": versions[1]}))
    env = {**os.environ, "SE_ARTIFACT_URI": store.as_uri()}
    run = subprocess.run([sys.executable, "-m", "smart_energy.cli", "rollout", "--model", "energy-forecaster-dayahead",
                          "--dry-run"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines and all("inferenceservice smart-energy/energy-forecaster-dayahead:" in line
                         for line in lines if "patch" in line)
    assert json.dumps(storage_uri(store.as_uri(), "energy-forecaster-dayahead", "d2")) in lines[0]
    assert "MAE d2/d1" in run.stdout
    assert any("on rollback" in line and storage_uri(store.as_uri(), "energy-forecaster-dayahead", "d1") in line
               for line in lines)
    bad = subprocess.run([sys.executable, "-m", "smart_energy.cli", "rollout", "--model", "Energy_Forecaster",
                          "--dry-run"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert "'Energy_Forecaster' is not a model/InferenceService name" in bad.stderr


def test_rollout_settings_name_the_model_and_the_inference_service():
    base = Settings()
    mine = rollout.rollout_settings(base, "energy-forecaster-dayahead")
    assert (mine.model_name, mine.inference_service) == ("energy-forecaster-dayahead",) * 2
    assert rollout.rollout_settings(base, None) is base


def test_cli_refusal_exits_2_with_one_line(monkeypatch, capsys):
    """The controller as the CronJob runs it: Kubernetes and Prometheus clients built by the CLI (stubs here),
    scoped to the InferenceService named by --model."""
    built = {}

    class Isvc(RecordingInferenceService):
        def __init__(self, namespace, name):
            super().__init__(_isvc())
            built["isvc"] = (namespace, name, self)

    class Prometheus(StubPrometheus):
        def __init__(self, url, isvc=None):
            super().__init__(GOOD, labels=lambda patches: {"unknown": 250.0})
            built["prometheus_isvc"] = isvc

    monkeypatch.setattr(rollout, "InferenceServiceClient", Isvc)
    monkeypatch.setattr(rollout, "PrometheusClient", Prometheus)
    parser = argparse.ArgumentParser()
    rollout.add_parser(parser.add_subparsers())
    args = parser.parse_args(["rollout", "--model", "energy-forecaster-dayahead", "--candidate", "v2",
                              "--production", "v1"])
    assert args.func(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"rollout: error: {ATTRIBUTION_IMPOSSIBLE} (")
    assert built["isvc"][:2] == ("smart-energy", "energy-forecaster-dayahead") and built["isvc"][2].patches == []
    assert built["prometheus_isvc"] == "energy-forecaster-dayahead"


def test_prometheus_queries_are_scoped_to_the_inference_service(monkeypatch):
    from smart_energy.serving import rollout_clients

    queries = []

    class Answer:
        def raise_for_status(self):
            pass

        def json(self):
            return {"status": "success", "data": {"result": [
                {"metric": {"model_version": "v1"}, "value": [0, "12"]},
                {"metric": {"model_version": "unknown"}, "value": [0, "3.5"]}]}}

    monkeypatch.setattr(rollout_clients.requests, "get", lambda url, params, timeout: queries.append(params["query"])
                        or Answer())
    client = rollout_clients.PrometheusClient("http://prometheus", isvc="energy-forecaster")
    assert client.requests_by_version(4) == {"v1": 12.0, "unknown": 3.5} and client.total_requests(4) == 15.5
    client.version_metrics("v1", 4)
    assert len(queries) == 7 and all('isvc="energy-forecaster"' in q for q in queries), queries
    assert any('se_requests_total{model_version="v1",code=~"5..",isvc="energy-forecaster"}[4s]' in q for q in queries)
    queries.clear()
    rollout_clients.PrometheusClient("http://prometheus").requests_by_version(4)
    assert queries == ["sum by (model_version) (increase(se_requests_total[4s]))"]
