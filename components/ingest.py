"""Ingest raw 1-minute smart-meter readings: parse, validate, quarantine, resample to hours.

The UCI "household power consumption" format: ``;``-separated (or ``,``: the header tells),
``?`` for a missing reading, ``d/m/yyyy`` dates (or ``m/d/yyyy``, ``yyyy-mm-dd``: the data tells, see
``dates.py``); rows in any time order (they are read sorted). Parsing is columnar (pyarrow),
validation and resampling are vectorised (numpy); no per-row Python loops on the
hot path. Invariant: ``rows_read == rows_valid + rows_missing + rows_quarantined``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from smart_energy.components.dates import DateOrder, DateOrderError, decide_date_order, runs
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.hourly import HOURLY_CHANNELS, resample_hourly
from smart_energy.components.validate import MEASUREMENTS, REASONS, validate_rows

HEADER = ["Date", "Time", *MEASUREMENTS]

class IngestError(SmartEnergyError):
    """The input is not a readable UCI-format meter file; the message says why in one line."""


@dataclass
class QualityReport:
    """Counts that always add up: read = valid + missing + quarantined."""

    meter_id: str
    source: str
    rows_read: int
    rows_valid: int
    rows_missing: int
    rows_quarantined: int
    hours: int
    hours_complete: int
    hours_incomplete: int
    first_timestamp: str | None
    last_timestamp: str | None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    min_minutes_per_hour: int = 45
    date_order: str = "d/m/yyyy"  # "d/m/yyyy", "m/d/yyyy" or "yyyy-mm-dd", decided from the data (dates.py)
    date_order_decided_by: str = ""
    sorted_by_time: bool = False  # the rows were not in time order and were read sorted
    rows_out_of_order: int = 0  # rows that came after a later reading in the file

    @property
    def quarantine_fraction(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0


@dataclass
class IngestResult:
    hourly: pd.DataFrame
    quarantine: pd.DataFrame
    quality: QualityReport


def _open_text(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _gzip_error(path: Path, err: Exception) -> IngestError:
    """One line for a damaged gzip file, whichever reader noticed."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, EOFError) or "truncated" in text.lower() or "ended before" in text:
        return IngestError(f"{path} is truncated (the gzip stream ends early); nothing was written")
    return IngestError(f"{path} is corrupt ({text}); nothing was written")


def sniff(path: Path) -> str:
    """Check that ``path`` is a UCI-format text file; returns its delimiter (``;`` or ``,``, from the header).

    A UTF-8 byte-order mark is ignored; the file's extension says nothing about its delimiter.

    Raises:
        IngestError: with a one-line reason (missing, a directory, empty, binary, damaged gzip, wrong header).
    """
    if path.is_dir():
        raise IngestError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty")
    try:
        with _open_text(path) as fh:
            head = fh.read(4096)
    except (OSError, EOFError) as err:
        if path.suffix == ".gz":
            raise _gzip_error(path, err) from None
        raise IngestError(f"{path}: cannot read ({err})") from None
    if b"\x00" in head:
        raise IngestError(f"{path}: binary file, expected ';'-separated text")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IngestError(f"{path}: not UTF-8 text, expected ';'-separated text") from None
    first = text.splitlines()[0].strip() if text.strip() else ""
    if not first:
        raise IngestError(f"{path}: file is empty")
    for delimiter in (";", ","):
        if [c.strip().lower() for c in first.split(delimiter)] == [c.lower() for c in HEADER]:
            return delimiter
    raise IngestError(f"{path}: unexpected header {first!r}; expected {';'.join(HEADER)!r} (or ','-separated)")


class _Progress:
    """A file wrapper that advances a tqdm bar (shown on terminals only) as bytes are read."""

    def __init__(self, fh, total: int, desc: str):
        from tqdm import tqdm

        self._fh = fh
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None, leave=False)

    def read(self, n: int = -1) -> bytes:
        chunk = self._fh.read(n)
        self.bar.update(len(chunk))
        return chunk

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _read_table(path: Path, delimiter: str, numeric_as_string: bool, use_threads: bool):
    """Read the file columnar; rows with the wrong number of fields go to ``bad_rows``."""
    bad_rows: list[tuple[int | None, str]] = []

    def on_invalid(row) -> str:
        bad_rows.append((row.number, row.text))
        return "skip"

    num_type = pa.string() if numeric_as_string else pa.float64()
    types = {"Date": pa.dictionary(pa.int32(), pa.string()), "Time": pa.dictionary(pa.int32(), pa.string())}
    types.update({c: num_type for c in MEASUREMENTS})
    raw = open(path, "rb")
    progress = _Progress(raw, path.stat().st_size, f"ingest {path.name}")
    try:
        stream = pa.PythonFile(progress, mode="r")
        if path.suffix == ".gz":
            stream = pa.CompressedInputStream(stream, "gzip")
        table = pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(
                use_threads=use_threads, column_names=HEADER, skip_rows=1, block_size=8 << 20
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=["?", ""], strings_can_be_null=True
            ),
        )
    finally:
        progress.bar.close()
        raw.close()
    return table, bad_rows


def _codes(column: pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """A dictionary column's distinct values and, per row, its index into them (-1 for a null cell).

    The chunks must share one dictionary (``Table.unify_dictionaries``), so each text is parsed once.
    """
    chunks = column.chunks
    if not chunks:
        return [], np.empty(0, dtype=np.int64)
    values = chunks[0].dictionary.to_pylist()
    codes = np.concatenate([c.indices.fill_null(-1).to_numpy(zero_copy_only=False) for c in chunks])
    return values, codes.astype(np.int64, copy=False)


def _parse_timestamps(table: pa.Table, line_of_row: np.ndarray, line_text: Callable[[int], str],
                      source: str) -> tuple[np.ndarray, DateOrder]:
    """Seconds since the epoch (int64) from ``Date`` + ``Time``, -1 where unparseable, and the file's date order.

    Dates and times repeat (1,440 times a day, at most 1,440 distinct times), so only the distinct dictionary
    values are parsed; the date order is decided from them and the runs of equal dates (``dates.py``).
    """
    table = table.select(["Date", "Time"]).unify_dictionaries()
    date_texts, date_codes = _codes(table.column("Date"))
    starts, run_codes = runs(date_codes)
    order, days = decide_date_order(date_texts, run_codes, line_of_row[starts], line_text, source)
    day_secs = np.append(np.where(days >= 0, days * 86400, -1), -1)  # the last entry: null cells (code -1)
    time_texts, time_codes = _codes(table.column("Time"))
    times = pd.to_timedelta(pd.Series(time_texts, dtype="object").str.strip(), errors="coerce")
    ok_time = times.notna() & (times >= pd.Timedelta(0)) & (times < pd.Timedelta(days=1))
    time_secs = np.append(np.where(ok_time, times.dt.total_seconds().fillna(-1), -1).astype(np.int64), -1)
    d, t = day_secs[date_codes], time_secs[time_codes]
    return np.where((d >= 0) & (t >= 0), d + t, -1), order


def _time_order(ts: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The stable permutation that puts the rows in time order (``None``: they are) and how many rows came
    after a later reading. Rows without a timestamp go first; they are quarantined anyway."""
    stamped = ts[ts >= 0]
    if len(stamped) < 2 or bool(np.all(stamped[1:] >= stamped[:-1])):
        return None, 0
    late = int((stamped[1:] < np.maximum.accumulate(stamped)[:-1]).sum())
    return np.argsort(ts, kind="stable"), late


def _numeric_columns(table: pa.Table, as_string: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Float arrays (NaN where ``?``/empty) and a mask of cells that were present but not numbers."""
    values: dict[str, np.ndarray] = {}
    non_numeric = np.zeros(table.num_rows, dtype=bool)
    for col in MEASUREMENTS:
        column = table.column(col)
        if as_string:
            text = column.to_pandas()
            nums = pd.to_numeric(text.str.strip(), errors="coerce").to_numpy(dtype=float)
            non_numeric |= text.notna().to_numpy() & np.isnan(nums)
        else:
            nums = column.to_numpy()  # nulls become NaN
            if nums.dtype != np.float64:
                nums = nums.astype(np.float64)
        non_numeric |= np.isinf(nums)
        values[col] = nums
    return values, non_numeric


def _original_lines(path: Path, line_numbers: set[int]) -> dict[int, str]:
    """The raw text of the given 1-based line numbers (one pass, only when rows were rejected)."""
    found: dict[int, str] = {}
    if not line_numbers:
        return found
    last = max(line_numbers)
    with _open_text(path) as fh:
        for number, raw in enumerate(fh, start=1):
            if number in line_numbers:
                found[number] = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if number >= last:
                break
    return found


def ingest_file(path: str | Path, meter_id: str = "household-1", min_minutes: int = 45) -> IngestResult:
    """Parse, validate and resample one raw meter file.

    Args:
        path: a UCI-format ``.txt``/``.csv`` file, optionally gzip-compressed.
        meter_id: the meter these readings belong to.
        min_minutes: valid minutes an hour needs to count as complete.

    Returns:
        The hourly frame, the quarantined rows (line, reason, original text) and the quality report.
    """
    path = Path(path)
    delimiter = sniff(path)
    numeric_as_string = False
    use_threads = True
    while True:
        try:
            table, bad_rows = _read_table(path, delimiter, numeric_as_string, use_threads)
        except pa.ArrowInvalid as err:
            if "conversion error" in str(err) and not numeric_as_string:
                numeric_as_string = True  # a non-numeric cell somewhere: take the careful path
                continue
            raise IngestError(f"{path}: cannot parse ({str(err).splitlines()[0]})") from None
        except (OSError, EOFError) as err:
            if path.suffix == ".gz":
                raise _gzip_error(path, err) from None
            raise
        if bad_rows and any(number is None for number, _ in bad_rows):
            use_threads = False  # line numbers of malformed rows are only known single-threaded
            continue
        break

    # Line number of each parsed row: header is line 1, malformed rows were skipped in between.
    skipped = np.array(sorted(n for n, _ in bad_rows), dtype=np.int64)
    line_of_row = np.arange(table.num_rows, dtype=np.int64) + 2
    for s in skipped:  # few: malformed rows are rare
        line_of_row[line_of_row >= s] += 1

    try:
        ts, date_order = _parse_timestamps(table, line_of_row, lambda n: _original_lines(path, {n}).get(n, ""),
                                           str(path))
    except DateOrderError as err:
        raise IngestError(str(err)) from None
    values, non_numeric = _numeric_columns(table, numeric_as_string)
    # A file in reverse or shuffled time order is read in time order (stable: of two rows with one
    # timestamp the first in the file is kept, the other quarantined as a duplicate).
    order, rows_out_of_order = _time_order(ts)
    if order is not None:
        ts, non_numeric, line_of_row = ts[order], non_numeric[order], line_of_row[order]
        values = {c: v[order] for c, v in values.items()}
    status, reason = validate_rows(ts, values, non_numeric)

    rejected = np.flatnonzero(status == 2)
    texts = _original_lines(path, set(line_of_row[rejected].tolist()))
    quarantine = pd.DataFrame(
        {
            "line": np.concatenate([line_of_row[rejected], skipped]),
            "reason": [REASONS[c] for c in reason[rejected]] + ["wrong_field_count"] * len(bad_rows),
            "raw": [texts.get(int(n), "") for n in line_of_row[rejected]] + [t for _, t in sorted(bad_rows, key=lambda r: r[0])],
        }
    ).sort_values("line", kind="stable").reset_index(drop=True)

    valid = status == 0
    hourly = resample_hourly(ts, values, valid, meter_id, min_minutes)
    vts = ts[valid]
    fmt = lambda s: pd.Timestamp(int(s), unit="s", tz="UTC").isoformat() if s is not None else None  # noqa: E731
    quality = QualityReport(
        meter_id=meter_id,
        source=str(path),
        rows_read=int(table.num_rows + len(bad_rows)),
        rows_valid=int(valid.sum()),
        rows_missing=int((status == 1).sum()),
        rows_quarantined=int(len(quarantine)),
        hours=int(len(hourly)),
        hours_complete=int(hourly["is_complete"].sum()) if len(hourly) else 0,
        hours_incomplete=int((~hourly["is_complete"].astype(bool)).sum()) if len(hourly) else 0,
        first_timestamp=fmt(vts.min() if len(vts) else None),
        last_timestamp=fmt(vts.max() if len(vts) else None),
        quarantine_reasons={str(k): int(v) for k, v in quarantine["reason"].value_counts().sort_index().items()},
        min_minutes_per_hour=min_minutes,
        date_order=date_order.order,
        date_order_decided_by=date_order.decided_by,
        sorted_by_time=order is not None,
        rows_out_of_order=rows_out_of_order,
    )
    return IngestResult(hourly=hourly, quarantine=quarantine, quality=quality)


def require_readings(result: IngestResult) -> None:
    """Refuse a file with nothing to keep, neither a valid reading nor a quarantined row: a header-only file,
    or one whose rows are all ``?``. Call it before writing, so that such a file leaves no output.

    Raises:
        IngestError: "no readings", and why.
    """
    q = result.quality
    if q.rows_valid or q.rows_quarantined:
        return
    if not q.rows_read:
        raise IngestError(f"{q.source}: no readings (the file has a header and no rows); nothing was written")
    raise IngestError(f"{q.source}: no readings (all {q.rows_read:,} rows are '?'); nothing was written")


def require_valid_rows(result: IngestResult, where: str | Path | None = None) -> None:
    """Refuse a file none of whose rows is a valid reading (e.g. a decimal-comma export).

    Raises:
        IngestError: naming the main quarantine reason, an example line and where the quarantine is.
    """
    q = result.quality
    if q.rows_valid:
        return
    require_readings(result)
    reason, count = max(q.quarantine_reasons.items(), key=lambda kv: kv[1])
    example = result.quarantine.loc[result.quarantine["reason"] == reason].iloc[0]
    hint = " (decimal commas? the format uses '.')" if reason == "non_numeric" and re.search(
        r"\d,\d", str(example["raw"])) else ""
    kept = f"; every row is in {Path(where) / 'quarantine.csv'}" if where else ""
    raise IngestError(f"{q.source}: every row was quarantined ({q.rows_quarantined:,} of {q.rows_read:,}); main "
                      f"reason {reason} x{count:,}{hint}, e.g. line {example['line']}: {example['raw'][:80]!r}{kept}")


def write_atomically(out_dir: str | Path, writers: dict[str, tuple[str, Callable[[Path], object]]]) -> dict[str, Path]:
    """Write every file of ``writers`` (key -> (file name, function writing that path)) into ``out_dir``, all or
    nothing: they are written beside it first, then moved in."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, write in writers.values():
            write(staging / name)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, _ in writers.values():
            os.replace(staging / name, out_dir / name)
    except OSError as err:
        if err.filename is None:  # a writer that names no file (pyarrow on a full disk): name the output
            raise OSError(err.errno, err.strerror, str(out_dir)) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {key: out_dir / name for key, (name, _) in writers.items()}


def write_hourly_parquet(hourly: pd.DataFrame, path: str | Path) -> None:
    """``hourly.parquet`` with microsecond times: whole hours lose nothing, and Spark reads no nanoseconds."""
    pq.write_table(pa.Table.from_pandas(hourly, preserve_index=False), path, coerce_timestamps="us")


def write_outputs(result: IngestResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``hourly.parquet``, ``quarantine.csv`` and ``quality.json`` into ``out_dir``, all or nothing.

    ``quality.json`` has the fleet's shape too: ``meters`` and the counts ``by_meter``.
    """
    q = asdict(result.quality)
    report = q | {"quarantine_fraction": round(result.quality.quarantine_fraction, 6), "meters": 1,
                  "by_meter": {q["meter_id"]: {"status": "ingested", "file": q["source"],
                                               **{k: q[k] for k in ("rows_read", "rows_valid", "rows_missing",
                                                                    "rows_quarantined", "hours", "hours_complete",
                                                                    "date_order", "date_order_decided_by",
                                                                    "sorted_by_time")},
                                               "quarantine_reasons": q["quarantine_reasons"]}}}
    return write_atomically(out_dir, {
        "hourly": ("hourly.parquet", lambda p: write_hourly_parquet(result.hourly, p)),
        "quarantine": ("quarantine.csv", lambda p: result.quarantine.to_csv(p, index=False)),
        "quality": ("quality.json", lambda p: p.write_text(json.dumps(report, indent=2) + "\n")),
    })


def _fetch_uri(uri: str) -> Path:
    """Copy an artifact-store object (or an ingest "directory"'s hourly.parquet) to a local temp file."""
    from smart_energy.components.storage import download_object

    name = uri.rstrip("/").rpartition("/")[2]
    if "." not in name:  # a directory: the ingest output's hourly frame
        uri, name = f"{uri.rstrip('/')}/hourly.parquet", "hourly.parquet"
    return download_object(uri, Path(tempfile.mkdtemp(prefix="smart-energy-")) / name)


def load_hourly(path: str | Path) -> pd.DataFrame:
    """Hourly frame from an ingest directory, its ``hourly.parquet``, or a raw meter file (ingested on the fly).

    ``path`` may also be an artifact-store URI (``s3://bucket/prefix/ingest``, ``file://...``).
    """
    if "://" in str(path):
        path = _fetch_uri(str(path))
    path = Path(path)
    if path.is_dir():
        path = path / "hourly.parquet"
    if path.suffix == ".parquet":
        if not path.is_file():
            raise IngestError(f"{path}: no such file (run `smart-energy ingest` first)")
        hourly = pd.read_parquet(path)
        missing = [c for c in ("meter_id", "timestamp", *HOURLY_CHANNELS, "last_15min_kw", "is_complete")
                   if c not in hourly.columns]
        if missing:
            raise IngestError(f"{path}: missing columns {missing} (written by an older ingest? run it again)")
        return hourly
    result = ingest_file(path)
    require_valid_rows(result)
    return result.hourly


def print_summary(quality: QualityReport, stream=sys.stdout) -> None:
    """A short human summary of a quality report."""
    q = quality
    print(
        f"{q.meter_id}: read {q.rows_read:,} rows = {q.rows_valid:,} valid + {q.rows_missing:,} missing "
        f"+ {q.rows_quarantined:,} quarantined ({q.quarantine_fraction:.2%}); "
        f"{q.hours:,} hours ({q.hours_complete:,} complete), {q.first_timestamp} .. {q.last_timestamp}",
        file=stream,
    )
    print(f"  dates {q.date_order} ({q.date_order_decided_by})", file=stream)
    if q.sorted_by_time:
        print(f"  read sorted by time: {q.rows_out_of_order:,} rows came after a later reading", file=stream)
    for why, count in q.quarantine_reasons.items():
        print(f"  quarantined {count:,} x {why}", file=stream)


def raw_file_dates(path: str | Path, delimiter: str) -> tuple[DateOrder, dict[bytes, datetime | None]]:
    """The date order of a raw file read line by line, and each distinct date field's day in it.

    One streaming pass collects the runs of equal date fields (a file has few distinct dates); the order
    is then decided as ``ingest_file`` decides it (``dates.decide_date_order``).

    Raises:
        IngestError: the file's dates contradict each other (the message names the first offending line).
    """
    path = Path(path)
    sep = delimiter.encode()
    fields: dict[bytes, int] = {}
    run_codes: list[int] = []
    run_lines: list[int] = []
    previous = None
    with _open_text(path) as src:
        src.readline()
        for number, line in enumerate(src, start=2):
            if previous is not None and line.startswith(previous):
                continue
            date = line.partition(sep)[0]
            previous = date + sep
            run_codes.append(fields.setdefault(date, len(fields)))
            run_lines.append(number)
    texts = [f.decode("utf-8", "replace").strip() for f in fields]
    try:
        order, days = decide_date_order(texts, np.array(run_codes, dtype=np.int64), np.array(run_lines, dtype=np.int64),
                                        lambda n: _original_lines(path, {n}).get(n, ""), str(path))
    except DateOrderError as err:
        raise IngestError(str(err)) from None
    epoch = datetime(1970, 1, 1)
    return order, {f: epoch + timedelta(days=int(d)) if d >= 0 else None for f, d in zip(fields, days)}


def split_raw_file(path: str | Path, at: str, before: str | Path, after: str | Path) -> tuple[int, int]:
    """Split a raw meter file at timestamp ``at`` into two raw files (lines kept verbatim, header on both).

    Streams line by line (memory does not grow with the file): once to decide the date order
    (``raw_file_dates``), once to split. A line whose timestamp cannot be read goes to ``before``,
    where ingest will quarantine it.

    Returns:
        The number of data lines written to ``before`` and to ``after``.
    """
    path = Path(path)
    delimiter = sniff(path)
    _, days = raw_file_dates(path, delimiter)
    cut = pd.Timestamp(at).to_pydatetime()
    counts = [0, 0]
    for target in (before, after):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    with _open_text(path) as src, open(before, "wb") as early, open(after, "wb") as late:
        header = src.readline().removeprefix(b"\xef\xbb\xbf")
        early.write(header)
        late.write(header)
        sep = delimiter.encode()
        for line in src:
            date, _, rest = line.partition(sep)
            day = days.get(date)
            stamp = None
            if day is not None:
                try:
                    h, m, sec = (int(x) for x in rest.partition(sep)[0].split(b":"))
                    stamp = day.replace(hour=h, minute=m, second=sec)
                except ValueError:
                    pass
            is_late = stamp is not None and stamp >= cut
            (late if is_late else early).write(line if line.endswith(b"\n") else line + b"\n")
            counts[is_late] += 1
    return counts[0], counts[1]
