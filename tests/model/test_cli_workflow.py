"""The command line as a user (and a Katib trial) drives it: features, train with a hold-out and
--register, evaluate the held-out weeks, list, register and promote versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.features import build_feature_frame, FEATURES
from smart_energy.components.ingest import ingest_file, split_raw_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    repo = root / "feature_repo"
    copy_feature_repo(repo)
    return {**os.environ, "SE_FEATURE_REPO": str(repo), "SE_ARTIFACT_URI": (root / "artifacts").as_uri(),
            "ROOT": str(root)}


def cli(env, *args: str) -> dict | list:
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_features_subcommands(env, shared_data, tmp_path):
    head, more = tmp_path / "three_weeks.txt", tmp_path / "three_weeks_and_a_day.txt"
    split_raw_file(shared_data, "2007-01-06 00:00", head, tmp_path / "rest1.txt")
    split_raw_file(shared_data, "2007-01-07 00:00", more, tmp_path / "rest2.txt")
    hourly = ingest_file(head).hourly
    applied = subprocess.run([sys.executable, "-m", "smart_energy.cli", "features", "apply"], capture_output=True,
                             text=True, env=env)
    assert applied.returncode == 0 and "applied" in applied.stderr
    built = cli(env, "features", "build", "--data", str(head))
    assert built["rows"] == len(hourly) + 1 and built["last"] == str(hourly["timestamp"].max() + pd.Timedelta(hours=1))
    offline = pd.read_parquet(built["source"])
    pd.testing.assert_frame_equal(offline[FEATURES], build_feature_frame(hourly)[FEATURES])
    cli(env, "features", "materialize", "--data", str(head))
    # another day of readings arrives: push makes its last hour the online row's latest lag
    pushed = cli(env, "features", "push", "--data", str(more))
    online = cli(env, "features", "online")
    assert online[0]["usage_lag_1h"] == pytest.approx(pushed[0]["usage_lag_1h"])
    assert online[0]["usage_lag_1h"] == pytest.approx(ingest_file(more).hourly["global_active_power_kw"].iloc[-1])


def test_katib_trial_then_register_list_promote(env, shared_data):
    root = env["ROOT"]
    # what the Katib trial runs: train without the last four weeks, score exactly them
    trained = cli(env, "train", "--data", str(shared_data), "--model-dir", f"{root}/m1", "--holdout-weeks", "4",
                  "--max-depth", "4", "--register")
    assert trained["training_window"]["end"] < "2007-02-01"
    scored = cli(env, "evaluate", "--model-dir", f"{root}/m1", "--data", str(shared_data), "--last-weeks", "4")
    assert scored["hours_scored"] == 4 * 7 * 24 and scored["first_hour"].startswith("2007-02-01 00:00")
    assert scored["model_version"] == trained["version"]
    listed = cli(env, "models", "list")
    assert listed["versions"] == [trained["version"]]
    assert listed["candidate"] == trained["version"] and listed["production"] is None
    promoted = cli(env, "models", "promote", "--version", "candidate")
    assert promoted["production"] == trained["version"]
    second = cli(env, "train", "--data", str(shared_data), "--model-dir", f"{root}/m2", "--until", "2007-01-20",
                 "--n-estimators", "20")
    registered = cli(env, "models", "register", "--model-dir", f"{root}/m2", "--stage", "candidate")
    assert registered["version"] == second["version"] != trained["version"]
    listed = cli(env, "models", "list")
    assert sorted(listed["versions"]) == sorted([trained["version"], second["version"]])
    assert (listed["production"], listed["candidate"]) == (trained["version"], second["version"])
