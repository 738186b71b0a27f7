"""The pipeline's own decisions as plain functions: hold-out window, promote or not, deploy request, schedule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.pipeline_steps import (
    check_horizon, decide, deploy_request, evaluation_markdown, fetch_raw, holdout_cutoff, split_history_holdout,
)
from smart_energy.components.settings import Settings
from smart_energy.pipelines.recurring_run import COMPILED, DAILY_CRON, schedule_daily, submit_once


def evaluation(version: str, mae: float, persistence: float = 0.5) -> dict:
    return {"model_version": version, "mae_kw": mae, "rmse_kw": mae * 1.5, "hours_scored": 600,
            "first_hour": "2007-02-01 00:00:00+00:00", "last_hour": "2007-02-28 23:00:00+00:00",
            "baselines": {"persistence": {"mae_kw": persistence, "rmse_kw": 0.8},
                          "seasonal_24h": {"mae_kw": 0.9, "rmse_kw": 1.2}}}


def test_holdout_window_ends_with_the_last_day():
    assert holdout_cutoff("2007-02-28T23:59:00+00:00", 28) == "2007-02-01T00:00:00"
    assert holdout_cutoff("2007-01-27T17:27:00+00:00", 7) == "2007-01-21T00:00:00"


def test_split_refuses_too_little_history(tmp_path):
    with pytest.raises(SmartEnergyError, match="only 5.0 days of readings before"):
        split_history_holdout(tmp_path / "x.txt", "2007-01-01T00:00:00+00:00", "2007-01-06T00:00:00",
                              tmp_path / "a", tmp_path / "b")


def test_first_model_is_promoted_only_when_it_beats_persistence():
    assert decide({"candidate": evaluation("v2", 0.40), "production": None}, 0.01)["promote"] is True
    worse = decide({"candidate": evaluation("v2", 0.55), "production": None}, 0.01)
    assert worse["promote"] is False and "does not beat persistence" in worse["reason"]


@pytest.mark.parametrize("new_mae, threshold, promote", [
    (0.39, 0.01, True),   # 2.5 % better
    (0.398, 0.01, False),  # 0.5 % better: below the threshold
    (0.40, 0.0, False),   # equal is not better
    (0.42, 0.0, False),   # worse
])
def test_replacement_must_beat_production_by_the_threshold(new_mae, threshold, promote):
    result = decide({"candidate": evaluation("v2", new_mae), "production": evaluation("v1", 0.40)}, threshold)
    assert result["promote"] is promote
    assert result["production_version"] == "v1" and result["improvement"] == pytest.approx(1 - new_mae / 0.40)


def test_deploy_request_starts_a_replacement_at_the_first_canary_step():
    settings = Settings(artifact_uri="s3://smart-energy", canary_steps="10,25,50,100")
    decision = {"promote": True, "version": "v2", "reason": "better", "production_version": "v1"}
    body = deploy_request(decision, settings)
    predictor = body["patch"]["spec"]["predictor"]
    assert predictor == {"canaryTrafficPercent": 10,
                         "model": {"storageUri": "s3://smart-energy/models/energy-forecaster/v2"}}
    assert body["patch"]["metadata"]["annotations"]["smart-energy.io/model-version"] == "v2"
    assert body["target"]["name"] == settings.inference_service
    assert deploy_request(decision | {"production_version": None}, settings)["patch"]["spec"]["predictor"][
        "canaryTrafficPercent"] == 100
    assert deploy_request(decision | {"promote": False}, settings) == {
        "action": "none", "reason": "better", "target": body["target"]}


def test_evaluation_table_lists_model_production_and_baselines():
    table = evaluation_markdown({"candidate": evaluation("v2", 0.40), "production": evaluation("v1", 0.42)})
    assert "| model v2 | 0.4000 | 0.6000 | -20.0% |" in table
    assert "| production v1 | 0.4200 |" in table and "| seasonal_24h | 0.9000 |" in table


def test_horizons_other_than_the_two_models_are_refused():
    check_horizon(1, hpo_trials=5)
    check_horizon(24)
    with pytest.raises(SmartEnergyError, match="choose 1 .next hour. or 24"):
        check_horizon(6)
    with pytest.raises(SmartEnergyError, match="next-hour model only"):
        check_horizon(24, hpo_trials=3)


def test_fetch_raw_copies_paths_and_file_uris(tmp_path):
    source = tmp_path / "meter.txt.gz"
    source.write_bytes(b"x")
    assert fetch_raw(str(source), tmp_path / "a", Settings()).name == "meter.txt.gz"
    assert fetch_raw(source.as_uri(), tmp_path / "b", Settings()).read_bytes() == b"x"
    with pytest.raises(SmartEnergyError, match="no such file"):
        fetch_raw(str(tmp_path / "missing.txt"), tmp_path / "c", Settings())
    with pytest.raises(SmartEnergyError, match="unsupported data URI"):
        fetch_raw("ftp://host/meter.txt", tmp_path / "d", Settings())


class FakeKfpClient:
    """Records what would be sent to the KFP API (there is no cluster here)."""

    def __init__(self):
        self.calls = []

    def create_experiment(self, name):
        self.calls.append(("create_experiment", {"name": name}))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("create_recurring_run", kwargs))
        return SimpleNamespace(recurring_run_id="rr-1")

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        self.calls.append(("create_run", {"pipeline_file": pipeline_file, **kwargs}))
        return SimpleNamespace(run_id="run-1")


def test_daily_recurring_run_uses_the_compiled_pipeline_without_caching():
    client = FakeKfpClient()
    assert schedule_daily(client, {"hpo_trials": 10}).recurring_run_id == "rr-1"
    (_, experiment), (_, job) = client.calls
    assert experiment == {"name": "smart-energy"}
    assert job["experiment_id"] == "exp-1" and job["cron_expression"] == DAILY_CRON == "0 0 3 * * *"
    assert job["pipeline_package_path"] == str(COMPILED) and COMPILED.is_file()
    assert job["enable_caching"] is False and job["max_concurrency"] == 1 and job["no_catchup"] is True
    assert job["params"] == {"hpo_trials": 10}
    with pytest.raises(ValueError, match="six fields"):
        schedule_daily(FakeKfpClient(), cron="0 3 * * *")


def test_one_off_cluster_run_submits_the_compiled_pipeline():
    client = FakeKfpClient()
    assert submit_once(client, {"data_uri": "s3://smart-energy/raw/x.txt"}).run_id == "run-1"
    assert client.calls[0][1]["pipeline_file"] == str(COMPILED)
    assert client.calls[0][1]["arguments"] == {"data_uri": "s3://smart-energy/raw/x.txt"}


def _model_dir(path, version):
    import numpy as np
    import xgboost as xgb

    from smart_energy.components.registry import write_model_dir

    x = np.random.default_rng(1).normal(size=(32, 2))
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0]), num_boost_round=3)
    write_model_dir(booster, {"name": "energy-forecaster", "version": version, "features": ["a", "b"]}, path)
    return path


def test_register_and_promote_moves_only_the_pointer_the_decision_calls_for(tmp_path):
    from smart_energy.components.pipeline_steps import register_and_promote
    from smart_energy.components.registry import list_versions, stage_version
    from smart_energy.components.storage import open_store

    store = open_store((tmp_path / "store").as_uri())
    first = register_and_promote(store, _model_dir(tmp_path / "a", "v1"), {"promote": True, "production_version": None})
    assert first["stage"] == "production" and stage_version(store, "energy-forecaster", "production") == "v1"
    worse = register_and_promote(store, _model_dir(tmp_path / "b", "v2"), {"promote": False, "production_version": "v1"})
    assert worse["stage"] == "registered"
    assert stage_version(store, "energy-forecaster", "candidate") == "v1"  # never offered to the rollout
    better = register_and_promote(store, _model_dir(tmp_path / "c", "v3"), {"promote": True, "production_version": "v1"})
    assert better["stage"] == "candidate"
    assert stage_version(store, "energy-forecaster", "candidate") == "v3"
    assert stage_version(store, "energy-forecaster", "production") == "v1"  # the canary decides
    assert list_versions(store, "energy-forecaster") == ["v1", "v2", "v3"]
