"""Feast definitions for Smart Energy, read top to bottom: entity, source, feature views, service.

The source is the parquet that `smart-energy features build` (and `train`) writes from the
ingest output: one row per meter and hour H with what is known at the start of H.
"""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64

from smart_energy.components.features import CALENDAR_FEATURES, LAG_FEATURES, ROLLING_FEATURES, SHARE_FEATURES
from smart_energy.components.settings import get_settings

# `smart-energy` passes its own settings (a scratch store, a test's); `feast apply` here reads the process's.
# A relative SE_FEATURE_SOURCE is this repo's (Feast would resolve it against the working directory).
settings = globals().get("SMART_ENERGY_SETTINGS") or replace(get_settings(), feature_repo=Path(__file__).resolve().parent)

meter = Entity(name="meter", join_keys=["meter_id"], value_type=ValueType.STRING, description="One smart meter (a household).")

if settings.engine == "spark":
    # SE_ENGINE=spark: the same rows as a Spark parquet dataset, for Feast's Spark offline store
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    hourly_usage_source = SparkSource(
        name="hourly_usage_source",
        path=settings.feature_source_path,
        file_format="parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
else:
    hourly_usage_source = FileSource(
        name="hourly_usage_source",
        path=settings.feature_source_path,
        file_format=ParquetFormat(),  # the DuckDB offline store reads only what it knows the format of
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        s3_endpoint_override=settings.s3_endpoint_url or None,
    )

# New readings are pushed here (online and offline) by `smart-energy features push`.
hourly_usage_push_source = PushSource(name="hourly_usage_push_source", batch_source=hourly_usage_source)

# A row is valid for forecasting its own hour only; two hours of TTL tolerate late materialisation.
FEATURE_TTL = timedelta(hours=2)


def _view(name: str, columns: list[str], dtype, description: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[meter],
        ttl=FEATURE_TTL,
        schema=[Field(name=c, dtype=dtype) for c in columns],
        source=hourly_usage_push_source,
        online=True,
        description=description,
    )


hourly_lags_fv = _view("hourly_lags_fv", LAG_FEATURES, Float64, "Mean kW of the hours 1, 2, 3, 24 and 168 h before.")
hourly_rolling_fv = _view("hourly_rolling_fv", ROLLING_FEATURES, Float64, "Mean and std of the last 3, 24, 168 hours.")
submeter_shares_fv = _view("submeter_shares_fv", SHARE_FEATURES, Float64, "Sub-meter shares of the last 24 h.")
calendar_fv = _view("calendar_fv", CALENDAR_FEATURES, Int64, "Calendar of the forecast hour (French holidays).")

# The model's inputs, in this order (metadata.json records it).
forecast_features_v1 = FeatureService(
    name="forecast_features_v1",
    features=[hourly_lags_fv, hourly_rolling_fv, submeter_shares_fv, calendar_fv],
)
