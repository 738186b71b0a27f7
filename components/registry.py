"""Versioned model registry on the artifact store.

A model directory (what ``train --model-dir`` writes, what the predictor loads) holds:

- ``model.json``      the XGBoost booster in XGBoost's own JSON format
- ``next_hour.json``  (day-ahead models) the next-hour booster its short leads use (sha256 in the metadata too)
- ``metadata.json``   version, training window, feature order, metrics, library versions (``sha256``: model.json's)
- ``drift/``          the Alibi Detect drift detector fitted on the training window (optional)
- ``MANIFEST.json``   the sha256 of every other file of the directory, ``metadata.json`` included

``read_metadata`` refuses a directory in which any file differs from the manifest, or is missing from it, or
is listed but absent. In the store a version lives at ``models/<name>/<version>/...`` and its record
``models/<name>/versions/<version>.json`` keeps the manifest's own sha256; ``models/<name>/production.json`` and
``models/<name>/candidate.json`` point at versions (with that digest, the previous version and the reason) and
are replaced atomically; ``models/<name>/events/`` keeps every move, oldest first, with its reason. So a
version cannot change in the store unseen either: not its files, not its manifest, not the pointer's version.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.storage import ArtifactNotFound, ArtifactStore

MODEL_FILE = "model.json"
METADATA_FILE = "metadata.json"
MANIFEST_FILE = "MANIFEST.json"
EXTRA_MODELS = "extra_model_files"  # metadata key: {file: sha256} of a model's other boosters (day ahead: next hour)
DRIFT_DIR = "drift"
STAGES = ("production", "candidate")
MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
RETRAIN = ("retrain it with this version of smart-energy (`smart-energy train --data RAW --model-dir DIR`, "
           "`--register` to register it again)")


class ModelIntegrityError(SmartEnergyError):
    """A model directory (or registry version) whose files do not match its manifest."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(model_dir: str | Path) -> dict[str, str]:
    """sha256 of every file of a model directory except ``MANIFEST.json``, by path relative to it."""
    model_dir = Path(model_dir)
    return {p.relative_to(model_dir).as_posix(): sha256_of(p) for p in _files(model_dir)
            if p.relative_to(model_dir).as_posix() != MANIFEST_FILE}


def write_manifest(model_dir: str | Path) -> str:
    """Write ``MANIFEST.json`` over every file of ``model_dir`` as it is now; returns the manifest's own sha256
    (what the registry records). Written last: a directory changed after it no longer verifies."""
    model_dir = Path(model_dir)
    manifest = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": file_digests(model_dir)}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return sha256_of(model_dir / MANIFEST_FILE)


def manifest_digest(model_dir: str | Path) -> str:
    """The sha256 of a model directory's ``MANIFEST.json`` (after ``read_metadata`` checked it)."""
    return sha256_of(Path(model_dir) / MANIFEST_FILE)


def _manifest_files(model_dir: Path) -> dict[str, str]:
    path = model_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelIntegrityError(f"{path}: invalid JSON ({err}); refusing to load") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) and _SHA256.match(v)
                                              for k, v in files.items()):
        raise ModelIntegrityError(f"{path}: not a manifest (needs 'files': {{path: sha256}}); refusing to load")
    for needed in (MODEL_FILE, METADATA_FILE):
        if needed not in files:
            raise ModelIntegrityError(f"{model_dir / needed}: not listed in {MANIFEST_FILE} (an incomplete "
                                      f"manifest); refusing to load")
    return files


def read_metadata(model_dir: str | Path, manifest_sha256: str | None = None) -> dict[str, Any]:
    """The metadata of a model directory, after checking every file's sha256 against ``MANIFEST.json``.

    Every file of the directory must be listed and match, and every listed file must be there; with
    ``manifest_sha256`` (what the registry recorded) the manifest itself must have that digest.

    Raises:
        ModelIntegrityError: naming the first file that is missing, unlisted or changed.
    """
    model_dir = Path(model_dir)
    meta_path, model_path, manifest_path = (model_dir / METADATA_FILE, model_dir / MODEL_FILE,
                                            model_dir / MANIFEST_FILE)
    if not meta_path.is_file() or not model_path.is_file():
        raise ModelIntegrityError(f"{model_dir}: not a model directory (needs {MODEL_FILE} and {METADATA_FILE})")
    if not manifest_path.is_file():
        raise ModelIntegrityError(f"{manifest_path}: missing, so {METADATA_FILE} and the other files cannot be "
                                  f"verified (a model written before manifests, or a file lost); {RETRAIN}")
    if manifest_sha256 is not None and (actual_manifest := sha256_of(manifest_path)) != manifest_sha256:
        raise ModelIntegrityError(f"{manifest_path}: sha256 {actual_manifest[:12]}… is not the "
                                  f"{str(manifest_sha256)[:12]}… the registry recorded; refusing to load")
    expected, actual = _manifest_files(model_dir), file_digests(model_dir)
    for name in sorted(set(expected) | set(actual)):
        path = model_dir / name
        if name not in actual:
            raise ModelIntegrityError(f"{path}: listed in {MANIFEST_FILE} but missing; refusing to load")
        if name not in expected:
            raise ModelIntegrityError(f"{path}: not listed in {MANIFEST_FILE}; refusing to load")
        if expected[name] != actual[name]:
            raise ModelIntegrityError(f"{path}: sha256 {actual[name][:12]}… does not match {MANIFEST_FILE}'s "
                                      f"{expected[name][:12]}…; refusing to load")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelIntegrityError(f"{meta_path}: invalid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise ModelIntegrityError(f"{meta_path}: not a metadata object; refusing to load")
    if metadata.get("sha256", expected[MODEL_FILE]) != expected[MODEL_FILE]:
        raise ModelIntegrityError(f"{meta_path}: its sha256 of {MODEL_FILE} is not the manifest's; refusing to load")
    extra = metadata.get(EXTRA_MODELS) or {}
    if not isinstance(extra, dict):
        raise ModelIntegrityError(f"{meta_path}: {EXTRA_MODELS} is not {{file: sha256}}; refusing to load")
    for name, digest in sorted(extra.items()):
        if expected.get(name) != digest:
            raise ModelIntegrityError(f"{model_dir / name}: {METADATA_FILE} records sha256 {str(digest)[:12]}…, the "
                                      f"manifest {'nothing' if name not in expected else expected[name][:12] + '…'}; "
                                      f"refusing to load")
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


def _record_key(name: str, version: str) -> str:
    return f"models/{name}/versions/{version}.json"


def version_record(store: ArtifactStore, name: str, version: str) -> dict[str, Any]:
    """What ``register`` recorded for ``version``: its manifest's sha256 and when."""
    key = _record_key(name, version)
    try:
        record = json.loads(store.get_bytes(key))
    except ArtifactNotFound:
        if store.exists(f"models/{name}/{version}/{METADATA_FILE}"):
            raise ModelIntegrityError(f"model {name} version {version!r} in {store.uri} has no version record "
                                      f"(registered before manifests, or its upload did not finish); "
                                      f"{RETRAIN}") from None
        raise ArtifactNotFound(f"model {name} has no version {version!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if not (isinstance(record, dict) and record.get("version") == version
            and _SHA256.match(str(record.get("manifest_sha256")))):
        raise ModelIntegrityError(f"{key} in {store.uri}: not a version record of {version!r} (needs its "
                                  f"manifest_sha256); refusing to use it")
    return record


def register(store: ArtifactStore, model_dir: str | Path, stage: str | None = "candidate") -> str:
    """Upload a verified model directory as ``models/<name>/<version>/`` and point ``stage`` at it.

    The version's record (its manifest's sha256) is written last: a version is registered once it exists.
    A version is never replaced: registering it again with other files is refused.

    Returns:
        The version registered.
    """
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    name, version = metadata["name"], metadata["version"]
    digest = manifest_digest(model_dir)
    # an upload cut short left no record: that version may be uploaded again
    known = version_record(store, name, version)["manifest_sha256"] if store.exists(_record_key(name, version)) \
        else None
    if known is not None and known != digest:
        raise ModelIntegrityError(f"model {name} version {version!r} is already registered in {store.uri} with "
                                  f"other files (manifest {known[:12]}…, this one {digest[:12]}…); a version never "
                                  f"changes: train a new one")
    for path in sorted(_files(model_dir), key=lambda p: p.name == MANIFEST_FILE):  # the manifest last
        store.put_bytes(f"models/{name}/{version}/{path.relative_to(model_dir).as_posix()}", path.read_bytes())
    store.put_bytes(_record_key(name, version), json.dumps({"version": version, "manifest_sha256": digest,
                                                            "at": _now()}).encode())
    if stage:
        set_stage(store, name, stage, version)
    return version


def set_stage(store: ArtifactStore, name: str, stage: str, version: str, reason: str | None = None) -> None:
    """Point ``stage`` (production or candidate) at ``version`` and its manifest's sha256; one atomic write, and
    an event saying why."""
    if stage not in STAGES:
        raise SmartEnergyError(f"unknown stage {stage!r}; expected one of {STAGES}")
    digest = version_record(store, name, version)["manifest_sha256"]
    try:
        stored = hashlib.sha256(store.get_bytes(f"models/{name}/{version}/{MANIFEST_FILE}")).hexdigest()
    except ArtifactNotFound:
        stored = None
    if stored != digest:
        raise ModelIntegrityError(f"models/{name}/{version}/{MANIFEST_FILE} in {store.uri} is "
                                  f"{'missing' if stored is None else 'not the one registered'}; refusing to "
                                  f"point {stage} at it")
    previous = stage_version(store, name, stage)
    pointer = {"version": version, "manifest_sha256": digest, "previous": previous, "reason": reason, "at": _now()}
    store.put_bytes(f"models/{name}/{stage}.json", json.dumps(pointer).encode())
    record_event(store, name, {"action": f"set-{stage}", "version": version, "previous": previous, "reason": reason})


def clear_stage(store: ArtifactStore, name: str, stage: str, reason: str) -> None:
    """Point ``stage`` at nothing (a candidate rolled back or promoted), keeping who it was and why."""
    previous = stage_version(store, name, stage)
    store.put_bytes(f"models/{name}/{stage}.json",
                    json.dumps({"version": None, "previous": previous, "reason": reason, "at": _now()}).encode())
    record_event(store, name, {"action": f"clear-{stage}", "version": previous, "reason": reason})


def stage_pointer(store: ArtifactStore, name: str, stage: str) -> dict[str, Any] | None:
    """``<stage>.json`` as written (version, manifest_sha256, previous, reason, at), or None."""
    key = f"models/{name}/{stage}.json"
    try:
        pointer = json.loads(store.get_bytes(key))
    except ArtifactNotFound:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        pointer = None
    if not isinstance(pointer, dict):
        raise ModelIntegrityError(f"{key} in {store.uri}: not a stage pointer (invalid JSON); point the stage again")
    return pointer


def stage_version(store: ArtifactStore, name: str, stage: str) -> str | None:
    """The version ``stage`` points at, or None."""
    pointer = stage_pointer(store, name, stage)
    return pointer.get("version") if pointer else None


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
    folder. KServe's storage initializer copies all of it (``model.json``, ``metadata.json``, ``drift/``,
    ``MANIFEST.json``) into ``/mnt/models``, where the predictor checks every file against the manifest and reads
    the version and calibration."""
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
    """The registered versions (those with a record), oldest name first."""
    prefix = f"models/{name}/versions/"
    return sorted(k[len(prefix):-len(".json")] for k in store.list(prefix.rstrip("/"))
                  if k.startswith(prefix) and k.endswith(".json") and k.count("/") == 3)


def download(store: ArtifactStore, name: str, ref: str, dest: str | Path) -> Path:
    """Copy version ``ref`` (or the version a stage points at) into ``dest`` and verify it: every file against
    the manifest, and the manifest against the sha256 in the version's record (and in the stage's pointer)."""
    pointer = stage_pointer(store, name, ref) if ref in STAGES else None
    version = (pointer or {}).get("version") if ref in STAGES else ref
    if not version:
        hint = ""
        if ref == "production":
            candidate = stage_version(store, name, "candidate")
            hint = (f"; its candidate {candidate} becomes production with `smart-energy models promote --version "
                    f"candidate`" if candidate else "; train one first (`smart-energy train --data RAW --model-dir "
                    "DIR --register`, then `smart-energy models promote --version candidate`), or pass --model-dir")
        raise ArtifactNotFound(f"model {name} has no {ref} version in {store.uri}{hint}")
    expected = version_record(store, name, version)["manifest_sha256"]
    if pointer is not None and pointer.get("manifest_sha256") != expected:
        said = pointer.get("manifest_sha256")
        raise ModelIntegrityError(
            f"models/{name}/{ref}.json in {store.uri} records manifest "
            f"{str(said)[:12] + '…' if said else 'nothing'} for {version}, but that version's record says "
            f"{str(expected)[:12]}…; refusing to load (point the stage again, or {RETRAIN})")
    dest = Path(dest)
    prefix = f"models/{name}/{version}/"
    keys = [k for k in store.list(prefix.rstrip("/")) if k.startswith(prefix)]
    if not keys:
        raise ArtifactNotFound(f"model {name} has no version {version!r}")
    for key in keys:
        target = dest / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get_bytes(key))
    metadata = read_metadata(dest, manifest_sha256=expected)
    if (metadata.get("name"), metadata.get("version")) != (name, version):
        raise ModelIntegrityError(f"{dest / METADATA_FILE}: says {metadata.get('name')} {metadata.get('version')}, "
                                  f"stored as {name} {version}; refusing to load")
    return dest


def write_model_dir(booster, metadata: dict[str, Any], out_dir: str | Path, detector=None,
                    extra_models: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save a booster (XGBoost JSON), its drift detector, metadata (with the model's sha256) and, last, the
    manifest of them all.

    Args:
        booster: a trained ``xgboost.Booster``.
        metadata: at least ``name``, ``version`` and ``features`` (the input order).
        out_dir: the model directory to write.
        detector: an Alibi Detect detector, saved under ``drift/``.
        extra_models: more boosters of the same model, by file name (the day-ahead model's next-hour booster);
            their sha256 go into the metadata (``extra_model_files``) as well as the manifest.

    Returns:
        The metadata as written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out_dir / MODEL_FILE))
    extra = {}
    for name, model in (extra_models or {}).items():
        if name in (MODEL_FILE, METADATA_FILE, MANIFEST_FILE) or "/" in name or not name.endswith(".json"):
            raise ValueError(f"extra model file {name!r}: a plain <name>.json beside {MODEL_FILE}")
        model.save_model(str(out_dir / name))
        extra[name] = sha256_of(out_dir / name)
    if detector is not None:
        from smart_energy.components.drift import save

        save(detector, out_dir / DRIFT_DIR)
    metadata = {k: v for k, v in metadata.items() if k not in ("files", EXTRA_MODELS)} | {
        "model_file": MODEL_FILE, "sha256": sha256_of(out_dir / MODEL_FILE), **({EXTRA_MODELS: extra} if extra else {})}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    write_manifest(out_dir)
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
