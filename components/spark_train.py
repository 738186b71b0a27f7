"""``smart-energy train`` with ``SE_ENGINE=spark``: the embedded training steps, each on Spark.

Features are published by ``spark_engine.publish``, the training rows are Feast's point-in-time join in its
Spark offline store, the split is the same time-ordered one, and ``xgboost.spark`` fits the booster with early
stopping, then refits on the whole window with the rounds it found. Only one row per meter, the validation
rows (for their MAE) and the drift reference reach the driver; the model directory is the embedded one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from smart_energy.components import spark_engine as se
from smart_energy.components.features import DRIFT_FEATURES, FEATURES, training_cutoff
from smart_energy.components.registry import write_model_dir
from smart_energy.components.settings import Settings
from smart_energy.components.train import (DEFAULT_PARAMS, DRIFT_REFERENCE_ROWS, EARLY_STOPPING, MAX_ROUNDS,
                                           VALID_FRACTION, fit_drift_detector, model_metadata)

HOUR_US = 3_600_000_000


def validation_cut(frame, valid_fraction: float = VALID_FRACTION) -> pd.Timestamp:
    """``train.time_split``'s cut on Spark: the (1 - fraction) quantile of the rows' hours, interpolated 'lower'.

    Spark's exact ``percentile`` interpolates linearly between two neighbouring rows' hours; rows are on whole
    hours, so the hour below is pandas' 'lower' value.
    """
    from pyspark.sql import functions as F

    linear = frame.select(F.percentile(F.unix_micros("event_timestamp"), F.lit(1 - valid_fraction))).first()[0]
    return pd.Timestamp(int(linear // HOUR_US) * HOUR_US, unit="us", tz="UTC")


def median_target(frame) -> float:
    """``np.median`` of ``target_kw`` on Spark: its exact ``percentile`` interpolates the same way."""
    from pyspark.sql import functions as F

    return float(frame.select(F.percentile("target_kw", F.lit(0.5))).first()[0])


def train_on_spark(data: str | Path, model_dir: str | Path, settings: Settings, until: str | None = None,
                   params: dict[str, Any] | None = None, holdout_weeks: int = 0,
                   publish_features: bool = True) -> dict[str, Any]:
    """Train the next-hour model of ``train.train`` on Spark (see the module's docstring).

    Returns:
        The metadata written (``engine: spark``, ``spark_workers``).
    """
    from pyspark.sql import functions as F

    from smart_energy.components.feast_store import FEATURE_SERVICE, open_feature_store

    spark = se.spark_session(settings)
    hourly, meters_skipped = se.meters_with_history(se.read_hourly(spark, data))
    hourly = hourly.cache()
    first, last = hourly.agg(F.min("timestamp"), F.max("timestamp")).first()
    cutoff = training_cutoff(pd.Timestamp(se.utc(first)), pd.Timestamp(se.utc(last)), until, holdout_weeks)
    store = open_feature_store(settings)
    if publish_features:
        se.publish(hourly, store, settings)
    entity = se.labels(hourly)
    window = hourly
    if cutoff is not None:
        entity = entity.where(F.col("event_timestamp") < F.lit(cutoff.to_pydatetime()))
        window = hourly.where(F.col("timestamp") < F.lit(cutoff.to_pydatetime()))
    service = store.get_feature_service(FEATURE_SERVICE)
    frame = store.get_historical_features(entity_df=entity, features=service).to_spark_df().cache()
    cut = validation_cut(frame)
    frame = frame.withColumn("is_valid", F.col("event_timestamp") >= F.lit(cut.to_pydatetime()))
    workers = max(1, min(settings.spark_partitions, spark.sparkContext.defaultParallelism))
    params = {**DEFAULT_PARAMS, **(params or {})}
    max_rounds = int(params.pop("num_boost_round", MAX_ROUNDS))
    start = {"base_score": median_target(frame.where(~F.col("is_valid")))} if "base_score" not in params else {}
    booster = se.fit(frame, {**start, **params}, max_rounds, workers, valid_col="is_valid",
                     early_stopping=EARLY_STOPPING)
    best = int(booster.best_iteration)
    valid = frame.where("is_valid").select("target_kw", *FEATURES).toPandas()
    pred = booster.predict(xgb.DMatrix(valid[FEATURES], feature_names=FEATURES), iteration_range=(0, best + 1))
    err = pred - valid["target_kw"].to_numpy()
    metrics = {"valid_mae_kw": float(np.mean(np.abs(err))), "valid_rmse_kw": float(np.sqrt(np.mean(err ** 2))),
               "best_iteration": best, "valid_hours": int(len(valid))}
    params = {"base_score": median_target(frame), **params}  # the refit starts at the whole window's median
    booster = se.fit(frame.drop("is_valid"), params, best + 1, workers)
    # the embedded reference: the last complete rows in (meter, hour) order
    reference = (frame.select("meter_id", "event_timestamp", *DRIFT_FEATURES).dropna()
                 .orderBy(F.desc("meter_id"), F.desc("event_timestamp")).limit(DRIFT_REFERENCE_ROWS)
                 .toPandas().iloc[::-1][DRIFT_FEATURES])
    span = frame.agg(F.min("event_timestamp"), F.max("event_timestamp"), F.count("*")).first()
    hours = int(span[2])
    window_summary = {"start": str(pd.Timestamp(se.utc(span[0]))), "end": str(pd.Timestamp(se.utc(span[1]))),
                      "hours": hours, "hours_skipped": {"target_missing": int(window.count() - hours)},
                      "gaps": se.find_gaps(window)}
    meters = sorted(r[0] for r in frame.select("meter_id").distinct().collect())
    metadata = model_metadata(settings, meters, meters_skipped, window_summary,
                              {**params, "num_boost_round": best + 1}, metrics, len(reference), engine="spark")
    metadata["spark_workers"] = workers
    hourly.unpersist()
    frame.unpersist()
    return write_model_dir(booster, metadata, model_dir, detector=fit_drift_detector(reference, settings))
