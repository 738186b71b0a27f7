"""The fleet's batch-scoring pipeline: compiled (committed, not stale) with a ParallelFor over meter shards whose
forecasts are collected into one; and the sharded scoring it runs gives exactly the unsharded forecasts."""

from __future__ import annotations

import sys
import zlib

import pandas as pd
import pytest
import yaml

from helpers import REPO
from smart_energy.components.batch import batch_predict, shard_of
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.fleet import ingest_fleet, write_fleet_outputs
from smart_energy.components.images import IMAGE
from smart_energy.components.settings import Settings
from smart_energy.components.train import train
from smart_energy.pipelines.batch_pipeline import PARALLELISM
from smart_energy.pipelines.cli import BATCH_COMPILED, compile_batch_pipeline

sys.path.insert(0, str(REPO))
from benchmarks.make_fleet import make_fleet  # noqa: E402


def test_committed_batch_pipeline_is_not_stale(tmp_path):
    assert compile_batch_pipeline(tmp_path / "b.yaml").read_text() == BATCH_COMPILED.read_text(), \
        "run `smart-energy pipeline compile`"


def test_shards_fan_out_in_parallel_and_are_collected():
    spec = next(yaml.safe_load_all(BATCH_COMPILED.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    loop = tasks["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--shard-plan-Output"
    assert loop["iteratorPolicy"]["parallelismLimit"] == PARALLELISM
    assert "shard-plan" in loop["dependentTasks"]
    assert tasks["shard-plan"]["dependentTasks"] == ["publish-fleet-features"]  # features published once, first
    parts = tasks["merge-forecasts"]["inputs"]["artifacts"]["parts"]["taskOutputArtifact"]
    assert parts == {"outputArtifactKey": "pipelinechannel--score-shard-forecasts", "producerTask": "for-loop-1"}
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}


def test_shard_of_is_stable_and_spreads_meters():
    meters = [f"meter-{i:05d}" for i in range(1000)]
    counts = pd.Series([shard_of(m, 8) for m in meters]).value_counts()
    assert len(counts) == 8 and counts.min() > 80
    assert [shard_of(m, 8) for m in meters[:5]] == [zlib.crc32(m.encode()) % 8 for m in meters[:5]]


@pytest.mark.slow
def test_sharded_scoring_equals_one_pass(shared_data, tmp_path):
    make_fleet(shared_data, tmp_path / "meters", meters=12, days=9)
    write_fleet_outputs(ingest_fleet(tmp_path / "meters"), tmp_path / "ingest")
    settings = Settings(feature_repo=copy_feature_repo(tmp_path / "repo"), artifact_uri=(tmp_path / "a").as_uri())
    train(tmp_path / "ingest", tmp_path / "model", settings, params={"num_boost_round": 30})  # publishes the features
    whole = batch_predict(tmp_path / "model", tmp_path / "ingest", tmp_path / "all.parquet", settings,
                          publish_features=False)
    assert whole["meters"] == 12
    parts = [batch_predict(tmp_path / "model", tmp_path / "ingest", tmp_path / f"s{k}.parquet", settings,
                           publish_features=False, shard=(k, 4)) for k in range(4)]
    assert sum(p["meters"] for p in parts) == 12
    merged = pd.concat([pd.read_parquet(tmp_path / f"s{k}.parquet") for k in range(4)]).sort_values("meter_id")
    pd.testing.assert_frame_equal(merged.reset_index(drop=True),
                                  pd.read_parquet(tmp_path / "all.parquet").sort_values("meter_id").reset_index(drop=True))
