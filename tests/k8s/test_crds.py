"""Every custom resource that kustomize (both overlays) and Helm render validates against the real CRD of its kind
(vendored in crds/, see crds/README.md), read as the API server reads it with strict field validation: a field the
schema does not know is an error. Broken objects show that the check refuses what a cluster would refuse.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re

import jsonschema
import kubernetes_validate
import pytest

from k8s_objects import (
    CRDS, api_group, crd_errors, helm_objects, is_custom, key, kustomize, schema_errors, served_schema,
    strict_schema, vendored_body, vendored_crds,
)

SOURCES = [("kustomize", "kind"), ("kustomize", "production"), ("helm", "kind"), ("helm", "production")]
# the custom resources the install is made of (issue 20: the runtime and both models' InferenceServices)
EXPECTED_KINDS = {
    ("serving.kserve.io", "InferenceService"), ("serving.kserve.io", "ServingRuntime"),
    ("monitoring.coreos.com", "PodMonitor"), ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"), ("kubeflow.org", "Experiment"),
    ("sparkoperator.k8s.io", "SparkApplication"),
}
KATIB_TYPES = CRDS / "katib_v1beta1_swagger.json"
K8S_VERSION = "1.30.0"


@functools.cache
def objects(source: str, overlay: str) -> tuple[dict, ...]:
    return tuple(kustomize(overlay) if source == "kustomize" else helm_objects(overlay))


def custom_resources(source: str, overlay: str) -> list[dict]:
    return [o for o in objects(source, overlay) if is_custom(o)]


def _readme_rows() -> dict[str, dict[str, str]]:
    """crds/README.md's table: file -> its columns."""
    lines = [line for line in (CRDS / "README.md").read_text().splitlines() if line.startswith("| `")]
    rows = {}
    for line in lines:
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(("file", "repository", "path", "version", "commit", "blob", "licence"), cells))
    return rows


def _git_blob(text: str) -> str:
    body = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


def test_every_vendored_file_is_the_upstream_file_unchanged():
    rows = _readme_rows()
    files = sorted(p.name for p in CRDS.iterdir() if p.name != "README.md")
    assert sorted(rows) == files
    for name in files:
        row, path = rows[name], CRDS / name
        assert row["licence"] == "Apache-2.0" and re.fullmatch(r"[0-9a-f]{40}", row["commit"]), row
        body = vendored_body(path) if path.suffix == ".yaml" else path.read_text()
        assert _git_blob(body) == row["blob"], f"{name} is not {row['repository']}:{row['path']} at {row['version']}"
        if path.suffix == ".yaml":  # its own header says the same
            assert f"git blob {row['blob']}" in path.read_text()[:1000] and row["commit"] in path.read_text()[:1000]


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_every_custom_kind_has_a_vendored_crd(source, overlay):
    kinds = {(api_group(o), o["kind"]) for o in custom_resources(source, overlay)}
    assert kinds == EXPECTED_KINDS, f"unexpected: {kinds - EXPECTED_KINDS}, missing: {EXPECTED_KINDS - kinds}"
    assert kinds <= set(vendored_crds()), f"no CRD vendored for {kinds - set(vendored_crds())}"
    assert set(vendored_crds()) == EXPECTED_KINDS  # and no CRD vendored for a kind nothing uses


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_custom_resources_validate_against_their_crds(source, overlay):
    resources = custom_resources(source, overlay)
    assert len(resources) >= len(EXPECTED_KINDS)
    for obj in resources:
        group, version = obj["apiVersion"].split("/")
        crd = vendored_crds()[group, obj["kind"]]
        assert crd["spec"]["scope"] == "Namespaced" and obj["metadata"]["namespace"] == "smart-energy", key(obj)
        served_schema(crd, version)  # the version we write is one the CRD serves
        assert crd_errors(obj) == [], f"{source}/{overlay} {key(obj)}"


@functools.cache
def katib_types() -> dict:
    """Katib's OpenAPI definitions of its v1beta1 Go types, rooted at Experiment. Its CRD keeps every field
    (x-kubernetes-preserve-unknown-fields at the root), so the API server refuses no misspelt field of an
    Experiment; these types name the fields Katib's controller reads. Kubernetes' own types they refer to are
    left open here (the trial's Job is validated with Kubernetes' schemas instead)."""
    doc = json.loads(KATIB_TYPES.read_text())
    definitions = dict(doc["definitions"])
    definitions |= {
        "v1.ObjectMeta": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "v1.ListMeta": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "v1.Time": {"type": "string"},
        "v1.Container": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "v1.HTTPGetAction": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "v1.unstructured.Unstructured": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    return {"$ref": "#/definitions/v1beta1.Experiment", "definitions": definitions}


@pytest.mark.parametrize("source,overlay", SOURCES)
def test_experiments_are_katibs_types_and_their_trial_is_a_valid_job(source, overlay):
    experiments = [o for o in custom_resources(source, overlay) if o["kind"] == "Experiment"]
    assert experiments
    for exp in experiments:
        assert schema_errors(katib_types(), exp) == [], key(exp)
        trial = exp["spec"]["trialTemplate"]["trialSpec"]
        job = {**trial, "metadata": {"name": "trial", **trial.get("metadata", {})}}  # Katib names each trial's Job
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def _resource(kind: str, name: str | None = None) -> dict:
    return copy.deepcopy(next(o for o in kustomize("production")
                              if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)))


def _rename(node: dict, old: str, new: str) -> None:
    node[new] = node.pop(old)


BROKEN = [
    ("InferenceService", lambda o: _rename(o["spec"]["predictor"], "model", "modle"),
     "spec.predictor: Additional properties are not allowed ('modle' was unexpected)"),
    ("InferenceService", lambda o: o["spec"]["predictor"]["model"].update(runtime=["smart-energy-xgboost"]),
     "spec.predictor.model.runtime: ['smart-energy-xgboost'] is not of type 'string'"),
    # resources are int-or-string quantities: 2 is one, a list is not
    ("InferenceService", lambda o: o["spec"]["transformer"]["containers"][0]["resources"]["limits"].update(cpu=[2]),
     "spec.transformer.containers.0.resources.limits.cpu: [2] is not valid under any of the given schemas"),
    ("ServingRuntime", lambda o: o["spec"].update(protocolVersions="v1"),
     "spec.protocolVersions: 'v1' is not of type 'array'"),
    ("ServingRuntime", lambda o: o["spec"]["supportedModelFormats"][0].update(autoSelect="false"),
     "spec.supportedModelFormats.0.autoSelect: 'false' is not of type 'boolean'"),
    ("ServingRuntime", lambda o: o["spec"]["containers"][0].update(imagePullPolcy="Always"),
     "spec.containers.0: Additional properties are not allowed ('imagePullPolcy' was unexpected)"),
    ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].pop("expr"),
     "spec.groups.0.rules.0: 'expr' is a required property"),
    ("PrometheusRule", lambda o: o["spec"]["groups"][0]["rules"][0].update({"for": 5}),
     "spec.groups.0.rules.0.for: 5 is not of type 'string'"),
    ("PodMonitor", lambda o: o["spec"].update(podMetricsEndpoints=o["spec"]["podMetricsEndpoints"][0]),
     "spec.podMetricsEndpoints: {"),
    ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0].update(
        relabelings=[{"action": "rename", "sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"}]),
     "spec.podMetricsEndpoints.0.relabelings.0.action: 'rename' is not one of"),
    ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(port=9000),
     "spec.endpoints.0.port: 9000 is not of type 'string'"),
    ("SparkApplication", lambda o: _rename(o["spec"], "driver", "drvier"), "'driver' is a required property"),
]


@pytest.mark.parametrize("kind,break_it,expected", BROKEN, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BROKEN)])
def test_validation_refuses_a_broken_resource(kind, break_it, expected):
    obj = _resource(kind)
    assert crd_errors(obj) == []
    break_it(obj)
    errors = crd_errors(obj)
    assert any(expected in e for e in errors), errors


def test_validation_refuses_a_field_under_an_object_with_no_fields():
    """A structural schema's object without properties keeps nothing (the API server prunes it), except the
    object's own metadata; x-kubernetes-preserve-unknown-fields keeps everything."""
    schema = strict_schema({"type": "object", "properties": {
        "metadata": {"type": "object"}, "closed": {"type": "object"},
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "size": {"x-kubernetes-int-or-string": True}, "note": {"type": "string", "nullable": True}}})
    check = jsonschema.Draft4Validator(schema)
    assert check.is_valid({"metadata": {"name": "x"}, "open": {"any": 1}, "size": "1Gi", "note": None})
    assert check.is_valid({"size": 3})
    assert not check.is_valid({"closed": {"any": 1}})
    assert not check.is_valid({"size": 1.5}) and not check.is_valid({"size": [1]})
    assert not check.is_valid({"extra": 1})


def test_an_experiments_unknown_field_passes_katibs_crd_but_not_its_types():
    exp = _resource("Experiment")
    exp["spec"]["maxTrailCount"] = 20
    assert crd_errors(exp) == []  # what a cluster accepts (and Katib's controller then ignores)
    assert any("'maxTrailCount' was unexpected" in e for e in schema_errors(katib_types(), exp))
    exp = _resource("Experiment")
    exp["spec"]["parallelTrialCount"] = "2"
    assert any("parallelTrialCount: '2' is not of type 'integer'" in e for e in schema_errors(katib_types(), exp))
    exp = _resource("Experiment")
    exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["backofLimit"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**exp["spec"]["trialTemplate"]["trialSpec"], "metadata": {"name": "t"}},
                                     K8S_VERSION, strict=True)
