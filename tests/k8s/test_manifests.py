"""kustomize overlays render; objects validate (Kubernetes schemas, kserve models); pods are locked down."""

from __future__ import annotations

import copy
import functools
import re

import kubernetes_validate
import pytest

from k8s_objects import REPO, RUN_TO_COMPLETION, containers, is_ours, key, kustomize, pod_specs
from smart_energy.serving.rollout_clients import UnknownFieldError, check_fields, load_inference_service

K8S_VERSION = "1.30.0"
OVERLAY_NAMES = ["kind", "production"]
# the served models (InferenceService name == registry model name) and their rollout CronJobs
MODELS = {"energy-forecaster": "rollout-controller", "energy-forecaster-dayahead": "rollout-controller-dayahead"}
RUNTIME = "smart-energy-xgboost"
CRDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("kubeflow.org/v1beta1", "Experiment"),
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),  # validated against the operator's CRD in test_spark.py
}
EXPECTED = {
    ("Namespace", "smart-energy"), ("StatefulSet", "minio"), ("Service", "minio"), ("Job", "minio-create-bucket"),
    ("Deployment", "redis"), ("Service", "redis"), ("ConfigMap", "feast-config"), ("ConfigMap", "smart-energy-settings"),
    ("ServiceAccount", "kserve-s3"), ("ServingRuntime", "smart-energy-xgboost"),
    ("InferenceService", "energy-forecaster"), ("InferenceService", "energy-forecaster-dayahead"),
    ("ServiceAccount", "rollout-controller"), ("Role", "rollout-controller"), ("RoleBinding", "rollout-controller"),
    ("CronJob", "rollout-controller"), ("CronJob", "rollout-controller-dayahead"),
    ("PodMonitor", "energy-forecaster"), ("PodMonitor", "energy-forecaster-dayahead"), ("ServiceMonitor", "minio"),
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
        assert len(rendered(overlay)) == len(names)  # no object twice
        assert all(o["metadata"].get("namespace") == "smart-energy" for o in rendered(overlay) if o["kind"] != "Namespace")


def test_builtin_objects_validate_strictly(objects):
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked == len(objects) - 10 >= 30


def test_validation_catches_a_misspelt_field():
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_crds_have_identity(objects):
    crds = [o for o in objects if (o["apiVersion"], o["kind"]) in CRDS]
    assert len(crds) == 10
    for obj in crds:
        assert obj["metadata"]["name"] and obj["metadata"]["namespace"] == "smart-energy"
        assert isinstance(obj.get("spec"), dict) and obj["spec"]


@pytest.mark.parametrize("name", MODELS)
def test_inference_service_loads_into_kserve_model(objects, name):
    isvc = load_inference_service(_by(objects, "InferenceService", name))
    assert isvc.metadata.annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    predictor = isvc.spec.predictor
    assert predictor.model.model_format.name == "xgboost"
    assert predictor.model.runtime == RUNTIME
    assert predictor.model.protocol_version == "v2"
    # a version folder of this model: `smart-energy rollout` writes models/<name>/<version> there
    assert predictor.model.storage_uri.startswith(f"s3://smart-energy/models/{name}/")
    assert predictor.service_account_name == "kserve-s3"
    assert predictor.canary_traffic_percent == 100
    transformer = isvc.spec.transformer.containers[0]
    assert transformer.command == ["python", "-m", "smart_energy.serving.transformer"]
    assert transformer.args == ["--model_name", name, "--predictor_protocol", "v2"]
    env = {e.name: e.value for e in transformer.env}
    assert env["SE_ONLINE_STORE"] == "redis" and env["SE_MODEL_NAME"] == name


def test_kserve_check_rejects_unknown_fields():
    obj = dict(_by(rendered("kind"), "InferenceService", "energy-forecaster"))
    obj["spec"] = {**obj["spec"], "predictor": {**obj["spec"]["predictor"], "canaryTraficPercent": 10}}
    with pytest.raises(UnknownFieldError, match="canaryTraficPercent"):
        load_inference_service(obj)


def test_serving_runtime_loads_into_kserve_model(objects):
    runtime = _by(objects, "ServingRuntime", RUNTIME)
    check_fields(runtime, "V1alpha1ServingRuntime")
    bad = {**runtime["spec"], "supportedModelFormats": [{"name": "xgboost", "autoselect": False}]}
    with pytest.raises(UnknownFieldError, match="autoselect"):
        check_fields({**runtime, "spec": bad}, "V1alpha1ServingRuntime")


def _transformer_without_its_model(isvc: dict) -> dict:
    """The transformer container with its model's name (in args, SE_MODEL_NAME) blanked and SE_TARIFF left out."""
    container = copy.deepcopy(isvc["spec"]["transformer"]["containers"][0])
    name = isvc["metadata"]["name"]
    container["args"] = ["<model>" if a == name else a for a in container["args"]]
    container["env"] = [{**e, "value": "<model>"} if e["name"] == "SE_MODEL_NAME" else e
                        for e in container["env"] if e["name"] != "SE_TARIFF"]
    return container


def _without_its_model(isvc: dict) -> dict:
    spec = copy.deepcopy(isvc["spec"])
    spec["predictor"]["model"].pop("storageUri")
    spec["transformer"]["containers"] = [_transformer_without_its_model(isvc)]
    return {"annotations": isvc["metadata"].get("annotations"), "spec": spec}


def test_the_two_inference_services_differ_only_in_their_model(objects):
    """Same runtime, pods and transformer (image, flags, env, probes, limits) but for the model's name and storageUri;
    the day-ahead transformer also prices its answers with SE_TARIFF, a tariff the settings accept."""
    from smart_energy.components.settings import Settings

    hour, day = (_by(objects, "InferenceService", name) for name in MODELS)
    assert _without_its_model(hour) == _without_its_model(day)
    uris = [i["spec"]["predictor"]["model"]["storageUri"] for i in (hour, day)]
    assert uris == [f"s3://smart-energy/models/{name}/production" for name in MODELS]
    tariffs = [{e["name"]: e.get("value") for e in i["spec"]["transformer"]["containers"][0]["env"]}.get("SE_TARIFF")
               for i in (hour, day)]
    assert tariffs[0] is None and tariffs[1] == Settings.from_env({"SE_TARIFF": tariffs[1]}).tariff == "hp-hc"


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
    # both models' storage initializers read s3:// with that ServiceAccount
    assert {_by(kind, "InferenceService", n)["spec"]["predictor"]["serviceAccountName"] for n in MODELS} == {"kserve-s3"}


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
                              "resourceNames": sorted(MODELS), "verbs": ["get", "patch"]}]
    binding = _by(objects, "RoleBinding", "rollout-controller")
    assert binding["subjects"][0]["name"] == "rollout-controller"
    for model, cron_name in MODELS.items():
        cron = _by(objects, "CronJob", cron_name)
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "rollout-controller"
        # --model names both the registry model and the InferenceService; no env var says otherwise
        container = pod["containers"][0]
        assert container["command"] == ["smart-energy"]
        assert container["args"] == ["rollout", "--model", model]
        assert not {"SE_MODEL_NAME", "SE_INFERENCE_SERVICE"} & {e["name"] for e in container["env"]}
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # the only pods with an API token are the rollout controller's and the Spark driver's (it creates its executors)
    for obj in objects:
        for where, spec in pod_specs(obj):
            if spec.get("serviceAccountName") not in {"rollout-controller", "smart-energy-spark"}:
                sa_token = spec.get("automountServiceAccountToken")
                sa = next((o for o in objects if o["kind"] == "ServiceAccount"
                           and o["metadata"]["name"] == spec.get("serviceAccountName")), {})
                assert sa_token is False or sa.get("automountServiceAccountToken") is False, f"{key(obj)} {where}"


def test_the_two_rollout_cron_jobs_differ_only_in_their_model(objects):
    hour, day = (copy.deepcopy(_by(objects, "CronJob", name)) for name in MODELS.values())
    for cron in (hour, day):
        cron["metadata"]["name"] = "<name>"
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][2] = "<model>"
    assert hour == day


def test_katib_experiment_searches_xgboost(objects):
    exp = _by(objects, "Experiment", "energy-forecaster-hpo")["spec"]
    assert exp["objective"] == {"type": "minimize", "objectiveMetricName": "mae_kw"}
    assert {p["name"] for p in exp["parameters"]} == {"max_depth", "learning_rate", "n_estimators"}
    refs = {t["reference"] for t in exp["trialTemplate"]["trialParameters"]}
    assert refs == {"max_depth", "learning_rate", "n_estimators"}
    script = exp["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for t in exp["trialTemplate"]["trialParameters"]:
        assert f"${{trialParameters.{t['name']}}}" in script


def _isvc_selector(selector: dict) -> tuple[frozenset, tuple]:
    """(the InferenceServices a pod selector picks by KServe's label, its other matchLabels)."""
    labels = dict(selector.get("matchLabels", {}))
    names = {labels.pop("serving.kserve.io/inferenceservice")} if "serving.kserve.io/inferenceservice" in labels else set()
    for expr in selector.get("matchExpressions", []):
        assert expr["key"] == "serving.kserve.io/inferenceservice" and expr["operator"] == "In", expr
        names |= set(expr["values"])
    return frozenset(names), tuple(sorted(labels.items()))


def test_network_policies_deny_by_default(objects):
    deny = _by(objects, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    selected = {_isvc_selector(p["spec"]["podSelector"]) for p in objects if p["kind"] == "NetworkPolicy"}
    assert (frozenset(), (("app.kubernetes.io/name", "redis"),)) in selected
    for component in ("predictor", "transformer"):
        assert (frozenset(MODELS), (("component", component),)) in selected
    # Redis admits both models' pods (the transformers' Feast lookups)
    redis_from = [peer["podSelector"] for rule in _by(objects, "NetworkPolicy", "redis-ingress")["spec"]["ingress"]
                  for peer in rule["from"] if "podSelector" in peer]
    assert (frozenset(MODELS), ()) in {_isvc_selector(s) for s in redis_from}


# who may open a connection to which port of the InferenceServices' pods (queue-proxy 8012/8013, its
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
    names, labels = _isvc_selector(peer["podSelector"])
    assert names == frozenset(MODELS), peer
    return f"pods:{dict(labels)['component']}"


def test_only_what_must_reach_the_inference_service_can(objects):
    for name, allowed in ALLOWED.items():
        seen: dict[int, set[str]] = {}
        for rule in _by(objects, "NetworkPolicy", name)["spec"]["ingress"]:
            assert rule.get("from") and rule.get("ports"), f"{name}: a rule open to every source or port: {rule}"
            for port in rule["ports"]:
                seen.setdefault(port["port"], set()).update(_peers(p) for p in rule["from"])
        assert seen == allowed, name
    for model in MODELS:
        isvc = _by(objects, "InferenceService", model)["spec"]
        # the predictor's Knative service gets no route from the public gateway
        assert isvc["predictor"]["labels"] == {"networking.knative.dev/visibility": "cluster-local"}
        assert "labels" not in isvc["transformer"]
        env = {e["name"]: e.get("value") for e in isvc["transformer"]["containers"][0]["env"]}
        assert env["SE_MODEL_REPOSITORY_ROUTES"] == "false"
    # nor do the predictors offer the model load/unload routes
    runtime_env = _by(objects, "ServingRuntime", RUNTIME)["spec"]["containers"][0]["env"]
    assert {"name": "SE_MODEL_REPOSITORY_ROUTES", "value": "false"} in runtime_env


def test_every_inference_service_is_scraped_with_its_isvc_label(objects):
    """Each model's pods are scraped, and each series gets isvc = the InferenceService's name (KServe's pod label)."""
    covered = set()
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        names, labels = _isvc_selector(monitor["spec"]["selector"])
        assert names and labels == (), monitor["metadata"]["name"]
        covered |= names
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] == "user-port" and endpoint["path"] == "/metrics"
            assert {"sourceLabels": ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"],
                    "targetLabel": "isvc"} in endpoint["relabelings"]
    assert covered == set(MODELS) == {o["metadata"]["name"] for o in objects if o["kind"] == "InferenceService"}


# predictor.model's own fields, which are not a container's
MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri"}


def effective_containers(objects):
    """(object, where, pod, container) of every pod. An InferenceService's predictor container is the one KServe
    makes: its ServingRuntime's kserve-container with predictor.model's container fields on top, in a pod with the
    runtime's volumes. (The ServingRuntime itself makes no pod.)"""
    runtimes = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "ServingRuntime"}
    for obj in objects:
        for where, pod, c in containers(obj):
            if where == "InferenceService.predictor":
                runtime = runtimes[c["runtime"]]
                base = next(rc for rc in runtime["containers"] if rc["name"] == "kserve-container")
                c = {**base, **{k: v for k, v in c.items() if k not in MODEL_FIELDS}}
                pod = {**pod, "volumes": runtime.get("volumes", []) + pod.get("volumes", [])}
            yield obj, where, pod, c


def test_every_pod_is_non_root_with_limits_and_probes(objects):
    seen = 0
    for obj, where, pod, c in effective_containers(objects):
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
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned {image}"
        if where.startswith("InferenceService"):
            # a read-only root: both servers write their temporary model folder (tempfile) to a mounted /tmp
            volumes = {v["name"] for v in pod.get("volumes", [])}
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in volumes, f"{name}: no writable /tmp"
    assert seen == 14


def test_predictor_runs_the_serving_image_as_its_user(objects):
    """Both predictors run our image (the ServingRuntime's) as the image's non-root USER, under a 1-CPU limit that
    XGBoost's thread count follows (SE_XGB_THREADS unset)."""
    user = re.findall(r"^USER (\d+):(\d+)$", (REPO / "serving" / "Dockerfile").read_text(), re.M)[-1]
    predictors = [(pod, c) for obj, where, pod, c in effective_containers(objects) if where == "InferenceService.predictor"]
    assert len(predictors) == len(MODELS)
    for pod, c in predictors:
        assert is_ours(c) and "serving" in c["image"], c["image"]
        assert (str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["runAsGroup"])) == user
        assert c["resources"]["limits"]["cpu"] == "1"
        assert "SE_XGB_THREADS" not in {e["name"] for e in c.get("env", [])}


def test_overlays_differ_where_they_should():
    kind, prod = rendered("kind"), rendered("production")

    def images(objs):
        return {c["image"] for _, _, _, c in effective_containers(objs) if is_ours(c)}

    assert len(images(kind)) == 3 and all(i.endswith(":dev") for i in images(kind))
    assert len(images(prod)) == 3 and all(i.endswith(":0.1.0") for i in images(prod))
    size = lambda objs: _by(objs, "StatefulSet", "minio")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]  # noqa: E731,E501
    assert (size(kind), size(prod)) == ("2Gi", "100Gi")
    for name in MODELS:
        for component in ("predictor", "transformer"):
            assert _by(prod, "InferenceService", name)["spec"][component]["minReplicas"] == 2
            assert _by(kind, "InferenceService", name)["spec"][component]["minReplicas"] == 1
    # both rollout CronJobs hold each canary step shorter on kind

    def hold(objs, cron):
        env = _by(objs, "CronJob", cron)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e.get("value") for e in env}["SE_CANARY_HOLD_SECONDS"]

    assert {(hold(kind, c), hold(prod, c)) for c in MODELS.values()} == {("60", "300")}


def test_settings_name_the_served_models(objects):
    """The pipeline registers the models under the names the settings ConfigMap gives; those are the
    InferenceServices' (and the settings' own defaults, which the embedded mode uses)."""
    from smart_energy.components.settings import Settings

    data = _by(objects, "ConfigMap", "smart-energy-settings")["data"]
    defaults = Settings()
    assert [data["SE_MODEL_NAME"], data["SE_DAYAHEAD_MODEL_NAME"]] == list(MODELS) == \
        [defaults.model_name, defaults.dayahead_model_name]
