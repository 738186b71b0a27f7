"""The Helm chart: values validate against values.schema.json; it renders the same objects as kustomize.

Without a helm binary (none can be installed on this workplace's machines) the chart is rendered by
``k8s_objects.render_chart_subset``, which implements only the plain template subset the chart uses
and fails on anything else; ``helm template`` is compared too when helm is on PATH.
"""

from __future__ import annotations

import copy
import json
import shutil

import jsonschema
import pytest
import yaml

from k8s_objects import (
    CHART, CHART_VALUES, UnsupportedTemplate, chart_values, containers, helm_template, key, kustomize,
    render_chart_subset, render_template,
)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def test_values_validate_against_the_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), SCHEMA)
    jsonschema.validate(chart_values([CHART / "values-kind.yaml"]), SCHEMA)


@pytest.mark.parametrize("path,bad", [
    (("rollout", "canarySteps"), "10,25,50"),          # must end at 100
    (("s3", "artifactUri"), "file:///tmp"),            # the cluster store is s3://
    (("inferenceService", "predictor", "minReplicas"), -1),
    (("images", "transformer", "tag"), ""),
    (("rollout", "maxErrorRate"), 2),
    (("spark", "executor", "instances"), 0),
    (("spark", "driver", "memory"), "2Gi"),             # Spark's JVM units (2g), not a Kubernetes quantity
    (("spark", "executor", "cores"), "1"),
    (("images", "spark", "tag"), ""),
])
def test_schema_rejects_bad_values(path, bad):
    values = copy.deepcopy(yaml.safe_load((CHART / "values.yaml").read_text()))
    node = values
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


def test_schema_rejects_unknown_keys():
    values = yaml.safe_load((CHART / "values.yaml").read_text()) | {"replicaCount": 3}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


def _summary(objs):
    """Per object: its identity, the images and env names/values of its containers, its args."""
    out = {}
    for obj in objs:
        conts = sorted(
            (c.get("name") or "", c.get("image") or "", tuple(c.get("command", [])), tuple(c.get("args", [])),
             tuple((e["name"], e.get("value"), json.dumps(e.get("valueFrom"), sort_keys=True)) for e in c.get("env", [])))
            for _, _, c in containers(obj)
        )
        out[key(obj)] = conts
    return out


@pytest.mark.parametrize("overlay", ["kind", "production"])
def test_chart_renders_what_kustomize_renders(overlay):
    chart, kust = render_chart_subset(CHART_VALUES[overlay]), kustomize(overlay)
    assert sorted(map(key, chart)) == sorted(map(key, kust))
    assert _summary(chart) == _summary(kust)
    by_key = {key(o): o for o in kust}
    compared = set()
    for obj in chart:  # the specs that matter for behaviour are identical, not just the names
        if obj["kind"] in {"InferenceService", "Role", "NetworkPolicy", "PrometheusRule", "Experiment", "ConfigMap",
                           "SparkApplication"}:
            assert obj["spec" if "spec" in obj else ("rules" if "rules" in obj else "data")] == \
                by_key[key(obj)]["spec" if "spec" in obj else ("rules" if "rules" in obj else "data")], key(obj)
            compared.add(obj["kind"])
        other = by_key[key(obj)]
        if obj["kind"] == "RoleBinding":
            assert (obj["roleRef"], obj["subjects"]) == (other["roleRef"], other["subjects"]), key(obj)
        if obj["kind"] == "ServiceAccount":
            assert obj.get("automountServiceAccountToken") == other.get("automountServiceAccountToken"), key(obj)
        if obj["kind"] == "Secret":
            assert obj["metadata"]["annotations"] == by_key[key(obj)]["metadata"]["annotations"]
    assert "SparkApplication" in compared


def test_spark_can_be_left_out_of_the_chart():
    """spark.enabled=false: no Spark objects, and Redis no longer admits Spark pods."""
    values = chart_values([])
    values["spark"]["enabled"] = False
    docs = [d for path in sorted((CHART / "templates").glob("*.yaml"))
            for d in yaml.safe_load_all(render_template(path.read_text(), values)) if d]
    spark = {"SparkApplication", "spark-ingress", "smart-energy-spark", "smart-energy-spark-executor",
             "smart-energy-spark-launcher"}
    assert not [key(d) for d in docs if d["kind"] in spark or d["metadata"]["name"] in spark]
    redis = next(d for d in docs if d["metadata"]["name"] == "redis-ingress")
    peers = [p.get("podSelector", {}).get("matchLabels", {}) for p in redis["spec"]["ingress"][0]["from"]]
    assert {"app.kubernetes.io/name": "smart-energy-spark"} not in peers
    enabled = next(d for d in render_chart_subset([]) if d["metadata"]["name"] == "redis-ingress")
    assert {"app.kubernetes.io/name": "smart-energy-spark"} in \
        [p.get("podSelector", {}).get("matchLabels", {}) for p in enabled["spec"]["ingress"][0]["from"]]


def test_subset_renderer_refuses_non_plain_templates():
    with pytest.raises(UnsupportedTemplate):
        render_template("{{ range .Values.images }}x{{ end }}", {"images": {}})
    with pytest.raises(UnsupportedTemplate):
        render_template("{{ .Values.missing }}", {})
    assert render_template('a: {{ .Values.x | quote }}\n{{- if .Values.y }}\nb: 1\n{{- end }}\n', {"x": False, "y": 0}) \
        == 'a: "false"\n'


@pytest.mark.parametrize("overlay", ["kind", "production"])
def test_helm_template_matches_kustomize(overlay):
    if shutil.which("helm") is None:
        pytest.skip("helm not on PATH")
    chart, kust = helm_template(CHART_VALUES[overlay]), kustomize(overlay)
    assert sorted(map(key, chart)) == sorted(map(key, kust))
    assert _summary(chart) == _summary(kust)
