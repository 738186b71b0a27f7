"""Dates as real files write them: d/m/yyyy (UCI), m/d/yyyy (US exports), yyyy-mm-dd. The order is decided from
the data and recorded; a file that contradicts itself is refused with its first offending line; rows in reverse
or shuffled order are read sorted; a header-only file says "no readings" and leaves nothing behind."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pandas as pd
import pytest

from smart_energy.components.fleet import ingest_fleet
from smart_energy.components.ingest import IngestError, ingest_file, split_raw_file, write_outputs

DAY = 1440


@pytest.fixture(scope="module")
def january(shared_data) -> tuple[str, dict[int, list[str]]]:
    """The shared file's header and its lines of 1-14 January 2007, by day."""
    days: dict[int, list[str]] = {d: [] for d in range(1, 15)}
    with open(shared_data) as fh:
        header = next(fh).rstrip("\n")
        for line in fh:
            date = line.partition(";")[0]
            d, m, y = date.split("/")
            if (m, y) == ("1", "2007") and int(d) in days:
                days[int(d)].append(line.rstrip("\n"))
            elif (m, y) == ("2", "2007"):
                break
    assert all(len(lines) == DAY for lines in days.values())
    return header, days


def us(line: str) -> str:
    """The same reading written m/d/yyyy."""
    date, _, rest = line.partition(";")
    d, m, y = date.split("/")
    return f"{m}/{d}/{y};{rest}"


def iso(line: str) -> str:
    date, _, rest = line.partition(";")
    d, m, y = date.split("/")
    return f"{y}-{int(m):02d}-{int(d):02d};{rest}"


def write(path, header, lines):
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def cli_ingest(path, out):
    return subprocess.run([sys.executable, "-m", "smart_energy.cli", "ingest", str(path), "--out", str(out)],
                          capture_output=True, text=True)


def expected_span(first_day: int, last_day: int) -> tuple[str, str]:
    return f"2007-01-{first_day:02d}T00:00:00+00:00", f"2007-01-{last_day:02d}T23:59:00+00:00"


@pytest.mark.parametrize("days, decided_by", [
    ((2, 3, 4), "consecutive rows"),  # 1/2/2007 .. 1/4/2007: every field <= 12
    ((12, 13, 14), "day field above 12 at line 1442 ('1/13/2007'"),  # the first row of 13 January
])
def test_us_dates_are_read_month_first(january, tmp_path, days, decided_by):
    header, by_day = january
    lines = [line for d in days for line in by_day[d]]
    reference = ingest_file(write(tmp_path / "uk.txt", header, lines))
    result = ingest_file(write(tmp_path / "us.txt", header, [us(line) for line in lines]))
    q = result.quality
    assert (q.date_order, q.rows_valid, q.rows_quarantined) == ("m/d/yyyy", reference.quality.rows_valid, 0)
    assert q.date_order_decided_by.startswith(decided_by), q.date_order_decided_by
    assert (q.first_timestamp, q.last_timestamp) == expected_span(days[0], days[-1])
    pd.testing.assert_frame_equal(result.hourly, reference.hourly)
    quality = json.loads(write_outputs(result, tmp_path / "out")["quality"].read_text())
    assert quality["date_order"] == "m/d/yyyy" and quality["date_order_decided_by"] == q.date_order_decided_by


@pytest.mark.parametrize("rewrite, order", [(lambda line: line, "d/m/yyyy"), (us, "m/d/yyyy")])
def test_days_1_to_12_are_decided_by_consecutive_rows(january, tmp_path, rewrite, order):
    """No field above 12 anywhere: read the wrong way, each midnight would jump a month."""
    header, by_day = january
    lines = [rewrite(line) for d in range(1, 13) for line in by_day[d]]
    q = ingest_file(write(tmp_path / "jan.txt", header, lines)).quality
    assert q.date_order == order
    assert q.date_order_decided_by.startswith("consecutive rows: the 11 date changes step 1.0 days"), \
        q.date_order_decided_by
    assert (q.first_timestamp, q.last_timestamp) == expected_span(1, 12)
    assert q.hours == 12 * 24 and q.rows_quarantined == 0


def test_iso_dates(january, tmp_path):
    header, by_day = january
    lines = by_day[2] + by_day[3]
    reference = ingest_file(write(tmp_path / "uk.txt", header, lines))
    result = ingest_file(write(tmp_path / "iso.txt", header, [iso(line) for line in lines]))
    assert result.quality.date_order == "yyyy-mm-dd" and result.quality.date_order_decided_by.startswith("iso")
    assert (result.quality.first_timestamp, result.quality.last_timestamp) == expected_span(2, 3)
    pd.testing.assert_frame_equal(result.hourly, reference.hourly)


@pytest.mark.parametrize("second, why", [
    (us, "only valid as m/d/yyyy"),  # 13/1/2007 (d/m only) then 1/14/2007 (m/d only)
    (iso, "in yyyy-mm-dd"),  # slash dates, then ISO ones
])
def test_a_file_that_contradicts_itself_is_refused_with_its_first_offending_line(january, tmp_path, second, why):
    header, by_day = january
    lines = by_day[13] + [second(line) for line in by_day[14]]
    path = write(tmp_path / "mixed.txt", header, lines)
    offending = 2 + DAY  # header, then 13 January's rows
    with pytest.raises(IngestError, match=f"line {offending} ") as err:
        ingest_file(path)
    message = str(err.value)
    assert lines[DAY] in message and why in message and "line 2 ('13/1/2007')" in message
    out = tmp_path / "out"
    proc = cli_ingest(path, out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"line {offending} " in proc.stderr and not out.exists()
    with pytest.raises(IngestError, match=f"line {offending} "):  # the splitter reads dates the same way
        split_raw_file(path, "2007-01-14", tmp_path / "a.txt", tmp_path / "b.txt")


@pytest.mark.parametrize("shuffle", [
    lambda lines: lines[::-1],
    lambda lines: random.Random(7).sample(lines, len(lines)),
])
def test_rows_in_reverse_or_shuffled_order_are_read_sorted(january, tmp_path, shuffle):
    header, by_day = january
    lines = by_day[2] + by_day[3]
    reference = ingest_file(write(tmp_path / "ordered.txt", header, lines))
    changed = lines[100].replace(lines[100].split(";")[2], "9.999")  # same minute, other reading
    mixed = shuffle(lines) + [changed]  # last in the file: the duplicate
    result = ingest_file(write(tmp_path / "mixed.txt", header, mixed))
    q = result.quality
    assert q.sorted_by_time and q.rows_out_of_order > 0 and q.rows_valid == reference.quality.rows_valid
    assert (q.first_timestamp, q.last_timestamp) == expected_span(2, 3)
    pd.testing.assert_frame_equal(result.hourly, reference.hourly)  # the first of the two readings is kept
    assert result.quarantine.to_dict("records") == [
        {"line": len(mixed) + 1, "reason": "duplicate_timestamp", "raw": changed}]
    quality = json.loads(write_outputs(result, tmp_path / "out")["quality"].read_text())
    assert quality["sorted_by_time"] is True and quality["rows_out_of_order"] == q.rows_out_of_order


def test_rows_in_order_are_not_marked_sorted(january, tmp_path):
    header, by_day = january
    q = ingest_file(write(tmp_path / "ordered.txt", header, by_day[2])).quality
    assert (q.sorted_by_time, q.rows_out_of_order, q.date_order) == (False, 0, "d/m/yyyy")


def test_us_file_is_split_at_the_right_time(january, tmp_path):
    header, by_day = january
    lines = [line for d in (2, 3, 4) for line in by_day[d]]
    path = write(tmp_path / "us.txt", header, [us(line) for line in lines])
    before, after = split_raw_file(path, "2007-01-03 12:00", tmp_path / "before.txt", tmp_path / "after.txt")
    assert (before, after) == (DAY + DAY // 2, DAY + DAY // 2)
    first_late = (tmp_path / "after.txt").read_text().splitlines()[1]
    assert first_late.startswith("1/3/2007;12:00:00;")


def test_fleet_meters_each_get_their_date_order(january, tmp_path):
    header, by_day = january
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    lines = by_day[2] + by_day[3]
    write(fleet / "meter-uk.txt", header, lines)
    write(fleet / "meter-us.txt", header, [us(line) for line in lines])
    result = ingest_fleet(fleet)
    assert {m: q["date_order"] for m, q in result.by_meter.items()} == {"meter-uk": "d/m/yyyy",
                                                                       "meter-us": "m/d/yyyy"}
    hours = result.hourly.groupby("meter_id")["timestamp"].agg(["min", "max"])
    assert (hours["min"] == pd.Timestamp("2007-01-02", tz="UTC")).all()
    assert (hours["max"] == pd.Timestamp("2007-01-03 23:00", tz="UTC")).all()


@pytest.mark.parametrize("rows, message", [
    ([], "no readings (the file has a header and no rows)"),
    (["2/1/2007;00:00:00;?;?;?;?;?;?;?", "2/1/2007;00:01:00;?;?;?;?;?;?;?"], "no readings (all 2 rows are '?')"),
])
def test_a_file_without_readings_says_so_and_leaves_no_output(january, tmp_path, rows, message):
    header, _ = january
    path = write(tmp_path / "empty.txt", header, rows)
    out = tmp_path / "out"
    proc = cli_ingest(path, out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr and proc.stdout == ""
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
