"""Row validation for raw meter readings: which rule each row breaks, vectorised.

Rules, in priority order (a row records the first it breaks): empty row, unparseable timestamp,
non-numeric cell, partial missing reading, a field outside its physical range, sub-meters above
the total, duplicate timestamp. A row of only ``?`` is a missing reading, not an error. Rows come in
time order (ingest sorts a file that is not), so a duplicate is a repeat of the row before.
"""

from __future__ import annotations

import numpy as np

# Physical plausibility (inclusive bounds). Voltage: 230 V +/- 15 %, wider than EN 50160's
# +/- 10 % so that real sags and swells pass and only instrument faults are caught.
RANGES: dict[str, tuple[float, float]] = {
    "Global_active_power": (0.0, 25.0),  # kW
    "Global_reactive_power": (0.0, 25.0),  # kVAR
    "Voltage": (195.5, 264.5),  # V
    "Global_intensity": (0.0, 120.0),  # A
    "Sub_metering_1": (0.0, 25_000 / 60),  # Wh in one minute
    "Sub_metering_2": (0.0, 25_000 / 60),
    "Sub_metering_3": (0.0, 25_000 / 60),
}
SUBMETER_TOLERANCE_WH = 1.0  # readings are rounded to 1 Wh
MEASUREMENTS = list(RANGES)  # the raw file's measurement columns, in file order
SUB_METERS = ["Sub_metering_1", "Sub_metering_2", "Sub_metering_3"]


REASONS = [
    "", "empty_row", "bad_timestamp", "non_numeric", "partial_missing",
    *(f"out_of_range:{c}" for c in RANGES), "submeters_exceed_total", "duplicate_timestamp",
]
_CODE = {name: code for code, name in enumerate(REASONS)}


def _rules(ts: np.ndarray, values: dict[str, np.ndarray], non_numeric: np.ndarray, all_null: np.ndarray):
    """(reason, mask) for each row-level rule, in priority order; computed lazily on any row subset."""
    nulls = [np.isnan(values[c]) for c in MEASUREMENTS]
    yield "empty_row", (ts < 0) & all_null
    yield "bad_timestamp", ts < 0
    yield "non_numeric", non_numeric
    yield "partial_missing", np.logical_or.reduce(nulls) & ~all_null
    present = ~all_null
    with np.errstate(invalid="ignore"):
        for col, (lo, hi) in RANGES.items():
            v = values[col]
            yield f"out_of_range:{col}", present & ((v < lo) | (v > hi))
        sub_wh = values[SUB_METERS[0]] + values[SUB_METERS[1]] + values[SUB_METERS[2]]
        total_wh = values["Global_active_power"] * (1000 / 60)
        yield "submeters_exceed_total", present & (sub_wh > total_wh + SUBMETER_TOLERANCE_WH)


def validate_rows(ts: np.ndarray, values: dict[str, np.ndarray], non_numeric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a status (0 valid, 1 missing, 2 quarantined) and a reason code into ``REASONS`` (the first rule broken).

    ``ts`` must be in time order where it is set (-1 rows anywhere): ``ingest._time_order`` sorts it.
    """
    n = len(ts)
    reason = np.zeros(n, dtype=np.int8)
    null_count = np.zeros(n, dtype=np.int8)
    for c in MEASUREMENTS:
        null_count += np.isnan(values[c])
    all_null = (null_count == len(MEASUREMENTS)) & ~non_numeric

    # One cheap pass finds the rows that break any rule; reasons are then worked out on those rows only.
    bad = np.zeros(n, dtype=bool)
    for _, mask in _rules(ts, values, non_numeric, all_null):
        bad |= mask
    rows = np.flatnonzero(bad)
    if len(rows):
        sub = {c: values[c][rows] for c in MEASUREMENTS}
        code = np.zeros(len(rows), dtype=np.int8)
        for why, mask in _rules(ts[rows], sub, non_numeric[rows], all_null[rows]):
            code[mask & (code == 0)] = _CODE[why]
        reason[rows] = code

    # Of the rows with one timestamp, the first is kept and the others are duplicates. Rows are in time
    # order (stable), so the first in time is also the first in the file.
    idx = np.flatnonzero(ts >= 0)
    if len(idx) > 1:
        stamped = ts[idx]
        dup = idx[1:][stamped[1:] == stamped[:-1]]
        dup = dup[reason[dup] == 0]
        reason[dup] = _CODE["duplicate_timestamp"]

    status = np.where(reason != 0, 2, np.where(all_null, 1, 0)).astype(np.int8)
    return status, reason
