"""Many meters in: a directory (or glob) of per-meter files, or one long file with a ``meter_id`` column.

Each meter's readings go through the single-file ingest (``ingest_file``: the same validation, quarantine and
hourly resampling), so one meter or a million give the same rows. A meter file that cannot be read at all
(a corrupt archive, a wrong header, no valid row) is quarantined whole, with its reason, and the others go
on; the counts per meter (``by_meter``) add up to the fleet's.
"""

from __future__ import annotations

import glob
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.ingest import IngestError, _open_text, ingest_file, write_atomically, write_hourly_parquet

SUFFIXES = (".txt", ".csv", ".txt.gz", ".csv.gz")
METER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
COUNTS = ("rows_read", "rows_valid", "rows_missing", "rows_quarantined", "hours", "hours_complete")
DATE_FIELDS = ("date_order", "date_order_decided_by", "sorted_by_time")  # decided per meter file (dates.py)


@dataclass
class FleetResult:
    hourly: pd.DataFrame
    quarantine: pd.DataFrame  # meter_id, file, line, reason, raw; a rejected file is one row with line = 0
    by_meter: dict[str, dict[str, Any]]
    rejected: dict[str, str] = field(default_factory=dict)  # file -> why it was quarantined whole

    def quality(self) -> dict[str, Any]:
        ok = [q for q in self.by_meter.values() if q["status"] == "ingested"]
        totals = {k: int(sum(q.get(k, 0) for q in self.by_meter.values())) for k in COUNTS}
        return {"meters": len(ok), "meters_rejected": len(self.rejected), **totals,
                "quarantine_fraction": round(totals["rows_quarantined"] / totals["rows_read"], 6)
                if totals["rows_read"] else 0.0,
                "rejected_files": self.rejected, "by_meter": self.by_meter}


def meter_files(path: str | Path) -> list[tuple[str, Path]]:
    """(meter id, file) for a directory of ``<meter_id>.txt[.gz]``/``.csv[.gz]`` files or a glob, sorted by id."""
    text = str(path)
    files = sorted(Path(p) for p in glob.glob(text)) if any(c in text for c in "*?[") else \
        sorted(p for p in Path(path).iterdir() if p.is_file())
    out = []
    for f in files:
        suffix = next((s for s in SUFFIXES if f.name.endswith(s)), None)
        if suffix is None:
            continue
        out.append((f.name[: -len(suffix)], f))
    if not out:
        raise SmartEnergyError(f"{path}: no meter files (<meter_id>{'|'.join(SUFFIXES)})")
    return out


def has_meter_column(path: str | Path) -> bool:
    """True for a long file whose header names a ``meter_id`` column."""
    with _open_text(Path(path)) as fh:
        header = fh.readline().decode("utf-8", "replace").lstrip("\ufeff").lower()
    return "meter_id" in re.split(r"[;,]\s*", header.strip())


def split_by_meter(path: str | Path, dest: str | Path) -> list[tuple[str, Path]]:
    """Stream a long file with a ``meter_id`` column into one UCI file per meter (the column dropped)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    with _open_text(Path(path)) as src:
        header = src.readline().decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")
        sep = ";" if header.count(";") >= header.count(",") else ","
        names = header.split(sep)
        col = [n.strip().lower() for n in names].index("meter_id")
        rest_header = sep.join(n for i, n in enumerate(names) if i != col) + "\n"
        try:
            for raw in src:
                parts = raw.decode("utf-8", "replace").rstrip("\r\n").split(sep)
                meter = parts[col].strip() if len(parts) > col else ""
                if not METER_ID.match(meter):
                    meter = "_invalid_meter_id"
                fh = handles.get(meter)
                if fh is None:
                    if len(handles) > 4096:  # keep the open files bounded
                        for other in handles.values():
                            other.close()
                        handles.clear()
                    target = dest / f"{meter}.txt"
                    fresh = not target.exists()
                    fh = handles[meter] = open(target, "a")
                    if fresh:
                        fh.write(rest_header)
                fh.write(sep.join(p for i, p in enumerate(parts) if i != col) + "\n")
        finally:
            for fh in handles.values():
                fh.close()
    return sorted((p.stem, p) for p in dest.glob("*.txt"))


def ingest_fleet(path: str | Path, min_minutes: int = 45, progress: bool | None = None) -> FleetResult:
    """Ingest every meter under ``path`` (directory, glob, or long file with ``meter_id``); bad files are
    quarantined whole, the rest go on."""
    with tempfile.TemporaryDirectory(prefix="smart-energy-fleet-") as tmp:
        split = not Path(path).is_dir() and Path(path).is_file() and has_meter_column(path)
        files = split_by_meter(path, tmp) if split else meter_files(path)
        show = sys.stderr.isatty() if progress is None else progress
        hourly, quarantine, by_meter, rejected = [], [], {}, {}
        for n, (meter, file) in enumerate(files, 1):
            label = f"{path}:{meter}" if split else str(file)
            try:
                if not METER_ID.match(meter) or meter == "_invalid_meter_id":
                    raise IngestError(f"{label}: {meter!r} is not a meter id (letters, digits, '_', '-', '.')")
                result = ingest_file(file, meter_id=meter, min_minutes=min_minutes)
                if not result.quality.rows_valid:
                    raise IngestError(f"{label}: no valid reading ({result.quality.rows_read:,} rows)")
            except (IngestError, OSError, UnicodeDecodeError) as err:
                reason = str(err).replace(str(file), label).removesuffix("; nothing was written")
                rejected[label] = reason
                by_meter[meter] = {"status": "rejected", "file": label, "reason": reason}
                quarantine.append(pd.DataFrame({"meter_id": [meter], "file": [label], "line": [0],
                                                "reason": ["file_rejected"], "raw": [reason]}))
                continue
            q = asdict(result.quality)
            by_meter[meter] = {"status": "ingested", "file": label, **{k: q[k] for k in COUNTS},
                               "quarantine_reasons": q["quarantine_reasons"], **{k: q[k] for k in DATE_FIELDS}}
            hourly.append(result.hourly)
            if len(result.quarantine):
                quarantine.append(result.quarantine.assign(meter_id=meter, file=label)[
                    ["meter_id", "file", "line", "reason", "raw"]])
            if show and (n % 100 == 0 or n == len(files)):
                print(f"ingest: {n:,}/{len(files):,} meters", file=sys.stderr, flush=True)
    if not hourly:
        first = next(iter(rejected.values()), "")
        raise IngestError(f"{path}: no meter could be ingested ({len(rejected)} rejected; e.g. {first})")
    columns = ["meter_id", "file", "line", "reason", "raw"]
    return FleetResult(pd.concat(hourly, ignore_index=True),
                       pd.concat(quarantine, ignore_index=True) if quarantine else pd.DataFrame(columns=columns),
                       by_meter, rejected)


def write_fleet_outputs(result: FleetResult, out_dir: str | Path) -> dict[str, Path]:
    """``hourly.parquet`` (every meter), ``quarantine.csv`` (with meter and file) and ``quality.json``."""
    return write_atomically(out_dir, {
        "hourly": ("hourly.parquet", lambda p: write_hourly_parquet(result.hourly, p)),
        "quarantine": ("quarantine.csv", lambda p: result.quarantine.to_csv(p, index=False)),
        "quality": ("quality.json", lambda p: p.write_text(json.dumps(result.quality(), indent=2) + "\n")),
    })
