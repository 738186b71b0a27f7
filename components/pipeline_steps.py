"""The training pipeline's own steps: fetch, quality gate, hold-out split, compare with production, promote.

Plain typed functions; the KFP components in ``smart_energy.pipelines.kfp_components`` are thin shells over
these and over the ingest/feature/train/evaluate/registry stages. The promote-or-not decision is
made here, inside a step, so that a local run and a cluster run take the same path.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings

DEFAULT_HOLDOUT_DAYS = 28
MIN_TRAINING_DAYS = 8  # one week for the 168 h lag plus a day, as features.check_history asks
STOPPED = "**Stopped:** "  # how the gate's report states the reason it stopped the run


class QualityGateError(SmartEnergyError):
    """Too many readings were quarantined to train on this data."""


def fetch_raw(data_uri: str, dest_dir: str | Path, settings: Settings) -> Path:
    """Copy the raw meter file at ``data_uri`` (a path, ``file://`` or ``s3://`` URI) into ``dest_dir``.

    Returns:
        The local copy, under its original file name (the suffix tells ingest about gzip and CSV).
    """
    parsed = urlparse(data_uri)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "s3":
        from smart_energy.components.storage import download_object

        return download_object(data_uri, dest_dir / Path(parsed.path).name, settings)
    if parsed.scheme not in ("", "file"):
        raise SmartEnergyError(f"unsupported data URI {data_uri!r} (use a path, file:// or s3://)")
    source = Path(unquote(parsed.path) if parsed.scheme == "file" else data_uri)
    if not source.is_file():
        raise SmartEnergyError(f"{data_uri}: no such file")
    return Path(shutil.copyfile(source, dest_dir / source.name))


def only_file(directory: str | Path) -> Path:
    """The single file in a directory artifact (the raw readings keep their own name)."""
    files = [p for p in Path(directory).iterdir() if p.is_file()]
    if len(files) != 1:
        raise SmartEnergyError(f"{directory}: expected one file, found {len(files)}")
    return files[0]


def gate_verdict(quality: dict[str, Any], max_quarantine_fraction: float) -> str | None:
    """Why the run must stop (too many rows quarantined, or none read), or None when the data may pass."""
    read, quarantined = quality["rows_read"], quality["rows_quarantined"]
    if read and quarantined / read <= max_quarantine_fraction:
        return None
    fraction = quarantined / read if read else 1.0
    reasons = sorted(quality.get("quarantine_reasons", {}).items(), key=lambda kv: -kv[1])[:3]
    top = ", ".join(f"{why} x{n:,}" for why, n in reasons) or "none recorded"
    return (f"quality gate: {fraction:.1%} of rows quarantined ({quarantined:,} of {read:,}) in "
            f"{quality.get('source', 'the input')}, above the limit {max_quarantine_fraction:.1%}; "
            f"commonest reasons: {top}. Fix the meter feed or raise max_quarantine_fraction.")


def check_quality(quality: dict[str, Any], max_quarantine_fraction: float) -> None:
    """Stop the run when more than ``max_quarantine_fraction`` of the rows were quarantined.

    Raises:
        QualityGateError: naming the fraction, the limit and the commonest reasons.
    """
    reason = gate_verdict(quality, max_quarantine_fraction)
    if reason:
        raise QualityGateError(reason)


def quality_markdown(quality: dict[str, Any], max_quarantine_fraction: float) -> str:
    """The quality report as a Markdown table (what the KFP UI shows for the gate)."""
    q = quality
    fraction = q["rows_quarantined"] / q["rows_read"] if q["rows_read"] else 1.0
    stop = gate_verdict(q, max_quarantine_fraction)
    lines = [
        f"# Quality gate {'FAILED' if stop else 'passed'}: {fraction:.2%} quarantined "
        f"(limit {max_quarantine_fraction:.2%})", "",
        *([f"{STOPPED}{stop}", ""] if stop else []),
        "| rows | count |", "|---|---:|",
        *(f"| {k.removeprefix('rows_')} | {q[k]:,} |" for k in ("rows_read", "rows_valid", "rows_missing", "rows_quarantined")),
        f"| hours (complete) | {q['hours']:,} ({q['hours_complete']:,}) |", "",
        f"Readings {q['first_timestamp']} .. {q['last_timestamp']}", "",
    ]
    if q.get("quarantine_reasons"):
        lines += ["| quarantine reason | rows |", "|---|---:|",
                  *(f"| {why} | {n:,} |" for why, n in q["quarantine_reasons"].items())]
    return "\n".join(lines) + "\n"


def holdout_cutoff(last_timestamp: str, holdout_days: int = DEFAULT_HOLDOUT_DAYS) -> str:
    """Start of the evaluation window: midnight ``holdout_days`` before the end of the last day with readings."""
    from smart_energy.components.features import window_start

    return window_start(pd.Timestamp(last_timestamp).tz_localize(None), holdout_days).isoformat()


def split_history_holdout(raw: Path, first_timestamp: str, cutoff: str, history_dir: str | Path,
                          holdout_dir: str | Path) -> tuple[Path, Path, int, int]:
    """Split the raw readings at ``cutoff`` into history (to train on) and hold-out (to score on).

    Returns:
        The two raw files (each in its own directory, under the input's name) and their line counts.

    Raises:
        SmartEnergyError: when the history is shorter than a model needs.
    """
    from smart_energy.components.ingest import split_raw_file

    days = (pd.Timestamp(cutoff) - pd.Timestamp(first_timestamp).tz_localize(None)) / pd.Timedelta(days=1)
    if days < MIN_TRAINING_DAYS:
        raise SmartEnergyError(
            f"only {max(days, 0):.1f} days of readings before the evaluation window starting {cutoff}; "
            f"need {MIN_TRAINING_DAYS} — pass more data or fewer holdout_days"
        )
    name = raw.name.removesuffix(".gz")  # the split is written uncompressed
    history, holdout = Path(history_dir) / name, Path(holdout_dir) / name
    before, after = split_raw_file(raw, cutoff, history, holdout)
    return history, holdout, before, after


HORIZONS = (1, 24)  # the next-hour model and the day-ahead (P10/P50/P90) model


def check_horizon(horizon_hours: int, hpo_trials: int = 0) -> None:
    """Refuse a horizon neither model has, instead of silently training another one."""
    if horizon_hours not in HORIZONS:
        raise SmartEnergyError(f"horizon_hours={horizon_hours}: choose 1 (next hour) or 24 (day ahead)")
    if horizon_hours == 24 and hpo_trials:
        raise SmartEnergyError("hpo_trials tunes the next-hour model only; the day-ahead branch takes 0")


def evaluate_model(model_dir: str | Path, data: str | Path, history: str | Path) -> dict[str, Any]:
    """``evaluate`` for a next-hour model, ``evaluate_dayahead`` for a day-ahead one (by its metadata)."""
    from smart_energy.components.registry import read_metadata

    if read_metadata(model_dir).get("horizon_hours") == 24:
        from smart_energy.components.dayahead import evaluate_dayahead

        return evaluate_dayahead(model_dir, data, history)
    from smart_energy.components.evaluate import evaluate

    return evaluate(model_dir, data, history)


# what says two evaluations scored the same hours (next hour) or the same origins (day ahead)
SCORED_WINDOW = {1: ("hours_scored", "first_hour", "last_hour"), 24: ("hours_scored", "first_origin", "last_origin")}


def compare_with_production(model_dir: str | Path, holdout: str | Path, history: str | Path,
                            store) -> dict[str, Any]:
    """Score the new model and the registry's production model of the same name (if any) on the same hold-out
    hours: the next-hour model on every hour, the day-ahead model on every (origin, lead) pair.

    Returns:
        ``{"model_name", "horizon_hours", "candidate": evaluation, "production": evaluation or None}``.
    """
    from smart_energy.components.registry import download, read_metadata, stage_version

    metadata = read_metadata(model_dir)
    name, horizon = metadata["name"], int(metadata.get("horizon_hours", 1))
    result: dict[str, Any] = {"model_name": name, "horizon_hours": horizon,
                              "candidate": evaluate_model(model_dir, holdout, history), "production": None}
    if stage_version(store, name, "production"):
        with tempfile.TemporaryDirectory() as tmp:
            production = evaluate_model(download(store, name, "production", tmp), holdout, history)
        if any(production[k] != result["candidate"][k] for k in SCORED_WINDOW[horizon]):
            raise SmartEnergyError("candidate and production were not scored on the same hours")
        result["production"] = production
    return result


def flat_metrics(comparison: dict[str, Any]) -> dict[str, float]:
    """The comparison as flat scalar metrics (what the KFP UI lists)."""
    new, production = comparison["candidate"], comparison.get("production")
    out = {"mae_kw": new["mae_kw"], "hours_scored": new["hours_scored"]}
    # next hour: RMSE; day ahead: the band's coverage and pinball loss
    out |= {k: new[k] for k in ("rmse_kw", "coverage_p10_p90", "pinball_kw") if k in new}
    out |= {f"hours_skipped_{why}": n for why, n in (new.get("hours_skipped") or new.get("pairs_skipped", {})).items()}
    out |= {f"{name}_mae_kw": s["mae_kw"] for name, s in new["baselines"].items()}
    if production:
        out |= {f"production_{k}": production[k] for k in ("mae_kw", "rmse_kw", "coverage_p10_p90", "pinball_kw")
                if k in production}
    return out


def decide(comparison: dict[str, Any], promotion_threshold: float) -> dict[str, Any]:
    """Promote when the new model beats persistence and production's MAE by ``promotion_threshold`` (relative).

    Returns:
        ``promote`` (bool), ``reason`` and the MAEs compared.
    """
    new = comparison["candidate"]
    mae, persistence = new["mae_kw"], new["baselines"]["persistence"]["mae_kw"]
    production = comparison.get("production")
    out: dict[str, Any] = {"model_name": comparison.get("model_name"), "candidate_mae_kw": mae,
                           "persistence_mae_kw": persistence,
                           "production_mae_kw": production["mae_kw"] if production else None,
                           "production_version": production["model_version"] if production else None,
                           "promotion_threshold": promotion_threshold}
    if mae >= persistence:
        return out | {"promote": False, "improvement": None,
                      "reason": f"MAE {mae:.4f} kW does not beat persistence ({persistence:.4f} kW)"}
    if production is None:
        return out | {"promote": True, "improvement": None,
                      "reason": f"no production model yet; MAE {mae:.4f} kW beats persistence ({persistence:.4f} kW)"}
    improvement = 1 - mae / production["mae_kw"]
    better = improvement > 0 and improvement >= promotion_threshold
    verdict = "at least" if better else "less than"
    return out | {"promote": better, "improvement": improvement,
                  "reason": f"MAE {mae:.4f} kW vs production {production['model_version']} {production['mae_kw']:.4f} kW: "
                            f"{improvement:+.2%}, {verdict} the threshold {promotion_threshold:.2%}"}


def register_and_promote(store, model_dir: str | Path, decision: dict[str, Any]) -> dict[str, Any]:
    """Register the model's version and move the pointer the decision calls for.

    - not better: stored as a version only; no pointer moves (the rollout controller never sees it);
    - better, no production yet: production at once (there is nothing to canary against);
    - better than production: candidate; `smart-energy rollout` canaries it and sets production.
    """
    from smart_energy.components.registry import read_metadata, register, set_stage

    first = decision.get("production_version") is None
    stage = None if not decision["promote"] else ("production" if first else "candidate")
    version = register(store, model_dir, stage="candidate" if stage else None)
    if stage == "production":
        set_stage(store, read_metadata(model_dir)["name"], "production", version)
    return decision | {"version": version, "stage": stage or "registered"}


def deploy_request(decision: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The merge patch a deploy would send to the InferenceService (nothing is applied here).

    A first model takes all traffic; a replacement starts at the first canary step, as
    `smart-energy rollout` would (it then steps or rolls back from Prometheus).
    """
    # each model has its InferenceService of the same name (energy-forecaster, energy-forecaster-dayahead)
    name = decision.get("model_name") or settings.model_name
    target = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
              "namespace": settings.namespace, "name": name}
    if not decision["promote"]:
        return {"action": "none", "reason": decision["reason"], "target": target}
    from smart_energy.components.rollout_policy import canary_patch, parse_steps, storage_uri  # the controller's own patch

    version = decision["version"]
    percent = 100 if decision.get("production_version") is None else parse_steps(settings.canary_steps)[0]
    uri = storage_uri(settings.artifact_uri, name, version)
    return {
        "action": "patch", "reason": decision["reason"], "target": target,
        "patch_type": "application/merge-patch+json",
        "patch": canary_patch(uri, version, percent),
    }


def evaluation_markdown(comparison: dict[str, Any]) -> str:
    """Model vs production vs baselines on the same hours, as a Markdown table."""
    new, production = comparison["candidate"], comparison.get("production")
    persistence = new["baselines"]["persistence"]["mae_kw"]
    rows = [(f"model {new['model_version']}", new)]
    if production:
        rows.append((f"production {production['model_version']}", production))
    rows += sorted(new["baselines"].items(), key=lambda kv: kv[1]["mae_kw"])
    if comparison.get("horizon_hours") == 24:
        title = (f"Day-ahead forecast (P50), {new['hours_scored']:,} (origin, lead) pairs, origins "
                 f"{new['first_origin']} .. {new['last_origin']}")
        second, key = "P10-P90 coverage", "coverage_p10_p90"
    else:
        title = f"Next-hour forecast, {new['hours_scored']:,} hours {new['first_hour']} .. {new['last_hour']}"
        second, key = "RMSE kW", "rmse_kw"
    lines = [title, "", f"| forecast | MAE kW | {second} | MAE vs persistence |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {s['mae_kw']:.4f} | {s[key]:.4f} | {s['mae_kw'] / persistence - 1:+.1%} |" if key in s
              else f"| {name} | {s['mae_kw']:.4f} | | {s['mae_kw'] / persistence - 1:+.1%} |" for name, s in rows]
    return "\n".join(lines) + "\n"


PIPELINE_JOB = "smart-energy-training"


def report_success(settings: Settings, promoted: bool, model: str | None = None, now: float | None = None) -> bool:
    """Tell Prometheus (through its Pushgateway) that the pipeline trained ``model``; what SmartEnergyPipelineStale
    watches, per model.

    A batch job has no /metrics endpoint to scrape, so it pushes its completion, as the Prometheus docs
    advise for service-level batch jobs. Each model is its own group (grouping key ``model``), so a run that
    trains only the next-hour model (the loop's) refreshes that model's time and not the day-ahead one's.
    No ``SE_PUSHGATEWAY_URL``: nothing to report to (returns False).
    """
    import time

    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    if not settings.pushgateway_url:
        return False
    registry = CollectorRegistry()
    Gauge("se_pipeline_last_success_timestamp_seconds", "When the training pipeline last finished (unix time)",
          registry=registry).set(time.time() if now is None else now)
    Gauge("se_pipeline_last_run_promoted", "1 when the last run's model was offered for deployment",
          registry=registry).set(1 if promoted else 0)
    push_to_gateway(settings.pushgateway_url, job=PIPELINE_JOB, registry=registry, timeout=10,
                    grouping_key={"model": model or settings.model_name})
    return True
