"""The transformer's day-ahead path: a meter's Feast row becomes 24 (origin, lead) rows, and the predictor's
P10/P50/P90 come back as the next 24 hours with prices and advice.

The advice is ``advice.plan`` over the served forecast with the meter's load habits and backtested savings
that the model carries from training (``metadata["advice"]``); the tariff is ``SE_TARIFF``. Tempo's colour
of the next day (announced by RTE the evening before) is not in the data: the server prices Tempo hours as
blue and says so in the answer (``tempo_colour``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import numpy as np
import pandas as pd

from smart_energy.components.dayahead import DAYAHEAD_FEATURES, HORIZON_HOURS, OUTPUTS, expand_leads
from smart_energy.serving.logic import RequestError


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
