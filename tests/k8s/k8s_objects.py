"""Rendering and walking the Kubernetes objects of manifests/ and helm/ for the tests in tests/k8s.

The chart is rendered by Helm itself: helm-python-sdk embeds Helm v4's Go engine as a shared library, so
``helm_objects`` is what ``helm template smart-energy helm/smart-energy -n smart-energy [-f values-kind.yaml]``
prints, without a binary or a cluster. ``crd_errors`` validates a custom resource against the vendored CRD
of its kind (tests/k8s/crds/) the way the API server applies it with strict field validation.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml
from helm_python import Chart

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "manifests" / "overlays"
CHART = REPO / "helm" / "smart-energy"
CRDS = Path(__file__).resolve().parent / "crds"
RELEASE = NAMESPACE = "smart-energy"
# kustomize placeholders (base) and the released repositories
OUR_IMAGES = ("smart-energy-transformer", "smart-energy-serving", "smart-energy-components", "smart-energy-spark",
              "ghcr.io/smart-energy/transformer", "ghcr.io/smart-energy/serving", "ghcr.io/smart-energy/components",
              "ghcr.io/smart-energy/spark")
# values files (`helm -f`) on top of the chart's values.yaml that correspond to each overlay
CHART_VALUES = {"production": [], "kind": [CHART / "values-kind.yaml"]}
# API groups of the objects the API server knows without a CRD
BUILTIN_GROUPS = {"", "apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io", "policy",
                  "autoscaling", "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io"}

POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
RUN_TO_COMPLETION = {"Job", "CronJob", "Experiment", "SparkApplication"}


def kustomize(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --------------------------------------------------------------------------- Helm


@functools.cache
def chart() -> Chart:
    return Chart.load(CHART)


def user_values(extra: list[Path]) -> dict[str, Any]:
    """What ``helm -f A -f B`` passes: the files' values, later files winning (Helm coalesces them)."""
    values: dict[str, Any] = {}
    for path in extra:
        values = merge_maps(values, yaml.safe_load(path.read_text()))
    return values


def merge_maps(base: dict, over: dict) -> dict:
    """Helm's mergeMaps for -f files: nested maps merged, anything else replaced."""
    merged = dict(base)
    for k, v in over.items():
        merged[k] = merge_maps(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def chart_values(extra: list[Path]) -> dict[str, Any]:
    """The values a release with these files uses: Helm's own coalescing of values.yaml and the files."""
    return chart().merge_values(user_values(extra))


def helm_render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects rendered by Helm (release smart-energy, namespace smart-energy), in template order.

    Helm validates the coalesced values against values.schema.json first and raises HelmValuesError."""
    manifests = chart().render(values, name=RELEASE, namespace=NAMESPACE)
    return [d for path in sorted(manifests) for d in yaml.safe_load_all(manifests[path]) if d]


def helm_objects(overlay: str) -> list[dict[str, Any]]:
    return helm_render(user_values(CHART_VALUES[overlay]))


# --------------------------------------------------------------------------- CRD schemas


def api_group(obj: dict[str, Any]) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def is_custom(obj: dict[str, Any]) -> bool:
    return api_group(obj) not in BUILTIN_GROUPS


def vendored_body(path: Path) -> str:
    """A vendored file below its provenance header (the comment lines at its top)."""
    lines = path.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "".join(lines[first:])


@functools.cache
def vendored_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> CustomResourceDefinition, for every CRD in tests/k8s/crds/."""
    crds = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.load_all(vendored_body(path), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["group"], doc["spec"]["names"]["kind"]] = doc
    return crds


def strict_schema(schema: Any, root: bool = True) -> Any:
    """A structural CRD schema as the API server applies it to a create with field validation Strict (kubectl's
    default): a field the schema does not name is an error, not pruned, unless x-kubernetes-preserve-unknown-fields
    keeps it; ``nullable`` admits null; x-kubernetes-int-or-string admits an integer or a string. An object with
    neither properties nor additionalProperties has no known fields, except ``metadata`` of the object itself or
    of an embedded resource (ObjectMeta, validated by the API server, not by the CRD)."""
    if isinstance(schema, list):
        return [strict_schema(s, root=False) for s in schema]
    if not isinstance(schema, dict):
        return schema
    walk = {"items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"}
    out = {k: (strict_schema(v, root=False) if k in walk else v) for k, v in schema.items()
           if k not in {"properties", "definitions"}}
    if "definitions" in schema:  # an OpenAPI document's types
        out["definitions"] = {k: strict_schema(v) for k, v in schema["definitions"].items()}
    open_ = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
    if "properties" in schema:
        embedded = root or schema.get("x-kubernetes-embedded-resource")
        out["properties"] = {k: (v if embedded and k == "metadata" else strict_schema(v, root=False))
                             for k, v in schema["properties"].items()}
        if not open_:
            out["additionalProperties"] = False
    elif schema.get("type") == "object" and not open_ and not _has_branches(schema):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and "type" not in schema and "anyOf" not in schema:
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in schema:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    return out


def _has_branches(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("anyOf", "allOf", "oneOf"))


def served_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The openAPIV3Schema of a served version of the CRD."""
    ver = next((v for v in crd["spec"]["versions"] if v["name"] == version), None)
    assert ver is not None and ver["served"], f"{crd['metadata']['name']} serves no version {version}"
    return ver["schema"]["openAPIV3Schema"]


@functools.cache
def _crd_validator(group: str, kind: str, version: str) -> jsonschema.Draft4Validator:
    crd = vendored_crds()[group, kind]
    # OpenAPI v3.0 schemas are JSON Schema draft 4 in their validation keywords
    return jsonschema.Draft4Validator(strict_schema(served_schema(crd, version)))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Why the API server would refuse the custom resource (its kind's vendored CRD, strict), one line per error."""
    group, version = obj["apiVersion"].split("/")
    assert (group, obj["kind"]) in vendored_crds(), f"no vendored CRD for {group} {obj['kind']}"
    validator = _crd_validator(group, obj["kind"], version)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def schema_errors(schema: dict[str, Any], obj: Any) -> list[str]:
    """The same strict reading for a schema that is not a CRD's (e.g. Katib's OpenAPI type definitions)."""
    validator = jsonschema.Draft4Validator(strict_schema(schema))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


# --------------------------------------------------------------------------- walking pods


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod-spec-like dict) for every pod the object will create."""
    kind = obj["kind"]
    if kind in POD_TEMPLATE_PATHS:
        node = obj
        for key in POD_TEMPLATE_PATHS[kind]:
            node = node[key]
        yield kind, node
    elif kind == "InferenceService":
        for component in ("predictor", "transformer"):
            spec = obj["spec"].get(component)
            if spec:
                containers = spec.get("containers") or ([spec["model"]] if "model" in spec else [])
                yield f"InferenceService.{component}", {**spec, "containers": containers}
    elif kind == "Experiment":
        yield "Experiment.trial", obj["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    elif kind == "SparkApplication":
        for role in ("driver", "executor"):
            yield f"SparkApplication.{role}", spark_pod(obj, role)


def spark_pod(obj: dict[str, Any], role: str) -> dict[str, Any]:
    """The pod the Spark Operator (its webhook) and Spark make of a SparkApplication's driver or executor.

    Spark sets the container's requests from ``cores`` (or ``coreRequest``) and ``memory``, its CPU limit from
    ``coreLimit`` (none without it) and its memory limit to the request plus the overhead (``memoryLimit``
    overrides); the webhook adds the pod and container security contexts, env, envFrom and volume mounts.
    """
    spec, pod = obj["spec"], obj["spec"][role]
    limits = {"cpu": pod.get("coreLimit"), "memory": pod.get("memoryLimit") or pod.get("memory")}
    limits = {k: v for k, v in limits.items() if v is not None}
    container = {
        "name": f"spark-kubernetes-{role}",
        "image": pod.get("image") or spec.get("image"),
        "args": list(spec.get("arguments", [])) if role == "driver" else [],
        "env": pod.get("env", []),
        "envFrom": pod.get("envFrom", []),
        "securityContext": pod.get("securityContext", {}),
        "volumeMounts": pod.get("volumeMounts", []),
        "resources": {"requests": {"cpu": pod.get("coreRequest") or pod.get("cores"), "memory": pod.get("memory")},
                      "limits": limits},
    }
    return {"serviceAccountName": pod.get("serviceAccount"), "securityContext": pod.get("podSecurityContext", {}),
            "volumes": spec.get("volumes", []), "containers": [container]}


def containers(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for where, pod in pod_specs(obj):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            yield where, pod, c


def is_ours(container: dict[str, Any]) -> bool:
    image = container.get("image", "")
    return any(name in image for name in OUR_IMAGES)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
