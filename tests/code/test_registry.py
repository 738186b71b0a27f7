"""Model directories and the versioned registry: integrity, stage pointers, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from smart_energy.components.registry import (
    ModelIntegrityError, clear_stage, download, events, list_versions, load_booster, register, set_stage, stage_version,
    write_model_dir,
)
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.storage import ArtifactNotFound, open_store


def tiny_model_dir(path, version):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0] * 2), num_boost_round=5)
    write_model_dir(booster, {"name": "energy-forecaster", "version": version, "features": ["a", "b", "c"]}, path)
    return path


def test_register_promote_download(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    v1 = register(store, tiny_model_dir(tmp_path / "m1", "v1"))
    v2 = register(store, tiny_model_dir(tmp_path / "m2", "v2"))
    assert (v1, v2) == ("v1", "v2")
    assert stage_version(store, "energy-forecaster", "candidate") == "v2"
    assert stage_version(store, "energy-forecaster", "production") is None
    set_stage(store, "energy-forecaster", "production", "v1")
    assert list_versions(store, "energy-forecaster") == ["v1", "v2"]
    got = download(store, "energy-forecaster", "production", tmp_path / "dl")
    booster, meta = load_booster(got)
    assert meta["version"] == "v1" and meta["features"] == ["a", "b", "c"]
    pointer = json.loads(store.get_bytes("models/energy-forecaster/production.json"))
    assert pointer["version"] == "v1" and pointer["previous"] is None
    set_stage(store, "energy-forecaster", "production", "v2", reason="better on the hold-out")
    pointer = json.loads(store.get_bytes("models/energy-forecaster/production.json"))
    assert (pointer["version"], pointer["previous"], pointer["reason"]) == ("v2", "v1", "better on the hold-out")
    clear_stage(store, "energy-forecaster", "candidate", "promoted")
    assert stage_version(store, "energy-forecaster", "candidate") is None
    moves = [(e["action"], e["version"]) for e in events(store, "energy-forecaster")]
    assert moves == [("set-candidate", "v1"), ("set-candidate", "v2"), ("set-production", "v1"),
                     ("set-production", "v2"), ("clear-candidate", "v2")]
    assert list_versions(store, "energy-forecaster") == ["v1", "v2"]  # the history is not a version


def test_unknown_version_and_stage_are_clear_errors(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(ArtifactNotFound, match="no version 'v9'"):
        set_stage(store, "energy-forecaster", "production", "v9")
    with pytest.raises(ArtifactNotFound, match="no production version"):
        download(store, "energy-forecaster", "production", tmp_path / "dl")


def test_sha_mismatch_and_missing_files(tmp_path):
    path = tiny_model_dir(tmp_path / "m", "v1")
    meta = json.loads((path / "metadata.json").read_text())
    meta["sha256"] = "0" * 64
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelIntegrityError, match="does not match metadata"):
        load_booster(path)
    (path / "model.json").unlink()
    with pytest.raises(ModelIntegrityError, match="not a model directory"):
        load_booster(path)


def test_serving_uri_is_the_version_folder_the_predictor_loads(tmp_path):
    """Our ServingRuntime's storage initializer copies every object under storageUri into /mnt/models; the
    predictor then needs model.json, metadata.json (version, features, calibration, digests) and drift/."""
    from smart_energy.components.registry import serving_uri
    from smart_energy.serving.predictor.model import EnergyPredictor

    store = open_store((tmp_path / "store").as_uri())
    register(store, tiny_model_dir(tmp_path / "m1", "v1"))
    uri = serving_uri(store.uri, "energy-forecaster", "v1")
    assert uri == f"{store.uri}/models/energy-forecaster/v1"
    prefix = uri[len(store.uri) + 1:] + "/"
    mnt = tmp_path / "mnt" / "models"
    for key in store.list("models/energy-forecaster"):
        if key.startswith(prefix):  # what the storage initializer downloads, paths kept below the prefix
            (mnt / key[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
            (mnt / key[len(prefix):]).write_bytes(store.get_bytes(key))
    assert {"model.json", "metadata.json"} <= {p.name for p in mnt.iterdir()}
    predictor = EnergyPredictor("energy-forecaster", str(mnt))
    assert predictor.load() and predictor.version == "v1"


def test_resolve_model_dir_from_path_uri_stage_and_default(tmp_path):
    from dataclasses import replace

    from smart_energy.components.registry import resolve_model_dir
    from smart_energy.components.settings import Settings

    store = open_store((tmp_path / "store").as_uri())
    local = tiny_model_dir(tmp_path / "m1", "v1")
    register(store, local)
    set_stage(store, "energy-forecaster", "production", "v1")
    assert resolve_model_dir(local, tmp_path / "unused") == local
    by_version = resolve_model_dir(f"{store.uri}/models/energy-forecaster/v1", tmp_path / "a")
    by_stage = resolve_model_dir(f"{store.uri}/models/energy-forecaster/production", tmp_path / "b")
    settings = replace(Settings(), artifact_uri=store.uri)
    default = resolve_model_dir(None, tmp_path / "c", settings)
    for got in (by_version, by_stage, default):
        assert json.loads((got / "metadata.json").read_text())["version"] == "v1"
    with pytest.raises(SmartEnergyError, match="must look like"):
        resolve_model_dir(f"{store.uri}/somewhere/else", tmp_path / "d")
