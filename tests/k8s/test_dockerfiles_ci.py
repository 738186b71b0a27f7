"""Dockerfiles, CI workflow, image names and the kind script, checked statically (no Docker here)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from k8s_objects import CHART, OVERLAYS, REPO

DOCKERFILES = [REPO / "components" / "Dockerfile", REPO / "serving" / "Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_slim_pinned_and_non_root(path):
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert stages == ["FROM python:3.11-slim AS wheel", "FROM python:3.11-slim"]
    # the wheel is built from the package folders only, then installed: the image runs the product as shipped
    assert "RUN pip wheel --no-deps --wheel-dir /dist ." in lines
    for folder in ("smart_energy", "components", "pipelines", "serving", "feature_repo"):
        assert f"COPY {folder} ./{folder}" in lines
    final = lines[lines.index("FROM python:3.11-slim"):]
    assert not [ln for ln in final if ln.startswith("COPY") and "requirements.lock" not in ln and "--from=wheel" not in ln]
    assert "COPY requirements.lock ./" in lines
    assert any(re.fullmatch(r"RUN pip install --no-deps -r requirements\.lock", ln) for ln in lines)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    # the project itself goes in as its wheel, without re-resolving dependencies
    assert any(ln.startswith("RUN pip install --no-deps /dist/*.whl") for ln in final)
    text = path.read_text()
    assert not re.search(r"(ENV|ARG)\s+\S*(SECRET|PASSWORD|ACCESS_KEY|TOKEN)", text, re.I)


def test_dockerignore_keeps_the_venv_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _ci() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "ci.yaml").read_text())


def test_ci_runs_make_test_and_releases_on_tags():
    ci = _ci()
    triggers = ci[True] if True in ci else ci["on"]  # YAML 1.1 reads `on` as true
    assert "v*" in triggers["push"]["tags"]
    assert any(step.get("run") == "make test" for step in ci["jobs"]["test"]["steps"])
    for job in ("release", "chart"):
        assert ci["jobs"][job]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    chart_steps = " ".join(s.get("run", "") for s in ci["jobs"]["chart"]["steps"])
    assert "helm package helm/smart-energy" in chart_steps and "helm push" in chart_steps


def test_image_names_come_from_one_place():
    """CI pushes exactly the images the overlays and the chart deploy; the components image is
    smart_energy.components.images.IMAGE (what the compiled pipeline runs)."""
    from smart_energy.components.images import IMAGE

    ci = _ci()
    registry = ci["env"]["REGISTRY"]
    built = {m["image"]: m["dockerfile"] for m in ci["jobs"]["release"]["strategy"]["matrix"]["include"]}
    assert built == {"components": "components/Dockerfile", "transformer": "serving/Dockerfile"}
    values = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    kind_values = yaml.safe_load((CHART / "values-kind.yaml").read_text())["images"]
    for overlay in ("kind", "production"):
        images = {i["name"]: i for i in yaml.safe_load((OVERLAYS / overlay / "kustomization.yaml").read_text())["images"]}
        for short in built:
            placeholder = f"smart-energy-{short}"
            assert images[placeholder]["newName"] == f"{registry}/{short}" == values[short]["repository"]
            chart_tag = (kind_values if overlay == "kind" else values)[short]["tag"]
            assert images[placeholder]["newTag"] == chart_tag
    assert f"{values['components']['repository']}:{values['components']['tag']}" == IMAGE
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["transformer"]["tag"] == values["components"]["tag"] == chart["appVersion"]


def test_cluster_script_parses_and_installs_serverless_kserve():
    script = REPO / "manifests" / "kind" / "cluster.sh"
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    for needle in ("kind create cluster", "knative/serving", "kserve.yaml", "kubeflow/pipelines",
                   "kube-prometheus-stack", "manifests/overlays/kind", "values-kind.yaml", "kind load docker-image"):
        assert needle in text, needle
