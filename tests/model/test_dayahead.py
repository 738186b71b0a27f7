"""The day-ahead P10/P50/P90 model on the shared file: trained without the last four weeks (`train --horizon
24`), scored on every origin hour of them (`evaluate`), and the advice built on it (`advise`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.dayahead import (BAG_BUDGET_PAIRS, DAYAHEAD_FEATURES, NEXT_HOUR_FILE, OUTPUTS, PARAMS,
                                              bag_seeds, bagged, calibrate, expand_leads, carry_of, fit_carry,
                                              lead_adjust, load_dayahead, per_lead, raw_quantiles, rolling_shift)
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.features import FEATURES, build_feature_frame
from smart_energy.components.ingest import load_hourly
from smart_energy.components.online_rows import next_hour_kw
from smart_energy.components.registry import (MANIFEST_FILE, METADATA_FILE, ModelIntegrityError, load_booster,
                                              read_metadata, sha256_of, write_manifest)
from smart_energy.components.tariffs import get_tariff

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "smart_energy.cli"]


@pytest.fixture(scope="module")
def dayahead(shared_data, dayahead_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("dayahead")
    env = {**os.environ, "SE_FEATURE_REPO": str(copy_feature_repo(root / "feature_repo")),
           "SE_ARTIFACT_URI": (root / "artifacts").as_uri()}
    # `train --horizon 24 --holdout-weeks 4`, run once per session (tests/conftest.py)
    shutil.copytree(dayahead_model["model_dir"], root / "model")
    evaluate = subprocess.run([*CLI, "evaluate", "--model-dir", str(root / "model"), "--data", str(shared_data),
                               "--last-weeks", "4"], capture_output=True, text=True, env=env)
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    return {"root": root, "env": env, "trained": dayahead_model["trained"], "scores": json.loads(evaluate.stdout)}


def test_the_model_is_registered_as_day_ahead_with_its_quantiles(dayahead):
    meta = read_metadata(dayahead["root"] / "model")
    assert meta["horizon_hours"] == 24 and meta["quantiles"] == [0.1, 0.5, 0.9] and meta["outputs"] == list(OUTPUTS)
    assert meta["training_window"]["end"] < "2007-02-01"  # the held-out weeks never reached training
    assert dayahead["trained"]["horizon_hours"] == 24
    # six weeks of one household: the final pooled refit is the mean of 7 seeds, joined into one booster
    seeds, rounds = meta["params"]["bagged_seeds"], meta["params"]["num_boost_round"]
    assert seeds == bag_seeds(meta["training_window"]["pairs"]) == 7
    booster, _ = load_booster(dayahead["root"] / "model")
    assert booster.num_boosted_rounds() == seeds * rounds


def test_the_bagged_booster_forecasts_the_mean_of_its_seeds_and_small_windows_only_are_bagged(tmp_path):
    import xgboost as xgb

    rng = np.random.default_rng(11)
    x = rng.random((2000, 5))
    y = 2 * x[:, 0] + rng.gamma(1.0, 0.3, 2000)
    margin = np.repeat(x[:, 1:2], 3, axis=1)  # as the product's: a per-row start level for each quantile
    train = xgb.DMatrix(x, label=y, base_margin=margin)
    boosters = [xgb.train({**PARAMS, "nthread": 1, "seed": 7 + k}, train, num_boost_round=30) for k in range(4)]
    for rows in (xgb.DMatrix(x, base_margin=margin), xgb.DMatrix(x)):
        each = np.stack([b.predict(rows) for b in boosters])
        assert np.abs(each[0] - each[1]).max() > 0.05  # the seeds do differ
        joined = bagged(boosters)
        np.testing.assert_allclose(joined.predict(rows), each.mean(axis=0), atol=1e-5)
        joined.save_model(tmp_path / "bag.json")  # and so does the file the model directory holds
        back = xgb.Booster()
        back.load_model(tmp_path / "bag.json")
        np.testing.assert_allclose(back.predict(rows), each.mean(axis=0), atol=1e-5)
    assert joined.num_boosted_rounds() == 4 * 30 and bagged(boosters[:1]) is boosters[0]
    other = xgb.train({**PARAMS, "nthread": 1}, xgb.DMatrix(x, label=y + 5.0), num_boost_round=3)
    with pytest.raises(ValueError, match="base score"):
        bagged([boosters[0], other])
    # seeds x pairs stays within one MAX_ORIGINS fit: a fleet or a year of a meter keeps one booster
    assert bag_seeds(BAG_BUDGET_PAIRS) == bag_seeds(10 * BAG_BUDGET_PAIRS) == 1
    assert bag_seeds(26_364) == 7 and bag_seeds(100) == 10 and bag_seeds(BAG_BUDGET_PAIRS // 3) == 3


def test_held_out_band_covers_80_percent_and_p50_beats_every_naive_day_ahead_forecast(dayahead):
    r = dayahead["scores"]
    assert r["horizon_hours"] == 24 and r["origins"] == 4 * 7 * 24 and r["first_origin"].startswith("2007-02-01")
    assert r["hours_scored"] + sum(r["pairs_skipped"].values()) <= r["origins"] * 24
    assert 0.75 <= r["coverage_p10_p90"] <= 0.85
    assert r["quantiles_cross"] == 0
    for name, baseline in r["baselines"].items():
        assert r["mae_kw"] < baseline["mae_kw"], name
    assert set(r["mae_by_lead"]) == {str(k) for k in range(1, 25)}
    assert r["mae_by_lead"]["1"] < r["mae_by_lead"]["24"]  # the nearer hour is easier
    # persistence for every lead is the origin's last hour: its error grows with the lead
    assert r["baselines"]["persistence"]["mae_by_lead"]["1"] < r["baselines"]["persistence"]["mae_by_lead"]["6"]


def _pooled(model, frame):
    import xgboost as xgb

    return model.pooled.predict(xgb.DMatrix(
        frame[DAYAHEAD_FEATURES], feature_names=DAYAHEAD_FEATURES,
        base_margin=np.repeat(frame["usage_mean_24h"].fillna(frame["usage_lag_1h"]).fillna(1.0).to_numpy()[:, None],
                              3, axis=1))).reshape(-1, 3)


def _scored_weeks_pairs(shared_data):
    # two weeks of origins of the scored weeks, every lead (the frame every caller passes: expand_leads output)
    rows = build_feature_frame(load_hourly(shared_data))
    return expand_leads(rows[rows["event_timestamp"] >= "2007-02-10"].head(14 * 24))


def test_lead_1_is_the_next_hour_models_forecast_and_later_leads_carry_its_departure_with_the_stored_decay(
        dayahead, shared_data):
    model_dir = dayahead["root"] / "model"
    model, meta = load_dayahead(model_dir)
    spec = meta["lead_blend"]
    c = np.asarray(spec["carry"])
    assert 0 < spec["phi"] < 1 and "weights" not in spec and model.weights is None
    np.testing.assert_allclose(c, spec["phi"] ** np.arange(24))  # one decay: 1 at lead 1, then phi ** (L - 1)
    assert c[1] > 0.1 and c[6:].max() < 0.1  # lead 2 keeps much of the next hour's departure; a day on, hardly any
    np.testing.assert_array_equal(model.carry, c)
    # the manifest and the metadata both cover the next-hour booster, with the file's own digest
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())["files"]
    assert manifest[NEXT_HOUR_FILE] == meta["extra_model_files"][NEXT_HOUR_FILE] == sha256_of(model_dir / NEXT_HOUR_FILE)
    pairs = _scored_weeks_pairs(shared_data)
    raw = raw_quantiles(model, pairs)
    pooled = _pooled(model, pairs)
    nh = next_hour_kw(model.next_hour, pairs[FEATURES].to_numpy(dtype=np.float32))
    lead = pairs["lead_hours"].to_numpy()
    one = lead == 1
    # the next-hour model's forecast of hour T (to XGBoost's float32 sums: one batch of rows or another)
    np.testing.assert_allclose(raw[one, 1], nh[one], rtol=1e-6, atol=1e-6)
    assert np.abs(raw[one, 1] - pooled[one, 1]).mean() > 0.05  # and not the pooled model's
    # each origin's departure: the next-hour forecast minus the pooled P50 of its own lead-1 row
    departure = pd.Series(nh[one] - pooled[one, 1], index=pairs.loc[one, "event_timestamp"])
    gap = departure.reindex(pairs["event_timestamp"]).to_numpy()
    for k in (2, 3, 24):
        at = lead == k
        np.testing.assert_allclose(raw[at, 1], pooled[at, 1] + c[k - 1] * gap[at], atol=1e-5)
        np.testing.assert_allclose(raw[at][:, [0, 2]] - raw[at, 1:2], pooled[at][:, [0, 2]] - pooled[at, 1:2],
                                   atol=1e-5)  # P10 and P90 moved with the P50
    assert np.abs(raw[lead == 2, 1] - pooled[lead == 2, 1]).mean() > 0.01  # the carry did move lead 2
    # the served band: never crossing, never below 0 kW
    for shift in (meta["conformal_kw"], -0.5, 0.0):
        q = calibrate(raw, shift)
        assert (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()
    # the pooled booster alone is not the model: a caller that loads it with load_booster is refused, not misled
    booster, _ = load_booster(model_dir)
    with pytest.raises(SmartEnergyError, match="load_dayahead"):
        raw_quantiles(booster, pairs)
    # one row alone gets what it gets among its origin's 24 (the lead-1 P50 is its own origin's, not a neighbour's)
    lone = pairs[lead == 5].head(3)
    np.testing.assert_allclose(raw_quantiles(model, lone), raw[lead == 5][:3], atol=1e-6)


def test_a_model_of_the_earlier_blend_rule_still_forecasts_by_its_weights(dayahead, shared_data, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(dayahead["root"] / "model", model_dir)
    meta = json.loads((model_dir / METADATA_FILE).read_text())
    w = [1.0, 0.35, 0.15, 0.05] + [0.0] * 20  # what the blend's metadata held (session 7's models)
    meta["lead_blend"] = {k: v for k, v in meta["lead_blend"].items() if k not in ("carry", "phi")} | {"weights": w}
    (model_dir / METADATA_FILE).write_text(json.dumps(meta))
    write_manifest(model_dir)
    model, _ = load_dayahead(model_dir)
    assert model.carry is None
    pairs = _scored_weeks_pairs(shared_data)
    raw, pooled = raw_quantiles(model, pairs), _pooled(model, pairs)
    nh = next_hour_kw(model.next_hour, pairs[FEATURES].to_numpy(dtype=np.float32))
    lead = pairs["lead_hours"].to_numpy()
    np.testing.assert_allclose(raw[lead == 1, 1], nh[lead == 1], rtol=1e-6, atol=1e-6)
    for k in (2, 3, 24):
        at = lead == k
        np.testing.assert_allclose(raw[at, 1], w[k - 1] * nh[at] + (1 - w[k - 1]) * pooled[at, 1], atol=1e-5)
    meta["lead_blend"]["weights"] = [1.5] * 24
    (model_dir / METADATA_FILE).write_text(json.dumps(meta))
    write_manifest(model_dir)
    with pytest.raises(ModelIntegrityError, match="weights must be 24 numbers in \\[0, 1\\]"):
        load_dayahead(model_dir)


def test_evaluates_lead_1_p50_is_no_worse_than_the_next_hour_model_on_the_same_hours(dayahead, shared_data):
    from pathlib import Path

    from smart_energy.components.dayahead import score_hourly
    from smart_energy.components.evaluate import last_weeks_split
    from smart_energy.components.settings import Settings

    model, meta = load_dayahead(dayahead["root"] / "model")
    data, history = last_weeks_split(load_hourly(shared_data), None, 4)
    settings = Settings(feature_repo=Path(dayahead["env"]["SE_FEATURE_REPO"]),
                        artifact_uri=dayahead["env"]["SE_ARTIFACT_URI"])
    result, pairs, forecast = score_hourly(model, meta, data, history, settings)  # what `evaluate` runs
    assert result["mae_kw"] == pytest.approx(dayahead["scores"]["mae_kw"])
    one = (pairs["lead_hours"] == 1).to_numpy()
    actual = pairs.loc[one, "target_kw"].to_numpy()
    next_hour = next_hour_kw(model.next_hour, pairs.loc[one, FEATURES].to_numpy(dtype=np.float32))
    p50_mae, next_hour_mae = (float(np.mean(np.abs(f - actual))) for f in (forecast[one, 1], next_hour))
    assert p50_mae <= next_hour_mae + 1e-6, (p50_mae, next_hour_mae)  # issue 22's must-show, after calibration
    assert p50_mae < 0.9 * result["mae_by_lead"][24]


def test_a_changed_next_hour_booster_is_refused_even_with_a_rewritten_manifest(dayahead, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(dayahead["root"] / "model", model_dir)
    (model_dir / NEXT_HOUR_FILE).write_bytes((model_dir / NEXT_HOUR_FILE).read_bytes() + b" ")
    with pytest.raises(ModelIntegrityError, match=f"{NEXT_HOUR_FILE}.*does not match {MANIFEST_FILE}"):
        load_dayahead(model_dir)
    write_manifest(model_dir)  # the manifest redone by hand: metadata.json still records the trained file's digest
    with pytest.raises(ModelIntegrityError, match=f"{NEXT_HOUR_FILE}: {METADATA_FILE} records sha256"):
        load_dayahead(model_dir)


def test_a_day_ahead_directory_from_before_the_blend_still_loads_as_the_pooled_model(tmp_path):
    import xgboost as xgb

    from smart_energy.components.dayahead import PARAMS, dmatrix
    from smart_energy.components.registry import write_model_dir

    rng = np.random.default_rng(1)
    pairs = pd.DataFrame(rng.random((240, len(DAYAHEAD_FEATURES))), columns=DAYAHEAD_FEATURES)
    pairs["lead_hours"] = np.tile(np.arange(1, 25), 10)
    pairs["target_kw"] = rng.random(240)
    booster = xgb.train({**PARAMS, "nthread": 1}, dmatrix(pairs, True), num_boost_round=3)
    write_model_dir(booster, {"name": "energy-forecaster-24h", "version": "v-old", "horizon_hours": 24,
                              "features": DAYAHEAD_FEATURES, "conformal_kw": 0.1}, tmp_path / "old")
    assert NEXT_HOUR_FILE not in json.loads((tmp_path / "old" / MANIFEST_FILE).read_text())["files"]
    model, meta = load_dayahead(tmp_path / "old")  # e.g. the registry's production model, compared with a new one
    assert model.next_hour is None and meta["version"] == "v-old"
    np.testing.assert_array_equal(raw_quantiles(model, pairs), booster.predict(dmatrix(pairs)).reshape(-1, 3))
    np.testing.assert_array_equal(raw_quantiles(booster, pairs), raw_quantiles(model, pairs))  # no blend to skip
    with pytest.raises(SmartEnergyError, match="day-ahead"):
        write_model_dir(booster, {"name": "energy-forecaster", "version": "v1", "features": DAYAHEAD_FEATURES},
                        tmp_path / "next-hour")
        load_dayahead(tmp_path / "next-hour")


def test_the_carry_finds_the_decay_of_the_next_hour_departure_and_keeps_lead_1_on_the_next_hour():
    rng = np.random.default_rng(3)
    origins = 400
    lead = np.tile(np.arange(1, 25), origins)
    shape = rng.gamma(2.0, 0.5, len(lead))  # what the pooled model gets right
    surprise = np.repeat(rng.normal(0, 1.0, origins), 24)  # what the last hours say and the pooled model missed
    actual = shape + 0.5 ** (lead - 1) * surprise + rng.normal(0, 0.05, len(lead))
    raw = np.repeat(shape[:, None], 3, axis=1) + np.array([-0.3, 0.0, 0.3])
    pooled_lead1 = np.repeat(shape[lead == 1], 24)
    nh = pooled_lead1 + surprise  # the next-hour model sees the surprise at lead 1
    phi = fit_carry(raw, nh, pooled_lead1, actual, lead)
    assert phi == pytest.approx(0.5, abs=0.051)
    out = lead_adjust(raw, nh, pooled_lead1, lead, np.zeros(len(lead)), per_lead(carry_of(phi), lead))
    np.testing.assert_array_equal(out[lead == 1, 1], nh[lead == 1])  # exactly the next-hour forecast
    np.testing.assert_allclose(out[:, 2] - out[:, 1], 0.3)  # P90 moved with the P50
    assert np.mean(np.abs(out[:, 1] - actual)) < 0.5 * np.mean(np.abs(raw[:, 1] - actual))
    # no later lead to fit on: the pooled model after lead 1
    assert fit_carry(raw[lead == 1], nh[lead == 1], pooled_lead1[lead == 1], actual[lead == 1], lead[lead == 1]) == 0.0


def test_calibrated_quantiles_never_cross_nor_go_below_zero():
    rng = np.random.default_rng(5)
    raw = rng.normal(1.0, 1.0, size=(5000, 3))  # crossing and negative on purpose
    for shift in (-0.8, 0.0, 0.3, rng.uniform(-1, 1, 5000)):
        q = calibrate(raw, shift)
        assert (np.diff(q, axis=1) >= 0).all() and (q >= 0).all()


def test_rolling_calibration_uses_only_actuals_known_before_the_origin():
    hours = pd.date_range("2007-01-01", periods=24 * 40, freq="h").to_numpy()
    origins = np.repeat(hours, 24)  # every origin, every lead
    targets = origins + np.tile(np.arange(24), len(hours)) * np.timedelta64(1, "h")
    scores = np.where(targets >= np.datetime64("2007-01-25"), 5.0, 1.0)  # the world gets worse on the 25th
    at = pd.DataFrame({"meter_id": "m", "event_timestamp": hours, "lead_hours": 1})  # per meter and lead bucket
    known = pd.DataFrame({"meter_id": "m", "target_timestamp": targets,
                          "lead_hours": np.tile(np.arange(1, 25), len(hours)), "score": scores})
    shift, _ = rolling_shift(at, known, fallback=9.0, days=7)
    at = {str(h)[:13]: s for h, s in zip(hours, shift)}
    assert at["2007-01-01T12"] == 9.0  # less than a day of origins x leads known: the stored fallback
    assert at["2007-01-10T00"] == 1.0
    assert at["2007-01-25T00"] == 1.0  # the bad hours are not known yet at their own origin
    assert at["2007-02-05T00"] == 5.0  # a week later they are all it knows


def test_advise_prices_the_band_and_recommends_cheap_windows(dayahead, shared_data):
    proc = subprocess.run([*CLI, "advise", "--model-dir", str(dayahead["root"] / "model"), "--data", str(shared_data),
                           "--tariff", "hp-hc"], capture_output=True, text=True, env=dayahead["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    advice = json.loads(proc.stdout)
    rows = advice["next_24h"]
    assert advice["tariff"] == "hp-hc" and len(rows) == 24 and rows[0]["timestamp"].startswith("2007-03-01T00")
    assert all(r["p10_kw"] <= r["p50_kw"] <= r["p90_kw"] for r in rows)
    prices = get_tariff("hp-hc").prices
    for r in rows:
        hour = int(r["timestamp"][11:13])
        assert r["price_eur_per_kwh"] == (prices["offpeak"] if hour >= 22 or hour < 6 else prices["peak"])
    shiftable = [load for load in advice["loads"] if load["shiftable"]]
    assert {load["name"] for load in shiftable} == {"laundry", "water_heater_ac"}
    for load in shiftable:
        start = int(load["recommended_window"]["start"][11:13])
        assert start >= 22 or start < 6  # off-peak
    s = advice["savings"]
    assert s["eur_per_year"] > 0 and s["days_backtested"] >= 70 and "not energy" in s["method"]
    # the band is calibrated on the meter's last 7 days, as the servers calibrate it, and says so
    assert advice["calibration"] == "rolling"
    assert list(advice["calibration_shift_kw"]) == ["1", "2-3", "4-6", "7-12", "13-24"]
    assert all(isinstance(v, float) for v in advice["calibration_shift_kw"].values())


def test_advise_refuses_a_next_hour_model(dayahead, shared_data, tmp_path):
    proc = subprocess.run([*CLI, "train", "--data", str(shared_data), "--model-dir", str(tmp_path / "m1"),
                           "--n-estimators", "20"], capture_output=True, text=True, env=dayahead["env"])
    assert proc.returncode == 0, proc.stderr[-1000:]
    proc = subprocess.run([*CLI, "advise", "--model-dir", str(tmp_path / "m1"), "--data", str(shared_data)],
                          capture_output=True, text=True, env=dayahead["env"])
    assert proc.returncode == 2 and "day-ahead" in proc.stderr and "Traceback" not in proc.stderr
