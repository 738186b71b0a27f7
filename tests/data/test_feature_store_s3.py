"""Feast's offline store on S3 (MinIO in a cluster; here moto's S3 server on 127.0.0.1) via the endpoint override."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.feast_store import historical_features, online_features, open_feature_store, publish
from smart_energy.components.features import FEATURES, build_feature_frame
from smart_energy.components.ingest import ingest_file
from smart_energy.components.settings import Settings
from helpers import free_port


@pytest.fixture
def s3_env(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_REGION": "us-east-1", "SE_FEATURE_SOURCE": "s3://features/offline/hourly_features.parquet"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # feature_definitions.py reads the settings from the environment, as in a pod
    yield env
    server.stop()


def test_offline_parquet_on_s3_trains_and_materialises(s3_env, feature_repo_copy, shared_data):
    settings = Settings.from_env({**s3_env, "SE_FEATURE_REPO": str(feature_repo_copy)})
    from smart_energy.components.storage import open_store

    open_store("s3://features/offline", settings).ensure_bucket()
    hourly = ingest_file(shared_data).hourly.iloc[: 24 * 12]
    store = open_feature_store(settings)
    features = publish(hourly, store, settings)
    assert not (feature_repo_copy / "data" / "hourly_features.parquet").exists()  # it went to S3
    assert open_store("s3://features/offline", settings).exists("hourly_features.parquet")
    last = features["event_timestamp"].max()
    offline = historical_features(store, pd.DataFrame({"meter_id": ["household-1"], "event_timestamp": [last]}))
    online = online_features(store, ["household-1"])
    np.testing.assert_allclose(online[FEATURES].to_numpy(float), offline[FEATURES].to_numpy(float), rtol=1e-12)
    direct = build_feature_frame(hourly).iloc[[-1]]  # and both equal the feature function's own row
    np.testing.assert_allclose(online[FEATURES].to_numpy(float), direct[FEATURES].to_numpy(float), rtol=1e-12)


def test_push_with_an_s3_source_updates_the_online_store(s3_env, feature_repo_copy, shared_data):
    from smart_energy.components.feast_store import push
    from smart_energy.components.storage import open_store

    settings = Settings.from_env({**s3_env, "SE_FEATURE_REPO": str(feature_repo_copy)})
    open_store("s3://features/offline", settings).ensure_bucket()
    hourly = ingest_file(shared_data).hourly.iloc[: 24 * 12]
    store = open_feature_store(settings)
    publish(hourly.iloc[:-1], store, settings)
    push(store, hourly)
    assert online_features(store, ["household-1"])["usage_lag_1h"].iloc[0] == pytest.approx(
        hourly["global_active_power_kw"].iloc[-1])
