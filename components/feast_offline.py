"""Feast's DuckDB offline store, reading ``s3://`` sources through an fsspec filesystem.

Feast 0.47's DuckDB store (point-in-time joins in DuckDB, through ibis) reads a parquet
FileSource with ``ibis.read_parquet``, which for ``s3://`` first installs DuckDB's ``httpfs``
extension: a download, impossible where the cluster has no internet. DuckDB can read any
fsspec filesystem registered with it instead, so remote sources are read through ``s3fs``
(the endpoint is the FileSource's ``s3_endpoint_override``, credentials the standard AWS
variables). Local sources go through Feast's own reader unchanged. This class is named in the
repo config as ``offline_store.type`` (Feast's documented way to plug in an offline store).
"""

from __future__ import annotations

from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)

_registered_endpoint: dict[str, str] = {}  # protocol -> endpoint registered with ibis' DuckDB


def _s3_filesystem(endpoint: str | None):
    """An s3fs filesystem that never serves a stale listing (the feature parquet is rewritten in place)."""
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint} if endpoint else {},
                             skip_instance_cache=True, use_listings_cache=False)


def read_source(data_source, repo_path: str):
    """An ibis table over the FileSource: ``s3://`` through fsspec, local paths against the repo."""
    import ibis

    path = data_source.path
    if "://" not in path:  # feature_definitions.py gives an absolute path (Feast's reader uses the cwd)
        return feast_duckdb._read_data_source(data_source, repo_path)
    backend = ibis.get_backend()
    endpoint = data_source.s3_endpoint_override or ""
    if _registered_endpoint.get("s3") != endpoint:  # DuckDB keeps the first filesystem registered per protocol
        if "s3" in _registered_endpoint:
            backend.con.unregister_filesystem("s3")
        backend.register_filesystem(_s3_filesystem(endpoint))
        _registered_endpoint["s3"] = endpoint
    quoted = path.replace("'", "''")
    return backend.sql(f"SELECT * FROM read_parquet('{quoted}')")


def _staging(config) -> dict:
    return {"data_source_reader": read_source, "data_source_writer": feast_duckdb._write_data_source,
            "staging_location": config.offline_store.staging_location,
            "staging_location_endpoint_override": config.offline_store.staging_location_endpoint_override}


class SmartEnergyDuckDBOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    type: str = "smart_energy.components.feast_offline.SmartEnergyDuckDBOfflineStore"


class SmartEnergyDuckDBOfflineStore(feast_duckdb.DuckDBOfflineStore):
    """Feast's DuckDB offline store with :func:`read_source` as its reader."""

    @staticmethod
    def pull_latest_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                        timestamp_field, created_timestamp_column, start_date, end_date):
        return pull_latest_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column, start_date=start_date, end_date=end_date,
            **_staging(config))

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names=False):
        return get_historical_features_ibis(
            config=config, feature_views=feature_views, feature_refs=feature_refs, entity_df=entity_df,
            registry=registry, project=project, full_feature_names=full_feature_names, **_staging(config))

    @staticmethod
    def pull_all_from_table_or_query(config, data_source, join_key_columns, feature_name_columns,
                                     timestamp_field, start_date, end_date):
        return pull_all_from_table_or_query_ibis(
            config=config, data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            start_date=start_date, end_date=end_date, **_staging(config))
