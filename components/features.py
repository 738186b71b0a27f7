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
    """Calendar columns of ``ts``, computed once per distinct hour (a fleet's meters share one calendar)."""
    hours, where = np.unique(ts.asi8, return_inverse=True)
    unique = pd.DatetimeIndex(hours.astype("datetime64[ns]")).tz_localize(ts.tz)
    years = range(unique.year.min(), unique.year.max() + 1) if len(unique) else []
    fr = holidays.country_holidays(HOLIDAY_COUNTRY, years=years)
    days = unique.normalize()
    holiday_days = {d for d in days.unique() if d.date() in fr}
    cal = pd.DataFrame(
        {
            "hour_of_day": unique.hour.astype(np.int64),
            "day_of_week": unique.dayofweek.astype(np.int64),
            "month": unique.month.astype(np.int64),
            "is_weekend": (unique.dayofweek >= 5).astype(np.int64),
            "is_holiday": days.isin(list(holiday_days)).astype(np.int64),
        }
    )
    return cal.iloc[where].reset_index(drop=True)


def _grid(hourly: pd.DataFrame) -> pd.DataFrame:
    """Every meter on a continuous hourly grid from its first reading to one hour past its last.

    Returns:
        The grid's rows sorted by meter and hour, with ``hourly``'s columns (NaN where no hour was
        read), and ``position``: the row's hour index within its meter (0 at its first hour).
    """
    span = hourly.groupby("meter_id", sort=True)["timestamp"].agg(["min", "max"])
    hour = pd.Timedelta(hours=1).value
    first = pd.DatetimeIndex(span["min"]).tz_convert("UTC").as_unit("ns").asi8
    last = pd.DatetimeIndex(span["max"]).tz_convert("UTC").as_unit("ns").asi8
    counts = (last - first) // hour + 2
    position = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    stamps = pd.DatetimeIndex(np.repeat(first, counts) + position * hour, tz="UTC")
    keys = pd.MultiIndex.from_arrays([np.repeat(span.index.to_numpy(), counts), stamps],
                                     names=["meter_id", "timestamp"])
    grid = hourly.set_index(["meter_id", "timestamp"]).reindex(keys).reset_index()
    grid["position"] = position
    return grid


def _shift(values: pd.Series, k: int, position: np.ndarray) -> pd.Series:
    """``values`` ``k`` hours earlier within each meter (NaN before the meter's first hour)."""
    return values.shift(k).where(position >= k)


def _rolling(values: pd.Series, window: int, position: np.ndarray, stat: str) -> pd.Series:
    """Statistic of the ``window`` hours ending at each hour, within each meter; NaN if any hour is missing."""
    out = getattr(values.rolling(window, min_periods=window), stat)()
    return out.where(position >= window - 1)


def meter_features(hourly: pd.DataFrame) -> pd.DataFrame:
    """Feature rows for one or many meters, in one vectorised pass (no per-meter loop).

    Each meter is put on a continuous hourly grid one hour past its last reading; lags and windows
    are taken along the grid and never reach into another meter's hours. This is also the function
    Spark runs per group of meters (``components/spark_engine.py``).
    """
    grid = _grid(hourly)
    pos = grid["position"].to_numpy()
    complete = grid["is_complete"].astype("boolean").fillna(False).astype(bool)
    grid["is_complete"] = complete
    usage = usable_usage(grid)
    out = pd.DataFrame({"meter_id": grid["meter_id"], "event_timestamp": grid["timestamp"]})
    for k in LAGS:
        out[f"usage_lag_{k}h"] = _shift(usage, k, pos)
    out["usage_last_15min"] = _shift(grid["last_15min_kw"], 1, pos)
    out["sub_metering_3_lag_1h"] = _shift(grid["sub_metering_3_kw"].where(complete), 1, pos)
    out["reactive_lag_1h"] = _shift(grid["global_reactive_power_kw"].where(complete), 1, pos)
    # At the start of hour H, hour H-1 is the latest known: each window ends there (hence the shift by one).
    # A window that reaches into a missing or incomplete hour is missing itself: never bridged.
    for w in WINDOWS:
        out[f"usage_mean_{w}h"] = _shift(_rolling(usage, w, pos, "mean"), 1, pos)
        out[f"usage_std_{w}h"] = _shift(_rolling(usage, w, pos, "std"), 1, pos)
    total = _shift(_rolling(usage, 24, pos, "sum"), 1, pos)
    parts = {s: _shift(_rolling(grid[f"{s}_kw"].where(complete), 24, pos, "sum"), 1, pos) for s in SUB_METERS}
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in SUB_METERS:
            out[f"{s}_share_24h"] = (parts[s] / total).where(total > 0)
        out["unmetered_share_24h"] = (1 - sum(parts.values()) / total).where(total > 0)
    calendar = _calendar(pd.DatetimeIndex(grid["timestamp"]))
    for col in CALENDAR_FEATURES:
        out[col] = calendar[col].to_numpy()
    float_cols = LAG_FEATURES + ROLLING_FEATURES + SHARE_FEATURES
    out[float_cols] = out[float_cols].astype(np.float64)
    return out


def build_feature_frame(hourly: pd.DataFrame) -> pd.DataFrame:
    """Feature rows for every meter in ``hourly`` (the ingest output, one or many meters).

    Args:
        hourly: columns ``meter_id``, ``timestamp`` (hour start, UTC), the hourly channels and ``is_complete``.

    Returns:
        ``meter_id``, ``event_timestamp``, ``created`` and the columns of ``FEATURES``, sorted by meter and
        hour; float features are NaN where their inputs are missing (XGBoost handles missing values natively).
    """
    if hourly.empty:
        raise FeatureError("no hourly readings to build features from")
    out = meter_features(hourly)
    out.insert(2, "created", pd.Timestamp.now(tz="UTC").floor("s"))
    return out[["meter_id", "event_timestamp", "created", *FEATURES]]


def labels(hourly: pd.DataFrame) -> pd.DataFrame:
    """Training/evaluation targets: ``meter_id``, ``event_timestamp`` (= hour H) and H's mean kW, complete hours only."""
    usage = usable_usage(hourly)
    out = pd.DataFrame({"meter_id": hourly["meter_id"], "event_timestamp": hourly["timestamp"], "target_kw": usage})
    return out.dropna(subset=["target_kw"]).reset_index(drop=True)


def window_start(last_timestamp: pd.Timestamp, days: int) -> pd.Timestamp:
    """Midnight ``days`` days before the end of the day holding ``last_timestamp``: where a hold-out begins."""
    return pd.Timestamp(last_timestamp).floor("D") + pd.Timedelta(days=1) - pd.Timedelta(days=days)


MIN_TRAINING_DAYS = 8  # the 168 h lag plus a day: less than this before the cut-off leaves nothing to learn from


def training_cutoff(first: pd.Timestamp, last: pd.Timestamp, until: str | None = None,
                    holdout_weeks: int = 0) -> pd.Timestamp | None:
    """The first hour left out of training, from ``until`` or the data's last ``holdout_weeks`` weeks.

    Every trainer (next hour, day ahead, either engine) cuts here, and refuses a cut-off that leaves less than
    ``MIN_TRAINING_DAYS`` of the data (``first`` .. ``last``) before it, naming the flag.

    Raises:
        SmartEnergyError: ``--until`` not an ISO date or time (``preflight.parse_time``).
        FeatureError: either flag leaving too little to train on.
    """
    first, last = pd.Timestamp(first), pd.Timestamp(last)
    span = f"the data runs {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC"
    if holdout_weeks:
        if holdout_weeks < 0:
            raise FeatureError(f"--holdout-weeks {holdout_weeks}: must be 0 or more")
        cutoff, flag = window_start(last, 7 * holdout_weeks), f"--holdout-weeks {holdout_weeks}"
    elif until:
        from smart_energy.components.preflight import parse_time

        cutoff = pd.Timestamp(parse_time(str(until), "--until")).tz_localize("UTC")
        flag = f"--until {until}"
    else:
        return None
    if cutoff - first < pd.Timedelta(days=MIN_TRAINING_DAYS):
        raise FeatureError(f"{flag} leaves {max((cutoff - first) / pd.Timedelta(days=1), 0):.1f} days to train on "
                           f"({span}); need at least {MIN_TRAINING_DAYS}")
    return cutoff


def check_history(hourly: pd.DataFrame, min_hours: int = 24 * 7 + 24) -> None:
    """Refuse data too short to give the 168 h lag anywhere (gaps are fine: features across them are NaN).

    Raises:
        FeatureError: with a one-line reason naming the meter.
    """
    complete = hourly.loc[hourly["is_complete"].astype(bool)].groupby("meter_id").size()
    for meter_id in hourly["meter_id"].unique():
        n = int(complete.get(meter_id, 0))
        if n < min_hours:
            raise history_error(meter_id, n, min_hours)


def short_history(n: int, min_hours: int) -> str:
    """Why a meter with ``n`` complete hours cannot be trained on or scored."""
    return f"only {n} complete hours; need at least {min_hours}"


def history_error(meter_id: str, n: int, min_hours: int) -> FeatureError:
    """The one-line error for a meter with too little history."""
    return FeatureError(f"meter {meter_id}: {short_history(n, min_hours)} "
                        f"(one week for the 168 h lag plus a day) — pass more history")


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
    short = {str(m): short_history(int(complete.get(m, 0)), min_hours)
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
    complete = hourly.loc[hourly["is_complete"].astype(bool), ["meter_id", "timestamp"]]
    complete = complete.sort_values(["meter_id", "timestamp"], ignore_index=True)
    same_meter = complete["meter_id"].eq(complete["meter_id"].shift())
    missing = complete["timestamp"].diff().dt.total_seconds().div(3600).sub(1).where(same_meter)
    gaps = []
    for i in np.flatnonzero(missing.to_numpy() >= min_hours):
        gaps.append({"meter_id": str(complete.at[i, "meter_id"]),
                     "start": (complete.at[i - 1, "timestamp"] + pd.Timedelta(hours=1)).isoformat(),
                     "end": complete.at[i, "timestamp"].isoformat(), "hours": int(missing[i])})
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
