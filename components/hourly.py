"""Resample valid minute readings to a continuous hourly grid (no interpolation)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# hourly output column -> (raw column, scale to kW)
HOURLY_CHANNELS = {
    "global_active_power_kw": ("Global_active_power", 1.0),
    "global_reactive_power_kw": ("Global_reactive_power", 1.0),
    "voltage_v": ("Voltage", 1.0),
    "global_intensity_a": ("Global_intensity", 1.0),
    "sub_metering_1_kw": ("Sub_metering_1", 60 / 1000),  # Wh per minute -> mean kW
    "sub_metering_2_kw": ("Sub_metering_2", 60 / 1000),
    "sub_metering_3_kw": ("Sub_metering_3", 60 / 1000),
}


def resample_hourly(
    ts: np.ndarray, values: dict[str, np.ndarray], valid: np.ndarray, meter_id: str, min_minutes: int
) -> pd.DataFrame:
    """Hourly means of each channel over the valid minutes, on a continuous hourly grid.

    Hours with fewer than ``min_minutes`` valid minutes keep what was measured but are flagged
    ``is_complete=False``; hours with none have NaN means. Nothing is interpolated.
    """
    columns = ["meter_id", "timestamp", *HOURLY_CHANNELS, "energy_kwh", "last_15min_kw", "valid_minutes", "is_complete"]
    vts = ts[valid]
    if len(vts) == 0:
        return pd.DataFrame(columns=columns)
    hours = vts // 3600
    first, last = int(hours.min()), int(hours.max())
    slot = hours - first
    n_hours = last - first + 1
    counts = np.bincount(slot, minlength=n_hours)
    out: dict[str, object] = {
        "meter_id": np.full(n_hours, meter_id, dtype=object),
        "timestamp": pd.to_datetime((np.arange(n_hours) + first) * 3600, unit="s", utc=True),
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (raw, scale) in HOURLY_CHANNELS.items():
            sums = np.bincount(slot, weights=values[raw][valid], minlength=n_hours)
            out[name] = np.where(counts > 0, sums / counts * scale, np.nan)
    out["energy_kwh"] = np.bincount(slot, weights=values["Global_active_power"][valid], minlength=n_hours) / 60
    # the hour's last quarter: the freshest reading a next-hour forecast can use
    late = (vts % 3600) >= 45 * 60
    late_counts = np.bincount(slot[late], minlength=n_hours)
    late_sums = np.bincount(slot[late], weights=values["Global_active_power"][valid][late], minlength=n_hours)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["last_15min_kw"] = np.where(late_counts > 0, late_sums / late_counts, np.nan)
    out["valid_minutes"] = counts.astype(np.int16)
    out["is_complete"] = counts >= min_minutes
    return pd.DataFrame(out, columns=columns)
