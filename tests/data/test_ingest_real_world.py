"""Meter files as they come from the field: a byte-order mark, either delimiter under any extension,
a damaged gzip, a decimal-comma export. Each either ingests like the plain file or exits 2 with one line."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pandas as pd
import pytest

from smart_energy.components.ingest import HEADER, IngestError, ingest_file

ROWS = 3 * 1440  # three days of the real slice


@pytest.fixture(scope="module")
def lines(shared_data) -> list[str]:
    with open(shared_data) as fh:
        return [next(fh).rstrip("\n") for _ in range(ROWS + 1)]


@pytest.fixture(scope="module")
def reference(lines, tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("ref") / "plain.txt"
    path.write_text("\n".join(lines) + "\n")
    return ingest_file(path).hourly


def cli_ingest(path, out):
    return subprocess.run([sys.executable, "-m", "smart_energy.cli", "ingest", str(path), "--out", str(out)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("name, transform", [
    ("bom.txt", lambda text: "\ufeff" + text),
    ("comma.txt", lambda text: text.replace(";", ",")),
    ("semicolon.csv", lambda text: text),
    ("bom_comma.csv", lambda text: "\ufeff" + text.replace(";", ",")),
])
def test_bom_and_delimiter_from_the_header(lines, reference, tmp_path, name, transform):
    path = tmp_path / name
    path.write_bytes(transform("\n".join(lines) + "\n").encode("utf-8"))
    result = ingest_file(path)
    assert result.quality.rows_read == ROWS
    assert result.quality.rows_quarantined == 0
    pd.testing.assert_frame_equal(result.hourly, reference)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], "is truncated"),
    (lambda data: data[:4000] + bytes(b ^ 0x5A for b in data[4000:4200]) + data[4200:], "is corrupt"),
])
def test_damaged_gzip_exits_2_with_one_line_and_no_output(lines, tmp_path, damage, message):
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "meter.txt.gz"
    path.write_bytes(damage(data))
    out = tmp_path / "out"
    proc = cli_ingest(path, out)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_every_row_quarantined_exits_nonzero_with_the_main_reason(lines, tmp_path):
    # a spreadsheet's decimal-comma export: every number is "4,216"
    path = tmp_path / "export.txt"
    path.write_text("\n".join([lines[0], *(line.replace(".", ",") for line in lines[1:])]) + "\n")
    out = tmp_path / "out"
    proc = cli_ingest(path, out)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1
    assert f"every row was quarantined ({ROWS:,} of {ROWS:,})" in error[0]
    assert "non_numeric" in error[0] and "decimal commas" in error[0]
    # nothing is lost: the quarantine is written, every row in it
    assert len(pd.read_csv(out / "quarantine.csv")) == ROWS
    with pytest.raises(IngestError, match="every row was quarantined"):
        from smart_energy.components.ingest import load_hourly

        load_hourly(path)


def test_wrong_header_error_shows_the_whole_header(tmp_path):
    header = ";".join([*HEADER[:-1], "Sub_metering_3_with_a_rather_long_suffix_that_used_to_be_cut_off_here"])
    path = tmp_path / "meter.txt"
    path.write_text(header + "\n16/12/2006;17:24:00;4.216;0.418;234.840;18.400;0.000;1.000;17.000\n")
    proc = cli_ingest(path, tmp_path / "out")
    assert proc.returncode == 2 and header in proc.stderr and proc.stderr.count("\n") == 1
