"""The transformer's day-ahead path: a meter's Feast row becomes 24 (origin, lead) rows, the predictor's raw
P10/P50/P90 are calibrated on the meter's rolling window (``components/calibration.py``, one
``OnlineCalibration`` per answering version, ``Calibrations``), and come back as the next 24 hours with prices
and advice, each meter's band flagged ``calibration`` (``"rolling"`` | ``"training"``) with its shift.

The advice is ``advice.plan`` over the served forecast with the meter's load habits and backtested savings
that the model carries from training (``metadata["advice"]``); the tariff is ``SE_TARIFF``. Tempo's colour
of the next day (announced by RTE the evening before) is not in the data: the server prices Tempo hours as
blue and says so in the answer (``tempo_colour``).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any, Sequence

import numpy as np
import pandas as pd

from smart_energy.components.calibration import (ACTUAL_LAGS, LEAD_BUCKETS, RAW_OUTPUTS, ROLLING, TRAINING,
                                                 OnlineCalibration)
from smart_energy.components.dayahead import DAYAHEAD_FEATURES, HORIZON_HOURS, OUTPUTS, expand_leads
from smart_energy.serving import metrics
from smart_energy.serving.logic import RequestError

MAX_CALIBRATED_VERSIONS = 2  # a canary has two versions (~35 KB per meter each); the idle one goes first


class Calibrations:
    """The transformer's online calibrations, one per version answering (a canary's two versions each calibrate
    their own forecasts), with the served bands' coverage and pinball loss as Prometheus gauges."""

    def __init__(self, features: Sequence[str], fallback: float):
        self.lag_columns = {k: list(features).index(f"usage_lag_{k}h") for k in ACTUAL_LAGS
                            if f"usage_lag_{k}h" in features}
        self.fallback = float(fallback)  # the transformer's model's, for a predictor naming none
        self._by_version: OrderedDict[str, OnlineCalibration] = OrderedDict()

    def band(self, version: str, parameters: dict | None, columns: dict[str, np.ndarray], meter_ids: Sequence[str],
             hours: Sequence[datetime], rows: np.ndarray, remember: np.ndarray | None
             ) -> tuple[dict[str, np.ndarray], list[dict[str, float] | None], list[str | None]]:
        """The calibrated P10/P50/P90 columns from the predictor's raw ones, and per meter the shifts by lead
        bucket and the calibration: ``"rolling"`` when every bucket's shift came from the meter's window, else
        ``"training"`` (None for the meters ``remember`` leaves out: the profile answers them)."""
        keep = [remember is None or bool(remember[i]) for i in range(len(meter_ids))]
        if RAW_OUTPUTS[0] not in columns:  # a predictor that calibrated itself (the training calibration)
            shift = float((parameters or {}).get("conformal_kw", self.fallback))
            return (columns, [{name: shift for name, _, _ in LEAD_BUCKETS} if k else None for k in keep],
                    [TRAINING if k else None for k in keep])
        calibration = self._by_version.get(version)
        if calibration is None:
            fallback = float((parameters or {}).get("conformal_kw", self.fallback))
            calibration = self._by_version[version] = OnlineCalibration(fallback, self.lag_columns)
            while len(self._by_version) > MAX_CALIBRATED_VERSIONS:
                self._by_version.popitem(last=False)
        self._by_version.move_to_end(version)
        raw = np.column_stack([columns[name] for name in RAW_OUTPUTS])
        band, shifts, rolling = calibration.serve(meter_ids, hours, rows, raw, remember)
        for name, (coverage, pinball, pairs) in calibration.scores().items():
            metrics.DAYAHEAD_COVERAGE.labels(version, name).set(coverage)
            metrics.DAYAHEAD_PINBALL.labels(version, name).set(pinball)
            metrics.DAYAHEAD_SCORED_PAIRS.labels(version, name).set(pairs)
        hows = [(ROLLING if rolling[i].all() else TRAINING) if k else None for i, k in enumerate(keep)]
        for how in hows:
            if how:
                metrics.DAYAHEAD_BANDS.labels(version, how).inc()
        return ({name: band[:, i] for i, name in enumerate(OUTPUTS)},
                [{name: float(s) for (name, _, _), s in zip(LEAD_BUCKETS, shifts[i])} if k else None
                 for i, k in enumerate(keep)], hows)


def shift_parameter(shifts: Sequence[dict[str, float] | None]) -> str:
    """V2: per meter, its shifts by lead bucket (``LEAD_BUCKETS`` order, ``;``-separated), meters comma-separated
    (empty for a meter the profile answered)."""
    return ",".join("" if s is None else ";".join(repr(s[name]) for name, _, _ in LEAD_BUCKETS) for s in shifts)


def pairs_matrix(meter_ids: Sequence[str], event_hours: Sequence[datetime | None], origin_rows: np.ndarray,
                 origin_features: Sequence[str]) -> tuple[np.ndarray, list[pd.Timestamp]]:
    """The predictor's rows (``DAYAHEAD_FEATURES`` order, 24 per meter) and each row's target hour."""
    if any(h is None for h in event_hours):
        raise RequestError("the online row carries no hour; the day-ahead forecast needs the hour it starts from",
                           status=422, reason="stale_features")
    origins = pd.DataFrame(origin_rows, columns=list(origin_features))
    origins.insert(0, "meter_id", list(meter_ids))
    origins.insert(1, "event_timestamp", pd.to_datetime(list(event_hours), utc=True))
    # expand_leads orders lead by lead; the answer wants meter by meter
    pairs = expand_leads(origins)
    pairs = pairs.assign(row=np.tile(np.arange(len(origins)), HORIZON_HOURS)).sort_values(
        ["row", "lead_hours"], kind="stable")
    return pairs[DAYAHEAD_FEATURES].to_numpy(dtype=np.float64), list(pairs["target_timestamp"])


def answer_v1(meter_ids: Sequence[str], targets: Sequence[pd.Timestamp], columns: dict[str, np.ndarray],
              metadata: dict[str, Any], tariff: str, settings) -> list[dict[str, Any]]:
    """One entry per meter: its next 24 h (P10/P50/P90, price), peak hours, load windows and savings."""
    from smart_energy.components.advice import plan

    out = []
    known = metadata.get("advice") or {}
    for i, meter in enumerate(meter_ids):
        span = slice(i * HORIZON_HOURS, (i + 1) * HORIZON_HOURS)
        forecast = pd.DataFrame({"timestamp": targets[span], **{name: columns[name][span] for name in OUTPUTS}})
        habits = known.get(meter)
        entry = {"meter_id": meter, **plan(forecast, habits["loads"] if habits else [], tariff, settings,
                                           colours="blue" if tariff == "tempo" else None)}
        entry["savings"] = habits["savings"].get(tariff) if habits else None
        if tariff == "tempo":
            entry["tempo_colour"] = "blue (assumed: RTE announces the next day's colour the evening before)"
        if not habits:
            entry["note"] = f"no load habits for meter {meter!r} in this model (trained on other meters)"
        out.append(entry)
    return out
