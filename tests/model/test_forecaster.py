"""The forecaster on the real slice: trained on the weeks before the last four, scored on the last four."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.evaluate import evaluate
from smart_energy.components.features import FEATURES, FeatureError
from smart_energy.components.ingest import split_raw_file
from smart_energy.components.registry import ModelIntegrityError, load_booster, read_metadata
from smart_energy.components.settings import Settings
from smart_energy.components.train import train

CUT = "2007-02-01"


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    repo = tmp / "feature_repo"
    copy_feature_repo(repo)
    settings = Settings(feature_repo=repo, artifact_uri=(tmp / "artifacts").as_uri())
    history, last4w = tmp / "history.txt", tmp / "last4w.txt"
    split_raw_file(shared_data, CUT, history, last4w)
    metadata = train(history, tmp / "model", settings)
    return {"tmp": tmp, "settings": settings, "history": history, "last4w": last4w,
            "model_dir": tmp / "model", "metadata": metadata}


def test_beats_every_naive_baseline_on_the_last_four_weeks(trained):
    result = evaluate(trained["model_dir"], trained["last4w"], trained["history"])
    assert result["hours_scored"] >= 27 * 24  # four weeks, complete hours with a week of history
    assert result["first_hour"].startswith("2007-02-01")
    for name in ("persistence", "seasonal_24h", "seasonal_168h"):
        assert result["mae_kw"] < result["baselines"][name]["mae_kw"], (name, result)
    assert 0.1 < result["mae_kw"] < 1.0


def test_metadata_records_window_features_and_hash(trained):
    meta = read_metadata(trained["model_dir"])
    assert meta["features"] == FEATURES
    assert meta["training_window"]["end"] < CUT
    assert meta["library_versions"]["xgboost"] == xgb.__version__
    assert (trained["model_dir"] / "model.json").read_text().startswith("{")  # XGBoost JSON, not UBJSON
    assert (trained["model_dir"] / "drift" / "x_ref.npy").is_file()
    # the refit starts at the median of the kW it learns from, and the booster file carries that start
    from smart_energy.components.features import labels
    from smart_energy.components.ingest import load_hourly

    median = float(np.median(labels(load_hourly(trained["history"]))["target_kw"]))
    assert meta["params"]["base_score"] == pytest.approx(median)
    saved = json.loads((trained["model_dir"] / "model.json").read_text())["learner"]["learner_model_param"]
    assert float(saved["base_score"].strip("[]")) == pytest.approx(median, rel=1e-6)


def test_training_rows_come_from_feast_point_in_time(trained):
    """The model's input for an hour is the same row offline (training), online (serving) and from the
    feature function: the same forecast to the last bit (no train/serve skew)."""
    from smart_energy.components.feast_store import historical_features, online_features, open_feature_store
    from smart_energy.components.features import build_feature_frame
    from smart_energy.components.ingest import load_hourly

    store = open_feature_store(trained["settings"])
    booster, meta = load_booster(trained["model_dir"])
    first_unseen = pd.Timestamp(CUT, tz="UTC")  # the hour after the training data: what a server answers for
    offline = historical_features(store, pd.DataFrame({"meter_id": ["household-1"], "event_timestamp": [first_unseen]}))
    online = online_features(store, ["household-1"])
    direct = build_feature_frame(load_hourly(trained["history"]))
    direct = direct[direct["event_timestamp"] == first_unseen]
    feats = meta["features"]
    forecasts = [booster.predict(xgb.DMatrix(rows[feats].astype(float), feature_names=feats))[0]
                 for rows in (offline, online, direct)]
    assert np.isfinite(forecasts[0]) and forecasts[0] == forecasts[1] == forecasts[2]
    np.testing.assert_array_equal(offline[feats].to_numpy(float), online[feats].to_numpy(float))


def test_evaluate_cli_prints_json_with_baselines(trained):
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "evaluate", "--model-dir",
                           str(trained["model_dir"]), "--data", str(trained["last4w"]), "--history",
                           str(trained["history"])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["baselines"]) >= {"persistence", "seasonal_24h", "seasonal_168h"}
    assert {"hours_scored", "mae_kw", "rmse_kw"} <= set(out)


def test_tampered_model_refuses_to_load(trained, tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(trained["model_dir"], bad)
    text = (bad / "model.json").read_text()
    (bad / "model.json").write_text(text.replace('"base_score"', '"base_score" ', 1))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_booster(bad)
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "evaluate", "--model-dir", str(bad),
                           "--data", str(trained["last4w"]), "--history", str(trained["history"])],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "refusing to load" in proc.stderr


def test_too_little_history_is_a_clear_error(trained, tmp_path):
    short_hist, short = tmp_path / "h.txt", tmp_path / "short.txt"
    split_raw_file(trained["last4w"], "2007-02-04", short_hist, short)
    with pytest.raises(FeatureError, match="complete hours; need at least"):
        evaluate(trained["model_dir"], short_hist)
