"""The Feast side: open the feature repo with the settings, apply, materialise, read, push.

`feature_repo/feature_store.yaml` is the one Feast config; the online store (SQLite or Redis)
and the registry location are overridden here from the settings, so the same repo serves the
embedded mode and a cluster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import FEATURES, build_feature_frame, write_feature_frame
from smart_energy.components.settings import PACKAGED_FEATURE_REPO, Settings, get_settings

FEATURE_SERVICE = "forecast_features_v1"
PUSH_SOURCE = "hourly_usage_push_source"
# the stale-meter fallback: one row per meter (components/online_rows.py), in a parquet beside the features'
PROFILE_VIEW = "meter_profile_fv"
PROFILE_SERVICE = "meter_profile_v1"
PROFILE_PUSH_SOURCE = "meter_profile_push_source"
PROFILE_FILE = "meter_profile.parquet"
# Feast's DuckDB offline store (bounded-memory point-in-time joins), reading s3:// through fsspec.
OFFLINE_STORE = "smart_energy.components.feast_offline.SmartEnergyDuckDBOfflineStore"


class FeatureStoreError(SmartEnergyError):
    """Features asked for are not in the store (unknown meter, never materialised)."""


def repo_config(settings: Settings):
    """Feast's RepoConfig: feature_store.yaml with the settings' online store and registry."""
    from feast.repo_config import RepoConfig

    repo = Path(settings.feature_repo).resolve()
    raw = yaml.safe_load((repo / "feature_store.yaml").read_text())
    if settings.engine == "spark":
        from smart_energy.components.spark_engine import spark_conf

        # Feast's Spark offline store (point-in-time joins) and Spark materialisation, partitioned over meters
        raw["offline_store"] = {"type": "spark", "spark_conf": spark_conf(settings)}
        raw["batch_engine"] = {"type": "spark.engine", "partitions": settings.spark_partitions}
    elif settings.engine == "embedded":
        raw["offline_store"] = {"type": OFFLINE_STORE}
    else:
        raise SmartEnergyError(f"SE_ENGINE must be embedded or spark, not {settings.engine!r}")
    # Relative paths in the yaml mean the repo's, whatever the working directory (Feast would take the cwd's).
    if settings.online_store == "sqlite" and not Path(raw["online_store"]["path"]).is_absolute():
        raw["online_store"] = {**raw["online_store"], "path": str(repo / raw["online_store"]["path"])}
    if settings.online_store == "redis":
        raw["online_store"] = {"type": "redis", "connection_string": settings.redis_connection}
    elif settings.online_store != "sqlite":
        raise SmartEnergyError(f"SE_ONLINE_STORE must be sqlite or redis, not {settings.online_store!r}")
    if settings.feast_registry:
        raw["registry"] = settings.feast_registry
    elif "://" not in raw["registry"] and not Path(raw["registry"]).is_absolute():
        raw["registry"] = str(repo / raw["registry"])
    return RepoConfig(repo_path=repo, **raw)


def open_feature_store(settings: Settings | None = None):
    """A ``feast.FeatureStore`` on the project's feature repo."""
    from feast import FeatureStore

    settings = settings or get_settings()
    ensure_feature_repo(settings)
    (Path(settings.feature_repo) / "data").mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings))


def ensure_feature_repo(settings: Settings) -> Path:
    """The settings' feature repo; the default one is created from the packaged repo on first use.

    Raises:
        SmartEnergyError: for an SE_FEATURE_REPO without a feature_store.yaml.
    """
    repo = Path(settings.feature_repo)
    if (repo / "feature_store.yaml").is_file():
        return repo
    if repo.resolve() != Settings().feature_repo.resolve():
        raise SmartEnergyError(f"{repo}: no feature_store.yaml (SE_FEATURE_REPO must name a Feast repo)")
    return copy_feature_repo(repo)


def copy_feature_repo(dest: str | Path) -> Path:
    """A new Feast repo at ``dest`` from the packaged one (config and definitions; no data)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("feature_store.yaml", "feature_definitions.py", ".feastignore"):
        shutil.copy(PACKAGED_FEATURE_REPO / name, dest / name)
    return dest


def profile_source_path(settings: Settings) -> str:
    """The profile source: ``PROFILE_FILE`` in the folder (or ``s3://`` prefix) of ``SE_FEATURE_SOURCE``."""
    return f"{settings.feature_source_path.rsplit('/', 1)[0]}/{PROFILE_FILE}"


def definitions(settings: Settings) -> list:
    """The Feast objects declared in ``feature_repo/feature_definitions.py``.

    A repo seeded by an older version (before ``meter_profile_fv``) gets the packaged profile view, source and
    service beside its own objects, so its stale meters get the profile fallback too.
    """
    from feast import FileSource, PushSource

    path = Path(settings.feature_repo) / "feature_definitions.py"
    if not path.is_file():  # a config-only repo (the cluster's ConfigMap): the definitions ship with the code
        path = PACKAGED_FEATURE_REPO / "feature_definitions.py"
    objects = _definitions_in(path, settings)
    names = {o.name for o in objects}
    if PROFILE_VIEW not in names:
        objects += [o for o in _definitions_in(PACKAGED_FEATURE_REPO / "feature_definitions.py", settings)
                    if o.name in (PROFILE_VIEW, PROFILE_SERVICE, PROFILE_PUSH_SOURCE)]
    paths = {PUSH_SOURCE: settings.feature_source_path, PROFILE_PUSH_SOURCE: profile_source_path(settings)}
    for push_source in (o for o in objects if isinstance(o, PushSource)):
        if isinstance(push_source.batch_source, FileSource):  # a repo seeded by an older version reads no settings
            push_source.batch_source.file_options.uri = paths.get(push_source.name, settings.feature_source_path)
            push_source.batch_source.file_options.s3_endpoint_override = settings.s3_endpoint_url
    return objects


def _definitions_in(path: Path, settings: Settings) -> list:
    from feast import Entity, FeatureService, FeatureView, PushSource

    spec = importlib.util.spec_from_file_location("smart_energy_feature_definitions", path)
    module = importlib.util.module_from_spec(spec)
    # The file reads the process's settings (as `feast apply` would); ours may differ (a scratch store, a test).
    module.SMART_ENERGY_SETTINGS = settings
    spec.loader.exec_module(module)
    kinds = (Entity, FeatureView, FeatureService, PushSource)
    return [v for v in vars(module).values() if isinstance(v, kinds)]


@contextlib.contextmanager
def scratch_feature_store(settings: Settings) -> Iterator[tuple[Any, Settings]]:
    """A throwaway local Feast repo with the same definitions (SQLite online store, local registry and parquet).

    Back-tests and evaluations publish their own features here, so they never change what the servers read.
    """
    with tempfile.TemporaryDirectory(prefix="smart-energy-scratch-") as tmp:
        repo = Path(tmp) / "feature_repo"
        repo.mkdir()
        shutil.copy(PACKAGED_FEATURE_REPO / "feature_store.yaml", repo)
        scratch = replace(settings, feature_repo=repo, feature_source="data/hourly_features.parquet",
                          feast_registry="", online_store="sqlite")
        yield open_feature_store(scratch), scratch


def apply(store, settings: Settings) -> None:
    """Register the definitions, as `feast apply` does.

    Views registered by an older version without a file format would crash Feast 0.47's comparison
    (``FileFormat.__eq__`` on None); they are dropped first and registered again from the definitions.
    """
    from feast import FileSource

    for view in store.list_feature_views():
        if isinstance(view.batch_source, FileSource) and view.batch_source.file_format is None:
            store.delete_feature_view(view.name)
    objects = definitions(settings)
    if any(getattr(o, "name", None) == PROFILE_VIEW for o in objects):
        ensure_profile_source(settings)
    store.apply(objects)


PROFILE_SCHEMA = None  # the profile parquet's arrow schema (``_profile_schema``), built on first use


def _profile_schema():
    import pyarrow as pa

    global PROFILE_SCHEMA
    if PROFILE_SCHEMA is None:
        # microseconds: Spark (SE_ENGINE=spark materialises it too) reads no nanosecond timestamps
        PROFILE_SCHEMA = pa.schema([("meter_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
                                    ("created", pa.timestamp("us", tz="UTC")), ("last_complete_hour", pa.int64()),
                                    ("profile_kw", pa.list_(pa.float64()))])
    return PROFILE_SCHEMA


def write_profiles(profiles: pd.DataFrame, settings: Settings) -> str:
    """Write ``online_rows.weekly_profile`` rows to the profile source, replacing the rows of their meters (a local
    file; an ``s3://`` one is rewritten whole, as the features are)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = profile_source_path(settings)
    if "://" not in path and Path(path).is_file():
        old = pd.read_parquet(path)
        profiles = pd.concat([old[~old["meter_id"].isin(profiles["meter_id"])], profiles], ignore_index=True)
    table = pa.Table.from_pandas(profiles[_profile_schema().names], schema=_profile_schema(), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    if "://" in path:
        from smart_energy.components.storage import open_store

        head, name = path.rsplit("/", 1)
        open_store(head, settings).put_bytes(name, data)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def ensure_profile_source(settings: Settings) -> None:
    """An empty profile source when there is none yet, so that materialising every view (Spark's publish, ``feast
    materialize``) finds it."""
    path = profile_source_path(settings)
    if "://" in path:
        from smart_energy.components.storage import open_store

        head, name = path.rsplit("/", 1)
        if open_store(head, settings).exists(name):
            return
    elif Path(path).is_file():
        return
    write_profiles(_profile_schema().empty_table().to_pandas(), settings)


def publish(hourly: pd.DataFrame, store, settings: Settings, materialize: bool = True) -> pd.DataFrame:
    """Build features from ``hourly``, write the offline parquet, apply, and materialise its range online
    (with ``SE_ENGINE=spark``, all of it on Spark: ``spark_engine.publish``).

    Materialisation runs over the data's own range (``materialize(start, end)``), not
    ``materialize_incremental``, which backfills only one TTL before *now*.
    """
    from smart_energy.components.online_rows import weekly_profile

    if isinstance(hourly, pd.DataFrame):  # (Spark's training publishes a Spark frame: it serves no one)
        write_profiles(weekly_profile(hourly), settings)
    if settings.engine == "spark":
        from smart_energy.components import spark_engine

        return spark_engine.publish(hourly, store, settings, materialize)
    features = build_feature_frame(hourly)
    path = settings.feature_source_path
    if "://" in path:
        from smart_energy.components.storage import open_store

        uri = path.rsplit("/", 1)
        s3 = open_store(uri[0], settings)
        s3.put_bytes(uri[1], features.to_parquet(index=False))
    else:
        write_feature_frame(features, path)
    apply(store, settings)
    if materialize:
        start = features["event_timestamp"].min().to_pydatetime()
        end = features["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
        report_materialised(store, len(features), start, end, lambda: store.materialize(start, end))
    return features


def report_materialised(store, rows: int, start, end, run) -> None:
    """Run a materialisation: Feast reports progress on stdout, which is for our results; on a terminal it goes to
    stderr, else our own one line says what happened."""
    with contextlib.redirect_stdout(sys.stderr if sys.stderr.isatty() else io.StringIO()):
        run()
    if not sys.stderr.isatty():
        print(f"features: {rows:,} rows ({start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}) materialised "
              f"into the {store.config.online_store.type} online store", file=sys.stderr)


def historical_features(store, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct features for ``entity_df`` (``meter_id``, ``event_timestamp``, extra columns kept)."""
    service = store.get_feature_service(FEATURE_SERVICE)
    out = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    if out["event_timestamp"].dt.tz is None:  # the Spark store's are UTC, handed over naive
        out["event_timestamp"] = out["event_timestamp"].dt.tz_localize("UTC")
    return out.sort_values(["meter_id", "event_timestamp"]).reset_index(drop=True)


def online_features(store, meter_ids: list[str], features: list[str] | None = None,
                    chunk: int = 5000) -> pd.DataFrame:
    """Latest online features per meter, columns in model order (``features``, default ``FEATURES``), read
    ``chunk`` meters at a time (a fleet's batch forecast reads them all).

    Raises:
        FeatureStoreError: for a meter with no materialised features.
    """
    features = list(features or FEATURES)
    service = store.get_feature_service(FEATURE_SERVICE)
    rows = pd.concat([store.get_online_features(features=service, entity_rows=[{"meter_id": m} for m in
                                                                               meter_ids[i:i + chunk]]).to_df()
                      for i in range(0, len(meter_ids), chunk)], ignore_index=True)
    empty = rows[features].isna().all(axis=1)
    if empty.any():
        missing = rows.loc[empty, "meter_id"].astype(str)
        listed = ", ".join(missing.iloc[:5]) + (f" … ({len(missing)} meters)" if len(missing) > 5 else "")
        raise FeatureStoreError(f"no online features for meter(s) {listed} (unknown meter or never materialised)")
    return rows[["meter_id", *features]]


def online_profiles(store, meter_ids: list[str], chunk: int = 5000) -> list:
    """Each meter's published profile (``online_rows.MeterProfile``), None where there is none (or the repo's
    definitions predate the profile view)."""
    from feast.errors import FeatureServiceNotFoundException

    from smart_energy.components.online_rows import PROFILE_COLUMNS, MeterProfile

    try:
        service = store.get_feature_service(PROFILE_SERVICE)
    except FeatureServiceNotFoundException:
        return [None] * len(meter_ids)
    out = []
    for i in range(0, len(meter_ids), chunk):
        rows = store.get_online_features(features=service, entity_rows=[{"meter_id": m} for m in
                                                                        meter_ids[i:i + chunk]]).to_dict()
        out += [MeterProfile.from_feast(None if last is None else int(last), kw)
                for last, kw in zip(*(rows[c] for c in PROFILE_COLUMNS))]
    return out


def push(store, hourly: pd.DataFrame, offline: bool = True) -> pd.DataFrame:
    """Push the newest feature row of each meter in ``hourly``: online, and (``offline``) offline for a local source;
    and each meter's profile row (online only: the next publish rewrites the profile source).

    Feast 0.47 cannot append to an ``s3://`` FileSource (its offline write joins the URI onto the repo
    path); there the offline parquet is rebuilt by the next `features build` / pipeline run instead.
    ``hourly`` should reach ``online_rows.PROFILE_WEEKS`` weeks back for a whole profile.
    """
    from feast.data_source import PushMode

    from smart_energy.components.online_rows import weekly_profile

    features = build_feature_frame(hourly)
    latest = features.sort_values("event_timestamp").groupby("meter_id").tail(1).reset_index(drop=True)
    remote = "://" in store.get_data_source("hourly_usage_source").path
    store.push(PUSH_SOURCE, latest, to=PushMode.ONLINE if remote or not offline else PushMode.ONLINE_AND_OFFLINE)
    profiles = weekly_profile(hourly)
    if len(profiles):  # (a repo whose definitions predate the profile has no view on this source: nothing happens)
        store.push(PROFILE_PUSH_SOURCE, profiles, to=PushMode.ONLINE)
    return latest
