"""The training pipelines: ingest → quality gate → hold-out split → features → train → evaluate → register →
deploy request. ``training_pipeline`` trains both models, the next-hour one and the day-ahead (P10/P50/P90) one,
two branches from the same features; ``next_hour_pipeline`` (what the closed loop retrains with) has the
next-hour branch only. One builder makes both from the same components.

Only wiring: every step is a component in ``smart_energy.pipelines.kfp_components``. There is no ``dsl.If``:
the register step decides promote-or-not from the evaluation (kfp.local mishandles conditions,
and the same decision code then runs locally and on the cluster). Caching is off because the
data behind ``data_uri`` changes from day to day while the parameters do not.
"""

from kfp import dsl, kubernetes

from smart_energy.pipelines.kfp_components import (
    deploy_request, evaluate, ingest, materialize_features, quality_gate, register, split_holdout, train,
)
from smart_energy.components.pipeline_steps import DEFAULT_HOLDOUT_DAYS
from smart_energy.components.settings import Settings

PIPELINE_NAME = "smart-energy-training"
NEXT_HOUR_PIPELINE_NAME = "smart-energy-training-next-hour"
HORIZONS = {1: "next hour", 24: "day ahead"}  # the models a branch can train: horizon hours -> label
DEFAULTS = Settings()  # built-in defaults, never the environment: the compiled YAML must not depend on it
DEFAULT_DATA_URI = "s3://smart-energy/raw/household_power_consumption.txt"
DEFAULT_PROMOTION_THRESHOLD = 0.01
# On the cluster every step reads the settings from the ConfigMap and the credentials from the Secret
# that manifests/ (and the chart) install; kfp.local ignores these and uses the local environment.
SETTINGS_CONFIG_MAP = "smart-energy-settings"
SETTINGS_KEYS = ("SE_ARTIFACT_URI", "S3_ENDPOINT", "S3_USE_HTTPS", "AWS_REGION", "SE_MODEL_NAME", "SE_DAYAHEAD_MODEL_NAME",
                 "SE_FEATURE_REPO",
                 "SE_FEATURE_SOURCE", "SE_ONLINE_STORE", "SE_REDIS_CONNECTION", "SE_PUSHGATEWAY_URL",
                 "FEAST_S3_ENDPOINT_URL")
CREDENTIALS_SECRET = "minio-credentials"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
FEAST_CONFIG_MAP, FEAST_MOUNT = "feast-config", "/etc/feast"


def _cluster_settings(task: dsl.PipelineTask) -> None:
    kubernetes.use_config_map_as_env(task, SETTINGS_CONFIG_MAP, {k: k for k in SETTINGS_KEYS})
    kubernetes.use_secret_as_env(task, CREDENTIALS_SECRET, {k: k for k in CREDENTIAL_KEYS})
    kubernetes.use_config_map_as_volume(task, FEAST_CONFIG_MAP, mount_path=FEAST_MOUNT)


def build_training_pipeline(name: str, horizons: tuple[int, ...], description: str):
    """The training pipeline for the models of ``horizons`` (1: next hour, 24: day ahead), one branch each.

    Every pipeline built here runs the same components in the same order; only the branches differ.
    """

    @dsl.pipeline(name=name, description=description)
    def training_pipeline(
        data_uri: str = DEFAULT_DATA_URI,
        meter_id: str = DEFAULTS.meter_id,
        hpo_trials: int = 0,
        promotion_threshold: float = DEFAULT_PROMOTION_THRESHOLD,
        max_quarantine_fraction: float = DEFAULTS.max_quarantine_fraction,
        holdout_days: int = DEFAULT_HOLDOUT_DAYS,
    ):
        ingest_task = ingest(data_uri=data_uri, meter_id=meter_id)
        quality_gate_task = quality_gate(hourly=ingest_task.outputs["hourly"],
                                         max_quarantine_fraction=max_quarantine_fraction)
        split_holdout_task = split_holdout(raw=ingest_task.outputs["raw"], hourly=ingest_task.outputs["hourly"],
                                           holdout_days=holdout_days).after(quality_gate_task)
        materialize_features_task = materialize_features(hourly=ingest_task.outputs["hourly"]).after(quality_gate_task)
        tasks = [ingest_task, quality_gate_task, split_holdout_task, materialize_features_task]
        # one branch per model; the second branch's tasks are named train-2, evaluate-2, ... by KFP
        for horizon_hours in horizons:
            train_task = train(hourly=ingest_task.outputs["hourly"], until=split_holdout_task.outputs["Output"],
                               hpo_trials=hpo_trials if horizon_hours == 1 else 0,
                               horizon_hours=horizon_hours).after(materialize_features_task)
            evaluate_task = evaluate(model=train_task.outputs["model"], history=split_holdout_task.outputs["history"],
                                     holdout=split_holdout_task.outputs["holdout"])
            register_task = register(model=train_task.outputs["model"], comparison=evaluate_task.outputs["comparison"],
                                     promotion_threshold=promotion_threshold)
            deploy_request_task = deploy_request(decision=register_task.outputs["decision"])
            for task, label in ((train_task, "train"), (evaluate_task, "evaluate"), (register_task, "register"),
                                (deploy_request_task, "deploy-request")):
                task.set_display_name(f"{label} ({HORIZONS[horizon_hours]})")
            tasks += [train_task, evaluate_task, register_task, deploy_request_task]
        for task in tasks:
            task.set_caching_options(False)
            _cluster_settings(task)

    return training_pipeline


training_pipeline = build_training_pipeline(
    PIPELINE_NAME, (1, 24), "Daily retraining of the next-hour and the day-ahead energy forecasters, each promoted "
    "only when it beats its production model on the same hold-out hours.")
# the closed loop serves the next-hour model only, so it retrains only that one (same steps, one branch)
next_hour_pipeline = build_training_pipeline(
    NEXT_HOUR_PIPELINE_NAME, (1,), "Retraining of the next-hour energy forecaster alone (what the closed loop "
    "serves), promoted only when it beats its production model on the same hold-out hours.")
