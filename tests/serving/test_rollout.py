"""The rollout controller's pure decision function, its patches, and the loop with stub clients."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from smart_energy.components.settings import Settings
from smart_energy.serving import rollout
from smart_energy.components.rollout_policy import (
    Decision, Thresholds, VersionMetrics, canary_patch, decide, merge_patch, parse_steps, promote_patch,
    rollback_patches, traffic_patch,
)
from smart_energy.serving.rollout import Rollout
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


def _isvc() -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "energy-forecaster", "namespace": "smart-energy"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "xgboost"}, "protocolVersion": "v2",
                                         "storageUri": "s3://b/models/energy-forecaster/v1/model.json"}}},
    }


def test_every_patch_is_a_valid_inference_service_patch():
    obj = _isvc()
    for body in [canary_patch("s3://b/models/energy-forecaster/v2", "v2", 10), traffic_patch(25), promote_patch("v2"),
                 *rollback_patches("v2", "s3://b/models/energy-forecaster/v1", "v1")]:
        check_fields(body, "V1beta1InferenceService")
        obj = merge_patch(obj, body)
        isvc = load_inference_service(obj)
    assert isvc.spec.predictor.model.storage_uri.endswith("/v1") and isvc.spec.predictor.canary_traffic_percent is None


def test_patch_check_catches_mistakes():
    with pytest.raises(UnknownFieldError, match="storageURI"):
        check_fields({"spec": {"predictor": {"model": {"storageURI": "s3://x"}}}}, "V1beta1InferenceService")
    with pytest.raises(UnknownFieldError, match="canaryTrafficPercent"):
        load_inference_service(merge_patch(_isvc(), traffic_patch(150)))


def test_merge_patch_removes_nulls_and_keeps_the_rest():
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}


class StubIsvc:
    def __init__(self, obj):
        self.obj, self.patches = obj, []

    def get(self):
        return self.obj

    def patch(self, body):
        check_fields(body, "V1beta1InferenceService")
        self.patches.append(body)
        self.obj = merge_patch(self.obj, body)


class StubPrometheus:
    def __init__(self, candidate: VersionMetrics):
        self.candidate = candidate

    def version_metrics(self, version, window_seconds):
        return self.candidate if version == "v2" else PROD


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _run(candidate_metrics, production="v1", obj=None):
    clock, isvc = Clock(), StubIsvc(obj or _isvc())
    settings = replace(Settings(), artifact_uri="s3://b", canary_steps="10,50,100", canary_hold_seconds=60)
    r = Rollout(isvc, StubPrometheus(candidate_metrics), settings, "v2", production, poll_seconds=10,
                log=lambda _: None, sleep=clock.sleep, clock=clock)
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
    assert isvc.obj["spec"]["predictor"]["model"]["storageUri"] == "s3://b/models/energy-forecaster/v1/model.json"


def test_loop_gives_up_without_traffic():
    outcome, _, clock = _run(replace(GOOD, requests=0))
    assert outcome == "rolled-back" and clock.now > rollout.MAX_WAIT_HOLDS * 60


def test_first_model_is_deployed_without_a_canary():
    outcome, isvc, _ = _run(GOOD, production=None)
    assert outcome == "promoted" and "canaryTrafficPercent" not in isvc.obj["spec"]["predictor"]


def test_resumes_an_interrupted_canary():
    obj = merge_patch(_isvc(), canary_patch("s3://b/models/energy-forecaster/v2/model.json", "v2", 50))
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
    assert planned.stdout.startswith("1. patch inferenceservice") and "/energy-forecaster/v2/model.json" in planned.stdout
    assert "MAE v2/v1" in planned.stdout
    (pointers / "candidate.json").write_text('{"version": "v1"}')  # promoted already
    for args in (["--dry-run"], []):
        same = run(*args)
        assert same.returncode == 0 and same.stdout == ""
        assert "v1 is already the production version; nothing to roll out" in same.stderr
