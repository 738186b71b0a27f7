"""Batch forecasts for a fleet: every meter at the end of its data, features read from Feast in bulk.

Online request/response is not how a utility's forecasts for 10^5 meters should be made (KServe's own
benchmark fell over at 1,000 req/s). Here the data's features are published to Feast (offline parquet, online
store materialised to the data's end), the online rows of all meters are read in chunks, and one booster call
per chunk forecasts them: the next hour, or for a day-ahead model each of the next 24 hours (P10/P50/P90). The
day-ahead band is calibrated as everywhere (``components/calibration.py``): on each meter's conformity scores
of the last ``CALIBRATION_DAYS`` in the lead's bucket, from the model's forecasts at the meter's recent origins
against its actuals, both from ``data`` (``dayahead.recent_scores``); a meter whose data hold less than a day
of scored pairs gets the training calibration (``conformal_kw``). Columns ``calibration`` (``"rolling"`` |
``"training"``, per row) and ``calibration_shift_kw`` say which. The rows become the model's input as in the servers
(``online_rows``: one NaN policy), and a stale meter gets its weekly profile instead of the model's forecast,
flagged in the columns ``fallback`` (``"profile"``, or ``"none"`` with no usable history: no forecast),
``fallback_reason`` and ``stale_hours``.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smart_energy.components.settings import Settings, get_settings

def shard_of(meter_id: str, shards: int) -> int:
    """A meter's shard: stable across runs and machines (not Python's salted ``hash``)."""
    return zlib.crc32(meter_id.encode()) % shards


def batch_predict(model_dir: str | Path, data: str | Path, out: str | Path, settings: Settings | None = None,
                  publish_features: bool = True, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Forecast every meter of ``data`` (ingest dir or raw file) at its data's end; write ``out`` (parquet).

    With ``shard`` = (k, n), only the meters whose ``shard_of`` is k (the pipeline's parallel scoring tasks,
    after one task published the features).

    Returns:
        ``meters``, ``rows``, ``seconds`` (total and by step), ``horizon_hours``, ``fallbacks`` (meters answered by
        their profile, and with none), ``model_version``, ``out``.
    """
    from smart_energy.components.feast_store import online_features, online_profiles, open_feature_store, publish
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.online_rows import NONE, PROFILE, model_input, next_hour_kw, plan, profile_forecast
    from smart_energy.components.registry import load_booster

    settings = settings or get_settings()
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    booster, metadata = load_booster(model_dir)
    if metadata.get("horizon_hours") == 24:
        from smart_energy.components.dayahead import load_dayahead

        booster, metadata = load_dayahead(model_dir)
    hourly = load_hourly(data)
    store = open_feature_store(settings)
    if publish_features:
        t = time.perf_counter()
        publish(hourly, store, settings)
        seconds["publish"] = time.perf_counter() - t
    meters = sorted(hourly["meter_id"].astype(str).unique())
    if shard is not None:
        meters = [m for m in meters if shard_of(m, shard[1]) == shard[0]]
        hourly = hourly[hourly["meter_id"].astype(str).isin(meters)]
    origin_features = list(metadata.get("origin_features") or metadata["features"])
    t = time.perf_counter()
    rows = online_features(store, meters, origin_features) if meters else pd.DataFrame(
        columns=["meter_id", *origin_features])
    seconds["online_read"] = time.perf_counter() - t
    # the online row of a meter is for the hour after its last reading
    origin = (hourly.groupby("meter_id")["timestamp"].max() + pd.Timedelta(hours=1)).rename("event_timestamp")
    rows = rows.merge(origin, left_on="meter_id", right_index=True).reset_index(drop=True)
    t = time.perf_counter()
    matrix = model_input(rows, origin_features, np.float64)  # Feast's None (an incomplete hour) is NaN
    ids = rows["meter_id"].astype(str).tolist()
    plan_ = plan(matrix, origin_features, list(rows["event_timestamp"]), [None] * len(rows),
                 settings.stale_after_hours, lambda idx: online_profiles(store, [ids[i] for i in idx]))
    flags = pd.DataFrame({"meter_id": ids, "fallback": pd.Series(plan_.fallback, dtype=object),
                          "fallback_reason": pd.Series(plan_.detail, dtype=object),
                          "stale_hours": pd.array(plan_.stale_hours, dtype="Int64")})
    if metadata.get("horizon_hours") == 24:
        from smart_energy.components.dayahead import (OUTPUTS, calibrate, expand_leads, raw_quantiles, recent_scores,
                                                      rolling_shift)

        pairs = expand_leads(rows.assign(**dict(zip(origin_features, matrix.T))))
        t_calibration = time.perf_counter()
        known = recent_scores(booster, hourly, rows.set_index("meter_id")["event_timestamp"])
        shift, how = rolling_shift(pairs, known, metadata["conformal_kw"])
        seconds["calibration"] = time.perf_counter() - t_calibration  # (inside "predict")
        q = calibrate(raw_quantiles(booster, pairs), shift)
        lead_rows = np.tile(np.arange(len(rows)), len(pairs) // max(len(rows), 1))  # expand_leads: lead by lead
        for row, profile in plan_.profiles.items():  # a point forecast: P10 = P50 = P90
            q[lead_rows == row] = profile_forecast(profile, pairs["target_timestamp"][lead_rows == row])[:, None]
        q[np.isin(lead_rows, np.flatnonzero(plan_.rows(NONE)))] = np.nan
        model_rows = np.isin(lead_rows, np.flatnonzero(~plan_.rows(PROFILE) & ~plan_.rows(NONE)))
        result = pd.DataFrame({"meter_id": pairs["meter_id"], "origin": pairs["event_timestamp"],
                               "timestamp": pairs["target_timestamp"], **{n: q[:, i] for i, n in enumerate(OUTPUTS)},
                               "calibration": pd.Series(np.where(model_rows, how, None), dtype=object),
                               "calibration_shift_kw": np.where(model_rows, shift, np.nan)})
        result = result.merge(flags, on="meter_id").sort_values(["meter_id", "timestamp"], ignore_index=True)
    else:
        kw = next_hour_kw(booster, model_input(rows, list(metadata["features"])))
        kw = np.where(plan_.rows(PROFILE), plan_.kw, np.where(plan_.rows(NONE), np.nan, kw))
        result = pd.DataFrame({"meter_id": rows["meter_id"], "origin": rows["event_timestamp"],
                               "timestamp": rows["event_timestamp"], "forecast_kw": kw})
        result = pd.concat([result, flags.drop(columns="meter_id")], axis=1)
    seconds["predict"] = time.perf_counter() - t
    result["model_version"] = metadata["version"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out, index=False)
    seconds["total"] = time.perf_counter() - started
    return {"meters": len(meters), "rows": int(len(result)), "horizon_hours": metadata.get("horizon_hours", 1),
            "fallbacks": {kind: int(plan_.rows(kind).sum()) for kind in (PROFILE, NONE)},
            "model_version": metadata["version"], "out": str(out),
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}
