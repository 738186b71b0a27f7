"""`smart-energy`: the command line, a thin shell over each stage's functions.

The parser is built without importing any stage (pandas, xgboost, Feast, KServe take seconds to load):
the data stages' flags are declared here and their handlers import what they run; `pipeline`, `serve`
and `rollout` declare theirs in their own light shell modules. Errors a user can fix exit with code 2
and one line on stderr; results go to stdout (JSON), progress to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from smart_energy.components import preflight
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import get_settings

# shells above the plain logic that declare their own subcommands (light modules: imports happen in handlers)
SHELL_MODULES = ["smart_energy.pipelines.cli", "smart_energy.serving.cli", "smart_energy.serving.rollout"]


def _inputs(args: argparse.Namespace) -> None:
    """The data flags a command reads exist (before any stage is imported)."""
    for flag in ("data", "history"):
        if getattr(args, flag, None):
            preflight.input_path(getattr(args, flag), f"--{flag}")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from smart_energy.components.fleet import has_meter_column
    from smart_energy.components.ingest import (ingest_file, print_summary, require_readings, require_valid_rows,
                                                write_outputs)

    settings = get_settings()
    preflight.input_path(args.raw)
    preflight.output_dir(args.out, "--out")
    text = str(args.raw)
    if args.raw.is_dir() or any(c in text for c in "*?[") or (args.raw.is_file() and has_meter_column(args.raw)):
        from smart_energy.components.fleet import ingest_fleet, write_fleet_outputs

        fleet = ingest_fleet(args.raw, min_minutes=settings.min_minutes_per_hour)
        paths = write_fleet_outputs(fleet, args.out)
        q = fleet.quality()
        print(f"{q['meters']:,} meters ingested, {q['meters_rejected']:,} quarantined whole; rows read "
              f"{q['rows_read']:,} = valid {q['rows_valid']:,} + missing {q['rows_missing']:,} + quarantined "
              f"{q['rows_quarantined']:,}", file=sys.stderr)
        for file, reason in q["rejected_files"].items():
            print(f"  quarantined: {reason}", file=sys.stderr)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    result = ingest_file(args.raw, meter_id=args.meter_id, min_minutes=settings.min_minutes_per_hour)
    require_readings(result)  # a header-only (or all-'?') file has nothing to keep: no output
    paths = write_outputs(result, args.out)  # the quarantine is kept even when nothing was valid
    print_summary(result.quality, stream=sys.stderr)
    require_valid_rows(result, args.out)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from smart_energy.components import feast_store as fs
    from smart_energy.components.ingest import load_hourly

    settings = get_settings()
    if args.action in ("build", "materialize", "push") and not args.data:
        raise SmartEnergyError(f"features {args.action} needs --data (raw file or ingest directory)")
    if args.data:
        preflight.input_path(args.data, "--data")
    store = fs.open_feature_store(settings)
    if args.action == "apply":
        fs.apply(store, settings)
        print(f"applied {len(fs.definitions(settings))} Feast objects to {store.config.registry.path}",
              file=sys.stderr)
    elif args.action in ("build", "materialize"):
        features = fs.publish(load_hourly(args.data), store, settings, materialize=args.action == "materialize")
        print(json.dumps({"rows": len(features), "meters": int(features["meter_id"].nunique()),
                          "first": str(features["event_timestamp"].min()),
                          "last": str(features["event_timestamp"].max()),
                          "source": settings.feature_source_path}))
    elif args.action == "push":
        print(fs.push(store, load_hourly(args.data)).to_json(orient="records", date_format="iso"))
    else:
        print(fs.online_features(store, args.meter_id or [settings.meter_id]).to_json(orient="records"))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    preflight.input_path(args.data, "--data")
    preflight.output_dir(args.model_dir, "--model-dir")
    if args.until:
        preflight.parse_time(args.until, "--until")
    if args.until and args.holdout_weeks:
        raise SmartEnergyError("--until and --holdout-weeks both set where training ends; give one")
    for flag, value, zero_ok in (("--hpo-trials", args.hpo_trials, True), ("--holdout-weeks", args.holdout_weeks, True),
                                 ("--max-depth", args.max_depth, False), ("--learning-rate", args.learning_rate, False),
                                 ("--n-estimators", args.n_estimators, False)):
        preflight.positive(value, flag, allow_zero=zero_ok)
    if args.register:
        from smart_energy.components.storage import open_store

        open_store()  # a bad SE_ARTIFACT_URI fails now, not after training
    params = {k: v for k, v in {"max_depth": args.max_depth, "eta": args.learning_rate,
                                "num_boost_round": args.n_estimators}.items() if v is not None}
    if args.horizon == 24:
        from smart_energy.components.dayahead import train_dayahead

        if args.hpo_trials:
            raise SmartEnergyError("--hpo-trials tunes the next-hour model only; drop it with --horizon 24")
        metadata = train_dayahead(args.data, args.model_dir, until=args.until, params=params,
                                  holdout_weeks=args.holdout_weeks)
    elif args.horizon == 1:
        from smart_energy.components.train import train

        metadata = train(args.data, args.model_dir, hpo_trials=args.hpo_trials, until=args.until,
                         params=params, holdout_weeks=args.holdout_weeks)
    else:
        raise SmartEnergyError(f"--horizon {args.horizon}: choose 1 (next hour) or 24 (day ahead, P10/P50/P90)")
    out = {k: metadata[k] for k in ("name", "version", "horizon_hours", "training_window", "metrics", "sha256")}
    if args.register:
        from smart_energy.components.registry import register
        from smart_energy.components.storage import open_store

        store = open_store()
        register(store, args.model_dir, stage="candidate")
        out["registered"] = {"store": store.uri, "stage": "candidate",
                             "next": "`smart-energy models promote --version candidate` makes it production "
                                     "(what `serve` without --model-dir loads); on a cluster `smart-energy "
                                     "rollout` canaries it"}
    print(json.dumps(out, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:

    _inputs(args)
    preflight.positive(args.last_weeks, "--last-weeks")
    if args.out:
        preflight.output_dir(args.out, "--out")
    if preflight.model_dir(args.model_dir).get("horizon_hours") == 24:
        from smart_energy.components.dayahead import evaluate_dayahead as evaluate
    else:
        from smart_energy.components.evaluate import evaluate
    result = evaluate(args.model_dir, args.data, args.history, args.last_weeks)
    if args.out and "by_meter" in result:
        import pandas as pd

        from smart_energy.components.evaluate import plot_per_meter

        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(result["by_meter"]).T.rename_axis("meter_id").to_csv(args.out / "per_meter.csv")
        result["files"] = {"table": str(args.out / "per_meter.csv"),
                           "plot": str(plot_per_meter(result["by_meter"], args.out / "per_meter_mae.png"))}
    print(json.dumps(result, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from smart_energy.components.batch import batch_predict

    preflight.model_dir(args.model_dir)  # a wrong --model-dir fails before the features are published
    _inputs(args)
    preflight.output_file(args.out, "--out")
    print(json.dumps(batch_predict(args.model_dir, args.data, args.out), indent=2))
    return 0


def _cmd_advise(args: argparse.Namespace) -> int:

    if preflight.model_dir(args.model_dir).get("horizon_hours") != 24:
        raise SmartEnergyError(f"--model-dir {args.model_dir}: a next-hour model; advise needs a day-ahead one "
                               f"(`smart-energy train --horizon 24`)")
    _inputs(args)
    from smart_energy.components.advice import advise
    from smart_energy.components.calibration import LEAD_BUCKETS, ROLLING, TRAINING
    from smart_energy.components.dayahead import next_24h
    from smart_energy.components.features import with_history
    from smart_energy.components.ingest import load_hourly

    settings = get_settings()
    hourly = with_history(load_hourly(args.data), load_hourly(args.history) if args.history else None)
    if hourly["meter_id"].nunique() != 1:
        raise SmartEnergyError(f"advise takes one meter's readings; {args.data} has {hourly['meter_id'].nunique()}")
    forecast = next_24h(args.model_dir, hourly)
    out = advise(hourly, forecast, args.tariff, settings)
    # the band's calibration as the servers answer it: "rolling" when every lead bucket's shift came from the
    # meter's last 7 days of scores, else "training"; the shift of each lead bucket
    out["calibration"] = ROLLING if (forecast["calibration"] == ROLLING).all() else TRAINING
    out["calibration_shift_kw"] = {name: float(forecast["calibration_shift_kw"].iloc[lo - 1])
                                   for name, lo, _ in LEAD_BUCKETS}
    print(json.dumps(out, indent=2, default=str))
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    _inputs(args)
    preflight.positive(args.weeks, "--weeks", allow_zero=False)
    preflight.output_dir(args.out, "--out")
    from smart_energy.components.backtest import backtest, write_report

    weekly, forecasts = backtest(args.data, weeks=args.weeks)
    print(weekly.to_string(index=False, float_format=lambda v: f"{v:.3f}"), file=sys.stderr)
    print(json.dumps(write_report(weekly, forecasts, args.out), indent=2))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from smart_energy.components import registry
    from smart_energy.components.storage import open_store

    settings = get_settings()
    store = open_store(settings=settings)
    name = settings.model_name
    if args.action == "register":
        if not args.model_dir:
            raise SmartEnergyError("models register needs --model-dir")
        preflight.model_dir(args.model_dir)
        version = registry.register(store, args.model_dir, stage=args.stage)
        print(json.dumps({"name": name, "version": version, "stage": args.stage}))
    elif args.action == "promote":
        if not args.version:
            raise SmartEnergyError("models promote needs --version (or 'candidate')")
        version = registry.stage_version(store, name, "candidate") if args.version == "candidate" else args.version
        if not version:
            raise SmartEnergyError(f"model {name} has no candidate version to promote")
        registry.set_stage(store, name, "production", version, reason=args.reason or "promoted by hand")
        print(json.dumps({"name": name, "production": version}))
    elif args.action == "history":
        for event in registry.events(store, name):
            print(json.dumps(event))
    else:
        stages = {s: registry.stage_version(store, name, s) for s in registry.STAGES}
        print(json.dumps({"name": name, "store": store.uri, "versions": registry.list_versions(store, name),
                          **stages}, indent=2))
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    import tempfile

    from smart_energy.components.monitor import build_report, plots, write_report
    from smart_energy.components.registry import resolve_model_dir

    settings = get_settings()
    _inputs(args)
    preflight.positive(args.last_weeks, "--last-weeks")
    preflight.output_dir(args.out, "--out")
    for flag, ref in (("--model-dir", args.model_dir), ("--dayahead-model", args.dayahead_model)):
        if ref and "://" not in str(ref):
            preflight.model_dir(ref, flag)
    with tempfile.TemporaryDirectory(prefix="se-monitor-") as tmp:
        model_dir = resolve_model_dir(args.model_dir, Path(tmp) / "model", settings)
        dayahead = resolve_model_dir(args.dayahead_model, Path(tmp) / "dayahead", settings) if args.dayahead_model \
            else None
        report, frames = build_report(args.data, model_dir, args.history, args.last_weeks, settings, dayahead,
                                      args.tariff)
    paths = write_report(report, plots(frames, report["drift"]["features"]), args.out)
    print(json.dumps({"html": str(paths["html"]), "json": str(paths["json"]),
                      "windows_drifted": report["drift"]["windows_drifted"],
                      "mae_kw": report["performance"]["mae_kw"],
                      "persistence_mae_kw": report["performance"]["persistence_mae_kw"],
                      **({"dayahead_mae_kw": report["dayahead"]["mae_kw"],
                          "dayahead_coverage_p10_p90": report["dayahead"]["coverage_p10_p90"],
                          "savings_eur_per_year": report["dayahead"]["savings_eur_per_year"]}
                         if "dayahead" in report else {})}, indent=2))
    return 0


def _cmd_loop(args: argparse.Namespace) -> int:
    from smart_energy.loop import Loop, pipeline_retrain

    settings = get_settings()
    for flag, path in (("--history", args.history), ("--data", args.data)):
        if not path.is_file():
            raise SmartEnergyError(f"{flag} {path}: no such file")
    preflight.output_dir(args.out, "--out")
    for flag, value in (("--hours", args.hours), ("--canary-hold-hours", args.canary_hold_hours),
                        ("--holdout-days", args.holdout_days)):
        preflight.positive(value, flag, allow_zero=False)
    loop = Loop(args.history, args.data, args.out, settings, pipeline_retrain(args.holdout_days),
                canary_hold_hours=args.canary_hold_hours, max_hours=args.hours, metrics_port=args.metrics_port)
    summary = loop.run()
    shown = {k: v for k, v in summary.items() if k not in ("events", "transformer_metrics", "data_quality")}
    print(json.dumps(shown, indent=2, default=str))
    return 0


def _add_loop_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loop", help="replay readings hour by hour through the servers: drift/error -> retrain -> "
                       "canary -> promote or roll back (JSON summary, timeline)",
                       description="Replay --data hour by hour after --history, in accelerated time, through the "
                       "real parts: each hour's feature row is pushed to Feast's online store and the forecast asked "
                       "of a local transformer -> predictor. Data drift (SE_DRIFT_SHARE of the watched features) or "
                       "served MAE >= SE_RETRAIN_MAE_RATIO x persistence runs the training pipeline on the readings "
                       "seen so far (at most once per SE_RETRAIN_COOLDOWN_HOURS); a candidate it registers is "
                       "canaried beside production through SE_CANARY_STEPS and promoted or rolled back by the "
                       "rollout controller's rules. Prints a JSON summary; writes forecasts.csv, summary.json and a "
                       "timeline (PNG, HTML) in --out. Every move is in the registry (`models history`).")
    p.add_argument("--history", type=Path, required=True, help="raw readings before the replay (the first model "
                   "is trained on them when the registry has no production model)")
    p.add_argument("--data", type=Path, required=True, help="raw readings to replay, after --history")
    p.add_argument("--out", type=Path, default=Path("reports/loop"), help="forecasts.csv, summary.json, timeline")
    p.add_argument("--hours", type=int, help="replay only the first N hours")
    p.add_argument("--canary-hold-hours", type=float, default=24,
                   help="replayed hours per canary step, and the scored hours before MAE is compared "
                   "(default %(default)s)")
    p.add_argument("--holdout-days", type=int, default=3,
                   help="the retraining pipeline's hold-out (default %(default)s days)")
    p.add_argument("--metrics-port", type=int, help="serve the loop's se_loop_* metrics on 127.0.0.1:PORT/metrics")
    p.set_defaults(func=_cmd_loop)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    settings = get_settings()
    p = sub.add_parser("ingest", help="validate raw 1-minute readings, quarantine bad rows, resample to hourly parquet",
                       description="Parse a UCI-format meter file (.txt, .csv, optionally .gz; ';' or ',' as its "
                       "header says), validate every row, write DIR/hourly.parquet, DIR/quarantine.csv (every "
                       "rejected row with its line and reason) and DIR/quality.json (counts that add up: read = "
                       "valid + missing + quarantined).")
    p.add_argument("raw", type=Path, help="raw meter file; or a directory (or quoted glob) of <meter_id>.txt[.gz] "
                   "files, or one file with a meter_id column: a fleet (quality.json counts per meter)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--meter-id", default=settings.meter_id, help="meter id (default %(default)s, env SE_METER_ID)")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("features", help="Feast feature repo: apply, build/materialize from data, push new readings, "
                       "read online",
                       description="apply: register feature_repo definitions. build: write the offline parquet from "
                       "DATA. materialize: build + load the online store over the data's own range. push: push the "
                       "newest hour's features. online: print online features for meters.")
    p.add_argument("action", choices=["apply", "build", "materialize", "push", "online"])
    p.add_argument("--data", type=Path, help="raw meter file or ingest output directory")
    p.add_argument("--meter-id", action="append", default=None, help="meter(s) for `online` (default SE_METER_ID)")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("train", help="train the XGBoost forecaster on Feast features (next hour, or day ahead)",
                       description="Ingest (if given a raw file), publish features to Feast (offline parquet + "
                       "online store materialised to the data's end), train with a time-ordered validation "
                       "split and write MODEL_DIR/{model.json,metadata.json,drift/,MANIFEST.json}. Gaps in the readings need "
                       "no flag: features reaching into them are missing, and they are listed in the output.")
    p.add_argument("--data", required=True, help="raw meter file, ingest output directory, or its s3:// / file:// URI")
    p.add_argument("--model-dir", type=Path, required=True, help="output model directory")
    p.add_argument("--hpo-trials", type=int, default=0, help="Optuna trials (default 0: no search)")
    p.add_argument("--until", help="train on hours before this timestamp only, e.g. 2007-02-01")
    p.add_argument("--holdout-weeks", type=int, default=0,
                   help="leave the last N weeks out of training (score them with evaluate --last-weeks N)")
    p.add_argument("--max-depth", type=int, help="XGBoost max_depth (default: the trainer's, 3)")
    p.add_argument("--learning-rate", type=float, help="XGBoost eta (default: the trainer's, 0.05)")
    p.add_argument("--n-estimators", type=int,
                   help="maximum boosting rounds; early stopping may use fewer (default: the trainer's, 1000)")
    p.add_argument("--horizon", type=int, default=1, choices=[1, 24],
                   help="1: the next hour (default); 24: P10/P50/P90 for each of the next 24 hours")
    p.add_argument("--register", action="store_true", help="also register as candidate in SE_ARTIFACT_URI")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="batch forecasts for every meter at its data's end (parquet), features "
                       "from Feast in bulk",
                       description="Publish the data's features to Feast (offline + online to the data's end), read "
                       "every meter's online row in bulk and forecast it: the next hour (forecast_kw), or with a "
                       "`train --horizon 24` model each of the next 24 hours (p10_kw, p50_kw, p90_kw). Prints JSON "
                       "with meters, rows and seconds by step.")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--data", required=True, help="ingest directory (a fleet) or raw meter file")
    p.add_argument("--out", type=Path, default=Path("forecasts.parquet"))
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("advise", help="energy advice for the next 24 h: forecast band, prices, when to run each "
                       "load, backtested savings (JSON)",
                       description="Forecast the 24 hours after the data's end with a day-ahead model (P10/P50/"
                       "P90), price them with the tariff (SE_TARIFF_PRICES overrides prices), find each sub-meter "
                       "load's runs (kitchen 1, laundry 2, water heater + AC 3) and the cheapest window for them, "
                       "and replay every past day moving the shiftable runs there to estimate the yearly saving. "
                       "Moving load saves money and peak power, not energy.")
    p.add_argument("--model-dir", type=Path, required=True, help="a `train --horizon 24` model directory")
    p.add_argument("--data", required=True, help="the meter's readings (raw file or ingest dir); advice is for "
                   "the 24 h after their end")
    p.add_argument("--history", help="earlier readings (more days to backtest, and the lags)")
    p.add_argument("--tariff", default="hp-hc", choices=["base", "hp-hc", "tempo"],
                   help="EDF regulated tariff (default %(default)s)")
    p.set_defaults(func=_cmd_advise)

    p = sub.add_parser("evaluate", help="score a model vs persistence and seasonal baselines (JSON on stdout)",
                       description="Next-hour MAE/RMSE (kW) of the model and of the persistence, seasonal_24h and "
                       "seasonal_168h baselines on the same hours; hours skipped (incomplete target, no "
                       "persistence) are counted and long gaps listed. Features come from a scratch Feast store.")
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--data", required=True, help="raw meter file or ingest dir (or its URI) to score")
    p.add_argument("--history", help="earlier readings that supply the lags")
    p.add_argument("--last-weeks", type=int, default=0,
                   help="score only the data's last N weeks; the hours before are history")
    p.add_argument("--out", type=Path, help="a fleet: write per_meter.csv and the per-meter MAE plot here")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("backtest", help="rolling-origin backtest: weekly retraining, MAE per week vs baselines, plot",
                       description="Retrain weekly over the last WEEKS weeks of DATA and forecast each week; writes "
                       "backtest_weekly.csv, backtest_forecasts.csv, backtest.json and forecast_vs_actual.png to "
                       "OUT and prints the summary with the plot's path.")
    p.add_argument("--data", type=Path, required=True, help="raw meter file or ingest dir")
    p.add_argument("--out", type=Path, default=Path("reports/backtest"))
    p.add_argument("--weeks", type=int, default=4)
    p.set_defaults(func=_cmd_backtest)

    p = sub.add_parser("monitor", help="monitoring report: data quality, drift over time, model performance (HTML + JSON)",
                       description="One self-contained HTML page (plots embedded) and the same numbers as JSON: rows "
                       "read/valid/missing/quarantined, complete hours per day and gaps; the model's K-S drift "
                       "detector per feature and day (week, for spans over three weeks) with a heat map; forecast vs "
                       "actual and MAE by week and hour of day against persistence and seasonal baselines.")
    p.add_argument("--data", required=True, help="raw meter file or ingest dir to monitor")
    p.add_argument("--history", help="earlier readings that supply the lags")
    p.add_argument("--last-weeks", type=int, default=0, help="monitor only the data's last N weeks")
    p.add_argument("--model-dir", help="model directory or registry URI (default: the registry's production model)")
    p.add_argument("--dayahead-model", help="a `train --horizon 24` model: adds its P10-P90 band over the actuals, "
                   "its scores, and the advice for the 24 h after the data")
    p.add_argument("--tariff", choices=["base", "hp-hc", "tempo"], help="tariff of the advice (default SE_TARIFF)")
    p.add_argument("--out", type=Path, default=Path("reports/monitor"))
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("models", help="model registry in SE_ARTIFACT_URI: list, register, promote, history",
                       description="Versions live at models/<name>/<version>/; production.json and candidate.json "
                       "point at versions (SE_MODEL_NAME names the model). `serve` without --model-dir loads "
                       "production. `history` prints every pointer move with its reason (JSON lines, oldest first).")
    p.add_argument("action", choices=["list", "register", "promote", "history"])
    p.add_argument("--model-dir", type=Path, help="model directory to register")
    p.add_argument("--stage", choices=["candidate", "production"], default="candidate")
    p.add_argument("--version", help="version to promote to production, or 'candidate'")
    p.add_argument("--reason", help="why (kept in the registry's history)")
    p.set_defaults(func=_cmd_models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smart-energy",
        description="Smart Energy: smart-meter ingest, Feast features, XGBoost next-hour forecasts, "
        "KFP pipelines and KServe serving. Configuration comes from SE_* environment variables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_data_commands(sub)
    _add_loop_command(sub)
    for name in SHELL_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, SmartEnergyError):
        return preflight.os_error_line(err)
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    """The error boundary: what a user can fix (our errors, the OS's: exists, not a directory, permission,
    read-only, disk full) is one line on stderr and exit 2; anything else is a bug and keeps its traceback."""
    command = "smart-energy"
    try:
        parser = build_parser()  # reads the settings (defaults in the help): a bad SE_* variable fails here
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"smart-energy {args.command}"
        from smart_energy.components.quiet import quiet_frameworks

        quiet_frameworks()
        return int(args.func(args) or 0)
    except (SmartEnergyError, OSError) as err:
        print(f"{command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
