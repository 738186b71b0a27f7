"""The fleet's SparkApplication (Kubeflow Spark Operator), checked statically: it validates against the operator's
own CRD (vendored in crds/, read by k8s_objects.crd_errors like every custom resource's), kustomize, the chart and
pipelines/spark_application.py build the same object, and its RBAC and NetworkPolicies give the driver and the executors what Spark needs and nothing more.
"""

from __future__ import annotations

import copy
import functools
import re

import pytest

from k8s_objects import CHART_VALUES, REPO, chart_values, crd_errors, helm_objects, kustomize, pod_specs, spark_pod
from smart_energy.components.settings import Settings
from smart_energy.pipelines.spark_application import (
    BLOCK_MANAGER_PORT, DRIVER_PORT, DRIVER_SERVICE_ACCOUNT, EXECUTOR_SERVICE_ACCOUNT, GROUP, KIND,
    MAIN_APPLICATION_FILE, POD_LABELS, SPARK_IMAGE, TEMPLATE_NAME, VERSION, SparkSizes, application_name,
    fleet_training_application, fleet_training_arguments,
)

SOURCES = [("kustomize", "kind"), ("kustomize", "production"), ("helm", "kind"), ("helm", "production")]
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@functools.cache
def objects(source: str, overlay: str) -> tuple[dict, ...]:
    return tuple(kustomize(overlay) if source == "kustomize" else helm_objects(overlay))


def _by(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _errors(obj) -> list[str]:
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == KIND
    return crd_errors(obj)


def _applications(source, overlay) -> list[dict]:
    return [o for o in objects(source, overlay) if o["kind"] == KIND]


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_spark_applications_validate_against_the_operators_crd(source, overlay):
    apps = _applications(source, overlay)
    assert [a["metadata"]["name"] for a in apps] == [TEMPLATE_NAME]
    for app in apps:
        assert app["apiVersion"] == f"{GROUP}/{VERSION}"
        assert DNS_LABEL.match(app["metadata"]["name"]) and app["metadata"]["namespace"] == "smart-energy"
        assert _errors(app) == [], f"{source}/{overlay}"


def test_the_pipelines_applications_validate_too():
    run_id = "9b0f3c1e-5d7a-4e2b-8f6a-1c2d3e4f5a6b"  # a KFP run id (a UUID)
    name = application_name(run_id)
    assert DNS_LABEL.match(name) and len(name) <= 54 and name.startswith("fleet-train-9b0f3c1e")
    body = fleet_training_application(name, fleet_training_arguments("s3://smart-energy/fleet/ingest"),
                                      Settings(s3_endpoint="minio:9000"))
    assert _errors(body) == []
    assert body["spec"]["suspend"] is False
    assert application_name("Run_ID/With Odd+Chars" * 5)[:12] == "fleet-train-" and \
        DNS_LABEL.match(application_name("Run_ID/With Odd+Chars" * 5))


def _template() -> dict:
    return copy.deepcopy(_applications("kustomize", "production")[0])


@pytest.mark.parametrize("break_it,expected", [
    (lambda s: s["driver"].update(cores="1"), "driver.cores: '1' is not of type 'integer'"),
    (lambda s: s.update(type="Pyhton"), "type: 'Pyhton' is not one of"),
    (lambda s: s["restartPolicy"].update(type="Sometimes"), "restartPolicy.type: 'Sometimes' is not one of"),
    (lambda s: s["executor"].update(instances=0), "executor.instances: 0 is less than the minimum of 1"),
    # what a kustomize replacement writes into an unquoted placeholder: a YAML boolean, not Spark's string
    (lambda s: s["sparkConf"].update({"spark.hadoop.fs.s3a.connection.ssl.enabled": False}),
     "sparkConf.spark.hadoop.fs.s3a.connection.ssl.enabled: False is not of type 'string'"),
    (lambda s: s.pop("sparkVersion"), "'sparkVersion' is a required property"),
    (lambda s: s.update(drvier=s.pop("driver")), "'driver' is a required property"),
    (lambda s: s["driver"]["env"][0].update(valeu="x"), "Additional properties are not allowed ('valeu'"),
])
def test_validation_catches_a_broken_application(break_it, expected):
    app = _template()
    assert _errors(app) == []
    break_it(app["spec"])
    errors = _errors(app)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize("overlay", ["production", "kind"])
def test_manifest_is_the_pipelines_application(overlay):
    """The installed template is fleet_training_application's object (suspended), with the settings ConfigMap's
    S3 options; on kind with the :dev image and values-kind.yaml's sizes."""
    objs = objects("kustomize", overlay)
    settings = Settings.from_env(_by(objs, "ConfigMap", "smart-energy-settings")["data"])
    sizes, image = SparkSizes(), SPARK_IMAGE
    if overlay == "kind":
        spark = chart_values(CHART_VALUES["kind"])["spark"]
        sizes = SparkSizes(driver_cores=spark["driver"]["cores"], driver_memory=spark["driver"]["memory"],
                           executor_instances=spark["executor"]["instances"],
                           executor_cores=spark["executor"]["cores"], executor_memory=spark["executor"]["memory"])
        image = SPARK_IMAGE.rsplit(":", 1)[0] + ":dev"
    expected = fleet_training_application(TEMPLATE_NAME, fleet_training_arguments(), settings, image=image,
                                          sizes=sizes, suspend=True)
    assert _applications("kustomize", overlay)[0] == expected
    conf = expected["spec"]["sparkConf"]
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "minio.smart-energy.svc.cluster.local:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"


def test_the_pods_read_the_same_settings_and_credentials_as_the_pipeline_steps():
    from smart_energy.pipelines.training_pipeline import CREDENTIAL_KEYS, CREDENTIALS_SECRET, SETTINGS_CONFIG_MAP

    app = _applications("kustomize", "production")[0]
    for role in ("driver", "executor"):
        pod = app["spec"][role]
        assert pod["envFrom"] == [{"configMapRef": {"name": SETTINGS_CONFIG_MAP}}]
        env = {e["name"]: e for e in pod["env"]}
        assert env["SE_ENGINE"]["value"] == "spark"
        for key in CREDENTIAL_KEYS:  # from the Secret only, never a literal
            assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key}}}
        assert {m["mountPath"] for m in pod["volumeMounts"]} == {"/tmp", "/etc/feast"}
    assert not any("secret" in k.lower() or "access.key" in k.lower() for k in app["spec"]["sparkConf"])


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_spark_pods_reach_each_other_on_their_ports_only(source, overlay):
    objs = objects(source, overlay)
    app = _applications(source, overlay)[0]["spec"]
    for role in ("driver", "executor"):
        assert POD_LABELS.items() <= app[role]["labels"].items()
    policy = _by(objs, "NetworkPolicy", "spark-ingress")["spec"]
    assert policy["podSelector"] == {"matchLabels": POD_LABELS} and policy["policyTypes"] == ["Ingress"]
    assert len(policy["ingress"]) == 1
    rule = policy["ingress"][0]
    assert rule["from"] == [{"podSelector": {"matchLabels": POD_LABELS}}]
    ports = {p["port"] for p in rule["ports"]}
    assert ports == {DRIVER_PORT, BLOCK_MANAGER_PORT} == \
        {int(app["sparkConf"]["spark.driver.port"]), int(app["sparkConf"]["spark.blockManager.port"])}
    # and the pods' own connections are admitted where they go: Redis (materialisation) and MinIO
    redis = _by(objs, "NetworkPolicy", "redis-ingress")["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": POD_LABELS}} in redis
    assert {"podSelector": {}} in _by(objs, "NetworkPolicy", "minio-ingress")["spec"]["ingress"][0]["from"]


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_spark_rbac_is_what_spark_and_the_launcher_need(source, overlay):
    objs = objects(source, overlay)
    assert not any(o["kind"] in {"ClusterRole", "ClusterRoleBinding"} for o in objs)
    app = _applications(source, overlay)[0]["spec"]
    assert app["driver"]["serviceAccount"] == DRIVER_SERVICE_ACCOUNT
    assert app["executor"]["serviceAccount"] == EXECUTOR_SERVICE_ACCOUNT
    assert _by(objs, "Role", DRIVER_SERVICE_ACCOUNT)["rules"] == [{
        "apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"],
        "verbs": ["create", "delete", "deletecollection", "get", "list", "watch"]}]
    binding = _by(objs, "RoleBinding", DRIVER_SERVICE_ACCOUNT)
    assert binding["roleRef"]["name"] == DRIVER_SERVICE_ACCOUNT
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": DRIVER_SERVICE_ACCOUNT, "namespace": "smart-energy"}]
    # executors: no token, and no binding names their ServiceAccount
    assert _by(objs, "ServiceAccount", EXECUTOR_SERVICE_ACCOUNT)["automountServiceAccountToken"] is False
    assert not [b for b in objs if b["kind"] == "RoleBinding"
                and any(s["name"] == EXECUTOR_SERVICE_ACCOUNT for s in b["subjects"])]
    launcher = _by(objs, "Role", "smart-energy-spark-launcher")
    assert launcher["rules"] == [{"apiGroups": [GROUP], "resources": ["sparkapplications"],
                                  "verbs": ["create", "get", "delete"]}]
    assert _by(objs, "RoleBinding", "smart-energy-spark-launcher")["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]


def test_the_pod_walker_sees_what_spark_makes_of_the_application():
    """k8s_objects.spark_pod (which the pod-security test walks) maps the operator's fields to the pod's."""
    app = _template()
    pods = dict(pod_specs(app))
    assert set(pods) == {"SparkApplication.driver", "SparkApplication.executor"}
    driver = pods["SparkApplication.driver"]["containers"][0]
    assert driver["args"] == app["spec"]["arguments"] and driver["image"] == app["spec"]["image"]
    assert driver["resources"] == {"requests": {"cpu": 1, "memory": "2g"}, "limits": {"cpu": "1", "memory": "2g"}}
    assert pods["SparkApplication.executor"]["containers"][0]["args"] == []
    del app["spec"]["executor"]["coreLimit"]
    assert "cpu" not in spark_pod(app, "executor")["containers"][0]["resources"]["limits"]  # no limit: test fails
    del app["spec"]["driver"]["podSecurityContext"]
    assert spark_pod(app, "driver")["securityContext"] == {}


def test_main_application_file_is_the_wheels_spark_job_module():
    """local:// names a file in the image: smart_energy/spark_job.py as the wheel installs it."""
    prefix = "local:///usr/local/lib/python3.11/site-packages/"
    assert MAIN_APPLICATION_FILE.startswith(prefix)
    module = MAIN_APPLICATION_FILE.removeprefix(prefix)
    assert module == "smart_energy/spark_job.py"
    assert (REPO / module).is_file(), f"{module} is not in the package (pyproject maps smart_energy to smart_energy/)"
