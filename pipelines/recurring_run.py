"""Daily retraining on a Kubeflow Pipelines cluster: a KFP recurring run of the compiled pipeline.

A recurring run is an object of the KFP API server, so it is created through ``kfp.Client``
(`smart-energy pipeline schedule --host URL`), not applied as a manifest. The run's pods need
the SE_* settings of the cluster (artifact store, Feast registry, Redis) in their environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COMPILED = Path(__file__).resolve().parent / "compiled" / "training_pipeline.yaml"
EXPERIMENT = "smart-energy"
JOB_NAME = "smart-energy-daily-retraining"
# KFP cron has six fields, seconds first: every day at 03:00 (the cluster's time zone, UTC by default)
DAILY_CRON = "0 0 3 * * *"


def schedule_daily(client, params: dict[str, Any] | None = None, cron: str = DAILY_CRON,
                   experiment: str = EXPERIMENT, package: Path = COMPILED):
    """Create the daily recurring run of the compiled pipeline.

    Args:
        client: a ``kfp.Client`` connected to the KFP API.
        params: pipeline parameters overriding the compiled defaults.
        cron: six-field KFP cron expression.

    Returns:
        The recurring run the API created.
    """
    if len(cron.split()) != 6:
        raise ValueError(f"KFP cron needs six fields (seconds first), got {cron!r}")
    experiment_id = client.create_experiment(name=experiment).experiment_id
    return client.create_recurring_run(
        experiment_id=experiment_id, job_name=JOB_NAME, description="retrain, evaluate against production, "
        "register; promote only when better", cron_expression=cron, max_concurrency=1, no_catchup=True,
        params=params or {}, pipeline_package_path=str(package), enable_caching=False,
    )


def submit_once(client, params: dict[str, Any] | None = None, experiment: str = EXPERIMENT, package: Path = COMPILED):
    """Start one run of the compiled pipeline on the cluster now; returns the run."""
    return client.create_run_from_pipeline_package(
        str(package), arguments=params or {}, experiment_name=experiment, enable_caching=False,
    )


def connect(host: str):
    """A ``kfp.Client`` for the KFP API at ``host`` (e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888)."""
    import kfp

    return kfp.Client(host=host)
