"""kustomize overlays render; objects validate (Kubernetes schemas, kserve model); pods are locked down."""

from __future__ import annotations

import functools

import kubernetes_validate
import pytest

from k8s_objects import RUN_TO_COMPLETION, containers, is_ours, key, kustomize, pod_specs
from smart_energy.serving.rollout_clients import UnknownFieldError, load_inference_service

K8S_VERSION = "1.30.0"
OVERLAY_NAMES = ["kind", "production"]
CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kubeflow.org/v1beta1", "Experiment"),
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),  # validated against the operator's CRD in test_spark.py
}
EXPECTED = {
    ("Namespace", "smart-energy"), ("StatefulSet", "minio"), ("Service", "minio"), ("Job", "minio-create-bucket"),
    ("Deployment", "redis"), ("Service", "redis"), ("ConfigMap", "feast-config"), ("ConfigMap", "smart-energy-settings"),
    ("ServiceAccount", "kserve-s3"), ("InferenceService", "energy-forecaster"),
    ("ServiceAccount", "rollout-controller"), ("Role", "rollout-controller"), ("RoleBinding", "rollout-controller"),
    ("CronJob", "rollout-controller"), ("PodMonitor", "energy-forecaster"), ("ServiceMonitor", "minio"),
    ("PrometheusRule", "smart-energy"), ("CronJob", "retrain-daily"), ("Experiment", "energy-forecaster-hpo"),
    ("NetworkPolicy", "default-deny-ingress"), ("NetworkPolicy", "minio-ingress"),
    ("NetworkPolicy", "redis-ingress"), ("NetworkPolicy", "transformer-ingress"),
    ("NetworkPolicy", "predictor-ingress"),
    ("Deployment", "pushgateway"), ("Service", "pushgateway"), ("ServiceMonitor", "pushgateway"),
    ("NetworkPolicy", "pushgateway-ingress"),
    ("SparkApplication", "fleet-train"), ("ServiceAccount", "smart-energy-spark"), ("Role", "smart-energy-spark"),
    ("RoleBinding", "smart-energy-spark"), ("ServiceAccount", "smart-energy-spark-executor"),
    ("Role", "smart-energy-spark-launcher"), ("RoleBinding", "smart-energy-spark-launcher"),
    ("NetworkPolicy", "spark-ingress"),
}


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(kustomize(overlay))


@pytest.fixture(params=OVERLAY_NAMES)
def objects(request) -> tuple[dict, ...]:
    return rendered(request.param)


def _by(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def test_overlays_render_the_expected_objects():
    for overlay in OVERLAY_NAMES:
        names = {(o["kind"], o["metadata"]["name"]) for o in rendered(overlay)}
        secrets = {("Secret", "minio-credentials")} if overlay == "kind" else set()
        assert names == EXPECTED | secrets, overlay
        assert all(o["metadata"].get("namespace") == "smart-energy" for o in rendered(overlay) if o["kind"] != "Namespace")


def test_builtin_objects_validate_strictly(objects):
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 24


def test_validation_catches_a_misspelt_field():
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_crds_have_identity(objects):
    crds = [o for o in objects if (o["apiVersion"], o["kind"]) in CRDS]
    assert len(crds) == 7
    for obj in crds:
        assert obj["metadata"]["name"] and obj["metadata"]["namespace"] == "smart-energy"
        assert isinstance(obj.get("spec"), dict) and obj["spec"]


def test_inference_service_loads_into_kserve_model(objects):
    isvc = load_inference_service(_by(objects, "InferenceService", "energy-forecaster"))
    assert isvc.metadata.annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    predictor = isvc.spec.predictor
    assert predictor.model.model_format.name == "xgboost"
    assert predictor.model.protocol_version == "v2"
    assert predictor.model.storage_uri.startswith("s3://smart-energy/models/energy-forecaster/")
    assert predictor.service_account_name == "kserve-s3"
    assert predictor.canary_traffic_percent == 100
    transformer = isvc.spec.transformer.containers[0]
    assert transformer.command == ["python", "-m", "smart_energy.serving.transformer"]
    assert transformer.args == ["--model_name", "energy-forecaster", "--predictor_protocol", "v2"]
    assert {e.name: e.value for e in transformer.env}["SE_ONLINE_STORE"] == "redis"


def test_kserve_check_rejects_unknown_fields():
    obj = dict(_by(rendered("kind"), "InferenceService", "energy-forecaster"))
    obj["spec"] = {**obj["spec"], "predictor": {**obj["spec"]["predictor"], "canaryTraficPercent": 10}}
    with pytest.raises(UnknownFieldError, match="canaryTraficPercent"):
        load_inference_service(obj)


def test_s3_credentials_reach_kserve_through_the_service_account():
    kind = rendered("kind")
    sa = _by(kind, "ServiceAccount", "kserve-s3")
    assert [s["name"] for s in sa["secrets"]] == ["minio-credentials"]
    secret = _by(kind, "Secret", "minio-credentials")
    ann = secret["metadata"]["annotations"]
    assert ann["serving.kserve.io/s3-endpoint"] == "minio.smart-energy.svc.cluster.local:9000"
    assert ann["serving.kserve.io/s3-usehttps"] == "0" and ann["serving.kserve.io/s3-region"]
    import base64

    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(values) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all("placeholder" in v for v in values.values()), "kind overlay must carry only placeholder credentials"
    assert not any(o["kind"] == "Secret" for o in rendered("production"))


def test_feast_config_uses_redis_and_s3():
    import yaml

    cm = _by(rendered("production"), "ConfigMap", "feast-config")
    store = yaml.safe_load(cm["data"]["feature_store.yaml"])
    assert store["online_store"] == {"type": "redis", "connection_string": "redis:6379"}
    assert store["registry"].startswith("s3://")


def test_rollout_controller_has_least_privilege(objects):
    assert not any(o["kind"] in {"ClusterRole", "ClusterRoleBinding"} for o in objects)
    role = _by(objects, "Role", "rollout-controller")
    assert role["rules"] == [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                              "resourceNames": ["energy-forecaster"], "verbs": ["get", "patch"]}]
    binding = _by(objects, "RoleBinding", "rollout-controller")
    assert binding["subjects"][0]["name"] == "rollout-controller"
    cron = _by(objects, "CronJob", "rollout-controller")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rollout-controller"
    assert pod["containers"][0]["command"] == ["smart-energy", "rollout"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # the only pods with an API token are the rollout controller's and the Spark driver's (it creates its executors)
    for obj in objects:
        for where, spec in pod_specs(obj):
            if spec.get("serviceAccountName") not in {"rollout-controller", "smart-energy-spark"}:
                sa_token = spec.get("automountServiceAccountToken")
                sa = next((o for o in objects if o["kind"] == "ServiceAccount"
                           and o["metadata"]["name"] == spec.get("serviceAccountName")), {})
                assert sa_token is False or sa.get("automountServiceAccountToken") is False, f"{key(obj)} {where}"


def test_katib_experiment_searches_xgboost(objects):
    exp = _by(objects, "Experiment", "energy-forecaster-hpo")["spec"]
    assert exp["objective"] == {"type": "minimize", "objectiveMetricName": "mae_kw"}
    assert {p["name"] for p in exp["parameters"]} == {"max_depth", "learning_rate", "n_estimators"}
    refs = {t["reference"] for t in exp["trialTemplate"]["trialParameters"]}
    assert refs == {"max_depth", "learning_rate", "n_estimators"}
    script = exp["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for t in exp["trialTemplate"]["trialParameters"]:
        assert f"${{trialParameters.{t['name']}}}" in script


def test_network_policies_deny_by_default(objects):
    deny = _by(objects, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    selected = {tuple(sorted(p["spec"]["podSelector"].get("matchLabels", {}).items()))
                for p in objects if p["kind"] == "NetworkPolicy"}
    assert (("app.kubernetes.io/name", "redis"),) in selected
    for component in ("predictor", "transformer"):
        assert (("component", component), ("serving.kserve.io/inferenceservice", "energy-forecaster")) in selected


# who may open a connection to which port of the InferenceService's pods (queue-proxy 8012/8013, its
# autoscaling metrics 9090, the container's /metrics on 8080)
KNATIVE_PATH = {"knative-serving", "kourier-system", "istio-system"}
ALLOWED = {
    "transformer-ingress": {8012: KNATIVE_PATH, 8013: KNATIVE_PATH, 9090: {"knative-serving"}, 8080: {"monitoring"}},
    "predictor-ingress": {8012: KNATIVE_PATH | {"pods:transformer"}, 8013: KNATIVE_PATH | {"pods:transformer"},
                          9090: {"knative-serving"}, 8080: {"monitoring"}},
}


def _peers(peer: dict) -> str:
    if "namespaceSelector" in peer:
        assert "podSelector" not in peer, peer
        return peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    labels = peer["podSelector"]["matchLabels"]
    assert labels["serving.kserve.io/inferenceservice"] == "energy-forecaster", peer
    return f"pods:{labels['component']}"


def test_only_what_must_reach_the_inference_service_can(objects):
    for name, allowed in ALLOWED.items():
        seen: dict[int, set[str]] = {}
        for rule in _by(objects, "NetworkPolicy", name)["spec"]["ingress"]:
            assert rule.get("from") and rule.get("ports"), f"{name}: a rule open to every source or port: {rule}"
            for port in rule["ports"]:
                seen.setdefault(port["port"], set()).update(_peers(p) for p in rule["from"])
        assert seen == allowed, name
    isvc = _by(objects, "InferenceService", "energy-forecaster")["spec"]
    # the predictor's Knative service gets no route from the public gateway
    assert isvc["predictor"]["labels"] == {"networking.knative.dev/visibility": "cluster-local"}
    assert "labels" not in isvc["transformer"]
    env = {e["name"]: e.get("value") for e in isvc["transformer"]["containers"][0]["env"]}
    assert env["SE_MODEL_REPOSITORY_ROUTES"] == "false"


def test_every_pod_is_non_root_with_limits_and_probes(objects):
    seen = 0
    for obj in objects:
        for where, pod, c in containers(obj):
            seen += 1
            name = f"{key(obj)} {where} {c.get('name')}"
            pod_sc, sc = pod.get("securityContext", {}), c.get("securityContext", {})
            assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0, name
            assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("capabilities") == {"drop": ["ALL"]}, name
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and {"cpu", "memory"} <= set(res.get("limits", {})), name
            if obj["kind"] not in RUN_TO_COMPLETION:
                assert c.get("readinessProbe") and c.get("livenessProbe"), name
            image = c.get("image")
            if image is None:  # KServe's xgboost runtime supplies the predictor's image
                assert where == "InferenceService.predictor", name
                continue
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned {image}"
    assert seen == 11


def test_overlays_differ_where_they_should():
    kind, prod = rendered("kind"), rendered("production")
    img = lambda objs: {c["image"] for o in objs for _, _, c in containers(o) if is_ours(c)}  # noqa: E731
    assert all(i.endswith(":dev") for i in img(kind)) and all(i.endswith(":0.1.0") for i in img(prod))
    size = lambda objs: _by(objs, "StatefulSet", "minio")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]  # noqa: E731,E501
    assert (size(kind), size(prod)) == ("2Gi", "100Gi")
    assert _by(prod, "InferenceService", "energy-forecaster")["spec"]["predictor"]["minReplicas"] == 2
