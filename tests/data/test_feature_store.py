"""The Feast repo: offline point-in-time rows equal the online ones (no train/serve skew), on SQLite and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.feast_store import FeatureStoreError, historical_features, online_features, open_feature_store, publish, push
from smart_energy.components.features import FEATURES, build_feature_frame
from smart_energy.components.ingest import ingest_file
from helpers import free_port, start, stop


@pytest.fixture(scope="module")
def hourly(shared_data):
    """Three weeks of the real slice (enough for the 168 h lags)."""
    h = ingest_file(shared_data).hourly
    return h[h["timestamp"] < pd.Timestamp("2007-01-06", tz="UTC")].reset_index(drop=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    proc = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], log)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            import time

            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    stop(proc)


def assert_online_equals_offline(settings, hourly):
    store = open_feature_store(settings)
    features = publish(hourly, store, settings)
    last = features["event_timestamp"].max()
    assert last == hourly["timestamp"].max() + pd.Timedelta(hours=1)
    online = online_features(store, ["household-1"])
    offline = historical_features(store, pd.DataFrame({"meter_id": ["household-1"], "event_timestamp": [last]}))
    assert list(online.columns[1:]) == FEATURES
    np.testing.assert_allclose(online[FEATURES].to_numpy(float), offline[FEATURES].to_numpy(float), rtol=1e-12)
    # and both equal the feature function's own row for that hour
    direct = build_feature_frame(hourly).iloc[[-1]]
    np.testing.assert_allclose(online[FEATURES].to_numpy(float), direct[FEATURES].to_numpy(float), rtol=1e-12)
    return store


def test_online_equals_offline_sqlite(isolated_settings, hourly):
    assert_online_equals_offline(isolated_settings, hourly)


def test_online_equals_offline_redis(isolated_settings, hourly, redis_server):
    settings = replace(isolated_settings, online_store="redis", redis_connection=redis_server)
    assert_online_equals_offline(settings, hourly)
    import redis

    host, port = redis_server.split(":")
    assert redis.Redis(host=host, port=int(port)).dbsize() > 0  # the rows are really in Redis


def test_point_in_time_rows_use_only_earlier_hours(isolated_settings, hourly):
    store = open_feature_store(isolated_settings)
    publish(hourly, store, isolated_settings, materialize=False)
    hours = hourly["timestamp"].iloc[200:203]
    got = historical_features(store, pd.DataFrame({"meter_id": "household-1", "event_timestamp": hours}))
    usage = hourly.set_index("timestamp")["global_active_power_kw"]
    for _, row in got.iterrows():
        assert row["usage_lag_1h"] == pytest.approx(usage[row["event_timestamp"] - pd.Timedelta(hours=1)])
        assert row["usage_lag_24h"] == pytest.approx(usage[row["event_timestamp"] - pd.Timedelta(hours=24)])
        assert row["hour_of_day"] == row["event_timestamp"].hour


def test_push_updates_the_online_store(isolated_settings, hourly):
    store = open_feature_store(isolated_settings)
    publish(hourly.iloc[:-1], store, isolated_settings)
    before = online_features(store, ["household-1"])
    pushed = push(store, hourly)
    after = online_features(store, ["household-1"])
    assert after["usage_lag_1h"].iloc[0] == pytest.approx(hourly["global_active_power_kw"].iloc[-1])
    assert after["usage_lag_1h"].iloc[0] != before["usage_lag_1h"].iloc[0]
    assert len(pushed) == 1


def test_unknown_meter_is_a_clear_error(isolated_settings, hourly):
    store = open_feature_store(isolated_settings)
    publish(hourly, store, isolated_settings)
    with pytest.raises(FeatureStoreError, match="no online features for meter\\(s\\) nobody"):
        online_features(store, ["household-1", "nobody"])


def test_feast_cli_apply_and_materialize_in_the_repo(isolated_settings, hourly):
    """What a Feast user does by hand in feature_repo/ works on our repo."""
    repo = isolated_settings.feature_repo
    (repo / "data").mkdir(exist_ok=True)
    build_feature_frame(hourly).to_parquet(repo / "data" / "hourly_features.parquet")
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    env = {**os.environ, "SE_FEATURE_REPO": str(repo)}
    applied = subprocess.run([feast, "apply"], cwd=repo, capture_output=True, text=True, env=env)
    assert applied.returncode == 0, applied.stderr
    assert "hourly_lags_fv" in applied.stdout
    listed = subprocess.run([feast, "feature-views", "list"], cwd=repo, capture_output=True, text=True, env=env)
    assert {"hourly_lags_fv", "hourly_rolling_fv", "submeter_shares_fv", "calendar_fv"} <= set(listed.stdout.split())
    mat = subprocess.run([feast, "materialize", "2006-12-16T00:00:00", "2007-01-07T00:00:00"], cwd=repo,
                         capture_output=True, text=True, env=env)
    assert mat.returncode == 0, mat.stderr
    assert (repo / "data" / "online_store.db").stat().st_size > 0


def test_commands_work_from_any_directory(isolated_settings, hourly, tmp_path):
    """Registry, offline parquet and online store are the repo's, whatever the working directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "three_weeks.parquet"
    hourly.to_parquet(data)
    env = {**os.environ, "SE_FEATURE_REPO": str(isolated_settings.feature_repo)}
    cli = [sys.executable, "-m", "smart_energy.cli", "features"]
    built = subprocess.run([*cli, "materialize", "--data", str(data)], cwd=elsewhere, capture_output=True,
                           text=True, env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    online = subprocess.run([*cli, "online"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert online.returncode == 0, online.stderr[-2000:]
    assert json.loads(online.stdout)[0]["usage_lag_1h"] == pytest.approx(hourly["global_active_power_kw"].iloc[-1])
    repo_data = isolated_settings.feature_repo / "data"
    assert {"registry.db", "online_store.db", "hourly_features.parquet"} <= {p.name for p in repo_data.iterdir()}
    assert list(elsewhere.iterdir()) == []


def test_registry_written_without_file_formats_is_replaced(isolated_settings, hourly):
    """A registry from an older version (FileSource without a format) would crash Feast 0.47's comparison."""
    from smart_energy.components.feast_store import definitions

    store = open_feature_store(isolated_settings)
    old = definitions(isolated_settings)
    for obj in old:
        if hasattr(obj, "batch_source") and hasattr(obj.batch_source, "file_options"):
            obj.batch_source.file_options.file_format = None
    store.apply(old)
    assert all(v.batch_source.file_format is None for v in open_feature_store(isolated_settings).list_feature_views())
    store = open_feature_store(isolated_settings)
    publish(hourly, store, isolated_settings)
    assert all(v.batch_source.file_format is not None for v in store.list_feature_views())
    assert online_features(store, ["household-1"])["usage_lag_1h"].notna().all()
