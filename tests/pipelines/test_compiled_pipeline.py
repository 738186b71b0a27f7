"""The committed KFP IR of both training pipelines (both models, and the next-hour one the loop retrains with):
valid, complete, on the project image, and not stale."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2

from smart_energy.components.images import IMAGE
from smart_energy.pipelines.cli import COMPILED, NEXT_HOUR_COMPILED, compile_pipeline
from smart_energy.pipelines.local_run import NEXT_HOUR_STAGES, STAGES

PARAMETERS = {"data_uri", "meter_id", "hpo_trials", "promotion_threshold",
              "max_quarantine_fraction", "holdout_days"}
# (compiled file, pipeline name, its tasks, compile_pipeline's next_hour_only)
PIPELINES = {"training": (COMPILED, "smart-energy-training", STAGES, False),
             "next-hour": (NEXT_HOUR_COMPILED, "smart-energy-training-next-hour", NEXT_HOUR_STAGES, True)}
each_pipeline = pytest.mark.parametrize("pipeline", list(PIPELINES))


def _documents(path: Path = COMPILED) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def _spec(path: Path = COMPILED) -> dict:
    return _documents(path)[0]


@each_pipeline
def test_every_step_reads_settings_and_credentials_on_the_cluster(pipeline):
    """The platform spec (kfp-kubernetes) gives each step the settings ConfigMap, the Secret and the Feast config."""
    from smart_energy.pipelines.training_pipeline import CREDENTIAL_KEYS, SETTINGS_CONFIG_MAP, SETTINGS_KEYS

    path, _, stages, _ = PIPELINES[pipeline]
    platform = _documents(path)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(platform) == len(stages)
    for name, executor in platform.items():
        env_maps = {e["configMapName"]: {k["configMapKey"] for k in e["keyToEnv"]} for e in executor["configMapAsEnv"]}
        assert env_maps[SETTINGS_CONFIG_MAP] == set(SETTINGS_KEYS), name
        secrets = {k["secretKey"] for e in executor["secretAsEnv"] for k in e["keyToEnv"]}
        assert secrets == set(CREDENTIAL_KEYS), name
        assert executor["configMapAsVolume"][0]["mountPath"] == "/etc/feast", name


def test_settings_config_map_in_manifests_has_exactly_the_keys_the_pipeline_reads():
    from pathlib import Path

    from smart_energy.components.settings import ENV
    from smart_energy.pipelines.training_pipeline import SETTINGS_KEYS

    path = Path(__file__).resolve().parents[2] / "manifests" / "base" / "config" / "settings.yaml"
    data = yaml.safe_load(path.read_text())["data"]
    assert set(data) == set(SETTINGS_KEYS)
    assert set(data) - {"FEAST_S3_ENDPOINT_URL"} <= set(ENV.values())  # Feast's own variable, not ours


@each_pipeline
def test_compiled_yaml_loads_back_with_the_kfp_sdk(pipeline):
    path, name, _, _ = PIPELINES[pipeline]
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == name
    assert set(loaded.component_spec.inputs) == PARAMETERS
    proto = json_format.ParseDict(_spec(path), pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields fail
    assert proto.schema_version == "2.1.0"


def test_every_stage_is_a_component_and_a_task():
    spec = _spec()
    assert set(spec["components"]) == {f"comp-{stage}" for stage in STAGES}
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(STAGES)
    shown = {name: t["taskInfo"]["name"] for name, t in tasks.items()}
    assert shown["train"] == "train (next hour)" and shown["train-2"] == "train (day ahead)"
    # the data flows in order, in each model's branch: evaluate reads train's model, deploy-request reads
    # register's decision; the day-ahead branch trains with horizon 24 and no HPO
    for suffix, horizon in (("", 1), ("-2", 24)):
        assert tasks[f"evaluate{suffix}"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == \
            f"train{suffix}"
        train = tasks[f"train{suffix}"]["inputs"]["parameters"]
        assert train["until"]["taskOutputParameter"]["producerTask"] == "split-holdout"
        assert train["horizon_hours"]["runtimeValue"]["constant"] == horizon
        assert tasks[f"deploy-request{suffix}"]["dependentTasks"] == [f"register{suffix}"]
    assert tasks["train-2"]["inputs"]["parameters"]["hpo_trials"]["runtimeValue"]["constant"] == 0
    assert set(tasks["split-holdout"]["dependentTasks"]) >= {"quality-gate"}
    assert set(tasks["materialize-features"]["dependentTasks"]) >= {"quality-gate"}
    # no dsl.If: the promote decision is made inside the register step
    assert not any("triggerPolicy" in t for t in tasks.values())
    assert all(not t["cachingOptions"].get("enableCache") for t in tasks.values())


def test_the_next_hour_pipeline_is_the_training_pipeline_without_its_day_ahead_branch():
    """The same tasks, wired the same way, running the same component code: only the "-2" branch is absent."""
    full, alone = _spec(), _spec(NEXT_HOUR_COMPILED)
    tasks = alone["root"]["dag"]["tasks"]
    day_ahead = {f"{step}-2" for step in ("train", "evaluate", "register", "deploy-request")}
    assert set(tasks) == set(NEXT_HOUR_STAGES) == set(STAGES) - day_ahead
    for name, task in tasks.items():
        assert task == full["root"]["dag"]["tasks"][name], name
    executors = alone["deploymentSpec"]["executors"]
    assert executors == {name: full["deploymentSpec"]["executors"][name] for name in executors}
    assert alone["root"]["inputDefinitions"] == full["root"]["inputDefinitions"]
    assert not any("triggerPolicy" in t for t in tasks.values())


@each_pipeline
def test_executors_run_the_project_image_without_installing_anything(pipeline):
    path, _, stages, _ = PIPELINES[pipeline]
    executors = _spec(path)["deploymentSpec"]["executors"]
    assert len(executors) == len(stages)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE, name
        assert "pip install" not in " ".join(container["command"]), name
        assert "from smart_energy.components." in container["command"][-1], name  # a shell over the plain functions


@each_pipeline
def test_committed_yaml_is_not_stale(pipeline, tmp_path):
    path, _, _, next_hour_only = PIPELINES[pipeline]
    fresh = compile_pipeline(tmp_path / path.name, next_hour_only=next_hour_only).read_text()

    def stable(text: str) -> list[str]:  # the SDK version is the only field that differs between machines
        return [line for line in text.splitlines() if not line.startswith("sdkVersion:")]

    assert stable(path.read_text()) == stable(fresh), (
        f"pipelines/compiled/{path.name} is stale: run `smart-energy pipeline compile` and commit it")


# --------------------------------------------------------------------------- the fleet's training on Spark


def test_committed_fleet_spark_pipeline_is_not_stale(tmp_path):
    from smart_energy.pipelines.cli import FLEET_SPARK_COMPILED, compile_fleet_spark_pipeline

    fresh = compile_fleet_spark_pipeline(tmp_path / "fleet_spark_pipeline.yaml").read_text()
    stable = lambda text: [ln for ln in text.splitlines() if not ln.startswith("sdkVersion:")]  # noqa: E731
    assert stable(FLEET_SPARK_COMPILED.read_text()) == stable(fresh), (
        "pipelines/compiled/fleet_spark_pipeline.yaml is stale: run `smart-energy pipeline compile` and commit it")


def test_fleet_spark_step_launches_one_application_per_run_with_the_cluster_settings():
    from smart_energy.pipelines.cli import FLEET_SPARK_COMPILED
    from smart_energy.pipelines.training_pipeline import CREDENTIAL_KEYS, SETTINGS_CONFIG_MAP, SETTINGS_KEYS

    spec, platform = list(yaml.safe_load_all(FLEET_SPARK_COMPILED.read_text()))
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields fail
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"train-fleet-on-spark"}
    task = tasks["train-fleet-on-spark"]
    assert not task["cachingOptions"].get("enableCache")
    # the SparkApplication's name comes from the KFP run: one object per run
    assert task["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"data_uri", "namespace", "timeout_seconds"}
    container = spec["deploymentSpec"]["executors"]["exec-train-fleet-on-spark"]["container"]
    assert container["image"] == IMAGE and "pip install" not in " ".join(container["command"])
    assert "from smart_energy.pipelines.spark_application import" in container["command"][-1]
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-fleet-on-spark"]
    env_maps = {e["configMapName"]: {k["configMapKey"] for k in e["keyToEnv"]} for e in executor["configMapAsEnv"]}
    assert env_maps[SETTINGS_CONFIG_MAP] == set(SETTINGS_KEYS)
    assert {k["secretKey"] for e in executor["secretAsEnv"] for k in e["keyToEnv"]} == set(CREDENTIAL_KEYS)


def test_compile_next_hour_only_writes_that_pipeline_alone(tmp_path):
    import subprocess

    from pipeline_helpers import SMART_ENERGY

    out = tmp_path / "next_hour.yaml"
    proc = subprocess.run([SMART_ENERGY, "pipeline", "compile", "--next-hour-only", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == str(out), proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == [out]
    stable = lambda text: [ln for ln in text.splitlines() if not ln.startswith("sdkVersion:")]  # noqa: E731
    assert stable(out.read_text()) == stable(NEXT_HOUR_COMPILED.read_text())
