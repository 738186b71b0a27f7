"""The fleet's distributed path (``SE_ENGINE=spark``): the same features, Feast definitions and model on Spark.

Nothing here re-implements distribution: the feature function (``features.meter_features``) runs unchanged
on shards of meters through Spark's ``applyInPandas``; Feast's Spark offline store does the point-in-time
joins and its Spark materialisation engine fills the online store; ``xgboost.spark`` trains the booster over
Spark's partitions. Locally Spark runs in local mode (``pyspark`` and a Java 17 runtime); on a cluster the
same code is the driver of a Spark Operator ``SparkApplication`` (``smart_energy/spark_job.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import (CALENDAR_FEATURES, FEATURES, LONG_GAP_HOURS, TARGET, history_error,
                                              meter_features, short_history)
from smart_energy.components.settings import Settings
from smart_energy.components.threads import xgb_threads

# the hourly columns the feature function reads (the rest of the ingest output stays in Spark)
HOURLY_INPUTS = ["meter_id", "timestamp", "is_complete", TARGET, "last_15min_kw", "global_reactive_power_kw",
                 "sub_metering_1_kw", "sub_metering_2_kw", "sub_metering_3_kw"]


class SparkEngineError(SmartEnergyError):
    """The Spark path cannot run (no Java runtime, an unsupported option)."""


def spark_conf(settings: Settings) -> dict[str, str]:
    """Spark configuration for the settings: UTC times, Arrow transfers, one shuffle partition per shard.

    Under ``spark-submit`` (a SparkApplication's driver) the master and resources are spark-submit's; otherwise
    Spark runs in local mode on this machine, bound to 127.0.0.1, its Python workers on this interpreter.
    """
    conf = {"spark.sql.session.timeZone": "UTC",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.shuffle.partitions": str(settings.spark_partitions),
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": str(sys.stderr.isatty()).lower()}
    if settings.spark_master:
        conf["spark.master"] = settings.spark_master
    elif not launched_by_spark_submit():
        conf |= {"spark.master": "local[*]", "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                 "spark.driver.memory": settings.spark_driver_memory}
    return conf


def launched_by_spark_submit() -> bool:
    """True in a driver that spark-submit started (it hands the Python process its gateway's port)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(settings: Settings):
    """The process's SparkSession (created with ``spark_conf`` on first use; Feast's store reuses it).

    Raises:
        SparkEngineError: when pyspark or a Java runtime is missing.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:  # pragma: no cover - pyspark is in the lock
        raise SparkEngineError(f"SE_ENGINE=spark needs pyspark: {e}") from e
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if "JAVA_HOME" not in os.environ and shutil.which("java") is None:
        raise SparkEngineError("SE_ENGINE=spark needs a Java 17 runtime (Debian: openjdk-17-jre-headless)")
    conf = spark_conf(settings)
    if not launched_by_spark_submit():  # pyspark starts its workers with PYSPARK_PYTHON: this interpreter's packages
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # pyspark's workers on pandas 2
    builder = SparkSession.builder.appName("smart-energy")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def feature_schema():
    """The Spark schema of ``build_feature_frame``'s output."""
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType, TimestampType

    return StructType([StructField("meter_id", StringType()), StructField("event_timestamp", TimestampType()),
                       StructField("created", TimestampType())] +
                      [StructField(c, LongType() if c in CALENDAR_FEATURES else DoubleType()) for c in FEATURES])


def to_spark(spark, hourly):
    """A Spark frame of hourly readings from a pandas frame, or a Spark frame as it is."""
    if not isinstance(hourly, pd.DataFrame):
        return hourly
    return spark.createDataFrame(hourly[HOURLY_INPUTS].assign(meter_id=hourly["meter_id"].astype(str)))


def read_hourly(spark, data: str | Path):
    """The ingest output as a Spark frame: an ingest directory or its ``hourly.parquet`` (local, or ``s3://`` on a
    cluster, where the SparkApplication maps ``s3://`` to Hadoop's S3A), read by Spark; a raw meter file is
    ingested here first."""
    text = str(data)
    if "://" in text:
        path = text.rstrip("/")
        return spark.read.parquet(path if path.endswith(".parquet") else f"{path}/hourly.parquet")
    path = Path(data)
    if path.is_dir() and (path / "hourly.parquet").is_file():
        path = path / "hourly.parquet"
    if path.suffix == ".parquet":
        return spark.read.parquet(str(path.resolve()))
    from smart_energy.components.ingest import load_hourly

    return to_spark(spark, load_hourly(path))


def feature_frame(spark, hourly, settings: Settings):
    """``features.build_feature_frame`` on Spark: the meters hashed into ``spark_partitions`` shards (crc32 of the
    id, as the batch pipeline's shards), each shard's meters through the same vectorised ``meter_features``."""
    from pyspark.sql import functions as F

    created = pd.Timestamp.now(tz="UTC").floor("s")
    columns = [f.name for f in feature_schema()]

    def features_of_shard(shard: pd.DataFrame) -> pd.DataFrame:
        shard = shard.drop(columns="shard")
        shard["timestamp"] = pd.to_datetime(shard["timestamp"], utc=True)  # Spark hands UTC session times over naive
        out = meter_features(shard)
        out.insert(2, "created", created)  # one creation time for every shard
        return out[columns]

    sdf = to_spark(spark, hourly).select(*HOURLY_INPUTS)
    sdf = sdf.withColumn("shard", F.pmod(F.crc32(F.col("meter_id")), F.lit(settings.spark_partitions)))
    return sdf.groupBy("shard").applyInPandas(features_of_shard, schema=feature_schema())


def publish(hourly, store, settings: Settings, materialize: bool = True):
    """``feast_store.publish`` on Spark: build the features, write them as the Spark parquet source, apply the
    definitions, and materialise the data's range online with Feast's Spark materialisation engine.

    Returns:
        The feature rows as a Spark frame.
    """
    from pyspark.sql import functions as F

    from smart_energy.components.feast_store import apply, report_materialised

    spark = spark_session(settings)
    features = feature_frame(spark, hourly, settings)
    path = settings.feature_source_path
    features.write.mode("overwrite").parquet(path)
    features = spark.read.parquet(path)
    apply(store, settings)
    if materialize:
        span = features.agg(F.min("event_timestamp").alias("start"), F.max("event_timestamp").alias("end"),
                            F.count("*").alias("rows")).first()
        start, end = utc(span["start"]), utc(span["end"]) + timedelta(seconds=1)
        report_materialised(store, span["rows"], start, end, lambda: store.materialize(start, end))
    return features


def utc(value: datetime) -> datetime:
    """Spark's timestamps come back as naive datetimes in the session's time zone (UTC)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def labels(hourly):
    """``features.labels`` on Spark: every complete hour's mean kW, keyed by meter and hour."""
    from pyspark.sql import functions as F

    return (hourly.where(F.col("is_complete") & F.col(TARGET).isNotNull())
            .select("meter_id", F.col("timestamp").alias("event_timestamp"), F.col(TARGET).alias("target_kw")))


def meters_with_history(hourly, min_hours: int = 24 * 7 + 24):
    """``features.keep_meters_with_history`` on Spark: the meters with enough complete hours, and the others by
    reason (one row per meter reaches the driver)."""
    from pyspark.sql import functions as F

    counts = hourly.groupBy("meter_id").agg(F.sum(F.col("is_complete").cast("int")).alias("complete"))
    rows = counts.where(F.coalesce(F.col("complete"), F.lit(0)) < min_hours).collect()
    short = {r["meter_id"]: int(r["complete"] or 0) for r in rows}
    if short and len(short) == counts.count():
        meter = sorted(short)[0]
        raise history_error(meter, short[meter], min_hours)
    short = {meter: short_history(n, min_hours) for meter, n in short.items()}
    return (hourly.where(~F.col("meter_id").isin(list(short))) if short else hourly), short


def find_gaps(hourly, min_hours: int = LONG_GAP_HOURS) -> list[dict]:
    """``features.find_gaps`` on Spark: runs of at least ``min_hours`` hours without a complete reading."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    complete = hourly.where(F.col("is_complete")).select("meter_id", "timestamp")
    previous = F.lag("timestamp").over(Window.partitionBy("meter_id").orderBy("timestamp"))
    rows = (complete.withColumn("previous", previous)
            .withColumn("missing", (F.unix_timestamp("timestamp") - F.unix_timestamp("previous")) / 3600 - 1)
            .where(F.col("missing") >= min_hours).orderBy("meter_id", "timestamp").collect())
    return [{"meter_id": r["meter_id"], "start": (utc(r["previous"]) + timedelta(hours=1)).isoformat(),
             "end": utc(r["timestamp"]).isoformat(), "hours": int(r["missing"])} for r in rows]


def xgboost_params(params: dict[str, Any]) -> dict[str, Any]:
    """The booster parameters in ``xgboost.spark``'s (scikit-learn) names; the threads are Spark's task CPUs."""
    names = {"eta": "learning_rate", "seed": "random_state"}
    return {names.get(k, k): v for k, v in params.items() if k not in ("nthread", "num_boost_round")}


def fit(frame, params: dict[str, Any], rounds: int, num_workers: int, valid_col: str | None = None,
        early_stopping: int | None = None):
    """``xgboost.spark.SparkXGBRegressor`` on the Spark training frame; returns the fitted ``xgboost.Booster``."""
    import logging

    from xgboost.spark import SparkXGBRegressor

    logging.getLogger("XGBoost-PySpark").setLevel(logging.WARNING)
    extra = {"validation_indicator_col": valid_col, "early_stopping_rounds": early_stopping} if valid_col else {}
    regressor = SparkXGBRegressor(features_col=list(FEATURES), label_col="target_kw", num_workers=num_workers,
                                  n_estimators=rounds, missing=float("nan"), verbose=False, **xgboost_params(params),
                                  **extra)
    booster = regressor.fit(frame).get_booster()
    # the driver predicts with it (validation, the drift reference): as many threads as the driver's CPU limit
    booster.set_param({"nthread": xgb_threads()})
    return booster
