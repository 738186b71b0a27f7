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

from smart_energy.components.dayahead import OUTPUTS, calibrate, rolling_shift
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.registry import read_metadata
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
    shift = rolling_shift(hours, origins, targets, scores, fallback=9.0, days=7)
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


def test_advise_refuses_a_next_hour_model(dayahead, shared_data, tmp_path):
    proc = subprocess.run([*CLI, "train", "--data", str(shared_data), "--model-dir", str(tmp_path / "m1"),
                           "--n-estimators", "20"], capture_output=True, text=True, env=dayahead["env"])
    assert proc.returncode == 0, proc.stderr[-1000:]
    proc = subprocess.run([*CLI, "advise", "--model-dir", str(tmp_path / "m1"), "--data", str(shared_data)],
                          capture_output=True, text=True, env=dayahead["env"])
    assert proc.returncode == 2 and "day-ahead" in proc.stderr and "Traceback" not in proc.stderr
