"""A fleet's feature build + training on Spark: one step that runs the SparkApplication fleet-train-<run id>.

The step (``train_fleet_on_spark``) creates the Spark Operator object that ``spark_application`` defines, waits for
its final state and fails with the driver's error message; Spark itself runs ``smart-energy train --register``
with SE_ENGINE=spark in the driver and executor pods, so the model lands in the registry as candidate and
`smart-energy rollout` canaries it as for any other training. The run's ServiceAccount needs the Role
smart-energy-spark-launcher in the application's namespace (manifests/base/spark/rbac.yaml).
"""

from kfp import dsl

from smart_energy.pipelines.kfp_components import train_fleet_on_spark
from smart_energy.pipelines.spark_application import DEFAULT_DATA_URI, NAMESPACE
from smart_energy.pipelines.training_pipeline import _cluster_settings

PIPELINE_NAME = "smart-energy-fleet-spark-training"
DEFAULT_TIMEOUT_SECONDS = 6 * 3600


@dsl.pipeline(name=PIPELINE_NAME, description="Train the fleet's global model on Spark (Kubeflow Spark Operator) "
              "and register it as candidate.")
def fleet_spark_pipeline(data_uri: str = DEFAULT_DATA_URI, namespace: str = NAMESPACE,
                         timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS):
    train_fleet_on_spark_task = train_fleet_on_spark(data_uri=data_uri, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                                     namespace=namespace, timeout_seconds=timeout_seconds)
    train_fleet_on_spark_task.set_caching_options(False)
    _cluster_settings(train_fleet_on_spark_task)
