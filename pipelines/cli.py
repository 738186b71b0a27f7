"""`smart-energy pipeline`: compile the training pipeline for the KFP UI, run it locally, schedule it on a cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import CHECKOUT, get_settings

from smart_energy.pipelines.recurring_run import COMPILED, DAILY_CRON

BATCH_COMPILED = COMPILED.with_name("batch_scoring_pipeline.yaml")
FLEET_SPARK_COMPILED = COMPILED.with_name("fleet_spark_pipeline.yaml")
NEXT_HOUR_COMPILED = COMPILED.with_name("next_hour_pipeline.yaml")

# the shared slice beside a checkout (None for an installed wheel: --data is then required)
DEFAULT_DATA = CHECKOUT.parent / "shared" / "data" / "household_power_consumption_2006-12_2007-02.txt" if CHECKOUT else None


def compile_pipeline(out: str | Path = COMPILED, next_hour_only: bool = False) -> Path:
    """Write the training (or the next-hour) pipeline's KFP IR YAML: what the KFP UI uploads and the cluster runs."""
    from kfp import compiler

    from smart_energy.pipelines.training_pipeline import next_hour_pipeline, training_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(next_hour_pipeline if next_hour_only else training_pipeline, str(out))
    return out


def compile_batch_pipeline(out: str | Path = BATCH_COMPILED) -> Path:
    """Write the fleet's batch-scoring pipeline (ParallelFor over meter shards) as KFP IR YAML."""
    from kfp import compiler

    from smart_energy.pipelines.batch_pipeline import batch_scoring_pipeline

    compiler.Compiler().compile(batch_scoring_pipeline, str(out))
    return Path(out)


def compile_fleet_spark_pipeline(out: str | Path = FLEET_SPARK_COMPILED) -> Path:
    """Write the fleet's Spark training pipeline (one step running a SparkApplication) as KFP IR YAML."""
    from kfp import compiler

    from smart_energy.pipelines.fleet_spark_pipeline import fleet_spark_pipeline

    compiler.Compiler().compile(fleet_spark_pipeline, str(out))
    return Path(out)


def _params(args: argparse.Namespace) -> dict:
    """Pipeline parameters from the flags; the meter and the gate's limit default to the settings (SE_*)."""
    settings = get_settings()
    names = ("meter_id", "hpo_trials", "promotion_threshold", "max_quarantine_fraction", "holdout_days")
    params = {"meter_id": settings.meter_id, "max_quarantine_fraction": settings.max_quarantine_fraction}
    return params | {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def print_run(run, stream=sys.stdout) -> None:
    """Where a local run's artifacts landed, its metrics, and per model the evaluation table and the deploy request."""
    print(f"\nrun directory: {run.run_dir}", file=stream)
    print(f"  {'task output (logs)':34s} {run.run_dir / 'tasks.log'}", file=stream)
    for name, path in run.artifacts().items():
        print(f"  {name:34s} {path}", file=stream)
    print("\nmetrics:", file=stream)
    for task, values in run.metrics.items():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(f"  {task:22s} {shown}", file=stream)
    for suffix in run.branches:  # the next-hour model, then (in the training pipeline) the day-ahead one
        print("\n" + run.read_text(f"evaluate{suffix}", "report"), file=stream)
        decision = run.read_json(f"register{suffix}", "decision")
        print(f"registered {decision['model_name']} {decision['version']} as {decision['stage']}: {decision['reason']}",
              file=stream)
        request = run.run_dir / f"deploy-request{suffix}" / "request"
        print(f"deploy request ({request}):\n{request.read_text()}", file=stream)


def _cmd_pipeline(args: argparse.Namespace) -> int:
    if args.action == "compile":
        if args.next_hour_only:  # that pipeline alone
            print(compile_pipeline(NEXT_HOUR_COMPILED if args.out == COMPILED else args.out, next_hour_only=True))
            return 0
        print(compile_pipeline(args.out))
        if args.out == COMPILED:  # the default: every committed pipeline
            print(compile_pipeline(NEXT_HOUR_COMPILED, next_hour_only=True))
            print(compile_batch_pipeline())
            print(compile_fleet_spark_pipeline())
        return 0
    package = NEXT_HOUR_COMPILED if args.next_hour_only else COMPILED
    if args.action == "schedule":
        from smart_energy.pipelines.recurring_run import connect, schedule_daily

        if not args.host:
            raise SmartEnergyError("pipeline schedule needs --host (the KFP API, e.g. http://localhost:8888)")
        job = schedule_daily(connect(args.host), _params(args) | ({"data_uri": args.data} if args.data else {}),
                             cron=args.cron, package=package)
        print(json.dumps({"recurring_run_id": job.recurring_run_id, "cron": args.cron}))
        return 0
    if args.host:
        from smart_energy.pipelines.recurring_run import connect, submit_once

        run = submit_once(connect(args.host), _params(args) | ({"data_uri": args.data} if args.data else {}),
                          package=package)
        print(json.dumps({"run_id": run.run_id}))
        return 0
    if not args.local:
        raise SmartEnergyError("pipeline run needs --local (kfp.local on this machine) or --host (a KFP cluster)")
    from smart_energy.pipelines.local_run import run_local

    if not (args.data or DEFAULT_DATA):
        raise SmartEnergyError("pipeline run --local needs --data (raw meter readings)")
    run = run_local(args.data or DEFAULT_DATA, args.pipeline_root, next_hour_only=args.next_hour_only, **_params(args))
    print_run(run)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    defaults = get_settings()
    p = sub.add_parser(
        "pipeline", help="Kubeflow pipeline: compile for the KFP UI, run locally with kfp.local, schedule daily",
        description="compile: write pipelines/compiled/training_pipeline.yaml, and with the default --out also the "
        "next-hour, batch-scoring and fleet Spark pipelines beside it (commit them). run --local: run the training "
        "pipeline here with kfp.local (SubprocessRunner, no Docker) and print where artifacts landed and the metrics; "
        "run --host URL: one run on a KFP cluster. schedule --host URL: daily recurring run. --next-hour-only: the "
        "next-hour pipeline instead (the next-hour model alone, as the closed loop retrains).",
    )
    p.add_argument("action", choices=["compile", "run", "schedule"])
    p.add_argument("--out", type=Path, default=COMPILED, help="compile: output YAML (default %(default)s)")
    p.add_argument("--local", action="store_true", help="run: on this machine with kfp.local")
    p.add_argument("--host", help="run/schedule: KFP API endpoint of a cluster")
    p.add_argument("--next-hour-only", dest="next_hour_only", action="store_true",
                   help="the next-hour pipeline (the next-hour model alone) instead of both models' (compile: "
                   f"to --out, default {NEXT_HOUR_COMPILED.name})")
    p.add_argument("--data", help=f"raw readings, a path or file:// / s3:// URI (local default {DEFAULT_DATA})")
    p.add_argument("--pipeline-root", type=Path, help="run --local: where task outputs go "
                   "(default <SE_ARTIFACT_URI>/pipeline-runs)")
    p.add_argument("--meter-id", dest="meter_id", help=f"meter id (default {defaults.meter_id}, env SE_METER_ID)")
    p.add_argument("--hpo-trials", dest="hpo_trials", type=int, help="Optuna trials (default 0)")
    p.add_argument("--promotion-threshold", dest="promotion_threshold", type=float,
                   help="relative MAE improvement over production needed to promote (default 0.01)")
    p.add_argument("--max-quarantine-fraction", dest="max_quarantine_fraction", type=float,
                   help=f"quality gate: largest quarantined fraction of rows (default {defaults.max_quarantine_fraction}, "
                   "env SE_MAX_QUARANTINE_FRACTION)")
    p.add_argument("--holdout-days", dest="holdout_days", type=int, help="evaluation window at the end (default 28)")
    p.add_argument("--cron", default=DAILY_CRON, help="schedule: six-field KFP cron (default %(default)s)")
    p.set_defaults(func=_cmd_pipeline)
