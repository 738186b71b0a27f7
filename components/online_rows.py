"""From a meter's Feast row to what is answered for it: the model's input, or an honest fallback.

Batch ``predict``, the transformer and the closed loop all go through this module:

- ``model_input``: the one NaN policy. Feast's online row holds ``None`` where a feature's inputs were missing (an
  incomplete last hour, a hole); pandas makes such a column ``object``. Every missing value becomes NaN, every other
  one a float, in the model's feature order: XGBoost treats NaN as missing, as it did in training.
- ``plan``: whether the model answers a row. A meter is **stale** when its last complete hour is
  ``SE_STALE_AFTER_HOURS`` or more before the hour forecast (``stale_hours`` counts the hours in between with no
  complete reading: 0 for a meter that reported the hour before), or when most of the model's usage lags (1, 2, 3,
  24, 168 h) are missing. A stale meter gets the **profile** forecast instead: the mean of the same weekday and hour
  over the 4 weeks up to its last complete hour (``weekly_profile``). A meter with no profile (no complete hour at
  all, or a last complete hour more than 4 weeks before the hour asked) gets none: a 4xx in the servers,
  ``fallback: "none"`` in a batch.
- ``next_hour_kw``: the next-hour forecast, never below 0 kW (as the day-ahead quantiles), in every path.

The profile and the last complete hour are published to Feast beside the features (``meter_profile_fv``, one row
per meter), so the transformer reads them only for the rows that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import LAGS, usable_usage

USAGE_LAGS = [f"usage_lag_{k}h" for k in LAGS]
RECENT_LAGS = [f"usage_lag_{k}h" for k in LAGS if k <= 3]  # consecutive: they bound stale_hours up to 3
PROFILE_WEEKS = 4
PROFILE_HOURS = PROFILE_WEEKS * 168
SLOTS = 168  # weekday x hour, Monday 00:00 first
# a profile describes the weeks before the meter's last complete hour; after as long again with no reading it is
# no longer that meter's present, so the meter has no usable history
MAX_FALLBACK_STALE_HOURS = PROFILE_HOURS
PROFILE = "profile"
NONE = "none"
# why the model does not answer a row (the se_fallback_forecasts_total label)
METER_SILENT = "meter_silent"  # its last complete hour is SE_STALE_AFTER_HOURS or more before the hour forecast
LAGS_MISSING = "lags_missing"  # most of the model's usage lags are missing
NO_HISTORY = "no_history"  # no profile either
PROFILE_COLUMNS = ["last_complete_hour", "profile_kw"]
HOUR = timedelta(hours=1)


# --------------------------------------------------------------------------- the one NaN policy


def feast_values(values: Mapping[str, Any], names: Sequence[str]) -> list[Any]:
    """Each of ``names`` in an online read's ``{name: ValueProto}`` as a Python value (a list for a list type); None
    where Feast holds nothing, its missing value."""
    out = []
    for name in names:
        proto = values.get(name)
        kind = proto.WhichOneof("val") if proto is not None else None
        out.append(None if kind is None or kind == "null_val" else (
            list(getattr(proto, kind).val) if kind.endswith("_list_val") else getattr(proto, kind)))
    return out


def model_input(rows: pd.DataFrame | Sequence[Mapping[str, Any] | Sequence[Any]], features: Sequence[str],
                dtype: type = np.float32) -> np.ndarray:
    """The model's input: one row per Feast row, the columns in model order, every missing value NaN.

    Args:
        rows: a frame (``get_online_features().to_df()``, a pushed feature row, point-in-time rows), mappings
            ``{feature: value or None}``, or lists of values in ``features``' order (the transformer's online read).
        features: the model's feature order.
        dtype: float32, what XGBoost computes in; the transformer keeps float64 because its monitors read the
            actuals (the lags) from the same rows.

    Raises:
        SmartEnergyError: a model feature the rows do not have.
    """
    features = list(features)
    if isinstance(rows, pd.DataFrame):
        missing = [f for f in features if f not in rows.columns]
        if missing:
            raise SmartEnergyError(f"the feature rows lack model feature(s) {', '.join(missing)}")
        return rows[features].to_numpy(dtype=np.float64, na_value=np.nan).astype(dtype, copy=False)
    if len(rows) and type(rows[0]) is not list and isinstance(rows[0], Mapping):
        rows = [[row.get(f) for f in features] for row in rows]
    matrix = np.array(rows, dtype=np.float64)  # None -> NaN
    return matrix.reshape(len(rows), len(features)).astype(dtype, copy=False)


def next_hour_kw(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """Next-hour kW per row of the model input, clipped at 0 (a mean power is never negative); the numbers of
    ``booster.predict(DMatrix(matrix))`` otherwise."""
    kw = booster.inplace_predict(np.ascontiguousarray(matrix, dtype=np.float32)).astype(np.float64).ravel()
    return np.maximum(kw, 0.0)


# --------------------------------------------------------------------------- the weekly profile


def slot_of(hours: pd.DatetimeIndex | Sequence[datetime]) -> np.ndarray:
    """Weekday x 24 + hour of day (UTC, as the calendar features) of each hour."""
    index = pd.DatetimeIndex(hours)
    return (index.dayofweek * 24 + index.hour).to_numpy(dtype=np.int64)


def _profiles(codes: np.ndarray, meters: int, hours: pd.DatetimeIndex, kw: np.ndarray) -> np.ndarray:
    """(meters, 168) weekday-hour means of complete hours (``kw`` without NaN), meter ``codes[i]`` for hour i.

    A weekday-hour with no reading takes the mean of its hour of day over the other weekdays, else the meter's mean.
    """
    flat = codes * SLOTS + slot_of(hours)
    sums = np.bincount(flat, kw, meters * SLOTS).reshape(meters, 7, 24)
    counts = np.bincount(flat, minlength=meters * SLOTS).reshape(meters, 7, 24)
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = sums.sum(axis=(1, 2)) / counts.sum(axis=(1, 2))
        by_hour = np.where(counts.sum(axis=1) > 0, sums.sum(axis=1) / counts.sum(axis=1), overall[:, None])
        return np.where(counts > 0, sums / counts, by_hour[:, None, :]).reshape(meters, SLOTS)


def weekly_profile(hourly: pd.DataFrame) -> pd.DataFrame:
    """Per meter, the profile fallback as of the end of its data (what ``meter_profile_fv`` serves).

    Returns:
        ``meter_id``, ``event_timestamp`` (the hour after the meter's last hour: its online feature row's hour),
        ``created``, ``last_complete_hour`` (Unix seconds of its start) and ``profile_kw`` (168 kW, Monday 00:00
        first: the means over the ``PROFILE_WEEKS`` weeks up to the last complete hour). Meters without a complete
        hour have no row.
    """
    all_codes, all_names = pd.factorize(hourly["meter_id"].astype(str).to_numpy(), sort=True)
    stamps = pd.DatetimeIndex(hourly["timestamp"]).tz_convert("UTC")
    kw = usable_usage(hourly).to_numpy(dtype=np.float64)
    row_hour = pd.Series(stamps.asi8).groupby(all_codes).max() + pd.Timedelta(hours=1).value
    have = ~np.isnan(kw)
    # the meters with a complete hour, numbered 0.. in their sorted order
    kept, codes = np.unique(all_codes[have], return_inverse=True)
    stamps, kw = stamps[have], kw[have]
    ns = stamps.asi8
    last = pd.Series(ns).groupby(codes).max().to_numpy() if len(ns) else np.zeros(0, dtype=np.int64)
    window = ns > last[codes] - PROFILE_HOURS * 3600 * 10**9
    profiles = _profiles(codes[window], len(kept), stamps[window], kw[window])
    return pd.DataFrame({"meter_id": np.asarray(all_names, dtype=object)[kept],
                         "event_timestamp": pd.DatetimeIndex(row_hour.to_numpy()[kept], tz="UTC"),
                         "created": pd.Timestamp.now(tz="UTC").floor("s"),
                         "last_complete_hour": last // 10**9,
                         "profile_kw": pd.Series(list(profiles), dtype=object)})


def profile_at(meter_hourly: pd.DataFrame, hour: pd.Timestamp) -> "MeterProfile | None":
    """The profile a server would have held at ``hour`` for the meter of ``meter_hourly`` (one meter's hourly rows,
    in time order; readings before ``hour`` only): for scoring fallback hours in ``evaluate`` and the monitoring
    report."""
    stamps = pd.DatetimeIndex(meter_hourly["timestamp"])
    before = stamps[: stamps.searchsorted(hour)]
    kw = usable_usage(meter_hourly.iloc[: len(before)]).to_numpy(dtype=np.float64)
    have = ~np.isnan(kw)
    if not have.any():
        return None
    before, kw = before[have], kw[have]
    last = before[-1]
    window = before > last - pd.Timedelta(hours=PROFILE_HOURS)
    profile = _profiles(np.zeros(int(window.sum()), dtype=np.int64), 1, before[window], kw[window])[0]
    return MeterProfile(last.to_pydatetime(), profile)


# --------------------------------------------------------------------------- stale or not


@dataclass
class MeterProfile:
    """A meter's published fallback: the start of its last complete hour and its 168 weekday-hour means."""

    last_complete_hour: datetime
    kw: np.ndarray

    @classmethod
    def from_feast(cls, last_complete_unix: Any, profile: Any) -> "MeterProfile | None":
        if last_complete_unix is None or profile is None or len(profile) != SLOTS:
            return None
        return cls(datetime.fromtimestamp(int(last_complete_unix), tz=timezone.utc),
                   np.asarray(profile, dtype=np.float64))


@dataclass
class Plan:
    """Per row: who answers it. ``fallback[i]`` is None when the model answers row i, ``"profile"`` when the meter's
    profile does (``kw[i]``), ``"none"`` when nothing can (``detail[i]`` says why)."""

    fallback: list[str | None]
    reason: list[str | None]  # METER_SILENT, LAGS_MISSING, NO_HISTORY; None for the model's rows
    stale_hours: list[int | None]  # None when unknown (a model row whose recent lags are all present is 0)
    kw: list[float]  # the profile forecast of the hour asked, for the "profile" rows (NaN for the others)
    detail: list[str | None]
    profiles: dict[int, MeterProfile] = field(default_factory=dict)  # of the "profile" rows (day ahead: 24 hours)

    @property
    def any(self) -> bool:
        return any(f is not None for f in self.fallback)

    def rows(self, kind: str | None) -> np.ndarray:
        return np.array([f == kind for f in self.fallback], dtype=bool)

    def refusal(self, meter_ids: Sequence[str]) -> str | None:
        """Why the first meter without any forecast gets none, as one line; None when every row is answered."""
        for i, kind in enumerate(self.fallback):
            if kind == NONE:
                return f"meter {meter_ids[i]!r} has no usable history: {self.detail[i]}"
        return None


def profile_forecast(profile: MeterProfile, hours: Sequence[datetime] | pd.DatetimeIndex) -> np.ndarray:
    """The profile's kW for each of ``hours`` (its weekday-hour mean)."""
    return profile.kw[slot_of(hours)]


class Planner:
    """``plan`` for one model's feature order (the lag columns found once: a server plans every request)."""

    def __init__(self, features: Sequence[str]):
        features = list(features)
        self.features = features
        self.usage = [features.index(f) for f in USAGE_LAGS if f in features]
        usage_names = [features[i] for i in self.usage]
        self.recent = [usage_names.index(f) for f in RECENT_LAGS if f in usage_names]  # within ``usage``
        contiguous = self.usage and self.usage == list(range(self.usage[0], self.usage[0] + len(self.usage)))
        self._columns = slice(self.usage[0], self.usage[-1] + 1) if contiguous else self.usage  # a view if it can

    def plan(self, matrix: np.ndarray, row_hours: Sequence[datetime | None],
             forecast_hours: Sequence[datetime | None], stale_after_hours: int,
             profiles: Callable[[list[int]], list[MeterProfile | None]]) -> Plan:
        """Decide, row by row, between the model and the profile fallback (see the module's docstring).

        Args:
            matrix: the model input (``model_input``) of each meter's online row.
            row_hours: the hour each row is for (its Feast event hour); None when unknown.
            forecast_hours: the hour each answer is for (a request's ``timestamp``), None: the row's own hour. An
                hour after the row's means the meter has not reported since: the model cannot forecast it from
                that row. An hour before it is not planned (the caller refuses it).
            stale_after_hours: ``SE_STALE_AFTER_HOURS``.
            profiles: reads the profiles of the given row indexes (called only for rows that may need them).
        """
        n = len(matrix)
        result = Plan([None] * n, [None] * n, [None] * n, [math.nan] * n, [None] * n)
        asked_any = forecast_hours[0] is not None if n == 1 else any(h is not None for h in forecast_hours)
        rows: Sequence[int] = range(n)
        lags = None
        if n > 64 and not asked_any and self.usage:  # a batch: numpy finds the few rows to look at
            missing = np.isnan(matrix[:, self._columns])
            recent = missing[:, self.recent] if self.recent else np.ones((n, 1), dtype=bool)
            gap = np.where(recent.all(axis=1), -1, np.argmin(recent, axis=1))
            result.stale_hours = [None if g < 0 else g for g in gap.tolist()]
            stale = (missing.sum(axis=1) * 2 > missing.shape[1]) | (gap < 0) | (gap >= stale_after_hours)
            rows = np.flatnonzero(stale).tolist()
            lags = matrix[rows][:, self._columns].tolist()
        elif self.usage:  # plain Python: a request's few rows cost less so than numpy's per-call overhead
            lags = matrix[:, self._columns].tolist()
        else:
            lags = [[] for _ in rows]
        candidates, state = [], {}
        for i, values in zip(rows, lags):
            missing = [v != v for v in values]
            gap = None  # hours since the last complete one, from the recent lags
            for k, j in enumerate(self.recent):
                if not missing[j]:
                    gap = k
                    break
            result.stale_hours[i] = gap
            ahead = 0.0
            if asked_any:
                asked, row = forecast_hours[i], row_hours[i]
                if asked is not None and row is not None:
                    if asked < row:
                        continue  # not forecast here: the caller refuses an hour before the row's
                    ahead = (asked - row) / HOUR
            n_missing = sum(missing)
            lags_missing = n_missing * 2 > len(missing)
            # gap None (3 h or more from the lags alone) is stale at any threshold: the lags rule catches it otherwise
            if lags_missing or gap is None or gap + ahead >= stale_after_hours or ahead > 0:
                candidates.append(i)
                state[i] = (gap, ahead, lags_missing, n_missing)
        if candidates:
            self._fall_back(result, candidates, state, row_hours, forecast_hours, stale_after_hours, profiles)
        return result

    def _fall_back(self, result: Plan, candidates: list[int], state: dict, row_hours, forecast_hours,
                   stale_after_hours: int, profiles) -> None:
        for i, profile in zip(candidates, profiles(candidates)):
            gap, ahead, lags_missing, n_missing = state[i]
            hour = forecast_hours[i] or row_hours[i]
            stale = None
            if profile is not None and hour is not None:
                stale = int((hour - profile.last_complete_hour) / HOUR) - 1
                result.stale_hours[i] = stale
            elif gap is not None:
                stale = int(gap + ahead)
            reason = METER_SILENT if stale is None or stale >= stale_after_hours else (
                LAGS_MISSING if lags_missing and not ahead else None)
            if reason is None:
                continue  # the hour asked is after the row's, and the meter is not stale yet: the caller refuses it
            if profile is None:
                result.fallback[i], result.reason[i] = NONE, NO_HISTORY
                result.detail[i] = "no complete hour in its readings: no weekly profile to forecast from"
            elif stale > MAX_FALLBACK_STALE_HOURS:
                result.fallback[i], result.reason[i] = NONE, NO_HISTORY
                result.detail[i] = (f"its last complete hour ({profile.last_complete_hour:%Y-%m-%d %H:%M}) is "
                                    f"{stale:,} h before the hour asked, more than the {PROFILE_WEEKS} weeks its "
                                    f"profile describes")
            else:
                result.fallback[i], result.reason[i] = PROFILE, reason
                result.kw[i] = float(profile_forecast(profile, [hour])[0])
                result.profiles[i] = profile
                result.detail[i] = (f"no complete reading for {stale} h" if reason == METER_SILENT else
                                    f"{n_missing} of {len(self.usage)} usage lags missing")


def plan(matrix: np.ndarray, features: Sequence[str], row_hours: Sequence[datetime | None],
         forecast_hours: Sequence[datetime | None], stale_after_hours: int,
         profiles: Callable[[list[int]], list[MeterProfile | None]]) -> Plan:
    """``Planner(features).plan(...)``: who answers each row (the model, the profile, or no one)."""
    return Planner(features).plan(matrix, row_hours, forecast_hours, stale_after_hours, profiles)
