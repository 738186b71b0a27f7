"""The fleet's Spark training job as a Kubeflow Spark Operator ``SparkApplication``, and running one to its end.

``fleet_training_application`` is the one definition of the object: ``manifests/base/spark/`` and the chart's
``templates/spark.yaml`` install the same object, suspended, as a template (tests/k8s checks both equal this
function's output), and ``fleet_spark_pipeline`` creates a copy per run through the Kubernetes API
(``run_application``), waits for the operator's final state and fails the step with the driver's error message
when Spark failed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings

GROUP, VERSION, PLURAL, KIND = "sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication"
# built from components/Dockerfile.spark; a release bumps the tag here, in the overlays and in the chart's values
SPARK_IMAGE = "ghcr.io/smart-energy/spark:0.1.0"
SPARK_VERSION = "3.5.9"  # pyspark's, in requirements.lock: the jars spark-submit runs
# smart_energy/spark_job.py as the wheel installs it in the Spark image (python:3.11's site-packages)
MAIN_APPLICATION_FILE = "local:///usr/local/lib/python3.11/site-packages/smart_energy/spark_job.py"
NAMESPACE = "smart-energy"
TEMPLATE_NAME = "fleet-train"  # the installed, suspended template; a pipeline run's copy is fleet-train-<run id>
DEFAULT_DATA_URI = "s3://smart-energy/fleet/ingest"
# `train --model-dir` is a local directory: the model is written on the driver's /tmp (an emptyDir) and
# `--register` copies it into the registry at SE_ARTIFACT_URI
DEFAULT_MODEL_DIR = "/tmp/model"
DRIVER_SERVICE_ACCOUNT = "smart-energy-spark"  # may create and delete its executors (Role smart-energy-spark)
EXECUTOR_SERVICE_ACCOUNT = "smart-energy-spark-executor"  # no API token: executors never call the API server
POD_LABELS = {"app.kubernetes.io/name": "smart-energy-spark"}  # what NetworkPolicy spark-ingress selects
SPARK_UID = 185  # the user of components/Dockerfile.spark (Spark images' convention)
# fixed so NetworkPolicy spark-ingress can open exactly these between the application's pods
DRIVER_PORT, BLOCK_MANAGER_PORT = 7078, 7079
TIME_TO_LIVE_SECONDS = 86400  # the operator deletes a finished application (and its driver's logs) after a day
SETTINGS_CONFIG_MAP, CREDENTIALS_SECRET = "smart-energy-settings", "minio-credentials"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
FEAST_CONFIG_MAP, FEAST_MOUNT = "feast-config", "/etc/feast"
DONE, FAILED = {"COMPLETED"}, {"FAILED", "SUBMISSION_FAILED"}  # restartPolicy Never: no state after these


@dataclass(frozen=True)
class SparkSizes:
    """Driver and executor sizes (Spark's units: cores, JVM memory such as ``2g``; Spark adds the overhead)."""

    driver_cores: int = 1
    driver_memory: str = "2g"
    executor_instances: int = 2
    executor_cores: int = 1
    executor_memory: str = "2g"


class SparkApplicationFailed(SmartEnergyError):
    """The operator reports the application FAILED (or its submission failed); the message is the driver's."""


class SparkApplicationTimeout(SmartEnergyError):
    """The application did not finish in time; it was deleted, which stops its driver and executors."""


def fleet_training_arguments(data_uri: str = DEFAULT_DATA_URI, model_dir: str = DEFAULT_MODEL_DIR) -> list[str]:
    """``smart-energy train`` over a fleet's ingest directory, registering the model as candidate."""
    return ["train", "--data", data_uri, "--model-dir", model_dir, "--register"]


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop S3A options for the artifact store from the settings (credentials stay in the environment)."""
    conf = {
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(settings.s3_use_https).lower(),
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
    }
    if settings.s3_endpoint:  # host:port; S3A picks http or https from ssl.enabled
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint
    return conf


def _pod(cores: int, memory: str, service_account: str, role: str) -> dict[str, Any]:
    return {
        "cores": cores,
        "coreLimit": str(cores),
        "memory": memory,
        "serviceAccount": service_account,
        "labels": {**POD_LABELS, "app.kubernetes.io/component": role},
        "envFrom": [{"configMapRef": {"name": SETTINGS_CONFIG_MAP}}],
        "env": [{"name": "SE_ENGINE", "value": "spark"}] + [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key}}}
            for key in CREDENTIAL_KEYS],
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": SPARK_UID, "runAsGroup": SPARK_UID,
                               "seccompProfile": {"type": "RuntimeDefault"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "feast-config", "mountPath": FEAST_MOUNT, "readOnly": True}],
    }


def application_name(run_id: str) -> str:
    """A SparkApplication name for one run: lower-case DNS label, short enough for the operator's services."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{TEMPLATE_NAME}-{run_id}".lower()).strip("-")
    return name[:54].rstrip("-")  # `<name>-ui-svc` must stay a 63-character label


def fleet_training_application(name: str, arguments: list[str], settings: Settings, image: str = SPARK_IMAGE,
                               sizes: SparkSizes = SparkSizes(), namespace: str = NAMESPACE,
                               suspend: bool = False) -> dict[str, Any]:
    """The SparkApplication that trains the fleet's global model on Spark.

    Args:
        name: the object's name (``TEMPLATE_NAME`` for the installed template, ``application_name`` per run).
        arguments: the CLI arguments ``smart_energy/spark_job.py`` runs (``fleet_training_arguments``).
        settings: where the artifact store is (S3A options); the pods read every setting from the ConfigMap.
        suspend: True for the installed template, which the operator keeps from running.

    Returns:
        The object as the Kubernetes API takes it (a dict).
    """
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**POD_LABELS, "app.kubernetes.io/part-of": "smart-energy"}},
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": MAIN_APPLICATION_FILE,
            "arguments": list(arguments),
            "sparkVersion": SPARK_VERSION,
            "suspend": suspend,
            "restartPolicy": {"type": "Never"},
            "timeToLiveSeconds": TIME_TO_LIVE_SECONDS,
            "sparkConf": {
                "spark.driver.port": str(DRIVER_PORT),
                "spark.blockManager.port": str(BLOCK_MANAGER_PORT),
                # our URIs are s3://; Spark reads and writes them through S3A on MinIO
                "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
                "spark.hadoop.fs.s3a.path.style.access": "true",
                "spark.hadoop.fs.s3a.aws.credentials.provider":
                    "com.amazonaws.auth.EnvironmentVariableCredentialsProvider",
                **s3a_conf(settings),
            },
            "volumes": [{"name": "tmp", "emptyDir": {}},
                        {"name": "feast-config", "configMap": {"name": FEAST_CONFIG_MAP}}],
            "driver": _pod(sizes.driver_cores, sizes.driver_memory, DRIVER_SERVICE_ACCOUNT, "driver"),
            "executor": {"instances": sizes.executor_instances,
                         **_pod(sizes.executor_cores, sizes.executor_memory, EXECUTOR_SERVICE_ACCOUNT, "executor")},
        },
    }


def run_application(api, body: dict[str, Any], timeout_seconds: float, poll_seconds: float = 15.0,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Create ``body`` and wait until the operator reports it COMPLETED (an existing one of that name is waited for).

    Args:
        api: a ``kubernetes.client.CustomObjectsApi`` (needs create, get and delete on sparkapplications).
        timeout_seconds: how long to wait for a final state; then the application is deleted.

    Returns:
        The application's final ``status``.

    Raises:
        SparkApplicationFailed: FAILED or SUBMISSION_FAILED, with the operator's error message and the driver pod.
        SparkApplicationTimeout: no final state in time (the application was deleted).
    """
    where = {"group": GROUP, "version": VERSION, "namespace": body["metadata"]["namespace"], "plural": PLURAL}
    name = body["metadata"]["name"]
    try:
        api.create_namespaced_custom_object(body=body, **where)
    except Exception as err:  # kubernetes.client.ApiException; 409 AlreadyExists: this step's retry
        if getattr(err, "status", None) != 409:
            raise
    deadline = clock() + timeout_seconds
    while True:
        status = api.get_namespaced_custom_object(name=name, **where).get("status") or {}
        state = (status.get("applicationState") or {}).get("state", "")
        if state in DONE:
            return status
        if state in FAILED:
            pod = (status.get("driverInfo") or {}).get("podName", f"{name}-driver")
            message = (status.get("applicationState") or {}).get("errorMessage") or "no error message"
            raise SparkApplicationFailed(f"SparkApplication {name} {state}: {message} "
                                         f"(driver logs: kubectl -n {where['namespace']} logs {pod})")
        if clock() >= deadline:
            api.delete_namespaced_custom_object(name=name, **where)
            raise SparkApplicationTimeout(f"SparkApplication {name} still {state or 'NEW'} after "
                                          f"{timeout_seconds:.0f} s: deleted it")
        sleep(poll_seconds)
