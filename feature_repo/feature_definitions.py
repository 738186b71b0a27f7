"""Feast definitions for Smart Energy, read top to bottom: entity, source, feature views, service.

The source is the parquet that `smart-energy features build` (and `train`) writes from the
ingest output: one row per meter and hour H with what is known at the start of H. A second, small
source holds one row per meter: its weekly profile and last complete hour, the fallback the servers
answer a stale meter with (components/online_rows.py).
"""

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float64, Int64

from smart_energy.components.features import CALENDAR_FEATURES, LAG_FEATURES, ROLLING_FEATURES, SHARE_FEATURES
from smart_energy.components.feast_store import ensure_profile_source, profile_source_path
from smart_energy.components.settings import get_settings

# `smart-energy` passes its own settings (a scratch store, a test's); `feast apply` here reads the process's.
# A relative SE_FEATURE_SOURCE is this repo's (Feast would resolve it against the working directory).
settings = globals().get("SMART_ENERGY_SETTINGS") or replace(get_settings(), feature_repo=Path(__file__).resolve().parent)

meter = Entity(name="meter", join_keys=["meter_id"], value_type=ValueType.STRING, description="One smart meter (a household).")

if settings.engine == "spark":
    # SE_ENGINE=spark: the same rows as a Spark parquet dataset, for Feast's Spark offline store
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    def _source(name: str, path: str):
        return SparkSource(name=name, path=path, file_format="parquet", timestamp_field="event_timestamp",
                           created_timestamp_column="created")
else:
    def _source(name: str, path: str):
        return FileSource(
            name=name,
            path=path,
            file_format=ParquetFormat(),  # the DuckDB offline store reads only what it knows the format of
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
            s3_endpoint_override=settings.s3_endpoint_url or None,
        )


hourly_usage_source = _source("hourly_usage_source", settings.feature_source_path)
# One row per meter, at its latest feature row's hour (written by every publish and push).
meter_profile_source = _source("meter_profile_source", profile_source_path(settings))
if "://" not in profile_source_path(settings):
    # `feast materialize` by hand materialises every view: an empty source until `smart-energy` publishes profiles
    ensure_profile_source(settings)

# New readings are pushed here (online and offline) by `smart-energy features push`.
hourly_usage_push_source = PushSource(name="hourly_usage_push_source", batch_source=hourly_usage_source)
meter_profile_push_source = PushSource(name="meter_profile_push_source", batch_source=meter_profile_source)

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

# What a stale meter is answered with. Not a model input; read only for the rows that need it. No TTL: a meter
# silent for days keeps its profile (the servers refuse one older than the four weeks it describes).
meter_profile_fv = FeatureView(
    name="meter_profile_fv",
    entities=[meter],
    ttl=timedelta(0),
    schema=[Field(name="last_complete_hour", dtype=Int64, description="Unix seconds of the last complete hour's start"),
            Field(name="profile_kw", dtype=Array(Float64),
                  description="168 weekday-hour mean kW (Monday 00:00 first) over the 4 weeks up to it")],
    source=meter_profile_push_source,
    online=True,
    description="The stale-meter fallback: weekly profile and last complete hour.",
)

# The model's inputs, in this order (metadata.json records it).
forecast_features_v1 = FeatureService(
    name="forecast_features_v1",
    features=[hourly_lags_fv, hourly_rolling_fv, submeter_shares_fv, calendar_fv],
)
meter_profile_v1 = FeatureService(name="meter_profile_v1", features=[meter_profile_fv])
