"""Generate a large UCI-format meter file from the shared slice, for scale benchmarks.

The shared slice's readings are repeated in order on a continuous minute timeline from its
first timestamp, so the result has the real data's shape (its `?` rows included) at any size;
the default is the full UCI data set's 2,075,259 rows. Like the full data set, it has multi-day
gaps: the readings of ``GAPS`` (modelled on its longest ones, dates approximate) are ``?``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FULL_UCI_ROWS = 2_075_259
# (first missing minute, days) — the full data set's longest runs of '?' are about this long, about then
GAPS = (("2007-04-28 00:21", 2.6), ("2009-06-13 17:00", 1.2), ("2010-01-12 14:00", 2.1),
        ("2010-08-17 21:00", 5.0), ("2010-09-25 03:00", 3.5))


def make_big_file(source: Path, out: Path, rows: int = FULL_UCI_ROWS) -> Path:
    """Write ``rows`` minute readings cycled from ``source`` to ``out`` (``;``-separated, ``?`` kept)."""
    src = pd.read_csv(source, sep=";", dtype=str, keep_default_na=False)
    start = pd.to_datetime(src["Date"].iloc[0] + " " + src["Time"].iloc[0], format="%d/%m/%Y %H:%M:%S")
    stamps = start + pd.to_timedelta(np.arange(rows), unit="min")
    body = src.iloc[np.arange(rows) % len(src)].reset_index(drop=True)
    body["Date"] = [f"{d}/{m}/{y}" for d, m, y in zip(stamps.day, stamps.month, stamps.year)]
    body["Time"] = stamps.strftime("%H:%M:%S")
    for first, days in GAPS:
        start = pd.Timestamp(first)
        missing = (stamps >= start) & (stamps < start + pd.Timedelta(days=days))
        body.loc[missing, body.columns[2:]] = "?"
    out.parent.mkdir(parents=True, exist_ok=True)
    body.to_csv(out, sep=";", index=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=FULL_UCI_ROWS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import require_file

    require_file(args.source, "--source")
    if args.out.exists():
        print(f"{args.out} exists; reusing it")
        return
    make_big_file(args.source, args.out, args.rows)
    print(f"wrote {args.rows:,} rows to {args.out}")


if __name__ == "__main__":
    main()
