"""Score a model against the naive forecasts a user could make by hand, on exactly the same hours.

Baselines for hour H: persistence (H-1), seasonal 24 h (H-24), seasonal 168 h (H-168), and the
mean of H-1's last 15 minutes (falling back to H-1 where that quarter has no reading).
An hour is scored when its true value and persistence exist; hours skipped are counted by reason,
and a baseline missing for some of them is compared with the model on the hours it covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import FEATURES, find_gaps, keep_meters_with_history, labels, with_history
from smart_energy.components.ingest import load_hourly
from smart_energy.components.registry import load_booster
from smart_energy.components.settings import Settings, get_settings

BASELINES = {"persistence": "usage_lag_1h", "seasonal_24h": "usage_lag_24h", "seasonal_168h": "usage_lag_168h"}
# A stronger hand-made forecast than the issue asks for: the mean of the last quarter hour.
EXTRA_BASELINES = {"persistence_last_15min": "usage_last_15min"}


def scores(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    err = predicted - actual
    return {"mae_kw": float(np.mean(np.abs(err))), "rmse_kw": float(np.sqrt(np.mean(err**2)))}


def scoring_frame(data: pd.DataFrame, history: pd.DataFrame | None = None,
                  settings: Settings | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Feast point-in-time features and targets for the hours of ``data`` that can be scored.

    An hour is scored when its target is complete and persistence (the hour before) exists; features come
    from a scratch feature store holding ``history`` + ``data``, so the servers' store is never touched.

    Returns:
        The scorable rows, and the hours of ``data`` skipped by reason (``target_missing``: the hour
        itself has too few readings; ``no_persistence``: the hour before has).
    """
    from smart_energy.components.feast_store import historical_features, publish, scratch_feature_store

    combined, _ = keep_meters_with_history(with_history(data, history))  # a fleet's short meters are left out, one alone is refused
    data = data[data["meter_id"].isin(combined["meter_id"].unique())]
    targets = labels(data)
    if targets.empty:
        raise SmartEnergyError("no hour can be scored: no hour of the data has a complete reading")
    with scratch_feature_store(settings or get_settings()) as (store, scratch):
        publish(combined, store, scratch, materialize=False)
        frame = historical_features(store, targets)
    scorable = frame["usage_lag_1h"].notna()
    skipped = {"target_missing": int(len(data) - len(targets)), "no_persistence": int((~scorable).sum())}
    frame = frame[scorable]
    if frame.empty:
        raise SmartEnergyError("no hour can be scored: no complete hour follows another complete hour")
    return frame.sort_values(["meter_id", "event_timestamp"]).reset_index(drop=True), skipped


def predict(booster: xgb.Booster, frame: pd.DataFrame, features: list[str] = FEATURES) -> np.ndarray:
    """The model's next-hour kW for the rows of ``frame``: the servers' NaN policy and clipping at 0
    (``online_rows.model_input``, ``online_rows.next_hour_kw``)."""
    from smart_energy.components.online_rows import model_input, next_hour_kw

    return next_hour_kw(booster, model_input(frame, features))


def meter_parts(hourly: pd.DataFrame):
    """``part(meter)``: that meter's hourly rows in time order, split from ``hourly`` once (on first use)."""
    groups: dict[str, pd.DataFrame] = {}

    def part(meter: str) -> pd.DataFrame:
        if not groups:
            groups.update({str(m): g.sort_values("timestamp") for m, g in hourly.groupby("meter_id", sort=False)})
        return groups[str(meter)]

    return part


def split_fallback_hours(frame: pd.DataFrame, features: list[str], hourly: pd.DataFrame,
                         settings: Settings | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored hours the model answers, and those the servers answer with a stale meter's profile instead
    (``online_rows.plan``; the profile of the readings before the hour), with ``fallback_kw`` and ``fallback_reason``.
    """
    from smart_energy.components.online_rows import PROFILE, model_input, plan, profile_at

    settings = settings or get_settings()
    meters = frame["meter_id"].astype(str).tolist()
    hours = list(frame["event_timestamp"])
    parts = meter_parts(hourly)

    def profiles(rows: list[int]) -> list:
        return [profile_at(parts(meters[i]), hours[i]) for i in rows]

    answer = plan(model_input(frame, features), features, hours, [None] * len(frame), settings.stale_after_hours,
                  profiles)
    profiled = answer.rows(PROFILE)  # a scored hour's hour before is complete: a profile always exists
    fallback = frame[profiled].assign(fallback_kw=np.asarray(answer.kw)[profiled],
                                      fallback_reason=[r for r, p in zip(answer.reason, profiled) if p])
    return frame[~profiled].reset_index(drop=True), fallback.reset_index(drop=True)


def fallback_scores(fallback: pd.DataFrame) -> dict[str, Any]:
    """The fallback hours, counted apart from the model's: how many, by reason, and their MAE beside persistence's."""
    if fallback.empty:
        return {"hours": 0}
    actual = fallback["target_kw"].to_numpy()
    return {"hours": int(len(fallback)), "by_reason": fallback["fallback_reason"].value_counts().to_dict(),
            "mae_kw": scores(actual, fallback["fallback_kw"].to_numpy())["mae_kw"],
            "persistence_mae_kw": scores(actual, fallback["usage_lag_1h"].to_numpy())["mae_kw"]}


def score_frame(frame: pd.DataFrame, predicted: np.ndarray) -> dict[str, Any]:
    """Model and baseline scores on the rows of ``frame`` (each has a target and persistence).

    A baseline whose input is missing for some hours (the day or week before fell in a gap) is scored on
    the hours it covers, with the model's MAE on exactly those hours beside it (``model_mae_kw``).
    """
    actual = frame["target_kw"].to_numpy()
    baselines = {}
    for name, col in {**BASELINES, **EXTRA_BASELINES}.items():
        have = frame[col].notna().to_numpy()
        entry = {**scores(actual[have], frame[col].to_numpy()[have]), "hours": int(have.sum())}
        if not have.all():
            entry["model_mae_kw"] = scores(actual[have], predicted[have])["mae_kw"]
        baselines[name] = entry
    return {"hours_scored": int(len(frame)), **scores(actual, predicted), "baselines": baselines}


def per_meter(frame: pd.DataFrame, predicted: np.ndarray) -> dict[str, Any]:
    """A fleet's scores per meter (model vs that meter's persistence, same hours) and their spread."""
    err = pd.DataFrame({"meter_id": frame["meter_id"].to_numpy(),
                        "model": np.abs(predicted - frame["target_kw"].to_numpy()),
                        "persistence": (frame["usage_lag_1h"] - frame["target_kw"]).abs().to_numpy()})
    table = err.groupby("meter_id").agg(hours=("model", "size"), mae_kw=("model", "mean"),
                                        persistence_mae_kw=("persistence", "mean"))
    ratio = table["mae_kw"] / table["persistence_mae_kw"]
    return {"meters": int(len(table)), "meters_beating_persistence": int((ratio < 1).sum()),
            "mae_ratio_to_persistence_quantiles": {q: float(ratio.quantile(q)) for q in (0.1, 0.5, 0.9)},
            "by_meter": {m: {"hours": int(r.hours), "mae_kw": float(r.mae_kw),
                             "persistence_mae_kw": float(r.persistence_mae_kw)} for m, r in table.iterrows()}}


def plot_per_meter(by_meter: dict[str, dict[str, float]], path: str | Path) -> Path:
    """The distribution of per-meter MAE, model vs persistence, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(by_meter).T
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    bins = np.linspace(0, float(table[["mae_kw", "persistence_mae_kw"]].to_numpy().max()) * 1.05, 30)
    left.hist(table["persistence_mae_kw"], bins=bins, alpha=0.6, color="grey", label="persistence")
    left.hist(table["mae_kw"], bins=bins, alpha=0.6, color="tab:blue", label="model")
    left.set_xlabel("MAE per meter (kW)")
    left.set_ylabel("meters")
    left.legend()
    ratio = table["mae_kw"] / table["persistence_mae_kw"]
    right.hist(ratio, bins=30, color="tab:blue")
    right.axvline(1.0, color="black", ls=":")
    right.set_xlabel("model MAE / persistence MAE (left of 1: the model wins)")
    fig.suptitle(f"{len(table)} meters, one global model")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def last_weeks_split(data: pd.DataFrame, history: pd.DataFrame | None,
                     last_weeks: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """With ``last_weeks``, the data's last weeks, and the hours before them added to the history."""
    if not last_weeks:
        return data, history
    from smart_energy.components.train import holdout_start

    start = holdout_start(data, last_weeks)
    earlier = data[data["timestamp"] < start]
    history = earlier if history is None else pd.concat([history, earlier], ignore_index=True)
    return data[data["timestamp"] >= start], history


def evaluate(model_dir: str | Path, data: str | Path, history: str | Path | None = None,
             last_weeks: int = 0, settings: Settings | None = None) -> dict[str, Any]:
    """Evaluate a model directory on ``data`` (raw file or ingest dir), lags from ``history`` when given.

    With ``last_weeks``, only the data's last weeks are scored and the hours before them serve as history
    (the hours ``train --holdout-weeks`` left out).
    """
    booster, metadata = load_booster(model_dir)
    data_hourly, history_hourly = last_weeks_split(load_hourly(data), load_hourly(history) if history else None,
                                                   last_weeks)
    frame, skipped = scoring_frame(data_hourly, history_hourly, settings)
    frame, fallback = split_fallback_hours(frame, metadata["features"], with_history(data_hourly, history_hourly),
                                           settings)
    if frame.empty:
        raise SmartEnergyError(f"no hour the model answers: all {len(fallback)} scorable hours are stale meters' "
                               f"profile fallbacks (most usage lags missing)")
    predicted = predict(booster, frame, metadata["features"])
    result = score_frame(frame, predicted)
    result["fallback"] = fallback_scores(fallback)
    result["hours_skipped"] = skipped
    if frame["meter_id"].nunique() > 1:
        result |= per_meter(frame, predicted)
    result["gaps"] = find_gaps(data_hourly)
    result["model_version"] = metadata["version"]
    result["first_hour"] = str(frame["event_timestamp"].min())
    result["last_hour"] = str(frame["event_timestamp"].max())
    result |= in_sample(metadata, frame["meter_id"], frame["event_timestamp"], frame["event_timestamp"])
    return result


def in_sample(metadata: dict[str, Any], meters: pd.Series, first: pd.Series, last: pd.Series,
              unit: str = "hours") -> dict[str, Any]:
    """``in_sample`` (and how many) for scored rows the model may have been trained on: a meter it was trained
    on, and hours (``first`` .. ``last``; the target hour, or the origin and target of a pair) inside its
    ``training_window``. Says so on stderr: such scores flatter the model."""
    import sys

    window = metadata.get("training_window") or {}
    if not window.get("start") or not window.get("end"):
        return {"in_sample": False, f"in_sample_{unit}": 0}
    start, end = pd.to_datetime([window["start"], window["end"]], utc=True)
    inside = (pd.to_datetime(first, utc=True) >= start) & (pd.to_datetime(last, utc=True) <= end)
    if metadata.get("meters"):
        inside &= meters.isin(metadata["meters"])
    count = int(inside.sum())
    if count:
        print(f"evaluate: warning: {count:,} of {len(inside):,} scored {unit} lie inside model "
              f"{metadata.get('version')}'s training window ({start} .. {end}), in_sample: true; in-sample scores "
              f"flatter the model. Score later hours, or train with --holdout-weeks N and evaluate --last-weeks N",
              file=sys.stderr)
    return {"in_sample": count > 0, f"in_sample_{unit}": count}
