"""Kubeflow Pipelines components: one per stage, each a thin shell over the plain functions.

Lightweight Python components (imports inside the body, as KFP ships only the function's
source) on the project image, which already holds the code and a pinned kfp, so nothing is
pip-installed at run time and ``kfp.local.SubprocessRunner`` runs them unchanged. Settings come
from the SE_* environment, as for every other stage; pipeline parameters are passed explicitly.
"""

# no `from __future__ import annotations`: KFP reads the Input/Output annotations at definition time
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from smart_energy.components.images import IMAGE

component = dsl.component(base_image=IMAGE, install_kfp_package=False)


@component
def ingest(data_uri: str, meter_id: str, raw: Output[Dataset], hourly: Output[Dataset], metrics: Output[Metrics]):
    """Fetch the raw readings; validate, quarantine and resample them to hourly parquet."""
    from smart_energy.components.ingest import ingest_file, write_outputs
    from smart_energy.components.pipeline_steps import fetch_raw
    from smart_energy.components.settings import get_settings

    settings = get_settings()
    result = ingest_file(fetch_raw(data_uri, raw.path, settings), meter_id, settings.min_minutes_per_hour)
    write_outputs(result, hourly.path)
    for key in ("rows_read", "rows_valid", "rows_missing", "rows_quarantined", "hours", "hours_complete"):
        metrics.log_metric(key, getattr(result.quality, key))
    metrics.log_metric("quarantine_fraction", round(result.quality.quarantine_fraction, 6))


@component
def quality_gate(hourly: Input[Dataset], max_quarantine_fraction: float, report: Output[Markdown]):
    """Stop the run, with the reason, when too many rows were quarantined."""
    import json
    import os

    from smart_energy.components.pipeline_steps import check_quality, quality_markdown

    with open(os.path.join(hourly.path, "quality.json")) as fh:
        quality = json.load(fh)
    with open(report.path, "w") as fh:
        fh.write(quality_markdown(quality, max_quarantine_fraction))
    check_quality(quality, max_quarantine_fraction)


@component
def split_holdout(raw: Input[Dataset], hourly: Input[Dataset], holdout_days: int,
                  history: Output[Dataset], holdout: Output[Dataset]) -> str:
    """Split the readings into history and the last ``holdout_days`` days; returns the cutoff."""
    import json
    import os

    from smart_energy.components.pipeline_steps import holdout_cutoff, only_file, split_history_holdout

    with open(os.path.join(hourly.path, "quality.json")) as fh:
        quality = json.load(fh)
    cutoff = holdout_cutoff(quality["last_timestamp"], holdout_days)
    _, _, history.metadata["rows"], holdout.metadata["rows"] = split_history_holdout(
        only_file(raw.path), quality["first_timestamp"], cutoff, history.path, holdout.path)
    return cutoff


@component
def materialize_features(hourly: Input[Dataset], features: Output[Dataset], metrics: Output[Metrics]):
    """Build the features, write Feast's offline source, apply and materialise the online store."""
    from smart_energy.components.feast_store import open_feature_store, publish
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.settings import get_settings

    settings = get_settings()
    frame = publish(load_hourly(hourly.path), open_feature_store(settings), settings)
    frame.to_parquet(features.path, index=False)
    metrics.log_metric("feature_rows", len(frame))
    metrics.log_metric("meters", int(frame["meter_id"].nunique()))


@component
def train(hourly: Input[Dataset], until: str, hpo_trials: int, horizon_hours: int,
          model: Output[Model], metrics: Output[Metrics]):
    """Train a forecaster on the hours before ``until``: next hour (optional Optuna search) or day ahead (24)."""
    from smart_energy.components.dayahead import train_dayahead
    from smart_energy.components.pipeline_steps import check_horizon
    from smart_energy.components.settings import get_settings
    from smart_energy.components.train import train as fit

    check_horizon(horizon_hours, hpo_trials)
    # materialize-features (which this step runs after) already published these hours to Feast
    if horizon_hours == 24:
        metadata = train_dayahead(hourly.path, model.path, get_settings(), until=until)
    else:
        metadata = fit(hourly.path, model.path, get_settings(), hpo_trials=hpo_trials, until=until,
                       publish_features=False)
    model.metadata.update(version=metadata["version"], framework="xgboost", sha256=metadata["sha256"])
    for key, value in metadata["metrics"].items():
        metrics.log_metric(key, value)


@component
def evaluate(model: Input[Model], history: Input[Dataset], holdout: Input[Dataset],
             comparison: Output[Artifact], metrics: Output[Metrics], report: Output[Markdown]):
    """Score the new model, the production model and the baselines on the same hold-out hours."""
    import json

    from smart_energy.components.pipeline_steps import compare_with_production, evaluation_markdown, flat_metrics, only_file
    from smart_energy.components.settings import get_settings
    from smart_energy.components.storage import open_store

    settings = get_settings()
    result = compare_with_production(model.path, only_file(holdout.path), only_file(history.path),
                                     open_store(settings=settings))
    with open(comparison.path, "w") as fh:
        json.dump(result, fh, indent=2)
    with open(report.path, "w") as fh:
        fh.write(evaluation_markdown(result))
    for key, value in flat_metrics(result).items():
        metrics.log_metric(key, value)


@component
def register(model: Input[Model], comparison: Input[Artifact], promotion_threshold: float,
             decision: Output[Artifact], metrics: Output[Metrics]):
    """Register the model as candidate; promote it to production only when it beats production enough."""
    import json

    from smart_energy.components.pipeline_steps import decide, register_and_promote
    from smart_energy.components.settings import get_settings
    from smart_energy.components.storage import open_store

    with open(comparison.path) as fh:
        verdict = decide(json.load(fh), promotion_threshold)
    result = register_and_promote(open_store(settings=get_settings()), model.path, verdict)
    with open(decision.path, "w") as fh:
        json.dump(result, fh, indent=2)
    metrics.log_metric("promoted", int(result["promote"]))
    print(f"registered {result['version']} as {result['stage']}: {result['reason']}")


@component
def deploy_request(decision: Input[Artifact], request: Output[Artifact]):
    """Write the InferenceService patch a deploy would apply (applies nothing); report the run's success."""
    import json

    import yaml

    from smart_energy.components.pipeline_steps import deploy_request as build_request
    from smart_energy.components.pipeline_steps import report_success
    from smart_energy.components.settings import get_settings

    settings = get_settings()
    with open(decision.path) as fh:
        verdict = json.load(fh)
    body = build_request(verdict, settings)
    with open(request.path, "w") as fh:
        yaml.safe_dump(body, fh, sort_keys=False, width=1000)
    print(yaml.safe_dump(body, sort_keys=False, width=1000))
    # the last step of the model's branch: the run trained it
    report_success(settings, promoted=bool(verdict["promote"]), model=verdict["model_name"])


# --------------------------------------------------------------------------- batch scoring (a fleet)


@component
def publish_fleet_features(data_uri: str, metrics: Output[Metrics]):
    """Publish the fleet's features once (offline parquet, online store to the data's end) for the shards."""
    from smart_energy.components.feast_store import open_feature_store, publish
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.settings import get_settings

    settings = get_settings()
    hourly = load_hourly(data_uri)
    rows = publish(hourly, open_feature_store(settings), settings)
    metrics.log_metric("meters", int(hourly["meter_id"].nunique()))
    metrics.log_metric("feature_rows", len(rows))


@component
def shard_plan(shards: int) -> list:
    """The shards to score in parallel: ``[0, 1, ..., shards - 1]``."""
    return list(range(shards))


@component
def score_shard(data_uri: str, model_uri: str, shard: int, shards: int, forecasts: Output[Dataset],
                metrics: Output[Metrics]):
    """Batch forecasts of one shard's meters, read from Feast's online store in bulk."""
    import tempfile

    from smart_energy.components.batch import batch_predict
    from smart_energy.components.registry import resolve_model_dir
    from smart_energy.components.settings import get_settings

    settings = get_settings()
    model_dir = resolve_model_dir(model_uri, tempfile.mkdtemp(prefix="model-"), settings)
    result = batch_predict(model_dir, data_uri, forecasts.path, settings, publish_features=False,
                           shard=(shard, shards))
    metrics.log_metric("meters", result["meters"])
    metrics.log_metric("seconds", result["seconds"]["total"])


@component
def merge_forecasts(parts: Input[list[Dataset]], forecasts: Output[Dataset], metrics: Output[Metrics]):
    """One parquet of every shard's forecasts."""
    import pandas as pd

    frame = pd.concat([pd.read_parquet(p.path) for p in parts], ignore_index=True)
    frame.to_parquet(forecasts.path, index=False)
    metrics.log_metric("meters", int(frame["meter_id"].nunique()))
    metrics.log_metric("rows", len(frame))


# --------------------------------------------------------------------------- a fleet's training on Spark


@component
def train_fleet_on_spark(data_uri: str, run_id: str, namespace: str, timeout_seconds: int, metrics: Output[Metrics]):
    """Train the fleet's model as a SparkApplication (Spark Operator) and wait for it; fails with the driver's error."""
    from kubernetes import client, config

    from smart_energy.components.settings import get_settings
    from smart_energy.pipelines.spark_application import (
        application_name, fleet_training_application, fleet_training_arguments, run_application,
    )

    config.load_incluster_config()  # the step's ServiceAccount: Role smart-energy-spark-launcher
    body = fleet_training_application(application_name(run_id), fleet_training_arguments(data_uri), get_settings(),
                                      namespace=namespace)
    status = run_application(client.CustomObjectsApi(), body, timeout_seconds=timeout_seconds)
    metrics.log_metric("execution_attempts", int(status.get("executionAttempts", 0)))
    print(f"SparkApplication {body['metadata']['name']}: {status['applicationState']['state']}")
