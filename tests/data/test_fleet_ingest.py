"""A utility's fleet in: a directory of 20 meter files (one corrupt), a glob, and one long file with a
``meter_id`` column. Every good meter is ingested as the single-file ingest would; the corrupt one is
quarantined whole with its reason; the counts per meter add up to the fleet's."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pandas as pd
import pytest

from helpers import REPO
from smart_energy.components.fleet import ingest_fleet
from smart_energy.components.ingest import ingest_file

sys.path.insert(0, str(REPO))
from benchmarks.make_fleet import load_source, make_fleet  # noqa: E402

CLI = [sys.executable, "-m", "smart_energy.cli"]


@pytest.fixture(scope="module")
def fleet_dir(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    source = load_source(shared_data)
    make_fleet(shared_data, root / "meters", meters=19, days=9, source=source)
    good = (root / "meters" / "meter-00003.txt").read_bytes()
    (root / "meters" / "meter-corrupt.txt.gz").write_bytes(gzip.compress(good)[:20_000])  # cut mid-stream
    (root / "meters" / "README.md").write_text("not a meter file: ignored\n")
    make_fleet(shared_data, root / "long", meters=3, days=9, seed=11, long_file=True, source=source)
    return root


def test_a_directory_of_meters_with_one_corrupt_file(fleet_dir, tmp_path):
    proc = subprocess.run([*CLI, "ingest", str(fleet_dir / "meters"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "19 meters ingested, 1 quarantined whole" in proc.stderr and "meter-corrupt.txt.gz is truncated" in proc.stderr
    q = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert q["meters"] == 19 and q["meters_rejected"] == 1 and len(q["by_meter"]) == 20
    assert q["by_meter"]["meter-corrupt"]["status"] == "rejected" and "truncated" in q["by_meter"]["meter-corrupt"]["reason"]
    good = {m: c for m, c in q["by_meter"].items() if c["status"] == "ingested"}
    for key in ("rows_read", "rows_valid", "rows_missing", "rows_quarantined", "hours", "hours_complete"):
        assert q[key] == sum(c[key] for c in good.values()), key
    assert q["rows_read"] == q["rows_valid"] + q["rows_missing"] + q["rows_quarantined"]
    hourly = pd.read_parquet(tmp_path / "out" / "hourly.parquet")
    assert sorted(hourly["meter_id"].unique()) == sorted(good) == [f"meter-{i:05d}" for i in range(19)]
    # each meter exactly as the single-file ingest gives it
    for meter in ("meter-00000", "meter-00018"):
        alone = ingest_file(fleet_dir / "meters" / f"{meter}.txt", meter_id=meter)
        assert good[meter]["rows_read"] == alone.quality.rows_read
        pd.testing.assert_frame_equal(hourly[hourly["meter_id"] == meter].reset_index(drop=True),
                                      alone.hourly.reset_index(drop=True), check_dtype=False)
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    rejected = quarantine[quarantine["reason"] == "file_rejected"]
    assert list(rejected["meter_id"]) == ["meter-corrupt"] and "truncated" in rejected["raw"].iloc[0]


def test_no_two_synthetic_meters_are_the_same(fleet_dir):
    hourly = ingest_fleet(fleet_dir / "meters").hourly
    profiles = hourly.pivot_table(index=hourly.groupby("meter_id").cumcount(), columns="meter_id",
                                  values="global_active_power_kw")
    assert profiles.T.round(3).drop_duplicates().shape[0] == profiles.shape[1]
    means = hourly.groupby("meter_id")["global_active_power_kw"].mean()
    assert means.max() / means.min() > 3  # small flats and big houses


def test_a_long_file_with_a_meter_column_equals_per_meter_files(fleet_dir, tmp_path):
    long = ingest_fleet(fleet_dir / "long" / "fleet.txt")
    assert sorted(long.by_meter) == ["meter-00000", "meter-00001", "meter-00002"] and not long.rejected
    assert long.hourly.groupby("meter_id").size().min() >= 24 * 8
    glob = ingest_fleet(str(fleet_dir / "meters" / "meter-0000[0-2].txt"))
    assert sorted(glob.by_meter) == ["meter-00000", "meter-00001", "meter-00002"]


def test_a_fleet_where_nothing_can_be_read_is_a_one_line_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("not;a;meter;file\n1;2;3;4\n")
    proc = subprocess.run([*CLI, "ingest", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no meter could be ingested" in proc.stderr and "Traceback" not in proc.stderr
