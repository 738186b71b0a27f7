"""The one place where the day-ahead model's raw quantiles become the P10-P90 band, offline and in serving.

Conformalized quantile regression (Romano et al., 2019) on a rolling window, per meter and lead bucket: a pair
(origin, target hour) scores ``max(P10 - y, y - P90)`` on the RAW quantiles once the target's actual ``y`` is
known, and the band at origin T for a lead in bucket b (``LEAD_BUCKETS``: 1, 2-3, 4-6, 7-12, 13-24 h) widens
(or narrows) both ends by the ``BAND`` quantile of that meter's scores of bucket-b pairs whose target hour
ended before T (so their origin was before T too) within the last ``CALIBRATION_DAYS``. Per bucket because the
raw band's miss rate depends on the lead (the next-hour model answers lead 1): one shift pooled over the 24
leads covered lead 1 0.92 and leads 13-24 0.77 on the shared file's February; per bucket, 0.79-0.82 at every
bucket, overall 0.799 (pooled 0.794) and pinball 0.2382 kW (0.2385). A bucket with fewer than a day of origins'
scores (``MIN_CALIBRATION_PAIRS`` x its share of the 24 leads) gets the training calibration, the model's
``conformal_kw`` (the CQR shift of its time-ordered validation part), flagged: every band carries
``calibration`` = ``"rolling"`` (every bucket on the meter's window) or ``"training"`` and its shifts. The two
ends are then ordered around the P50, which the calibration never moves (quantiles never cross), and clipped at
0 kW (``calibrate``).

- Offline (``rolling_band``): ``evaluate``, ``advise``/``next_24h``, the monitoring report and batch ``predict``
  hand the raw quantiles of every (origin, lead) pair and the actuals they know.
- Online (``OnlineCalibration``): the transformer keeps, per answering version, each meter's last raw forecasts
  and, as the meter's next online rows reveal the actuals (``usage_lag_1h`` of the row for hour H is hour H-1's),
  their scores, in fixed-size arrays. The shifts are the same function of the same scores (``window_shift``), so
  a meter asked every hour is served ``evaluate``'s band.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from datetime import datetime
from typing import Sequence

import numpy as np
import pandas as pd

CALIBRATION_DAYS = 7
MIN_CALIBRATION_PAIRS = 24 * 24  # a day of origins, every lead (a bucket needs its share: 24 x its leads)
BAND = 0.8  # P10..P90
HORIZON = 24  # leads 1..24 (dayahead.HORIZON_HOURS)
QUANTILES = (0.1, 0.5, 0.9)
ROLLING, TRAINING = "rolling", "training"
RAW_OUTPUTS = ("raw_p10_kw", "raw_p50_kw", "raw_p90_kw")  # what the transformer asks the predictor for
WINDOW_HOURS = CALIBRATION_DAYS * 24
# Online: a forecast waits for its actual in a ring of PENDING_HOURS target hours (an actual arrives an hour
# later through usage_lag_1h, or up to 24 h later through the other lags of a meter asked less often).
PENDING_HOURS = 48
ACTUAL_LAGS = (1, 2, 3, 24)
MAX_CALIBRATED_METERS = 5_000  # per answering version (~35 KB each); the least recently asked meter goes first
SCORED_PAIRS_WINDOW = WINDOW_HOURS * HORIZON  # per lead bucket: the last week of one meter's pairs, at most


def conformity(actual: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """CQR conformity scores of raw (n, 3) quantiles: how far outside [P10, P90] the actual fell (< 0 inside)."""
    return np.maximum(raw[:, 0] - actual, actual - raw[:, 2])


def calibrate(raw: np.ndarray, shift: float | np.ndarray) -> np.ndarray:
    """P10 - shift, P50, P90 + shift, the two ends ordered around the P50 (never crossing; the P50 is never moved,
    even where a negative shift narrows the ends past it), never below 0 kW."""
    shift = np.asarray(shift, dtype=float).reshape(-1, 1) if np.ndim(shift) else np.full((len(raw), 1), shift)
    lo, mid, hi = raw[:, :1] - shift, raw[:, 1:2], raw[:, 2:3] + shift
    ends = np.minimum(lo, hi), np.maximum(lo, hi)
    return np.maximum(np.hstack([np.minimum(ends[0], mid), mid, np.maximum(ends[1], mid)]), 0.0)


def conformal_shift(actual: np.ndarray, raw: np.ndarray, band: float = BAND) -> float:
    """The training calibration: the score quantile that makes [P10 - s, P90 + s] cover ``band`` of the
    calibration rows (with CQR's finite-sample correction)."""
    scores = conformity(actual, raw)
    n = len(scores)
    return float(np.quantile(scores, min(1.0, band * (n + 1) / n)))


LEAD_BUCKETS = (("1", 1, 1), ("2-3", 2, 3), ("4-6", 4, 6), ("7-12", 7, 12), ("13-24", 13, 24))
BUCKET_OF_LEAD = np.array([0] + [i for i, (_, lo, hi) in enumerate(LEAD_BUCKETS) for _ in range(lo, hi + 1)])
BUCKET_MIN_PAIRS = [MIN_CALIBRATION_PAIRS * (hi - lo + 1) // HORIZON for _, lo, hi in LEAD_BUCKETS]


def window_shift(scores: np.ndarray, fallback: float, minimum: int) -> tuple[float, str]:
    """The shift of one meter's lead bucket at one origin from the scores in its window: ``(shift, "rolling")``,
    or ``(fallback, "training")`` with fewer than ``minimum``. Offline and online both call this."""
    if len(scores) >= minimum:
        return float(np.quantile(np.asarray(scores, dtype=np.float64), BAND)), ROLLING
    return float(fallback), TRAINING


def rolling_shift(at: pd.DataFrame, known: pd.DataFrame, fallback: float, days: int = CALIBRATION_DAYS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``at`` (``meter_id``, ``event_timestamp``, ``lead_hours``): ``window_shift`` of the meter's
    scores of ``known`` (``meter_id``, ``target_timestamp``, ``lead_hours``, ``score``) in the lead's bucket whose
    target hour is in [origin - days, origin) (so their origin is before it too). Returns the shifts and the
    calibration flags."""
    shift, how = np.empty(len(at)), np.empty(len(at), dtype=object)
    window = days * 86_400 * 10**9
    origins, targets_all = _ns(at["event_timestamp"]), _ns(known["target_timestamp"])
    scores_all = known["score"].to_numpy(dtype=float)
    groups = lambda frame: pd.Series(np.arange(len(frame))).groupby(  # noqa: E731
        [frame["meter_id"].astype(str).to_numpy(), BUCKET_OF_LEAD[frame["lead_hours"].to_numpy(dtype=int)]]).indices
    known_groups = groups(known) if len(known) else {}
    for (meter, bucket), rows in (groups(at) if len(at) else {}).items():
        rows_known = known_groups.get((meter, bucket), np.zeros(0, dtype=int))
        order = rows_known[np.argsort(targets_all[rows_known], kind="stable")]
        targets, scores = targets_all[order], scores_all[order]
        cache: dict[int, tuple[float, str]] = {}
        for row in rows:
            origin = origins[row]
            if origin not in cache:
                lo, hi = np.searchsorted(targets, [origin - window, origin], side="left")
                cache[origin] = window_shift(scores[lo:hi], fallback, BUCKET_MIN_PAIRS[bucket])
            shift[row], how[row] = cache[origin]
    return shift, how


def _ns(timestamps: Sequence) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) of datetime64 values or (tz-aware) Timestamps."""
    return pd.DatetimeIndex(np.asarray(timestamps)).asi8 if len(timestamps) else np.zeros(0, dtype=np.int64)


def rolling_band(raw: np.ndarray, pairs: pd.DataFrame, fallback: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The calibrated (n, 3) band of ``pairs`` (``meter_id``, ``event_timestamp``, ``lead_hours``,
    ``target_timestamp`` and ``target_kw``, NaN where unknown) from their raw quantiles, each origin calibrated on
    the meter's pairs with a known actual before it; with the shifts and the calibration flags."""
    actual = pairs["target_kw"].to_numpy(dtype=float)
    have = ~np.isnan(actual)
    known = pairs.loc[have, ["meter_id", "target_timestamp", "lead_hours"]].assign(
        score=conformity(actual[have], raw[have]))
    shift, how = rolling_shift(pairs, known, fallback)
    return calibrate(raw, shift), shift, how


def calibration_counts(pairs: pd.DataFrame, how: np.ndarray) -> dict[str, int]:
    """Origins (meter, origin) calibrated each way: rolling when every lead of it was."""
    rolling = pd.Series(how == ROLLING).groupby([pairs["meter_id"].to_numpy(),
                                                 pairs["event_timestamp"].to_numpy()]).all()
    return {ROLLING: int(rolling.sum()), TRAINING: int((~rolling).sum())}


def pinball_rows(actual: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Per row: the mean pinball loss over the three quantiles (kW)."""
    diff = np.asarray(actual, dtype=float)[:, None] - quantiles
    q = np.array(QUANTILES)
    return np.mean(np.maximum(q * diff, (q - 1) * diff), axis=1)


_ROW_BUCKET = BUCKET_OF_LEAD[1:]  # per lead index 0..23


def _hour(ts: datetime | pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value // 3_600_000_000_000)


class _Meter:
    """One meter's window: raw forecasts waiting for their actual (by target hour), the shifts (one per lead
    bucket) served at each recent origin, and a week of scores (by target hour, one per lead)."""

    __slots__ = ("raw", "raw_hour", "shift", "shift_how", "shift_hour", "scores", "score_hour")

    def __init__(self) -> None:
        self.raw = np.full((PENDING_HOURS, HORIZON, 3), np.nan, dtype=np.float32)
        self.raw_hour = np.full(PENDING_HOURS, -1, dtype=np.int64)
        self.shift = np.zeros((PENDING_HOURS, len(LEAD_BUCKETS)), dtype=np.float64)
        self.shift_how = np.zeros((PENDING_HOURS, len(LEAD_BUCKETS)), dtype=bool)  # True: rolling
        self.shift_hour = np.full(PENDING_HOURS, -1, dtype=np.int64)
        self.scores = np.full((WINDOW_HOURS, HORIZON), np.nan, dtype=np.float32)
        self.score_hour = np.full(WINDOW_HOURS, -1, dtype=np.int64)

    def observe(self, hour: int, actual: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Score the forecasts of target ``hour`` against ``actual``; returns (leads, covered, pinball) of the
        served bands, or None when nothing waited for it."""
        slot = hour % PENDING_HOURS
        if self.raw_hour[slot] != hour:
            return None
        raw = self.raw[slot].astype(np.float64)
        self.raw_hour[slot] = -1  # scored once (a later row revealing the same hour scores nothing)
        leads = np.flatnonzero(~np.isnan(raw[:, 0]))
        if not len(leads):
            return None
        raw = raw[leads]
        s = self.score_hour[hour % WINDOW_HOURS]
        if s != hour:
            self.scores[hour % WINDOW_HOURS] = np.nan
            self.score_hour[hour % WINDOW_HOURS] = hour
        self.scores[hour % WINDOW_HOURS, leads] = conformity(np.full(len(leads), actual), raw)
        # the bands served: each lead's origin and the shift it was served with
        origins = hour - leads  # lead L (index L-1) was forecast at origin hour - L + 1
        served = self.shift_hour[origins % PENDING_HOURS] == origins
        if not served.any():
            return None
        band = calibrate(raw[served], self.shift[origins[served] % PENDING_HOURS, _ROW_BUCKET[leads[served]]])
        covered = (band[:, 0] <= actual) & (actual <= band[:, 2])
        return leads[served] + 1, covered, pinball_rows(np.full(len(band), actual), band)

    def shift_at(self, origin: int, fallback: float) -> tuple[np.ndarray, np.ndarray]:
        """Per lead bucket: the shift at ``origin`` and whether it is rolling."""
        slot = origin % PENDING_HOURS
        if self.shift_hour[slot] != origin:  # (asked again within the hour: nothing new is known)
            known = self.scores[(self.score_hour >= origin - WINDOW_HOURS) & (self.score_hour < origin)]
            for b, (_, lo, hi) in enumerate(LEAD_BUCKETS):
                scores = known[:, lo - 1:hi].ravel()
                shift, how = window_shift(scores[~np.isnan(scores)], fallback, BUCKET_MIN_PAIRS[b])
                self.shift[slot, b], self.shift_how[slot, b] = shift, how == ROLLING
            self.shift_hour[slot] = origin
        return self.shift[slot].copy(), self.shift_how[slot].copy()

    def remember(self, origin: int, raw: np.ndarray) -> None:
        """The raw (24, 3) forecasts made at ``origin`` for leads 1..24 (target hours origin..origin+23)."""
        for lead in range(HORIZON):
            hour = origin + lead
            slot = hour % PENDING_HOURS
            if self.raw_hour[slot] != hour:
                self.raw[slot] = np.nan
                self.raw_hour[slot] = hour
            self.raw[slot, lead] = raw[lead]


class OnlineCalibration:
    """Serving's calibration for one answering model version: per meter, a bounded window (``_Meter``) fed by
    the meter's own online rows. Thread-safe; the arrays are fixed-size, so a meter costs O(1) time and memory
    per request, and at most ``max_meters`` meters are kept (the least recently asked is dropped, and starts again
    from the training calibration).

    ``lag_columns``: the columns of the online row holding usage_lag_{k}h (k in ``ACTUAL_LAGS``), the actual of
    hour H - k for the row of hour H."""

    def __init__(self, fallback: float, lag_columns: dict[int, int], max_meters: int = MAX_CALIBRATED_METERS,
                 pairs_window: int = SCORED_PAIRS_WINDOW):
        self.fallback = float(fallback)
        self.lag_columns = dict(lag_columns)
        self.max_meters = max_meters
        self._meters: OrderedDict[str, _Meter] = OrderedDict()
        self._lock = threading.Lock()
        # per lead bucket: the last scored pairs of served bands (covered 0/1, pinball kW) and running sums
        self._scored = [deque(maxlen=pairs_window) for _ in LEAD_BUCKETS]
        self._sums = np.zeros((len(LEAD_BUCKETS), 2))

    def serve(self, meter_ids: Sequence[str], origins: Sequence[datetime], rows: np.ndarray, raw: np.ndarray,
              remember: Sequence[bool] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One request: score what ``rows`` (the meters' online rows, for the hours ``origins``) reveal, then the
        band of each meter's 24 raw forecasts (``raw``: (24 * meters, 3), meter by meter, lead by lead), and
        remember them (the meters ``remember`` marks: a stale meter's profile is not the model's forecast).
        Returns the (24 * meters, 3) band, and per meter and lead bucket the shift and whether it is rolling."""
        shifts = np.empty((len(meter_ids), len(LEAD_BUCKETS)))
        rolling = np.empty((len(meter_ids), len(LEAD_BUCKETS)), dtype=bool)
        with self._lock:
            for i, (meter, origin) in enumerate(zip(meter_ids, origins)):
                hour = _hour(origin)
                state = self._meter(str(meter))
                for lag, column in self.lag_columns.items():
                    actual = float(rows[i, column])
                    if not np.isnan(actual):
                        self._record(state.observe(hour - lag, actual))
                shifts[i], rolling[i] = state.shift_at(hour, self.fallback)
                if remember is None or remember[i]:
                    state.remember(hour, np.asarray(raw[i * HORIZON:(i + 1) * HORIZON], dtype=np.float32))
        return calibrate(raw, shifts[:, _ROW_BUCKET].ravel()), shifts, rolling

    def scores(self) -> dict[str, tuple[float, float, int]]:
        """Per lead bucket with scored pairs: (coverage P10-P90, mean pinball kW, pairs) of the served bands."""
        with self._lock:
            return {name: (self._sums[b, 0] / len(self._scored[b]), self._sums[b, 1] / len(self._scored[b]),
                           len(self._scored[b]))
                    for b, (name, _, _) in enumerate(LEAD_BUCKETS) if self._scored[b]}

    def _meter(self, meter: str) -> _Meter:
        state = self._meters.get(meter)
        if state is None:
            state = self._meters[meter] = _Meter()
            while len(self._meters) > self.max_meters:
                self._meters.popitem(last=False)
        self._meters.move_to_end(meter)
        return state

    def _record(self, scored: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> None:
        if scored is None:
            return
        for lead, covered, loss in zip(*scored):
            b = BUCKET_OF_LEAD[lead]
            window = self._scored[b]
            if len(window) == window.maxlen:
                old = window[0]
                self._sums[b] -= old
            window.append((float(covered), float(loss)))
            self._sums[b] += window[-1]
