"""Rolling-origin backtest: retrain weekly, forecast the following week, compare with the baselines.

Each fold trains on every hour before its week (time-ordered validation inside, as in `train`)
and forecasts that week hour by hour; features come from Feast's point-in-time retrieval once
for all hours, so every fold sees only what was known before each hour.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.evaluate import (BASELINES, EXTRA_BASELINES, predict, score_frame,
                                              split_fallback_hours)
from smart_energy.components.features import FEATURES, check_history
from smart_energy.components.ingest import load_hourly
from smart_energy.components.settings import Settings, get_settings
from smart_energy.components.train import fit_booster, time_split, training_frame


def backtest(data: str | Path, weeks: int = 4, settings: Settings | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weekly folds over the last ``weeks`` weeks of ``data``, features from a scratch feature store.

    An hour is scored when its target is complete and persistence exists; the others are counted per
    fold (``skipped_target_missing``, ``skipped_no_persistence``), and so are the hours a stale meter's profile
    answers in the servers (``fallback_hours``, ``evaluate.split_fallback_hours``), which are not the model's. A week with no scorable hour (inside
    a gap) keeps its row with ``hours`` 0 and no scores.

    Returns:
        (per-week scores: model and baselines MAE/RMSE, hours skipped; hourly forecasts: actual, model, baselines).
    """
    from smart_energy.components.feast_store import scratch_feature_store

    settings = settings or get_settings()
    hourly = load_hourly(data)
    check_history(hourly)
    with scratch_feature_store(settings) as (_, scratch):
        frame = training_frame(hourly, scratch, materialize=False)
    end = frame["event_timestamp"].max().ceil("D")
    starts = [end - pd.Timedelta(weeks=weeks - k) for k in range(weeks)]
    scored = frame.dropna(subset=["usage_lag_1h"])
    rows, forecasts = [], []
    for start in tqdm(starts, desc="backtest folds", disable=None, file=sys.stderr):
        stop = start + pd.Timedelta(weeks=1)
        history = frame[frame["event_timestamp"] < start]
        week = scored[(scored["event_timestamp"] >= start) & (scored["event_timestamp"] < stop)]
        # the hours the servers answer with a stale meter's profile are not the model's: counted apart
        week, fallback = split_fallback_hours(week, list(FEATURES), hourly, settings) if len(week) else (week, week)
        grid = hourly[(hourly["timestamp"] >= start) & (hourly["timestamp"] < stop)]
        targets = int(((frame["event_timestamp"] >= start) & (frame["event_timestamp"] < stop)).sum())
        row = {"week_start": start, "hours": int(len(week)), "fallback_hours": int(len(fallback)),
               "skipped_target_missing": int(len(grid) - targets),
               "skipped_no_persistence": targets - int(len(week)) - int(len(fallback))}
        if len(history) < 24 * 7:
            raise SmartEnergyError(f"fold {start:%Y-%m-%d}: only {len(history)} hours to train on; need a week")
        if week.empty:
            rows.append(row)
            continue
        booster, _ = fit_booster(*time_split(history))
        pred = predict(booster, week)
        result = score_frame(week, pred)
        rows.append(row | {"model_mae_kw": result["mae_kw"], "model_rmse_kw": result["rmse_kw"],
                           **{f"{b}_mae_kw": v["mae_kw"] for b, v in result["baselines"].items()}})
        forecasts.append(week[["meter_id", "event_timestamp", "target_kw", *BASELINES.values(),
                               *EXTRA_BASELINES.values()]].assign(forecast_kw=pred, week_start=start))
    if not forecasts:
        raise SmartEnergyError(f"no hour of the last {weeks} weeks can be scored (the data end in a gap?)")
    return pd.DataFrame(rows), pd.concat(forecasts, ignore_index=True)


def plot_forecast(forecasts: pd.DataFrame, weekly: pd.DataFrame, path: str | Path) -> Path:
    """Forecast vs actual over the backtest (top) and weekly MAE of model vs baselines (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 8), gridspec_kw={"height_ratios": [2, 1]})
    # on the full hourly grid, so that hours not scored (gaps) break the lines instead of being bridged
    forecasts = forecasts.set_index("event_timestamp")
    forecasts = forecasts.reindex(pd.date_range(forecasts.index.min(), forecasts.index.max(), freq="h"))
    ts = forecasts.index
    missing = forecasts["target_kw"].isna()
    runs = (missing != missing.shift()).cumsum()[missing]
    for i, (_, run) in enumerate(runs.groupby(runs)):  # shade the hours that could not be scored
        top.axvspan(run.index[0], run.index[-1] + pd.Timedelta(hours=1), color="0.9",
                    label="not scored (no reading, or none the hour before)" if i == 0 else None)
    top.plot(ts, forecasts["target_kw"], color="black", lw=1, label="actual")
    top.plot(ts, forecasts["forecast_kw"], color="tab:blue", lw=1, label="XGBoost forecast")
    top.plot(ts, forecasts["usage_lag_1h"], color="tab:gray", lw=0.8, ls=":", label="persistence")
    top.set_ylabel("mean kW in the hour")
    top.set_title("Next-hour forecast vs actual (rolling-origin backtest, weekly retraining)")
    top.legend(loc="upper right")
    labels = weekly["week_start"].dt.strftime("%Y-%m-%d")
    series = {"model": "model_mae_kw", **{b: f"{b}_mae_kw" for b in [*BASELINES, *EXTRA_BASELINES]}}
    width = 0.8 / len(series)
    for i, (name, col) in enumerate(series.items()):
        bottom.bar([x + i * width for x in range(len(weekly))], weekly[col], width=width, label=name)
    bottom.set_xticks([x + 0.4 - width / 2 for x in range(len(weekly))], labels)
    bottom.set_ylabel("MAE (kW)")
    bottom.set_xlabel("week starting")
    bottom.legend(ncol=len(series), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(weekly: pd.DataFrame) -> dict[str, Any]:
    """Hour-weighted mean MAE over the folds with scored hours, model and baselines; hours skipped by reason."""
    scored = weekly[weekly["hours"] > 0]
    w = scored["hours"] / scored["hours"].sum()
    cols = [c for c in weekly.columns if c.endswith("_mae_kw")]
    return {"weeks": int(len(weekly)), "weeks_without_scored_hours": int(len(weekly) - len(scored)),
            "hours": int(weekly["hours"].sum()),
            "fallback_hours": int(weekly["fallback_hours"].sum()),
            "hours_skipped": {"target_missing": int(weekly["skipped_target_missing"].sum()),
                              "no_persistence": int(weekly["skipped_no_persistence"].sum())},
            **{c: float((scored[c] * w).sum()) for c in cols}}


def write_report(weekly: pd.DataFrame, forecasts: pd.DataFrame, out: str | Path) -> dict[str, Any]:
    """The backtest's files in ``out``: weekly and hourly CSVs, ``backtest.json`` and ``forecast_vs_actual.png``.

    Returns:
        The summary (see :func:`summary`) with the plot's path.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weekly.to_csv(out / "backtest_weekly.csv", index=False)
    forecasts.to_csv(out / "backtest_forecasts.csv", index=False)
    png = plot_forecast(forecasts, weekly, out / "forecast_vs_actual.png")
    result = {"summary": summary(weekly), "plot": str(png),
              "weekly": json.loads(weekly.to_json(orient="records", date_format="iso"))}
    (out / "backtest.json").write_text(json.dumps(result, indent=2) + "\n")
    return result["summary"] | {"plot": str(png)}

