"""One way from a meter's Feast row to the model (components/online_rows.py), the stale-meter fallback in batch
``predict``, ``evaluate`` and the monitoring report, and no negative kW in any path.

Real readings (the shared file's first weeks), cut and holed the way exports and meters do: data ending at 17:23, a
fleet whose meters end at different minutes, a hole just before the end, a meter with no complete hour at all."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from helpers import with_hole
from smart_energy.components.batch import batch_predict
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.features import FEATURES, build_feature_frame, usable_usage, with_history
from smart_energy.components.ingest import ingest_file
from smart_energy.components.online_rows import (PROFILE_HOURS, model_input, next_hour_kw, profile_at, slot_of,
                                                 weekly_profile)
from smart_energy.components.settings import Settings

pytestmark = pytest.mark.slow
TRAIN_MINUTES = 5 * 7 * 1440  # from 2006-12-16 17:24


def raw_until(source: Path, dest: Path, last: str) -> Path:
    """``source``'s header and rows up to and including the row whose date;time starts with ``last``."""
    with open(source) as src, open(dest, "w") as out:
        for line in src:
            out.write(line)
            if line.startswith(last):
                return dest
    raise AssertionError(f"no row {last} in {source}")


def offline_forecast(model_dir: Path, hourly: pd.DataFrame) -> float:
    """What the booster says on the feature row built from the readings themselves (no Feast, no our helpers)."""
    booster = xgb.Booster()
    booster.load_model(str(model_dir / "model.json"))
    row = build_feature_frame(hourly).tail(1)
    return max(float(booster.predict(xgb.DMatrix(row[FEATURES].astype(float), feature_names=FEATURES))[0]), 0.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory, shared_data):
    from smart_energy.components.train import train

    root = tmp_path_factory.mktemp("online-rows")
    data = root / "five_weeks.txt"
    with open(shared_data) as src, open(data, "w") as dst:
        dst.writelines(itertools.islice(src, TRAIN_MINUTES + 1))
    settings = Settings(feature_repo=copy_feature_repo(root / "train_repo"), artifact_uri=(root / "a").as_uri())
    metadata = train(data, root / "model", settings)
    return {"root": root, "model_dir": root / "model", "metadata": metadata}


def fleet_predict(model, tmp_path, files: dict[str, Path]) -> tuple[pd.DataFrame, dict, dict[str, pd.DataFrame]]:
    """Ingest each meter file under its id, then the batch forecast on a fresh feature repo."""
    hourly = {m: ingest_file(path, meter_id=m).hourly for m, path in files.items()}
    (tmp_path / "ingest").mkdir()
    pd.concat(hourly.values(), ignore_index=True).to_parquet(tmp_path / "ingest" / "hourly.parquet", index=False)
    settings = Settings(feature_repo=copy_feature_repo(tmp_path / "repo"), artifact_uri=(tmp_path / "a").as_uri())
    summary = batch_predict(model["model_dir"], tmp_path / "ingest", tmp_path / "forecasts.parquet", settings)
    return pd.read_parquet(tmp_path / "forecasts.parquet").set_index("meter_id"), summary, hourly


# --------------------------------------------------------------------------- the one NaN policy


def test_model_input_makes_feasts_none_nan_in_model_order():
    # what get_online_features().to_df() gives for an incomplete last hour: None in an object column
    rows = pd.DataFrame({"usage_lag_2h": [0.5, 1.5], "usage_lag_1h": pd.Series([None, 2.0], dtype=object)})
    matrix = model_input(rows, ["usage_lag_1h", "usage_lag_2h"])
    assert matrix.dtype == np.float32 and math.isnan(matrix[0, 0]) and matrix[1].tolist() == [2.0, 1.5]
    records = model_input([{"usage_lag_1h": None, "usage_lag_2h": 0.25}], ["usage_lag_1h", "usage_lag_2h"], np.float64)
    assert records.dtype == np.float64 and math.isnan(records[0, 0]) and records[0, 1] == 0.25
    with pytest.raises(Exception, match="usage_lag_3h"):
        model_input(rows, ["usage_lag_3h"])


def test_predict_on_data_ending_at_23_minutes_past_the_hour(model, shared_data, tmp_path):
    """Feast's online row holds None for the incomplete hour; `predict` used to stop with ValueError (object dtype)."""
    files = {"household-1": raw_until(shared_data, tmp_path / "end_1723.txt", "16/1/2007;17:23:00")}
    forecasts, summary, hourly = fleet_predict(model, tmp_path, files)
    row = forecasts.loc["household-1"]
    assert row["timestamp"] == pd.Timestamp("2007-01-16 18:00", tz="UTC")  # the hour after the last reading's
    assert row["fallback"] is None and row["stale_hours"] == 1  # 17:00 has 23 minutes: the model answers
    assert row["forecast_kw"] == pytest.approx(offline_forecast(model["model_dir"], hourly["household-1"]), abs=1e-6)
    assert summary["fallbacks"] == {"profile": 0, "none": 0}


def test_a_fleet_whose_meters_end_at_different_minutes(model, shared_data, tmp_path):
    ends = {"at-17-23": "16/1/2007;17:23:00", "at-16-59": "16/1/2007;16:59:00", "at-17-05": "16/1/2007;17:05:00"}
    files = {m: raw_until(shared_data, tmp_path / f"{m}.txt", last) for m, last in ends.items()}
    forecasts, summary, hourly = fleet_predict(model, tmp_path, files)
    assert summary["meters"] == 3 and summary["fallbacks"] == {"profile": 0, "none": 0}
    expected_hour = {"at-17-23": "18:00", "at-16-59": "17:00", "at-17-05": "18:00"}
    for meter, hour in expected_hour.items():
        row = forecasts.loc[meter]
        assert row["timestamp"] == pd.Timestamp(f"2007-01-16 {hour}", tz="UTC"), meter
        assert row["forecast_kw"] == pytest.approx(offline_forecast(model["model_dir"], hourly[meter]), abs=1e-6)
    # the same readings, so the two meters whose rows are for 18:00 get the same forecast
    assert forecasts.loc["at-17-23", "forecast_kw"] == forecasts.loc["at-17-05", "forecast_kw"]


def test_a_hole_just_before_the_end(model, shared_data, tmp_path):
    """A complete last hour after a 2 h hole: the model. A 5 h hole then 23 minutes: the meter's weekly profile."""
    until_1659 = raw_until(shared_data, tmp_path / "until_1659.txt", "16/1/2007;16:59:00")
    until_1723 = raw_until(shared_data, tmp_path / "until_1723.txt", "16/1/2007;17:23:00")
    files = {"hole-then-hour": with_hole(until_1659, tmp_path / "a.txt", [("2007-01-16 14:00", "2007-01-16 16:00")]),
             "hole-then-minutes": with_hole(until_1723, tmp_path / "b.txt", [("2007-01-16 12:00", "2007-01-16 17:00")])}
    forecasts, summary, hourly = fleet_predict(model, tmp_path, files)
    assert summary["fallbacks"] == {"profile": 1, "none": 0}
    healthy = forecasts.loc["hole-then-hour"]
    assert healthy["fallback"] is None and healthy["stale_hours"] == 0
    assert healthy["forecast_kw"] == pytest.approx(offline_forecast(model["model_dir"], hourly["hole-then-hour"]),
                                                   abs=1e-6)
    stale = forecasts.loc["hole-then-minutes"]
    # last complete hour 11:00, hour forecast 18:00: 6 hours without a complete reading (>= SE_STALE_AFTER_HOURS 3)
    assert stale["fallback"] == "profile" and stale["stale_hours"] == 6 and "6 h" in stale["fallback_reason"]
    h = hourly["hole-then-minutes"]
    usage = pd.Series(usable_usage(h).to_numpy(), index=pd.DatetimeIndex(h["timestamp"])).dropna()
    last = pd.Timestamp("2007-01-16 11:00", tz="UTC")
    assert usage.index.max() == last
    window = usage[usage.index > last - pd.Timedelta(hours=PROFILE_HOURS)]
    same_slot = window[(window.index.dayofweek == 1) & (window.index.hour == 18)]  # Tuesdays 18:00
    assert 3 <= len(same_slot) <= 4
    assert stale["forecast_kw"] == pytest.approx(same_slot.mean(), rel=1e-12)


def test_a_meter_with_no_complete_hour_gets_no_forecast_and_says_why(model, shared_data, tmp_path):
    """Readings in the first 20 minutes of each hour only: no complete hour, no profile: fallback "none"."""
    raw = pd.read_csv(shared_data, sep=";", dtype=str, keep_default_na=False, nrows=3 * 1440)
    raw.loc[raw["Time"].str[3:5].astype(int) >= 20, raw.columns[2:]] = "?"
    raw.to_csv(tmp_path / "sparse.txt", sep=";", index=False)
    files = {"sparse": tmp_path / "sparse.txt",
             "healthy": raw_until(shared_data, tmp_path / "healthy.txt", "16/1/2007;16:59:00")}
    forecasts, summary, _ = fleet_predict(model, tmp_path, files)
    assert summary["fallbacks"] == {"profile": 0, "none": 1}
    row = forecasts.loc["sparse"]
    assert row["fallback"] == "none" and math.isnan(row["forecast_kw"]) and "no complete hour" in row["fallback_reason"]
    assert forecasts.loc["healthy", "fallback"] is None and forecasts.loc["healthy", "forecast_kw"] > 0


# --------------------------------------------------------------------------- the profile


def test_weekly_profile_is_the_mean_of_each_weekday_hour_over_four_weeks():
    hours = pd.date_range("2007-01-01", periods=6 * 168, freq="h", tz="UTC")  # Monday 00:00 first, six weeks
    kw = np.arange(len(hours), dtype=float) % 168 + np.repeat(np.arange(6), 168) * 1000
    hourly = pd.DataFrame({"meter_id": "m", "timestamp": hours, "global_active_power_kw": kw, "is_complete": True})
    hourly.loc[hourly["timestamp"].dt.dayofweek.eq(2) & hourly["timestamp"].dt.hour.eq(5), "is_complete"] = False
    (profile,) = weekly_profile(hourly).itertuples()
    assert profile.event_timestamp == hours[-1] + pd.Timedelta(hours=1)
    assert pd.Timestamp(profile.last_complete_hour, unit="s", tz="UTC") == hours[-1]
    values = np.asarray(profile.profile_kw)
    assert len(values) == 168
    assert values[0] == pytest.approx(0 + (2 + 3 + 4 + 5) * 1000 / 4)  # Monday 00:00 of the last four weeks
    # Wednesday 05:00 has no complete hour: the mean of 05:00 over the other weekdays of those weeks
    assert values[2 * 24 + 5] == pytest.approx(np.mean([d * 24 + 5 for d in (0, 1, 3, 4, 5, 6)]) + 3500)
    # profile_at, what evaluate uses for a past hour, agrees with the published one at the data's end
    at_end = profile_at(hourly, hours[-1] + pd.Timedelta(hours=1))
    np.testing.assert_array_equal(at_end.kw, values)
    assert slot_of([pd.Timestamp("2007-01-07 23:00", tz="UTC")])[0] == 167


# --------------------------------------------------------------------------- never below 0 kW


def negative_model(model_dir: Path) -> Path:
    """A booster that says -1 kW for everything (as a model can on a quiet night: the trees are unbounded)."""
    from smart_energy.components.registry import write_model_dir

    rng = np.random.default_rng(0)
    matrix = xgb.DMatrix(rng.random((64, len(FEATURES))), label=np.full(64, -1.0), feature_names=FEATURES)
    booster = xgb.train({"base_score": -1.0, "max_depth": 1}, matrix, num_boost_round=2)
    write_model_dir(booster, {"name": "energy-forecaster", "version": "v-negative", "features": FEATURES}, model_dir)
    return model_dir


def test_no_path_forecasts_below_zero_kw(shared_data, tmp_path):
    from smart_energy.components.evaluate import predict
    from smart_energy.components.registry import load_booster

    model_dir = negative_model(tmp_path / "negative")
    booster, _ = load_booster(model_dir)
    rows = build_feature_frame(ingest_file(raw_until(shared_data, tmp_path / "d.txt", "26/12/2006;23:59:00")).hourly)
    assert booster.predict(xgb.DMatrix(rows[FEATURES].astype(float), feature_names=FEATURES)).max() < -0.5
    matrix = model_input(rows, FEATURES)
    for kw in (next_hour_kw(booster, matrix),  # the one function: the predictor's, the loop's, batch's
               predict(booster, rows, FEATURES)):  # evaluate's and the monitoring report's
        assert len(kw) == len(rows) and (kw == 0.0).all()
    # batch predict
    (tmp_path / "ingest").mkdir()
    ingest_file(tmp_path / "d.txt").hourly.to_parquet(tmp_path / "ingest" / "hourly.parquet", index=False)
    settings = Settings(feature_repo=copy_feature_repo(tmp_path / "repo"), artifact_uri=(tmp_path / "a").as_uri())
    batch_predict(model_dir, tmp_path / "ingest", tmp_path / "f.parquet", settings)
    assert pd.read_parquet(tmp_path / "f.parquet")["forecast_kw"].tolist() == [0.0]


# --------------------------------------------------------------------------- evaluate and the report


def test_evaluate_and_the_report_count_fallback_hours_apart(model, shared_data, tmp_path):
    """A 30 h hole in the scored days: the second hour back has lags 2, 3 and 24 missing (most of 5), so the servers
    answer it with the profile; evaluate and the monitoring report score it apart from the model's hours."""
    from smart_energy.components.evaluate import evaluate
    from smart_energy.components.monitor import build_report

    history = model["root"] / "five_weeks.txt"  # the training data; scored: the twelve days after it
    until = raw_until(shared_data, tmp_path / "until.txt", "1/2/2007;23:59:00")
    raw = pd.read_csv(until, sep=";", dtype=str, keep_default_na=False)
    raw.iloc[TRAIN_MINUTES:].to_csv(tmp_path / "after.txt", sep=";", index=False)
    data = with_hole(tmp_path / "after.txt", tmp_path / "holed.txt", [("2007-01-26 00:00", "2007-01-27 06:00")])
    settings = Settings(feature_repo=copy_feature_repo(tmp_path / "repo"), artifact_uri=(tmp_path / "a").as_uri())
    result = evaluate(model["model_dir"], data, history=history, settings=settings)
    fallback = result["fallback"]
    assert fallback["hours"] == 1 and fallback["by_reason"] == {"lags_missing": 1}
    # the profile the servers would have held at Saturday 07:00: Saturdays 07:00 of the 4 weeks before 06:00
    data_hourly = ingest_file(data).hourly
    both = with_history(data_hourly, ingest_file(history).hourly)
    usage = pd.Series(usable_usage(both).to_numpy(), index=pd.DatetimeIndex(both["timestamp"])).dropna()
    hour = pd.Timestamp("2007-01-27 07:00", tz="UTC")
    window = usage[(usage.index < hour) & (usage.index > pd.Timestamp("2007-01-27 06:00", tz="UTC")
                                           - pd.Timedelta(hours=PROFILE_HOURS))]
    same_slot = window[(window.index.dayofweek == 5) & (window.index.hour == 7)]
    assert len(same_slot) == 4
    assert fallback["mae_kw"] == pytest.approx(abs(same_slot.mean() - usage[hour]), rel=1e-9)
    assert fallback["persistence_mae_kw"] == pytest.approx(abs(usage[hour - pd.Timedelta(hours=1)] - usage[hour]),
                                                           rel=1e-9)
    # ... and the model's hours are every other scored hour (a complete target, the hour before complete)
    targets = set(data_hourly.loc[data_hourly["is_complete"].astype(bool), "timestamp"])
    frame = build_feature_frame(both)
    scorable = frame["event_timestamp"].isin(targets) & frame["usage_lag_1h"].notna()
    assert result["hours_scored"] == int(scorable.sum()) - 1
    report, _ = build_report(data, model["model_dir"], history=history, settings=settings)
    performance = report["performance"]
    assert performance["fallback_hours"] == 1 and performance["fallback_mae_kw"] == fallback["mae_kw"]
