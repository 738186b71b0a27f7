"""Real meter data have multi-day holes: train, evaluate and backtest run on such data with no flag,
features read from Feast never cross a hole, and every hour left unscored is counted with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.evaluate import evaluate
from smart_energy.components.features import usable_usage
from smart_energy.components.feast_store import historical_features, open_feature_store
from smart_energy.components.ingest import ingest_file
from smart_energy.components.settings import Settings
from smart_energy.components.train import train
from helpers import with_hole

TRAIN_HOLE = ("2007-01-10 00:00", "2007-01-13 00:00")  # 72 h inside the training weeks
SCORED_HOLE = ("2007-02-10 00:00", "2007-02-13 00:00")  # 72 h inside the last four weeks


@pytest.fixture(scope="module")
def gap_file(shared_data, tmp_path_factory):
    return with_hole(shared_data, tmp_path_factory.mktemp("gaps") / "gaps.txt", [TRAIN_HOLE, SCORED_HOLE])


@pytest.fixture(scope="module")
def incomplete_elsewhere(shared_data) -> dict[str, int]:
    """Incomplete hours the original slice already has, in the last four weeks (counted as skipped too)."""
    hourly = ingest_file(shared_data).hourly
    last4 = hourly[hourly["timestamp"] >= pd.Timestamp("2007-02-01", tz="UTC")]
    return {"target_missing": int((~last4["is_complete"]).sum())}


@pytest.fixture(scope="module")
def trained(gap_file, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gap_model")
    repo = tmp / "feature_repo"
    copy_feature_repo(repo)
    settings = Settings(feature_repo=repo, artifact_uri=(tmp / "artifacts").as_uri())
    metadata = train(gap_file, tmp / "model", settings, holdout_weeks=4)
    return {"settings": settings, "model_dir": tmp / "model", "metadata": metadata}


def test_train_needs_no_flag_and_reports_the_hole(trained):
    window = trained["metadata"]["training_window"]
    assert window["end"] < "2007-02-01"
    assert window["gaps"] == [{"meter_id": "household-1", "start": "2007-01-10T00:00:00+00:00",
                               "end": "2007-01-13T00:00:00+00:00", "hours": 72}]
    assert window["hours_skipped"]["target_missing"] >= 72


def test_feast_rows_after_the_hole_do_not_reach_into_it(trained, gap_file):
    """The point-in-time rows training read, right after the hole, hold only what was really measured."""
    end = pd.Timestamp(TRAIN_HOLE[1], tz="UTC")
    hours = [end, end + pd.Timedelta(hours=1), end + pd.Timedelta(hours=24), end + pd.Timedelta(hours=168)]
    store = open_feature_store(trained["settings"])
    rows = historical_features(store, pd.DataFrame({"meter_id": "household-1", "event_timestamp": hours}))
    rows = rows.set_index("event_timestamp")
    hourly = ingest_file(gap_file).hourly
    usage = usable_usage(hourly).set_axis(hourly["timestamp"])
    at_end, an_hour_on, a_day_on, a_week_on = (rows.loc[t] for t in hours)
    assert np.isnan(at_end[["usage_lag_1h", "usage_lag_2h", "usage_lag_24h", "usage_mean_3h", "usage_mean_24h",
                            "usage_mean_168h", "sub_metering_1_share_24h"]].astype(float)).all()
    assert at_end["usage_lag_168h"] == pytest.approx(usage[end - pd.Timedelta(hours=168)])  # before the hole
    assert an_hour_on["usage_lag_1h"] == pytest.approx(usage[end]) and np.isnan(an_hour_on["usage_lag_2h"])
    assert a_day_on["usage_mean_24h"] == pytest.approx(usage[end:end + pd.Timedelta(hours=23)].mean())
    assert np.isnan(a_day_on["usage_mean_168h"])
    assert a_week_on["usage_lag_168h"] == pytest.approx(usage[end])
    assert a_week_on["usage_mean_168h"] == pytest.approx(usage[end:end + pd.Timedelta(hours=167)].mean())


def test_evaluate_counts_the_hours_it_skips(trained, gap_file, incomplete_elsewhere):
    result = evaluate(trained["model_dir"], gap_file, last_weeks=4, settings=trained["settings"])
    # the 72 hours of the hole have no target; the hour after it has no persistence
    assert result["hours_skipped"] == {"target_missing": 72 + incomplete_elsewhere["target_missing"],
                                       "no_persistence": 1}
    assert result["gaps"][-1] == {"meter_id": "household-1", "start": "2007-02-10T00:00:00+00:00",
                                  "end": "2007-02-13T00:00:00+00:00", "hours": 72}
    grid = 24 * 28  # 2007-02-01 00:00 .. 2007-02-28 23:00, the slice's last hour
    # the second hour after the hole lacks the lags of 2, 3 and 24 h: the servers answer it with the meter's weekly
    # profile, so evaluate scores it apart from the model's hours
    assert result["fallback"]["hours"] == 1 and result["fallback"]["by_reason"] == {"lags_missing": 1}
    assert result["hours_scored"] + result["fallback"]["hours"] + sum(result["hours_skipped"].values()) == grid
    # the day-old forecast is missing for the day after the hole: scored on the hours it has, beside the model
    daily = result["baselines"]["seasonal_24h"]
    assert daily["hours"] == result["hours_scored"] - 22  # 24 hours after the hole, less the two above
    assert result["baselines"]["persistence"]["hours"] == result["hours_scored"]
    assert daily["model_mae_kw"] < daily["mae_kw"]
    assert result["mae_kw"] < result["baselines"]["persistence"]["mae_kw"]


def test_evaluate_leaves_the_servers_feature_store_alone(trained, gap_file):
    parquet = trained["settings"].feature_repo / "data" / "hourly_features.parquet"
    online = trained["settings"].feature_repo / "data" / "online_store.db"
    before = {p: p.stat().st_mtime_ns for p in (parquet, online)}
    evaluate(trained["model_dir"], gap_file, last_weeks=2, settings=trained["settings"])
    assert {p: p.stat().st_mtime_ns for p in (parquet, online)} == before


def test_backtest_cli_runs_through_the_hole_and_counts_skips(trained, gap_file, tmp_path, incomplete_elsewhere):
    out = tmp_path / "bt"
    env = {**os.environ, "SE_FEATURE_REPO": str(trained["settings"].feature_repo)}
    features = trained["settings"].feature_repo / "data" / "hourly_features.parquet"
    before = features.stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "backtest", "--data", str(gap_file),
                           "--out", str(out), "--weeks", "4"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["weeks"] == 4 and summary["weeks_without_scored_hours"] == 0
    weekly = pd.read_csv(out / "backtest_weekly.csv", parse_dates=["week_start"])
    hole = weekly[weekly["week_start"] == pd.Timestamp("2007-02-08", tz="UTC")].iloc[0]
    assert hole["skipped_target_missing"] >= 72 and hole["skipped_no_persistence"] == 1
    # the second hour after the hole has most usage lags missing: the servers answer it with the profile, so the
    # backtest counts it apart from the model's hours, as evaluate does
    assert hole["fallback_hours"] == 1 and summary["fallback_hours"] == int(weekly["fallback_hours"].sum())
    assert summary["hours_skipped"] == {"target_missing": int(weekly["skipped_target_missing"].sum()),
                                        "no_persistence": int(weekly["skipped_no_persistence"].sum())}
    assert summary["hours_skipped"]["target_missing"] == 72 + incomplete_elsewhere["target_missing"]
    assert summary["plot"].endswith("forecast_vs_actual.png")
    assert features.stat().st_mtime_ns == before  # the backtest's features went to a scratch store
