"""Versioned model registry on the artifact store.

A model directory (what ``train --model-dir`` writes, what the predictor loads) holds:

- ``model.json``      the XGBoost booster in XGBoost's own JSON format
- ``metadata.json``   version, training window, feature order, metrics, library versions, and the sha256
                      of every other file of the directory (``files``; ``sha256`` is model.json's)
- ``drift/``          the Alibi Detect drift detector fitted on the training window (optional)

In the store a version lives at ``models/<name>/<version>/...``; ``models/<name>/production.json``
and ``models/<name>/candidate.json`` point at versions (with the previous one and the reason) and are
replaced atomically; ``models/<name>/events/`` keeps every move, oldest first, with its reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.storage import ArtifactNotFound, ArtifactStore

MODEL_FILE = "model.json"
METADATA_FILE = "metadata.json"
DRIFT_DIR = "drift"
STAGES = ("production", "candidate")


class ModelIntegrityError(SmartEnergyError):
    """A model directory whose files do not match its metadata."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(model_dir: str | Path) -> dict[str, str]:
    """sha256 of every file of a model directory except ``metadata.json``, by path relative to it."""
    model_dir = Path(model_dir)
    return {p.relative_to(model_dir).as_posix(): sha256_of(p) for p in _files(model_dir)
            if p.relative_to(model_dir).as_posix() != METADATA_FILE}


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """The metadata of a model directory, after checking every file's sha256 against it.

    Metadata written before ``files`` existed covers ``model.json`` only.
    """
    model_dir = Path(model_dir)
    meta_path, model_path = model_dir / METADATA_FILE, model_dir / MODEL_FILE
    if not meta_path.is_file() or not model_path.is_file():
        raise ModelIntegrityError(f"{model_dir}: not a model directory (needs {MODEL_FILE} and {METADATA_FILE})")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelIntegrityError(f"{meta_path}: invalid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise ModelIntegrityError(f"{meta_path}: not a metadata object; refusing to load")
    listed = metadata.get("files")
    if listed is not None and not isinstance(listed, dict):
        raise ModelIntegrityError(f"{meta_path}: 'files' is not an object; refusing to load")
    expected = {**(listed or {}), MODEL_FILE: metadata.get("sha256")}
    actual = file_digests(model_dir) if listed is not None else {MODEL_FILE: sha256_of(model_path)}
    for name in sorted(set(expected) | set(actual)):
        path = model_dir / name
        if name not in actual:
            raise ModelIntegrityError(f"{path}: listed in {METADATA_FILE} but missing; refusing to load")
        if name not in expected:
            raise ModelIntegrityError(f"{path}: not listed in {METADATA_FILE}; refusing to load")
        if expected[name] != actual[name]:
            raise ModelIntegrityError(f"{path}: sha256 {actual[name][:12]}… does not match metadata "
                                      f"{str(expected[name])[:12]}…; refusing to load")
    return metadata


def load_booster(model_dir: str | Path):
    """The verified XGBoost booster and its metadata."""
    import xgboost as xgb

    from smart_energy.components.threads import xgb_threads

    metadata = read_metadata(model_dir)
    booster = xgb.Booster()
    booster.load_model(str(Path(model_dir) / MODEL_FILE))
    booster.set_param({"nthread": xgb_threads()})  # the CPU limit, not the node's cores
    return booster, metadata


def _files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file())


def register(store: ArtifactStore, model_dir: str | Path, stage: str | None = "candidate") -> str:
    """Upload a verified model directory as ``models/<name>/<version>/`` and point ``stage`` at it.

    Returns:
        The version registered.
    """
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    name, version = metadata["name"], metadata["version"]
    # metadata last: a version whose metadata.json is present is complete
    for path in sorted(_files(model_dir), key=lambda p: p.name == METADATA_FILE):
        store.put_bytes(f"models/{name}/{version}/{path.relative_to(model_dir)}", path.read_bytes())
    if stage:
        set_stage(store, name, stage, version)
    return version


def set_stage(store: ArtifactStore, name: str, stage: str, version: str, reason: str | None = None) -> None:
    """Point ``stage`` (production or candidate) at ``version``; one atomic write, and an event saying why."""
    if stage not in STAGES:
        raise SmartEnergyError(f"unknown stage {stage!r}; expected one of {STAGES}")
    if not store.exists(f"models/{name}/{version}/{METADATA_FILE}"):
        raise ArtifactNotFound(f"model {name} has no version {version!r}")
    previous = stage_version(store, name, stage)
    pointer = {"version": version, "previous": previous, "reason": reason, "at": _now()}
    store.put_bytes(f"models/{name}/{stage}.json", json.dumps(pointer).encode())
    record_event(store, name, {"action": f"set-{stage}", "version": version, "previous": previous, "reason": reason})


def clear_stage(store: ArtifactStore, name: str, stage: str, reason: str) -> None:
    """Point ``stage`` at nothing (a candidate rolled back or promoted), keeping who it was and why."""
    previous = stage_version(store, name, stage)
    store.put_bytes(f"models/{name}/{stage}.json",
                    json.dumps({"version": None, "previous": previous, "reason": reason, "at": _now()}).encode())
    record_event(store, name, {"action": f"clear-{stage}", "version": previous, "reason": reason})


def stage_version(store: ArtifactStore, name: str, stage: str) -> str | None:
    """The version ``stage`` points at, or None."""
    try:
        return json.loads(store.get_bytes(f"models/{name}/{stage}.json"))["version"]
    except ArtifactNotFound:
        return None


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def record_event(store: ArtifactStore, name: str, event: dict[str, Any]) -> str:
    """Append one event (what moved, and why) to the model's history: ``models/<name>/events/<time>.json``."""
    event = {"at": _now(), **event}
    stamp = event["at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    seq = len(store.list(f"models/{name}/events"))
    key = f"models/{name}/events/{stamp}-{seq:06d}.json"
    store.put_bytes(key, json.dumps(event, default=str).encode())
    return key


def events(store: ArtifactStore, name: str) -> list[dict[str, Any]]:
    """The model's history, oldest first."""
    return [json.loads(store.get_bytes(k)) for k in sorted(store.list(f"models/{name}/events"))]


def serving_uri(artifact_uri: str, name: str, version: str) -> str:
    """The ``storageUri`` that serves ``version`` with our ServingRuntime (``smart-energy-xgboost``): the version
    folder. KServe's storage initializer copies all of it (``model.json``, ``metadata.json``, ``drift/``) into
    ``/mnt/models``, where the predictor checks every file's sha256 and reads the version and calibration."""
    return f"{artifact_uri.rstrip('/')}/models/{name}/{version}"


def resolve_model_dir(ref: str | Path | None, dest: str | Path, settings=None) -> Path:
    """A local, verified model directory for ``ref``.

    ``ref`` is a local directory; or ``<store URI>/models/<name>/<version or stage>`` (``s3://``/``file://``),
    downloaded into ``dest``; or None: the production model of ``SE_MODEL_NAME`` in ``SE_ARTIFACT_URI``.
    """
    from smart_energy.components.settings import get_settings
    from smart_energy.components.storage import open_store

    settings = settings or get_settings()
    if ref is None:
        return download(open_store(settings=settings), settings.model_name, "production", dest)
    if "://" not in str(ref):
        read_metadata(ref)
        return Path(ref)
    base, marker, rest = str(ref).rstrip("/").rpartition("/models/")
    parts = rest.split("/")
    if not marker or len(parts) != 2:
        raise SmartEnergyError(f"model URI {ref!r} must look like <store>/models/<name>/<version or stage>")
    return download(open_store(base, settings), parts[0], parts[1], dest)


def list_versions(store: ArtifactStore, name: str) -> list[str]:
    keys = store.list(f"models/{name}")
    return sorted({k.split("/")[2] for k in keys if k.endswith(f"/{METADATA_FILE}") and k.count("/") == 3})


def download(store: ArtifactStore, name: str, ref: str, dest: str | Path) -> Path:
    """Copy version ``ref`` (or the version a stage points at) into ``dest`` and verify it."""
    version = stage_version(store, name, ref) if ref in STAGES else ref
    if not version:
        hint = ""
        if ref == "production":
            candidate = stage_version(store, name, "candidate")
            hint = (f"; its candidate {candidate} becomes production with `smart-energy models promote --version "
                    f"candidate`" if candidate else "; train one first (`smart-energy train --data RAW --model-dir "
                    "DIR --register`, then `smart-energy models promote --version candidate`), or pass --model-dir")
        raise ArtifactNotFound(f"model {name} has no {ref} version in {store.uri}{hint}")
    dest = Path(dest)
    prefix = f"models/{name}/{version}/"
    keys = [k for k in store.list(prefix.rstrip("/")) if k.startswith(prefix)]
    if not keys:
        raise ArtifactNotFound(f"model {name} has no version {version!r}")
    for key in keys:
        target = dest / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get_bytes(key))
    read_metadata(dest)
    return dest


def write_model_dir(booster, metadata: dict[str, Any], out_dir: str | Path, detector=None) -> dict[str, Any]:
    """Save a booster (XGBoost JSON), its drift detector and metadata (with the model's sha256).

    Args:
        booster: a trained ``xgboost.Booster``.
        metadata: at least ``name``, ``version`` and ``features`` (the input order).
        out_dir: the model directory to write.
        detector: an Alibi Detect detector, saved under ``drift/``.

    Returns:
        The metadata as written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out_dir / MODEL_FILE))
    if detector is not None:
        from smart_energy.components.drift import save

        save(detector, out_dir / DRIFT_DIR)
    metadata = dict(metadata) | {"model_file": MODEL_FILE, "sha256": sha256_of(out_dir / MODEL_FILE),
                                 "files": file_digests(out_dir)}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    return metadata


def load_drift_detector(model_dir: str | Path):
    """The Alibi Detect detector saved with a model, or None when it has none."""
    path = Path(model_dir) / DRIFT_DIR
    if not path.exists():
        return None
    from smart_energy.components.drift import load

    try:
        return load(path)
    except Exception as err:  # noqa: BLE001 - whatever alibi raises for a detector it cannot read, say it in one line
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ModelIntegrityError(f"{path}: cannot load the drift detector ({type(err).__name__}: {first})") from None
