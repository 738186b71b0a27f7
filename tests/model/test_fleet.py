"""A fleet end to end: 20 meter files (one corrupt) ingested, one global model trained on them, batch forecasts
for every good meter from Feast's online store, equal to the model on each meter's own newest feature row."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from helpers import REPO
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.features import build_feature_frame
from smart_energy.components.registry import load_booster

sys.path.insert(0, str(REPO))
from benchmarks.make_fleet import make_fleet  # noqa: E402

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "smart_energy.cli"]


@pytest.fixture(scope="module")
def fleet(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet-model")
    make_fleet(shared_data, root / "meters", meters=19, days=16)
    good = (root / "meters" / "meter-00001.txt").read_bytes()
    (root / "meters" / "meter-corrupt.txt.gz").write_bytes(gzip.compress(good)[:20_000])
    make_fleet(shared_data, root / "short", meters=1, days=5, seed=3)  # too little history to learn from
    (root / "short" / "meter-00000.txt").rename(root / "meters" / "meter-short.txt")
    env = {**os.environ, "SE_FEATURE_REPO": str(copy_feature_repo(root / "feature_repo")),
           "SE_ARTIFACT_URI": (root / "artifacts").as_uri()}
    run = lambda *args: subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)  # noqa: E731
    for proc in (run("ingest", str(root / "meters"), "--out", str(root / "ingest")),
                 run("train", "--data", str(root / "ingest"), "--model-dir", str(root / "model"), "--holdout-weeks", "1"),
                 run("predict", "--model-dir", str(root / "model"), "--data", str(root / "ingest"), "--out",
                     str(root / "forecasts.parquet"))):
        assert proc.returncode == 0, proc.stderr[-2000:]
    return {"root": root, "run": run, "printed": json.loads(proc.stdout)}


def test_one_global_model_forecasts_every_good_meter(fleet):
    root = fleet["root"]
    forecasts = pd.read_parquet(root / "forecasts.parquet")
    hourly = pd.read_parquet(root / "ingest" / "hourly.parquet")
    assert fleet["printed"]["meters"] == 20 == forecasts["meter_id"].nunique() == len(forecasts)
    assert set(forecasts["meter_id"]) == set(hourly["meter_id"]) and "meter-corrupt" not in set(forecasts["meter_id"])
    booster, meta = load_booster(root / "model")
    assert len(meta["meters"]) == 19  # trained on all of them, one model, but the one with 5 days
    assert list(meta["meters_skipped"]) == ["meter-short"] and "complete hours" in meta["meters_skipped"]["meter-short"]
    newest = build_feature_frame(hourly).sort_values("event_timestamp").groupby("meter_id").tail(1).set_index("meter_id")
    expected = booster.predict(xgb.DMatrix(newest[meta["features"]], feature_names=meta["features"]))
    got = forecasts.set_index("meter_id").loc[newest.index]
    np.testing.assert_allclose(got["forecast_kw"], expected, rtol=1e-5)
    assert (got["origin"] == newest["event_timestamp"]).all()  # each at its own data's end
    assert set(fleet["printed"]["seconds"]) == {"publish", "online_read", "predict", "total"}


def test_evaluate_reports_every_meter_against_its_own_persistence(fleet):
    root, run = fleet["root"], fleet["run"]
    proc = run("evaluate", "--model-dir", str(root / "model"), "--data", str(root / "ingest"), "--last-weeks", "1",
               "--out", str(root / "eval"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["meters"] == 19 == len(r["by_meter"])  # the short meter cannot be scored either
    assert sum(m["hours"] for m in r["by_meter"].values()) == r["hours_scored"]
    pooled = sum(m["mae_kw"] * m["hours"] for m in r["by_meter"].values()) / r["hours_scored"]
    assert pooled == pytest.approx(r["mae_kw"], rel=1e-9)
    assert 0 <= r["meters_beating_persistence"] <= 19
    table = pd.read_csv(r["files"]["table"])
    assert len(table) == 19 and open(r["files"]["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_day_ahead_model_gives_24_banded_hours_per_meter(fleet):
    root, run = fleet["root"], fleet["run"]
    proc = run("train", "--horizon", "24", "--data", str(root / "ingest"), "--model-dir", str(root / "dayahead"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run("predict", "--model-dir", str(root / "dayahead"), "--data", str(root / "ingest"), "--out",
               str(root / "dayahead.parquet"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    forecasts = pd.read_parquet(root / "dayahead.parquet")
    assert json.loads(proc.stdout)["rows"] == len(forecasts) == 20 * 24
    assert (forecasts.groupby("meter_id").size() == 24).all()
    assert ((forecasts["p10_kw"] <= forecasts["p50_kw"]) & (forecasts["p50_kw"] <= forecasts["p90_kw"])).all()
