"""The whole pipeline with kfp.local on six weeks of the shared data: artifacts, metrics and the registry.

Two runs on the same readings: the first (through the CLI) has no production model to beat and is
promoted; the second scores the new model and production on the same hours and, being no better,
stays a candidate with an empty deploy request.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from smart_energy.components.registry import list_versions, read_metadata, stage_version
from smart_energy.components.storage import open_store
from pipeline_helpers import SMART_ENERGY, slice_of
from smart_energy.pipelines.local_run import STAGES, LocalRun, _metrics, run_local

pytestmark = pytest.mark.slow
SIX_WEEKS = 6 * 7 * 1440
HOLDOUT_DAYS = 7


@pytest.fixture(scope="module")
def data_slice(shared_data, tmp_path_factory) -> Path:
    return slice_of(shared_data, tmp_path_factory.mktemp("data") / "six_weeks.txt", SIX_WEEKS)


@pytest.fixture(scope="module")
def first_run(pipeline_env, data_slice, tmp_path_factory):
    """`smart-energy pipeline run --local` as a user runs it; returns the run and what it printed."""
    root = tmp_path_factory.mktemp("runs")
    proc = subprocess.run(
        [SMART_ENERGY, "pipeline", "run", "--local", "--data", str(data_slice), "--pipeline-root", str(root),
         "--holdout-days", str(HOLDOUT_DAYS)],
        env={**os.environ, **pipeline_env}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = Path(re.search(r"^run directory: (.+)$", proc.stdout, re.M).group(1))
    assert run_dir.parent == root
    return LocalRun(run_dir=run_dir, metrics=_metrics(run_dir)), proc.stdout


@pytest.fixture(scope="module")
def second_run(first_run, pipeline_env, data_slice, tmp_path_factory):
    return run_local(data_slice, tmp_path_factory.mktemp("runs2"), holdout_days=HOLDOUT_DAYS)


def test_every_stage_wrote_its_artifacts(first_run):
    run, _ = first_run
    written = run.artifacts()
    for name in ("ingest/raw", "ingest/hourly", "quality-gate/report", "split-holdout/history",
                 "split-holdout/holdout", "materialize-features/features", "train/model", "evaluate/comparison",
                 "evaluate/report", "register/decision", "deploy-request/request"):
        assert name in written and written[name].exists(), name
    assert {p.name for p in (run.run_dir / "ingest" / "hourly").iterdir()} >= {"hourly.parquet", "quality.json"}
    metadata = read_metadata(run.run_dir / "train" / "model")  # checks model.json against its sha256
    assert (run.run_dir / "train" / "model" / "drift").is_dir()
    assert metadata["training_window"]["end"] < "2007-01-21"  # nothing from the hold-out week
    dayahead = read_metadata(run.run_dir / "train-2" / "model")
    assert (dayahead["name"], dayahead["horizon_hours"]) == ("energy-forecaster-dayahead", 24)
    assert dayahead["training_window"]["end"] < "2007-01-21"


def test_metrics_are_sane(first_run):
    run, _ = first_run
    m = run.metrics
    ingest = m["ingest"]
    assert ingest["rows_read"] == SIX_WEEKS
    assert ingest["rows_read"] == ingest["rows_valid"] + ingest["rows_missing"] + ingest["rows_quarantined"]
    assert ingest["quarantine_fraction"] <= 0.05
    assert m["materialize-features"]["feature_rows"] >= ingest["hours"]
    ev = m["evaluate"]
    assert 24 * (HOLDOUT_DAYS - 1) <= ev["hours_scored"] <= 24 * HOLDOUT_DAYS
    assert 0.05 < ev["mae_kw"] < 2.0 and ev["rmse_kw"] >= ev["mae_kw"]
    # the forecaster must beat the naive forecasts on the hold-out week
    assert ev["mae_kw"] < ev["persistence_mae_kw"] and ev["mae_kw"] < ev["seasonal_24h_mae_kw"]
    assert 0 < m["train"]["valid_mae_kw"] < 2.0
    assert "production_mae_kw" not in ev


def test_first_model_is_promoted_and_deploy_request_names_it(first_run, pipeline_env):
    run, printed = first_run
    decision = run.read_json("register", "decision")
    assert decision["promote"] is True and decision["stage"] == "production"
    store = open_store(pipeline_env["SE_ARTIFACT_URI"])
    assert stage_version(store, "energy-forecaster", "production") == decision["version"]
    assert stage_version(store, "energy-forecaster", "candidate") == decision["version"]
    request = yaml.safe_load(run.read_text("deploy-request", "request"))
    assert request["action"] == "patch"
    assert request["target"]["kind"] == "InferenceService"
    predictor = request["patch"]["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == f"{pipeline_env['SE_ARTIFACT_URI']}/models/energy-forecaster/{decision['version']}"
    assert predictor["canaryTrafficPercent"] == 100  # nothing in production to share traffic with
    # the CLI says where things landed and shows the evaluation table
    assert str(run.run_dir / "train" / "model") in printed
    assert "| persistence |" in printed and f"model {decision['version']}" in printed
    assert "mae_kw=" in printed
    # the tasks' own output went to the run's log, not the terminal
    assert "Got executor_input" in (run.run_dir / "tasks.log").read_text()
    assert "Got executor_input" not in printed


def test_the_dayahead_branch_is_scored_registered_and_deployed_as_its_own_model(first_run, pipeline_env):
    run, printed = first_run
    comparison = run.read_json("evaluate-2", "comparison")
    assert (comparison["model_name"], comparison["horizon_hours"]) == ("energy-forecaster-dayahead", 24)
    scored = run.metrics["evaluate-2"]
    assert 0.6 <= scored["coverage_p10_p90"] <= 0.95 and scored["pinball_kw"] > 0
    assert scored["hours_scored"] > 24 * 24  # (origin, lead) pairs of the hold-out week
    decision = run.read_json("register-2", "decision")
    store = open_store(pipeline_env["SE_ARTIFACT_URI"])
    if decision["promote"]:  # P50 beat persistence on the hold-out pairs: the first day-ahead model is production
        assert stage_version(store, "energy-forecaster-dayahead", "production") == decision["version"]
        request = yaml.safe_load(run.read_text("deploy-request-2", "request"))
        assert request["target"]["name"] == "energy-forecaster-dayahead"
        assert request["patch"]["spec"]["predictor"]["model"]["storageUri"].endswith(
            f"/models/energy-forecaster-dayahead/{decision['version']}")
    assert decision["version"] in list_versions(store, "energy-forecaster-dayahead")
    # the two models' pointers are separate
    assert stage_version(store, "energy-forecaster", "production") != stage_version(
        store, "energy-forecaster-dayahead", "production")
    assert "Day-ahead forecast (P50)" in printed and "energy-forecaster-dayahead" in printed


def test_second_run_compares_with_production_on_same_hours(first_run, second_run, pipeline_env):
    first, _ = first_run
    comparison = second_run.read_json("evaluate", "comparison")
    production, candidate = comparison["production"], comparison["candidate"]
    assert production["model_version"] == first.read_json("register", "decision")["version"]
    assert (production["first_hour"], production["last_hour"], production["hours_scored"]) == (
        candidate["first_hour"], candidate["last_hour"], candidate["hours_scored"])
    # same data, same seed: no 1 % improvement, so it is only stored as a version: no pointer moves
    # (the rollout controller must never canary it) and nothing is deployed
    decision = second_run.read_json("register", "decision")
    assert decision["promote"] is False and decision["stage"] == "registered"
    assert abs(decision["improvement"]) < 0.01
    store = open_store(pipeline_env["SE_ARTIFACT_URI"])
    assert stage_version(store, "energy-forecaster", "production") == production["model_version"]
    assert stage_version(store, "energy-forecaster", "candidate") == production["model_version"]
    assert len(list_versions(store, "energy-forecaster")) == 2
    assert yaml.safe_load(second_run.read_text("deploy-request", "request"))["action"] == "none"
    assert "production_mae_kw" in second_run.metrics["evaluate"]
    assert second_run.metrics["register"]["promoted"] == 0
    assert set(second_run.seconds) == set(STAGES) and all(s > 0 for s in second_run.seconds.values())
    assert json.loads((second_run.run_dir / "ingest" / "hourly" / "quality.json").read_text())["rows_read"] == SIX_WEEKS
