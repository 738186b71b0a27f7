"""Forecasting features from the hourly frame: lags, rolling statistics, sub-meter shares, calendar.

A feature row with ``event_timestamp = H`` describes what is known at the start of hour ``H``
(the hours before it) plus ``H``'s calendar: exactly the input for forecasting hour ``H``'s
mean power. The Feast FileSource reads the parquet written here; training, evaluation and
serving all use these columns, in the order of ``FEATURES``.
"""

from __future__ import annotations

from pathlib import Path

import holidays
import numpy as np
import pandas as pd

from smart_energy.components.errors import SmartEnergyError

TARGET = "global_active_power_kw"
LAGS = (1, 2, 3, 24, 168)
WINDOWS = (3, 24, 168)
SUB_METERS = ("sub_metering_1", "sub_metering_2", "sub_metering_3")

LAG_FEATURES = [f"usage_lag_{k}h" for k in LAGS] + ["usage_last_15min", "sub_metering_3_lag_1h", "reactive_lag_1h"]
ROLLING_FEATURES = [f"usage_{stat}_{w}h" for w in WINDOWS for stat in ("mean", "std")]
SHARE_FEATURES = [f"{s}_share_24h" for s in SUB_METERS] + ["unmetered_share_24h"]
CALENDAR_FEATURES = ["hour_of_day", "day_of_week", "month", "is_weekend", "is_holiday"]
FEATURES = LAG_FEATURES + ROLLING_FEATURES + SHARE_FEATURES + CALENDAR_FEATURES
# What the drift detector watches: the features that change hour by hour. The K-S test assumes independent
# rows; a week of a 24 h or 168 h window (or a 24 h share) is a handful of independent values repeated, which
# it flags as drift on in-distribution data, and the calendar columns drift because time passes.
DRIFT_FEATURES = [f"usage_lag_{k}h" for k in LAGS] + ["usage_last_15min", "sub_metering_3_lag_1h", "reactive_lag_1h",
                                                      "usage_mean_3h", "usage_std_3h"]
HOLIDAY_COUNTRY = "FR"  # the UCI household is near Paris
LONG_GAP_HOURS = 24  # gaps this long are listed in train/evaluate/backtest output


class FeatureError(SmartEnergyError):
    """The hourly data cannot give honest features (too little history)."""


def usable_usage(hourly: pd.DataFrame) -> pd.Series:
    """Hourly mean power where the hour is complete; NaN otherwise (never interpolated)."""
    return hourly[TARGET].where(hourly["is_complete"].astype(bool))


def _calendar(ts: pd.DatetimeIndex) -> pd.DataFrame:
    years = range(ts.year.min(), ts.year.max() + 1) if len(ts) else []
    fr = holidays.country_holidays(HOLIDAY_COUNTRY, years=years)
    dates = ts.date
    return pd.DataFrame(
        {
            "hour_of_day": ts.hour.astype(np.int64),
            "day_of_week": ts.dayofweek.astype(np.int64),
            "month": ts.month.astype(np.int64),
            "is_weekend": (ts.dayofweek >= 5).astype(np.int64),
            "is_holiday": np.fromiter((d in fr for d in dates), dtype=bool, count=len(ts)).astype(np.int64),
        },
        index=ts,
    )


def _meter_features(hourly: pd.DataFrame) -> pd.DataFrame:
    """Feature rows for one meter on a continuous hourly grid, one hour past its last reading."""
    hourly = hourly.sort_values("timestamp").set_index("timestamp")
    grid = pd.date_range(hourly.index.min(), hourly.index.max() + pd.Timedelta(hours=1), freq="h")
    hourly = hourly.reindex(grid)
    hourly["is_complete"] = hourly["is_complete"].astype("boolean").fillna(False).astype(bool)
    usage = usable_usage(hourly)
    known = usage.shift(1)  # at the start of hour H, hour H-1 is the latest known
    out = pd.DataFrame(index=grid)
    for k in LAGS:
        out[f"usage_lag_{k}h"] = usage.shift(k)
    out["usage_last_15min"] = hourly["last_15min_kw"].shift(1)
    out["sub_metering_3_lag_1h"] = hourly["sub_metering_3_kw"].where(hourly["is_complete"]).shift(1)
    out["reactive_lag_1h"] = hourly["global_reactive_power_kw"].where(hourly["is_complete"]).shift(1)
    # A window that reaches into a missing or incomplete hour is missing itself: never bridged.
    for w in WINDOWS:
        roll = known.rolling(w, min_periods=w)
        out[f"usage_mean_{w}h"] = roll.mean()
        out[f"usage_std_{w}h"] = roll.std()
    total = usage.rolling(24, min_periods=24).sum().shift(1)
    parts = {}
    for s in SUB_METERS:
        part = hourly[f"{s}_kw"].where(hourly["is_complete"])
        parts[s] = part.rolling(24, min_periods=24).sum().shift(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in SUB_METERS:
            out[f"{s}_share_24h"] = (parts[s] / total).where(total > 0)
        out["unmetered_share_24h"] = (1 - sum(parts.values()) / total).where(total > 0)
    out = out.join(_calendar(grid))
    out.index.name = "event_timestamp"
    return out.reset_index()


def build_feature_frame(hourly: pd.DataFrame) -> pd.DataFrame:
    """Feature rows for every meter in ``hourly`` (the ingest output, one or many meters).

    Args:
        hourly: columns ``meter_id``, ``timestamp`` (hour start, UTC), the hourly channels and ``is_complete``.

    Returns:
        ``meter_id``, ``event_timestamp``, ``created`` and the columns of ``FEATURES``; float features
        are NaN where their inputs are missing (XGBoost handles missing values natively).
    """
    frames = []
    for meter_id, group in hourly.groupby("meter_id", sort=True):
        feats = _meter_features(group)
        feats.insert(0, "meter_id", meter_id)
        frames.append(feats)
    if not frames:
        raise FeatureError("no hourly readings to build features from")
    out = pd.concat(frames, ignore_index=True)
    out["created"] = pd.Timestamp.now(tz="UTC").floor("s")
    float_cols = LAG_FEATURES + ROLLING_FEATURES + SHARE_FEATURES
    out[float_cols] = out[float_cols].astype(np.float64)
    return out[["meter_id", "event_timestamp", "created", *FEATURES]]


def labels(hourly: pd.DataFrame) -> pd.DataFrame:
    """Training/evaluation targets: ``meter_id``, ``event_timestamp`` (= hour H) and H's mean kW, complete hours only."""
    usage = usable_usage(hourly)
    out = pd.DataFrame({"meter_id": hourly["meter_id"], "event_timestamp": hourly["timestamp"], "target_kw": usage})
    return out.dropna(subset=["target_kw"]).reset_index(drop=True)


def window_start(last_timestamp: pd.Timestamp, days: int) -> pd.Timestamp:
    """Midnight ``days`` days before the end of the day holding ``last_timestamp``: where a hold-out begins."""
    return pd.Timestamp(last_timestamp).floor("D") + pd.Timedelta(days=1) - pd.Timedelta(days=days)


def check_history(hourly: pd.DataFrame, min_hours: int = 24 * 7 + 24) -> None:
    """Refuse data too short to give the 168 h lag anywhere (gaps are fine: features across them are NaN).

    Raises:
        FeatureError: with a one-line reason naming the meter.
    """
    complete = hourly.loc[hourly["is_complete"].astype(bool)].groupby("meter_id").size()
    for meter_id in hourly["meter_id"].unique():
        n = int(complete.get(meter_id, 0))
        if n < min_hours:
            raise FeatureError(
                f"meter {meter_id}: only {n} complete hours; need at least {min_hours} "
                f"(one week for the 168 h lag plus a day) — pass more history"
            )


def with_history(data: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """``history`` then ``data`` as one hourly frame (an hour in both: ``data``'s), in time order."""
    if history is None:
        return data
    both = pd.concat([history, data], ignore_index=True).drop_duplicates(["meter_id", "timestamp"], keep="last")
    return both.sort_values(["meter_id", "timestamp"], ignore_index=True)


def keep_meters_with_history(hourly: pd.DataFrame, min_hours: int = 24 * 7 + 24) -> tuple[pd.DataFrame, dict]:
    """A fleet's meters with enough history, and the others by reason; one short meter does not stop the rest.

    Raises:
        FeatureError: when no meter has enough (for one meter, ``check_history``'s message).
    """
    complete = hourly.loc[hourly["is_complete"].astype(bool)].groupby("meter_id").size()
    short = {str(m): f"only {int(complete.get(m, 0))} complete hours; need at least {min_hours}"
             for m in hourly["meter_id"].unique() if int(complete.get(m, 0)) < min_hours}
    if len(short) == hourly["meter_id"].nunique():
        check_history(hourly, min_hours)  # raises with the first meter's reason
    if not short:
        return hourly, {}
    return hourly[~hourly["meter_id"].astype(str).isin(short)].reset_index(drop=True), short


def find_gaps(hourly: pd.DataFrame, min_hours: int = LONG_GAP_HOURS) -> list[dict]:
    """Runs of at least ``min_hours`` hours with no complete reading, per meter (reported, never bridged).

    Returns:
        ``{"meter_id", "start", "end", "hours"}`` per gap: ``start`` is the first missing hour, ``end`` the
        first complete hour after it.
    """
    gaps = []
    for meter_id, group in hourly.groupby("meter_id", sort=True):
        complete = group.loc[group["is_complete"].astype(bool), "timestamp"].sort_values().reset_index(drop=True)
        missing = complete.diff().dt.total_seconds().div(3600).sub(1)
        for i in np.flatnonzero(missing.to_numpy() >= min_hours):
            gaps.append({"meter_id": str(meter_id), "start": (complete[i - 1] + pd.Timedelta(hours=1)).isoformat(),
                         "end": complete[i].isoformat(), "hours": int(missing[i])})
    return gaps


def write_feature_frame(features: pd.DataFrame, path: str | Path) -> Path:
    """Write the feature parquet atomically, replacing the rows of the meters it holds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        old = pd.read_parquet(path)
        features = pd.concat([old[~old["meter_id"].isin(features["meter_id"].unique())], features], ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp")
    features.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
