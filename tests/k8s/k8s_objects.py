"""Rendering and walking the Kubernetes objects of manifests/ and helm/ for the tests in tests/k8s.

``render_chart_subset`` is NOT helm: it renders the plain subset of Go templates our chart is kept
to (value lookups, ``quote``, ``toYaml``, ``indent``/``nindent``, ``.Files.Get``, one-level
``if``/``end``) and raises on anything else, so the chart stays plain and can be compared with the
kustomize output on machines without a helm binary. ``helm template`` is used when helm is on PATH.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "manifests" / "overlays"
CHART = REPO / "helm" / "smart-energy"
# kustomize placeholders (base) and the released repositories
OUR_IMAGES = ("smart-energy-transformer", "smart-energy-components", "smart-energy-spark",
              "ghcr.io/smart-energy/transformer", "ghcr.io/smart-energy/components", "ghcr.io/smart-energy/spark")
# values file of the chart that corresponds to each overlay
CHART_VALUES = {"production": [], "kind": [CHART / "values-kind.yaml"]}

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


def deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def chart_values(extra: list[Path]) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in extra:
        values = deep_merge(values, yaml.safe_load(path.read_text()))
    return values


class UnsupportedTemplate(ValueError):
    pass


def _go_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if value is None:
        return ""
    return str(value)


_TAG = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _lookup(values: dict, path: str) -> Any:
    node: Any = {"Values": values}
    for part in path.lstrip(".").split("."):
        if not isinstance(node, dict) or part not in node:
            raise UnsupportedTemplate(f"no value at {path}")
        node = node[part]
    return node


def _pipeline(action: str, values: dict) -> str:
    stages = [s.strip() for s in action.split("|")]
    head = stages[0].split()
    if len(head) == 1 and head[0].startswith(".Values."):
        value: Any = _lookup(values, head[0])
    elif head[0] == "toYaml" and len(head) == 2:
        value = yaml.safe_dump(_lookup(values, head[1]), sort_keys=True).rstrip("\n")
    elif head[0] == ".Files.Get" and len(head) == 2:
        value = (CHART / json.loads(head[1])).read_text()
    else:
        raise UnsupportedTemplate(f"{{{{ {action} }}}} is outside the plain subset")
    text = value if isinstance(value, str) else _go_str(value)
    for stage in stages[1:]:
        fn, *args = stage.split()
        if fn == "quote" and not args:
            text = json.dumps(text)
        elif fn in ("indent", "nindent") and len(args) == 1:
            pad = " " * int(args[0])
            text = "\n".join(pad + line if line else line for line in text.split("\n"))
            text = ("\n" + text) if fn == "nindent" else text
        else:
            raise UnsupportedTemplate(f"function {stage!r} is outside the plain subset")
    return text


def render_template(text: str, values: dict) -> str:
    out: list[str] = []
    active: list[bool] = []
    pos, trim_next = 0, False
    for m in _TAG.finditer(text):
        segment = text[pos:m.start()]
        if trim_next:
            segment = segment.lstrip()
        if m.group(1):
            segment = segment.rstrip()
        if all(active):
            out.append(segment)
        action, trim_next, pos = m.group(2), bool(m.group(3)), m.end()
        if action.startswith("if "):
            if active:
                raise UnsupportedTemplate("nested if")
            active.append(bool(_lookup(values, action[3:].strip())))
        elif action == "end":
            active.pop()
        elif action.startswith("/*"):
            continue
        elif all(active):
            out.append(_pipeline(action, values))
    tail = text[pos:]
    out.append(tail.lstrip() if trim_next else tail)
    if active:
        raise UnsupportedTemplate("unclosed if")
    return "".join(out)


def render_chart_subset(extra_values: list[Path]) -> list[dict[str, Any]]:
    values = chart_values(extra_values)
    docs: list[dict[str, Any]] = []
    for path in sorted((CHART / "templates").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(render_template(path.read_text(), values)) if d]
    return docs


def helm_template(extra_values: list[Path]) -> list[dict[str, Any]]:
    helm = shutil.which("helm")
    assert helm
    cmd = [helm, "template", "smart-energy", str(CHART)] + [a for p in extra_values for a in ("-f", str(p))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


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
