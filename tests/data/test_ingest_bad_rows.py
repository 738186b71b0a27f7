"""Files with injected bad rows of every kind: each is quarantined with its line and reason, none is lost."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pandas as pd
import pytest

from smart_energy.components.ingest import HEADER, IngestError, ingest_file, write_outputs

HEAD = ";".join(HEADER)
GOOD = [
    "1/1/2007;00:00:00;2.580;0.136;241.970;10.600;0.000;0.000;0.000",
    "1/1/2007;00:01:00;2.552;0.100;241.750;10.400;0.000;0.000;0.000",
    "1/1/2007;00:02:00;2.550;0.100;241.640;10.400;0.000;0.000;0.000",
    "1/1/2007;00:03:00;2.550;0.100;241.710;10.400;0.000;0.000;0.000",
]
# (line text, expected reason)
BAD = [
    ("1/1/2007;00:04:00;?;?;?;?;?;?;?", None),  # missing: counted, not an error
    ("31/2/2007;00:05:00;2.5;0.1;241.0;10.4;0;0;0", "bad_timestamp"),
    ("1/1/2007;25:06:00;2.5;0.1;241.0;10.4;0;0;0", "bad_timestamp"),
    ("1/1/2007;00:07:00;abc;0.1;241.0;10.4;0;0;0", "non_numeric"),
    ("1/1/2007;00:08:00;2.5;?;241.0;10.4;0;0;0", "partial_missing"),
    ("1/1/2007;00:09:00;-1.0;0.1;241.0;10.4;0;0;0", "out_of_range:Global_active_power"),
    ("1/1/2007;00:10:00;2.5;0.1;400.0;10.4;0;0;0", "out_of_range:Voltage"),
    ("1/1/2007;00:11:00;2.5;0.1;241.0;10.4;-3;0;0", "out_of_range:Sub_metering_1"),
    ("1/1/2007;00:12:00;0.5;0.1;241.0;2.4;20;20;20", "submeters_exceed_total"),
    ("1/1/2007;00:01:00;2.5;0.1;241.0;10.4;0;0;0", "duplicate_timestamp"),
    ("1/1/2007;00:13:00;2.5;0.1;241.0;10.4;0;0", "wrong_field_count"),
    ("", "empty_row"),
    ("1/1/2007;00:14:00;inf;0.1;241.0;10.4;0;0;0", "non_numeric"),
]
TAIL = [
    "1/1/2007;00:20:00;2.500;0.100;241.000;10.400;0.000;0.000;0.000",
    "1/1/2007;00:15:00;2.500;0.100;241.000;10.400;0.000;0.000;0.000",  # earlier than 00:20: read sorted, valid
]


def write(path, lines, opener=open):
    with opener(path, "wt") as fh:
        fh.write("\n".join([HEAD, *lines]) + "\n")
    return path


@pytest.fixture
def dirty_file(tmp_path):
    return write(tmp_path / "dirty.txt", GOOD + [b for b, _ in BAD] + TAIL)


def test_every_bad_row_quarantined_with_reason_and_line(dirty_file, tmp_path):
    result = ingest_file(dirty_file)
    q = result.quality
    n_lines = len(GOOD) + len(BAD) + len(TAIL)
    assert q.rows_read == n_lines
    assert q.rows_read == q.rows_valid + q.rows_missing + q.rows_quarantined
    assert q.rows_missing == 1
    expected = [(i + 2 + len(GOOD), why) for i, (_, why) in enumerate(BAD) if why]
    got = list(zip(result.quarantine["line"], result.quarantine["reason"]))
    assert got == expected
    raw_by_line = dict(zip(result.quarantine["line"], result.quarantine["raw"]))
    lines = [HEAD, *GOOD, *[b for b, _ in BAD], *TAIL]
    for line, _ in expected:
        assert raw_by_line[line] == lines[line - 1]
    assert q.rows_valid == len(GOOD) + 2  # plus 00:20 and 00:15
    assert q.sorted_by_time and q.rows_out_of_order == 2  # 00:15 and the duplicate 00:01 after 00:12
    write_outputs(result, tmp_path / "out")
    csv = pd.read_csv(tmp_path / "out" / "quarantine.csv", keep_default_na=False)
    assert len(csv) == q.rows_quarantined
    assert json.loads((tmp_path / "out" / "quality.json").read_text())["quarantine_reasons"]["bad_timestamp"] == 2


def test_gzip_and_comma_csv_give_the_same_result(tmp_path):
    plain = ingest_file(write(tmp_path / "a.txt", GOOD)).hourly
    gz = ingest_file(write(tmp_path / "a.txt.gz", GOOD, opener=gzip.open)).hourly
    comma_lines = [line.replace(";", ",") for line in GOOD]
    with open(tmp_path / "a.csv", "w") as fh:
        fh.write("\n".join([HEAD.replace(";", ","), *comma_lines]) + "\n")
    csv = ingest_file(tmp_path / "a.csv").hourly
    pd.testing.assert_frame_equal(plain, gz)
    pd.testing.assert_frame_equal(plain, csv)
    assert plain["global_active_power_kw"].iloc[0] == pytest.approx((2.58 + 2.552 + 2.55 + 2.55) / 4)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "binary file"),
        (b"timestamp,power\n2007-01-01,1.0\n", "unexpected header"),
    ],
)
def test_not_a_meter_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(IngestError, match=message):
        ingest_file(path)


def test_cli_exit_code_one_line_and_no_partial_output(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("hello;world\n1;2\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "smart_energy.cli", "ingest", str(bad), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unexpected header" in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_writes_outputs(tmp_path, dirty_file):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "smart_energy.cli", "ingest", str(dirty_file), "--out", str(out), "--meter-id", "m-7"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["hourly"].endswith("hourly.parquet")
    hourly = pd.read_parquet(out / "hourly.parquet")
    assert set(hourly["meter_id"]) == {"m-7"}
    assert "quarantined" in proc.stderr
