"""The Helm chart, checked by Helm itself (helm-python-sdk embeds Helm v4's Go engine): it renders with the
default and the kind values, lints without errors, Helm's own validator refuses bad values, and its objects
are kustomize's, field by field, per overlay.
"""

from __future__ import annotations

import copy
import json
import shutil

import jsonschema
import pytest
import yaml
from helm_python import HelmValuesError, helm_sdk_version, lint

from k8s_objects import (
    CHART, CHART_VALUES, NAMESPACE, chart, chart_values, helm_objects, helm_render, key, kustomize, user_values,
)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# lint severities (helm's support.Severity)
INFO, WARNING, ERROR = 1, 2, 3
# (kind, name, dotted path) -> why Helm's object may differ there from kustomize's. Keep it short: a difference
# without a reason is a chart bug to fix in helm/smart-energy/templates.
ALLOWED_DIFFERENCES: dict[tuple[str, str, str], str] = {}


def test_helm_is_v4():
    assert helm_sdk_version().startswith("v4."), helm_sdk_version()


def test_chart_renders_with_the_default_values():
    """values.yaml alone is the production install (manifests/overlays/production)."""
    objs = helm_render()
    assert objs == helm_objects("production")
    assert len(objs) >= 30 and len(set(map(key, objs))) == len(objs)
    for obj in objs:
        expected = "" if obj["kind"] == "Namespace" else NAMESPACE
        assert obj["metadata"].get("namespace", "") == expected, key(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "smart-energy", key(obj)
    assert not [key(o) for o in objs if o["kind"] == "Secret"]  # production's Secret comes from the secret store


def test_kind_values_change_what_they_should():
    prod, kind = ({key(o): o for o in helm_objects(overlay)} for overlay in ("production", "kind"))
    assert set(kind) - set(prod) == {("Secret", NAMESPACE, "minio-credentials")}
    assert set(prod) <= set(kind)
    images = lambda objs: {n["image"] for o in objs.values() for n in _walk(o)
                           if isinstance(n, dict) and isinstance(n.get("image"), str)}
    ours = lambda objs: {i for i in images(objs) if i.startswith("ghcr.io/smart-energy/")}
    assert ours(kind) and all(i.endswith(":dev") for i in ours(kind))
    assert ours(prod) and not any(i.endswith(":dev") for i in ours(prod))


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


@pytest.mark.parametrize("overlay", ["production", "kind"])
def test_lint_finds_no_errors(overlay):
    report = lint(CHART, user_values(CHART_VALUES[overlay]), namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1 and report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= WARNING] == [], report["messages"]


def test_lint_reports_a_broken_template(tmp_path):
    """The lint assertion above can fail: a template that is not YAML is an error."""
    broken = tmp_path / "smart-energy"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [x\n")
    report = lint(broken, namespace=NAMESPACE)
    assert [m for m in report["messages"] if m["severity"] == ERROR], report


def test_values_validate_against_the_schema():
    chart().validate_schema(None)
    chart().validate_schema(user_values(CHART_VALUES["kind"]))
    # second, independent reading of the same schema
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(chart_values([]), SCHEMA)
    jsonschema.validate(chart_values(CHART_VALUES["kind"]), SCHEMA)


def _with(path: tuple[str, ...], bad) -> dict:
    values = copy.deepcopy(chart_values([]))
    node = values
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    return values


BAD_VALUES = [
    (("rollout", "canarySteps"), "10,25,50"),          # must end at 100
    (("s3", "artifactUri"), "file:///tmp"),            # the cluster store is s3://
    (("inferenceService", "predictor", "minReplicas"), -1),
    (("rollout", "maxErrorRate"), 2),
    (("spark", "executor", "instances"), 0),
    (("spark", "driver", "memory"), "2Gi"),             # Spark's JVM units (2g), not a Kubernetes quantity
    (("spark", "executor", "cores"), "1"),
] + [(("images", name, "tag"), "") for name in sorted(yaml.safe_load((CHART / "values.yaml").read_text())["images"])]


@pytest.mark.parametrize("path,bad", BAD_VALUES, ids=lambda v: ".".join(v) if isinstance(v, tuple) else repr(v))
def test_helm_refuses_bad_values(path, bad):
    values = _with(path, bad)
    with pytest.raises(HelmValuesError) as refused:
        chart().validate_schema(values)
    assert "/" + "/".join(path) in str(refused.value), str(refused.value)
    with pytest.raises(HelmValuesError):  # and an install/template of them stops before rendering
        helm_render(values)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


def test_helm_refuses_unknown_keys():
    with pytest.raises(HelmValuesError, match="replicaCount"):
        chart().validate_schema({"replicaCount": 3})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(chart_values([]) | {"replicaCount": 3}, SCHEMA)


def _pop(obj: dict, dotted: str):
    node, parts = obj, dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node.pop(int(parts[-1])) if isinstance(node, list) else node.pop(parts[-1], None)


def _differences(a, b, path=""):
    """Dotted paths where two objects differ (a leaf, or a key only one side has)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in (_differences(a[k], b[k], f"{path}.{k}") if k in a and k in b else [f"{path}.{k}"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}.{i}")]
    return [] if a == b else [path or "."]


@pytest.mark.parametrize("overlay", ["production", "kind"])
def test_chart_objects_are_kustomizes_field_by_field(overlay):
    helm, kust = helm_objects(overlay), kustomize(overlay)
    helm_by, kust_by = {key(o): o for o in helm}, {key(o): o for o in kust}
    assert len(helm_by) == len(helm) and len(kust_by) == len(kust)
    assert set(helm_by) == set(kust_by), \
        f"only Helm: {sorted(set(helm_by) - set(kust_by))}; only kustomize: {sorted(set(kust_by) - set(helm_by))}"
    unused = {k for k in ALLOWED_DIFFERENCES}
    for ident in sorted(helm_by):
        ours, theirs = copy.deepcopy(helm_by[ident]), copy.deepcopy(kust_by[ident])
        for (kind, name, path), _reason in ALLOWED_DIFFERENCES.items():
            if (kind, name) == (ident[0], ident[2]):
                assert _pop(ours, path) != _pop(theirs, path), f"{kind}/{name} {path} no longer differs"
                unused.discard((kind, name, path))
        assert ours == theirs, f"{ident}: Helm and kustomize differ at {_differences(ours, theirs)}"
    assert not unused, f"allowed differences for objects this overlay does not render: {unused}"


def test_the_comparison_sees_a_one_field_change():
    helm = {key(o): o for o in helm_objects("production")}
    changed = copy.deepcopy(helm[("ConfigMap", NAMESPACE, "smart-energy-settings")])
    changed["data"]["S3_USE_HTTPS"] = "true"
    assert _differences(changed, helm[("ConfigMap", NAMESPACE, "smart-energy-settings")]) == [".data.S3_USE_HTTPS"]


def test_spark_can_be_left_out_of_the_chart():
    """spark.enabled=false: Helm renders no Spark objects, and Redis no longer admits Spark pods."""
    docs = helm_render({"spark": {"enabled": False}})
    spark = {"SparkApplication", "spark-ingress", "smart-energy-spark", "smart-energy-spark-executor",
             "smart-energy-spark-launcher"}
    assert not [key(d) for d in docs if d["kind"] in spark or d["metadata"]["name"] in spark]
    assert {key(d) for d in docs} < {key(d) for d in helm_render()}
    spark_peer = {"app.kubernetes.io/name": "smart-energy-spark"}
    redis = next(d for d in docs if d["metadata"]["name"] == "redis-ingress")
    assert spark_peer not in [p.get("podSelector", {}).get("matchLabels", {}) for p in redis["spec"]["ingress"][0]["from"]]
    enabled = next(d for d in helm_render() if d["metadata"]["name"] == "redis-ingress")
    assert spark_peer in [p.get("podSelector", {}).get("matchLabels", {}) for p in enabled["spec"]["ingress"][0]["from"]]
