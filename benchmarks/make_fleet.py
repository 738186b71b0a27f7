"""A synthetic fleet for tests and benchmarks: many meters made from the one real household.

Synthetic, and documented as such: each meter takes ``days`` of the shared file's minute readings from a
random start day, shuffles those days, scales every power channel by its own factor (lognormal: a 0.3 kW flat
to a 3+ kW house) and shifts its clock by up to three hours, so no two meters are identical while each keeps
real appliance shapes. All meters cover the same calendar days from 2007-01-01. Readings that are '?' in the source stay '?' (missing), as in real fleets.

    python benchmarks/make_fleet.py --data SHARED --out DIR --meters 100 --days 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

POWER = ["Global_active_power", "Global_reactive_power", "Global_intensity", "Sub_metering_1", "Sub_metering_2",
         "Sub_metering_3"]


def load_source(shared: Path) -> pd.DataFrame:
    raw = pd.read_csv(shared, sep=";", dtype=str, keep_default_na=False)
    raw["ts"] = pd.to_datetime(raw["Date"] + " " + raw["Time"], format="%d/%m/%Y %H:%M:%S")
    return raw


def meter_frame(source: pd.DataFrame, rng: np.random.Generator, days: int) -> pd.DataFrame:
    """One synthetic meter: ``days`` whole days of minute rows, UCI columns, from ``source``."""
    first = source["ts"].iloc[0].normalize() + pd.Timedelta(days=1)
    span = (source["ts"].iloc[-1].normalize() - first).days - days
    start = first + pd.Timedelta(days=int(rng.integers(0, max(span, 1))))
    chosen = start + pd.to_timedelta(rng.permutation(days), unit="D")  # the days, shuffled
    by_day = source.set_index(source["ts"].dt.normalize())
    parts = []
    clock = pd.Timedelta(hours=int(rng.integers(-3, 4)))
    new_start = pd.Timestamp("2007-01-01")  # one calendar for the fleet, as a utility reads all its meters
    for i, day in enumerate(chosen):
        part = by_day.loc[[day]].copy() if day in by_day.index else None
        if part is None or part.empty:
            continue
        part["ts"] = part["ts"] - day + new_start + pd.Timedelta(days=i) + clock
        parts.append(part.reset_index(drop=True))
    frame = pd.concat(parts, ignore_index=True).sort_values("ts", kind="stable")
    scale = float(np.exp(rng.normal(0.0, 0.6)))
    known = frame["Global_active_power"] != "?"
    for column in POWER:
        frame.loc[known, column] = (frame.loc[known, column].astype(float) * scale).map("{:.3f}".format)
    frame["Date"] = frame["ts"].dt.day.astype(str) + "/" + frame["ts"].dt.month.astype(str) + "/" + \
        frame["ts"].dt.year.astype(str)
    frame["Time"] = frame["ts"].dt.strftime("%H:%M:%S")
    return frame.drop(columns="ts")


def make_fleet(shared: Path, out: Path, meters: int, days: int = 8, seed: int = 7, long_file: bool = False,
               source: pd.DataFrame | None = None) -> list[Path]:
    """``meters`` files ``meter-00000.txt`` ... in ``out`` (or one ``fleet.txt`` with a ``meter_id`` column)."""
    out.mkdir(parents=True, exist_ok=True)
    source = load_source(shared) if source is None else source
    rng = np.random.default_rng(seed)
    columns = ["Date", "Time", *[c for c in source.columns if c not in ("Date", "Time", "ts")]]
    written = []
    for i in range(meters):
        frame = meter_frame(source, rng, days)[columns]
        name = f"meter-{i:05d}"
        if long_file:
            path = out / "fleet.txt"
            frame.insert(0, "meter_id", name)
            frame.to_csv(path, sep=";", index=False, mode="a" if i else "w", header=not i)
        else:
            path = out / f"{name}.txt"
            frame.to_csv(path, sep=";", index=False)
        written.append(path)
    return sorted(set(written))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--long-file", action="store_true", help="one file with a meter_id column")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import require_file

    require_file(args.data, "--data")
    print(f"{len(make_fleet(args.data, args.out, args.meters, args.days, long_file=args.long_file))} file(s) in {args.out}")


def make_fleet_hourly(shared: Path, meters: int, days: int = 9, seed: int = 7) -> pd.DataFrame:
    """The same kind of synthetic fleet at the hourly level (what ingest would give), built vectorised: for
    10,000 meters the minute files would be ~7 GB of text. Each meter: a random window of the real hourly
    readings, its own scale, all on one calendar from 2007-01-01."""
    from smart_energy.components.ingest import ingest_file

    real = ingest_file(shared).hourly.reset_index(drop=True)
    hours = days * 24
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(real) - hours, meters)
    scale = np.exp(rng.normal(0.0, 0.6, meters))
    rows = (starts[:, None] + np.arange(hours)[None, :]).ravel()
    frame = real.iloc[rows].reset_index(drop=True)
    power = [c for c in frame.columns if c.endswith("_kw")] + ["energy_kwh", "global_intensity_a"]
    factor = np.repeat(scale, hours)
    for column in power:
        frame[column] = frame[column].to_numpy() * factor
    frame["meter_id"] = np.repeat([f"meter-{i:05d}" for i in range(meters)], hours)
    frame["timestamp"] = np.tile(pd.date_range("2007-01-01", periods=hours, freq="h", tz="UTC"), meters)
    return frame
