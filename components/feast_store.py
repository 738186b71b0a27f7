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


def definitions(settings: Settings) -> list:
    """The Feast objects declared in ``feature_repo/feature_definitions.py``."""
    from feast import Entity, FeatureService, FeatureView, FileSource, PushSource

    path = Path(settings.feature_repo) / "feature_definitions.py"
    if not path.is_file():  # a config-only repo (the cluster's ConfigMap): the definitions ship with the code
        path = PACKAGED_FEATURE_REPO / "feature_definitions.py"
    spec = importlib.util.spec_from_file_location("smart_energy_feature_definitions", path)
    module = importlib.util.module_from_spec(spec)
    # The file reads the process's settings (as `feast apply` would); ours may differ (a scratch store, a test).
    module.SMART_ENERGY_SETTINGS = settings
    spec.loader.exec_module(module)
    kinds = (Entity, FeatureView, FeatureService, PushSource)
    objects = [v for v in vars(module).values() if isinstance(v, kinds)]
    for push_source in (o for o in objects if isinstance(o, PushSource)):
        if isinstance(push_source.batch_source, FileSource):  # a repo seeded by an older version reads no settings
            push_source.batch_source.file_options.uri = settings.feature_source_path
            push_source.batch_source.file_options.s3_endpoint_override = settings.s3_endpoint_url
    return objects


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
    store.apply(definitions(settings))


def publish(hourly: pd.DataFrame, store, settings: Settings, materialize: bool = True) -> pd.DataFrame:
    """Build features from ``hourly``, write the offline parquet, apply, and materialise its range online
    (with ``SE_ENGINE=spark``, all of it on Spark: ``spark_engine.publish``).

    Materialisation runs over the data's own range (``materialize(start, end)``), not
    ``materialize_incremental``, which backfills only one TTL before *now*.
    """
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


def push(store, hourly: pd.DataFrame, offline: bool = True) -> pd.DataFrame:
    """Push the newest feature row of each meter in ``hourly``: online, and (``offline``) offline for a local source.

    Feast 0.47 cannot append to an ``s3://`` FileSource (its offline write joins the URI onto the repo
    path); there the offline parquet is rebuilt by the next `features build` / pipeline run instead.
    """
    from feast.data_source import PushMode

    features = build_feature_frame(hourly)
    latest = features.sort_values("event_timestamp").groupby("meter_id").tail(1).reset_index(drop=True)
    remote = "://" in store.get_data_source("hourly_usage_source").path
    store.push(PUSH_SOURCE, latest, to=PushMode.ONLINE if remote or not offline else PushMode.ONLINE_AND_OFFLINE)
    return latest
