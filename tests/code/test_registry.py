"""Model directories and the versioned registry: integrity, stage pointers, round trips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xgboost as xgb

from smart_energy.components import registry
from smart_energy.components.registry import (
    ModelIntegrityError, clear_stage, download, events, list_versions, load_booster, read_metadata, register, set_stage,
    stage_version, write_model_dir,
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


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A model directory with every kind of file: model.json, metadata.json, drift/ (a real detector), MANIFEST."""
    from smart_energy.components.drift import ks_detector

    path = tmp_path_factory.mktemp("sealed") / "model"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0] * 2), num_boost_round=5)
    write_model_dir(booster, {"name": "energy-forecaster", "version": "v1", "features": ["a", "b", "c"],
                              "conformal_kw": 0.25}, path, detector=ks_detector(x, 0.05))
    return path


def files_of(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def test_the_manifest_lists_every_file_metadata_included(sealed):
    manifest = json.loads((sealed / "MANIFEST.json").read_text())
    listed = set(manifest["files"])
    assert listed == set(files_of(sealed)) - {"MANIFEST.json"}
    assert {"model.json", "metadata.json"} <= listed and any(name.startswith("drift/") for name in listed)
    assert read_metadata(sealed)["conformal_kw"] == 0.25
    assert "files" not in read_metadata(sealed)  # the digests live in the manifest, not in what they cover


def test_a_change_to_any_file_is_refused_naming_it(sealed, tmp_path):
    names = files_of(sealed)
    assert len([n for n in names if n.startswith("drift/")]) >= 2, names
    for name in names:
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(sealed, copy)
        target = copy / name
        data = target.read_bytes()
        if name == "metadata.json":  # what the issue found accepted: calibration and version edited
            meta = json.loads(data)
            target.write_text(json.dumps(meta | {"conformal_kw": 9.0, "version": "v-edited"}, indent=2) + "\n")
        else:
            target.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # one bit of the last byte
        with pytest.raises(ModelIntegrityError) as err:
            read_metadata(copy)
        message = str(err.value)
        assert name in message and "\n" not in message, message
        if name != "MANIFEST.json":
            assert "does not match MANIFEST.json" in message, message
        with pytest.raises(ModelIntegrityError):
            load_booster(copy)


def test_a_metadata_edit_is_refused_with_the_files_key_gone_too(sealed, tmp_path):
    """Deleting metadata's old ``files`` key shrank the check to model.json; now every key is covered."""
    copy = tmp_path / "m"
    shutil.copytree(sealed, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta.pop("files", None)
    meta.pop("sha256")
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelIntegrityError, match="metadata.json: sha256 .* does not match MANIFEST.json"):
        read_metadata(copy)


def test_an_added_or_deleted_file_is_refused(sealed, tmp_path):
    added = tmp_path / "added"
    shutil.copytree(sealed, added)
    (added / "drift" / "planted.json").write_text("{}")
    with pytest.raises(ModelIntegrityError, match="drift/planted.json: not listed in MANIFEST.json"):
        read_metadata(added)
    for name in files_of(sealed):
        if name in ("MANIFEST.json", "model.json", "metadata.json"):
            continue
        gone = tmp_path / ("gone_" + name.replace("/", "_"))
        shutil.copytree(sealed, gone)
        (gone / name).unlink()
        with pytest.raises(ModelIntegrityError, match=f"{name}: listed in MANIFEST.json but missing"):
            read_metadata(gone)


def test_a_missing_or_incomplete_manifest_is_refused(sealed, tmp_path):
    missing = tmp_path / "missing"
    shutil.copytree(sealed, missing)
    (missing / "MANIFEST.json").unlink()
    with pytest.raises(ModelIntegrityError, match="MANIFEST.json: missing.*retrain"):
        read_metadata(missing)
    incomplete = tmp_path / "incomplete"
    shutil.copytree(sealed, incomplete)
    manifest = json.loads((incomplete / "MANIFEST.json").read_text())
    drift_file = next(n for n in manifest["files"] if n.startswith("drift/"))
    for dropped, expect in ((drift_file, f"{drift_file}: not listed in MANIFEST.json"),
                            ("metadata.json", "metadata.json: not listed in MANIFEST.json")):
        partial = {**manifest, "files": {k: v for k, v in manifest["files"].items() if k != dropped}}
        (incomplete / "MANIFEST.json").write_text(json.dumps(partial))
        with pytest.raises(ModelIntegrityError, match=expect):
            read_metadata(incomplete)
    for garbage in ("not json", "[]", '{"files": {"model.json": "abc"}}'):
        (incomplete / "MANIFEST.json").write_text(garbage)
        with pytest.raises(ModelIntegrityError, match="MANIFEST.json"):
            read_metadata(incomplete)


def test_metadata_written_before_manifests_is_refused_with_what_to_do(sealed, tmp_path):
    """The layout of the previous release: ``files`` and ``sha256`` in metadata.json, no manifest."""
    old = tmp_path / "old"
    shutil.copytree(sealed, old)
    (old / "MANIFEST.json").unlink()
    meta = json.loads((old / "metadata.json").read_text())
    meta["files"] = {n: registry.sha256_of(old / n) for n in files_of(old) if n != "metadata.json"}
    (old / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelIntegrityError, match="written before manifests.*smart-energy train"):
        read_metadata(old)
    with pytest.raises(ModelIntegrityError, match="written before manifests"):
        register(open_store((tmp_path / "store").as_uri()), old)


def test_rewriting_a_sealed_directory_needs_a_new_manifest(sealed, tmp_path):
    """What a deliberate change (a test's relabelled copy) does: ``write_manifest`` seals it again."""
    copy = tmp_path / "relabelled"
    shutil.copytree(sealed, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps(meta | {"version": "v-relabelled"}))
    with pytest.raises(ModelIntegrityError):
        read_metadata(copy)
    digest = registry.write_manifest(copy)
    assert read_metadata(copy, manifest_sha256=digest)["version"] == "v-relabelled"
    with pytest.raises(ModelIntegrityError, match="the registry recorded"):
        read_metadata(copy, manifest_sha256="0" * 64)


def test_the_store_copy_is_checked_against_the_version_record_and_the_pointer(sealed, tmp_path):
    """Tampering in the registry: a version's files, its manifest (even rewritten to match), its record, and the
    stage pointer (its digest, or its version moved to another version) are each refused on download."""
    name = "energy-forecaster"

    def fresh(tag):
        store = open_store((tmp_path / f"store-{tag}").as_uri())
        register(store, sealed, stage="candidate")
        set_stage(store, name, "production", "v1")
        return store, tmp_path / f"store-{tag}" / "models" / name

    store, root = fresh("ok")
    record = json.loads(store.get_bytes(f"models/{name}/versions/v1.json"))
    pointer = json.loads(store.get_bytes(f"models/{name}/production.json"))
    assert record["manifest_sha256"] == pointer["manifest_sha256"] == registry.manifest_digest(sealed)
    assert read_metadata(download(store, name, "production", tmp_path / "dl-ok"))["version"] == "v1"
    assert list_versions(store, name) == ["v1"]

    # a file of the version, then the manifest rewritten to agree with it: the record still knows
    store, root = fresh("file")
    meta = json.loads((root / "v1" / "metadata.json").read_text())
    (root / "v1" / "metadata.json").write_text(json.dumps(meta | {"conformal_kw": 9.0}))
    with pytest.raises(ModelIntegrityError, match="metadata.json: sha256 .* does not match MANIFEST.json"):
        download(store, name, "v1", tmp_path / "dl-file")
    # resealed by hand, as someone with write access to the bucket could
    scratch = tmp_path / "scratch"
    download_raw(store, name, "v1", scratch)
    registry.write_manifest(scratch)
    (root / "v1" / "MANIFEST.json").write_bytes((scratch / "MANIFEST.json").read_bytes())
    for ref in ("v1", "production", "candidate"):
        with pytest.raises(ModelIntegrityError, match="MANIFEST.json: sha256 .* is not the .* the registry recorded"):
            download(store, name, ref, tmp_path / f"dl-reseal-{ref}")

    # the version record itself
    store, root = fresh("record")
    (root / "versions" / "v1.json").write_text(json.dumps(record | {"manifest_sha256": "1" * 64}))
    with pytest.raises(ModelIntegrityError, match="the registry recorded"):
        download(store, name, "v1", tmp_path / "dl-record")
    with pytest.raises(ModelIntegrityError, match="production.json .* records manifest"):
        download(store, name, "production", tmp_path / "dl-record-stage")
    (root / "versions" / "v1.json").write_text("{}")
    with pytest.raises(ModelIntegrityError, match="not a version record"):
        download(store, name, "v1", tmp_path / "dl-record-empty")

    # the pointer: its digest, its digest removed, its version moved to another registered version
    store, root = fresh("pointer")
    for changed in (pointer | {"manifest_sha256": "2" * 64}, {k: v for k, v in pointer.items()
                                                              if k != "manifest_sha256"}):
        (root / "production.json").write_text(json.dumps(changed))
        with pytest.raises(ModelIntegrityError, match="production.json .* records manifest"):
            download(store, name, "production", tmp_path / "dl-pointer")
    other = tmp_path / "v2"
    shutil.copytree(sealed, other)
    meta = json.loads((other / "metadata.json").read_text())
    (other / "metadata.json").write_text(json.dumps(meta | {"version": "v2"}))
    registry.write_manifest(other)
    register(store, other, stage=None)
    (root / "production.json").write_text(json.dumps(pointer | {"version": "v2"}))
    with pytest.raises(ModelIntegrityError, match="production.json .* records manifest .* for v2"):
        download(store, name, "production", tmp_path / "dl-moved")
    (root / "production.json").write_text("not json")
    with pytest.raises(ModelIntegrityError, match="production.json .* not a stage pointer"):
        download(store, name, "production", tmp_path / "dl-garbage")

    # a file added to, or deleted from, the version folder
    store, root = fresh("added")
    (root / "v1" / "drift" / "planted.npy").write_bytes(b"x")
    with pytest.raises(ModelIntegrityError, match="planted.npy: not listed in MANIFEST.json"):
        download(store, name, "production", tmp_path / "dl-added")
    store, root = fresh("deleted")
    victim = next(p for p in sorted((root / "v1" / "drift").rglob("*")) if p.is_file())
    victim.unlink()
    with pytest.raises(ModelIntegrityError, match="listed in MANIFEST.json but missing"):
        download(store, name, "production", tmp_path / "dl-deleted")
    store, root = fresh("no-manifest")
    (root / "v1" / "MANIFEST.json").unlink()
    with pytest.raises(ModelIntegrityError, match="MANIFEST.json in .* is missing; refusing to point"):
        set_stage(store, name, "production", "v1")
    with pytest.raises(ModelIntegrityError, match="MANIFEST.json: missing"):
        download(store, name, "production", tmp_path / "dl-no-manifest")


def download_raw(store, name, version, dest):
    prefix = f"models/{name}/{version}/"
    for key in store.list(prefix.rstrip("/")):
        (dest / key[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
        (dest / key[len(prefix):]).write_bytes(store.get_bytes(key))


def test_a_version_is_never_replaced_nor_pointed_at_unregistered(sealed, tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    assert register(store, sealed) == "v1"
    assert register(store, sealed) == "v1"  # the same files again: idempotent
    changed = tmp_path / "changed"
    shutil.copytree(sealed, changed)
    meta = json.loads((changed / "metadata.json").read_text())
    (changed / "metadata.json").write_text(json.dumps(meta | {"conformal_kw": 1.0}))
    registry.write_manifest(changed)
    with pytest.raises(ModelIntegrityError, match="already registered .* with other files"):
        register(store, changed)
    # a version folder copied into the store by hand, without its record
    by_hand = tmp_path / "store" / "models" / "energy-forecaster" / "v3"
    shutil.copytree(sealed, by_hand)
    with pytest.raises(ModelIntegrityError, match="no version record"):
        set_stage(store, "energy-forecaster", "production", "v3")
    with pytest.raises(ModelIntegrityError, match="no version record"):
        download(store, "energy-forecaster", "v3", tmp_path / "dl")
    assert list_versions(store, "energy-forecaster") == ["v1"]


def test_an_interrupted_upload_can_be_registered_again(sealed, tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    folder = tmp_path / "store" / "models" / "energy-forecaster" / "v1"
    folder.mkdir(parents=True)
    (folder / "model.json").write_bytes((sealed / "model.json").read_bytes())  # the upload stopped here
    assert list_versions(store, "energy-forecaster") == []
    assert register(store, sealed) == "v1"
    assert read_metadata(download(store, "energy-forecaster", "candidate", tmp_path / "dl"))["version"] == "v1"


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
    assert {"model.json", "metadata.json", "MANIFEST.json"} <= {p.name for p in mnt.iterdir()}
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
