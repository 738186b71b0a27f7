"""Batch scoring for a fleet: publish the features once, score the meters in parallel shards, merge.

``dsl.ParallelFor`` fans the shards out (each a pod on a cluster, ``parallelism`` at a time); ``dsl.Collected``
fans their forecasts back in. Sharding is by a stable hash of the meter id (``batch.shard_of``).
"""

from kfp import dsl

from smart_energy.pipelines.kfp_components import merge_forecasts, publish_fleet_features, score_shard, shard_plan
from smart_energy.pipelines.training_pipeline import _cluster_settings

PIPELINE_NAME = "smart-energy-batch-scoring"
DEFAULT_DATA_URI = "s3://smart-energy/fleet/ingest"
DEFAULT_MODEL_URI = "s3://smart-energy/models/energy-forecaster/production"
PARALLELISM = 8  # shard pods at a time (a compile-time constant in KFP)


@dsl.pipeline(name=PIPELINE_NAME, description="Next-hour or day-ahead forecasts for every meter of a fleet, "
              "features from Feast in bulk, scored in parallel shards.")
def batch_scoring_pipeline(data_uri: str = DEFAULT_DATA_URI, model_uri: str = DEFAULT_MODEL_URI, shards: int = 8):
    published = publish_fleet_features(data_uri=data_uri)
    plan = shard_plan(shards=shards).after(published)
    with dsl.ParallelFor(plan.output, parallelism=PARALLELISM) as shard:
        scored = score_shard(data_uri=data_uri, model_uri=model_uri, shard=shard, shards=shards)
    merged = merge_forecasts(parts=dsl.Collected(scored.outputs["forecasts"]))
    for task in (published, plan, scored, merged):
        task.set_caching_options(False)
        _cluster_settings(task)
