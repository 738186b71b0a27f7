"""Ingest on the real UCI slice: counts add up and hourly means match an independent pandas computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.ingest import ingest_file, write_outputs


@pytest.fixture(scope="module")
def ingested(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    result = ingest_file(shared_data)
    write_outputs(result, out)
    return result, out


def test_counts_add_up_on_shared_data(ingested):
    result, out = ingested
    q = json.loads((out / "quality.json").read_text())
    assert q["rows_read"] == 106_952
    assert q["rows_read"] == q["rows_valid"] + q["rows_missing"] + q["rows_quarantined"]
    assert q["rows_missing"] == 4  # the four '?' rows of the slice
    assert q["rows_quarantined"] == 0
    assert q["first_timestamp"].startswith("2006-12-16T17:24")
    assert q["last_timestamp"].startswith("2007-02-28T23:59")
    for key in ("meter_id", "rows_read", "rows_valid", "rows_missing", "rows_quarantined", "hours",
                "first_timestamp", "last_timestamp"):
        assert key in q


def test_hourly_means_match_pandas(shared_data, ingested):
    result, out = ingested
    ours = pd.read_parquet(out / "hourly.parquet")
    raw = pd.read_csv(shared_data, sep=";", na_values="?")
    raw.index = pd.to_datetime(raw["Date"] + " " + raw["Time"], format="%d/%m/%Y %H:%M:%S", utc=True)
    expected = raw["Global_active_power"].resample("h").mean()
    minutes = raw["Global_active_power"].resample("h").count()
    merged = ours.set_index("timestamp").join(expected.rename("pandas_mean")).join(minutes.rename("pandas_count"))
    assert len(ours) == len(expected)
    np.testing.assert_allclose(merged["global_active_power_kw"], merged["pandas_mean"], rtol=1e-9, atol=1e-12)
    assert (merged["valid_minutes"] == merged["pandas_count"]).all()
    kwh = raw["Global_active_power"].resample("h").sum() / 60
    np.testing.assert_allclose(ours.set_index("timestamp")["energy_kwh"], kwh, rtol=1e-9)
    sub3 = raw["Sub_metering_3"].resample("h").mean() * 60 / 1000
    np.testing.assert_allclose(ours.set_index("timestamp")["sub_metering_3_kw"], sub3, rtol=1e-9)


def test_hourly_grid_is_continuous_and_flags_short_hours(ingested):
    hourly = ingested[0].hourly
    steps = hourly["timestamp"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(hours=1)]
    first = hourly.iloc[0]  # the slice starts at 17:24: 36 minutes in its first hour
    assert first["valid_minutes"] == 36 and not first["is_complete"]
    assert hourly["meter_id"].eq("household-1").all()
