"""The fleet's distributed path for real, on Spark in local mode (pyspark + Debian's Java 17 runtime): selected by
SE_ENGINE=spark only, it gives the embedded path's features (equal frames, the feature function and Feast's Spark
offline store), a model within a small tolerance of the embedded one trained on the same data (xgboost.spark), and
batch forecasts for every meter from the online store Feast's Spark materialisation filled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from helpers import REPO
from smart_energy.components.feast_store import copy_feature_repo, historical_features, open_feature_store
from smart_energy.components.features import build_feature_frame, labels
from smart_energy.components.registry import load_booster
from smart_energy.components.settings import Settings

sys.path.insert(0, str(REPO))
from benchmarks.make_fleet import make_fleet  # noqa: E402

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "smart_energy.cli"]
SPARK_SUBMIT = os.path.join(os.path.dirname(sys.executable), "spark-submit")  # pyspark's, in the venv
METERS = 6


@pytest.fixture(scope="module")
def fleet(shared_data, tmp_path_factory):
    """One fleet ingested once, then trained and forecast by the CLI twice: embedded, and SE_ENGINE=spark."""
    root = tmp_path_factory.mktemp("spark-fleet")
    make_fleet(shared_data, root / "meters", meters=METERS, days=16)
    runs = {}
    for engine in ("embedded", "spark"):
        env = {**os.environ, "SE_ENGINE": engine, "SE_SPARK_PARTITIONS": "4",
               "SE_FEATURE_REPO": str(copy_feature_repo(root / engine / "feature_repo")),
               "SE_FEATURE_SOURCE": "data/hourly_features" + (".parquet" if engine == "embedded" else ""),
               "SE_ARTIFACT_URI": (root / engine / "artifacts").as_uri()}
        run = lambda *args, env=env: subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)  # noqa: E731
        if engine == "embedded":
            proc = run("ingest", str(root / "meters"), "--out", str(root / "ingest"))
            assert proc.returncode == 0, proc.stderr[-2000:]
        train = ("train", "--data", str(root / "ingest"), "--model-dir", str(root / engine / "model"),
                 "--holdout-weeks", "1")
        if engine == "spark":  # trained as a SparkApplication's driver is: spark-submit runs smart_energy/spark_job.py
            proc = subprocess.run([SPARK_SUBMIT, "--master", "local[2]", "--driver-memory", "2g",
                                   "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
                                   str(REPO / "smart_energy" / "spark_job.py"), *train],
                                  capture_output=True, text=True, env={**env, "SE_ENGINE": "embedded",
                                                                       "PYSPARK_PYTHON": sys.executable})
        else:
            proc = run(*train)
        assert proc.returncode == 0, f"{engine} train: {proc.stderr[-3000:]}"
        proc = run("predict", "--model-dir", str(root / engine / "model"), "--data", str(root / "ingest"),
                   "--out", str(root / engine / "forecasts.parquet"))
        assert proc.returncode == 0, f"{engine} predict: {proc.stderr[-3000:]}"
        runs[engine] = {"env": env, "run": run, "printed": json.loads(proc.stdout), "stderr": proc.stderr}
    return {"root": root, "runs": runs, "hourly": pd.read_parquet(root / "ingest" / "hourly.parquet")}


def _settings(fleet, engine: str) -> Settings:
    return Settings.from_env(fleet["runs"][engine]["env"])


@pytest.fixture(scope="module")
def spark(fleet):
    from smart_energy.components.spark_engine import spark_session

    session = spark_session(_settings(fleet, "spark"))
    yield session
    session.stop()


def test_the_feature_function_on_spark_gives_the_embedded_frame(fleet, spark):
    from smart_energy.components.spark_engine import feature_frame

    hourly = fleet["hourly"]
    embedded = build_feature_frame(hourly).drop(columns="created")
    on_spark = feature_frame(spark, hourly, _settings(fleet, "spark")).toPandas().drop(columns="created")
    on_spark["event_timestamp"] = pd.to_datetime(on_spark["event_timestamp"]).dt.tz_localize("UTC")
    on_spark = on_spark.sort_values(["meter_id", "event_timestamp"], ignore_index=True)
    assert len(embedded) > METERS * 16 * 24 and embedded["meter_id"].nunique() == METERS
    pd.testing.assert_frame_equal(on_spark, embedded, check_dtype=False, check_exact=False, rtol=1e-12)


def test_feasts_spark_offline_store_joins_the_same_rows_as_duckdb(fleet, spark):
    entity = labels(fleet["hourly"])
    rows = {engine: historical_features(open_feature_store(_settings(fleet, engine)), entity.copy())
            for engine in ("embedded", "spark")}
    from feast.infra.provider import get_provider

    provider = get_provider(open_feature_store(_settings(fleet, "spark")).config)
    assert type(provider.offline_store).__name__ == "SparkOfflineStore"
    assert len(rows["spark"]) == len(entity) and rows["spark"]["usage_lag_168h"].notna().sum() > 0
    pd.testing.assert_frame_equal(rows["spark"][rows["embedded"].columns], rows["embedded"], check_dtype=False,
                                  check_exact=False, rtol=1e-12)


def test_xgboost_spark_model_is_within_tolerance_of_the_embedded_one(fleet):
    root = fleet["root"]
    (emb, emb_meta), (spk, spk_meta) = (load_booster(root / e / "model") for e in ("embedded", "spark"))
    # spark_job.py chose the engine itself (SE_ENGINE=embedded in spark-submit's environment)
    assert spk_meta["engine"] == "spark" and emb_meta["engine"] == "embedded" and spk_meta["spark_workers"] == 2
    assert spk_meta["training_window"] == emb_meta["training_window"]  # same rows, same holes, same hold-out
    assert spk_meta["meters"] == emb_meta["meters"] and len(spk_meta["meters"]) == METERS
    assert spk_meta["metrics"]["valid_hours"] == emb_meta["metrics"]["valid_hours"]
    assert spk_meta["metrics"]["valid_mae_kw"] == pytest.approx(emb_meta["metrics"]["valid_mae_kw"], rel=0.05)
    # both scored by the same evaluate on the held-out week they never saw
    scores = {}
    for engine in ("embedded", "spark"):
        proc = fleet["runs"]["embedded"]["run"]("evaluate", "--model-dir", str(root / engine / "model"), "--data",
                                                str(root / "ingest"), "--last-weeks", "1")
        assert proc.returncode == 0, proc.stderr[-2000:]
        scores[engine] = json.loads(proc.stdout)
    assert scores["spark"]["hours_scored"] == scores["embedded"]["hours_scored"] > METERS * 24
    assert scores["spark"]["mae_kw"] == pytest.approx(scores["embedded"]["mae_kw"], rel=0.05)
    assert scores["spark"]["mae_kw"] < scores["spark"]["baselines"]["persistence"]["mae_kw"]
    # a real model, not a constant: forecasts follow the embedded model's hour by hour
    frame = build_feature_frame(fleet["hourly"]).dropna(subset=["usage_lag_168h"])
    matrix = xgb.DMatrix(frame[emb_meta["features"]], feature_names=emb_meta["features"])
    assert np.corrcoef(emb.predict(matrix), spk.predict(matrix))[0, 1] > 0.97


def test_spark_materialisation_serves_every_meters_batch_forecast(fleet):
    root = fleet["root"]
    printed = fleet["runs"]["spark"]["printed"]
    forecasts = pd.read_parquet(root / "spark" / "forecasts.parquet")
    assert printed["meters"] == METERS == forecasts["meter_id"].nunique() == len(forecasts)
    booster, meta = load_booster(root / "spark" / "model")
    newest = (build_feature_frame(fleet["hourly"]).sort_values("event_timestamp").groupby("meter_id").tail(1)
              .set_index("meter_id"))
    expected = booster.predict(xgb.DMatrix(newest[meta["features"]], feature_names=meta["features"]))
    got = forecasts.set_index("meter_id").loc[newest.index]
    np.testing.assert_allclose(got["forecast_kw"], expected, rtol=1e-5)
    assert (got["origin"] == newest["event_timestamp"]).all()
    # Spark wrote the offline source as a parquet dataset (a directory of part files), not the embedded file
    source = _settings(fleet, "spark").feature_source_path
    assert os.path.isdir(source) and any(name.startswith("part-") for name in os.listdir(source))


def test_engine_is_checked():
    from smart_energy.components.errors import SmartEnergyError
    from smart_energy.components.feast_store import repo_config

    with pytest.raises(SmartEnergyError, match="SE_ENGINE must be embedded or spark"):
        repo_config(replace(Settings(), engine="dask"))
