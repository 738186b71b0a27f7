"""Dockerfiles, CI workflow, image names and the kind script, checked statically (no Docker here)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from k8s_objects import CHART, OVERLAYS, REPO

DOCKERFILES = [REPO / "components" / "Dockerfile", REPO / "serving" / "Dockerfile"]
SPARK_DOCKERFILE = REPO / "components" / "Dockerfile.spark"
SECRET_ENV = re.compile(r"(ENV|ARG)\s+\S*(SECRET|PASSWORD|ACCESS_KEY|TOKEN)", re.I)


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
    assert not SECRET_ENV.search(text)


def instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line[:-1].strip()}" if line.endswith("\\") else f"{pending} {line}"
        if not line.endswith("\\"):
            out.append(re.sub(r"\s+", " ", pending).strip())
            pending = ""
    return out


def _locked(name: str) -> str:
    pins = dict(ln.split("==") for ln in (REPO / "requirements.lock").read_text().split() if "==" in ln)
    return pins[name]


def test_spark_dockerfile_is_slim_pinned_non_root_and_runs_sparks_entrypoint():
    from smart_energy.pipelines.spark_application import MAIN_APPLICATION_FILE, SPARK_UID, SPARK_VERSION

    lines = instructions(SPARK_DOCKERFILE)
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert stages[0] == "FROM python:3.11-slim AS wheel" and stages[-1] == "FROM python:3.11-slim-bookworm"
    bases = [ln.split()[1] for ln in stages] + [m for ln in lines for m in re.findall(r"--from=(\S+:\S+)", ln)]
    assert all(":" in b and not b.endswith(":latest") for b in bases), bases  # every image pinned by tag
    # the same wheel as the other two images, built from the package folders only
    assert "RUN pip wheel --no-deps --wheel-dir /dist ." in lines
    for folder in ("smart_energy", "components", "pipelines", "serving", "feature_repo"):
        assert f"COPY {folder} ./{folder}" in lines
    final = lines[lines.index(stages[-1]):]
    assert "COPY requirements.lock ./" in final and "RUN pip install --no-deps -r requirements.lock" in final
    assert any(ln.startswith("RUN pip install --no-deps /dist/*.whl") for ln in final)
    # Java 17 from Debian, nothing recommended, no apt lists left in the layer
    apt = next(ln for ln in final if "apt-get install" in ln)
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt
    assert {"openjdk-17-jre-headless", "tini", "procps"} <= set(apt.split())  # entrypoint.sh execs /usr/bin/tini
    # Spark's kubernetes entrypoint from the official image of pyspark's minor release
    copy = next(ln for ln in final if "/opt/entrypoint.sh" in ln)
    image = re.fullmatch(r"COPY --from=spark:(3\.\d+)\.\d+-scala2\.12-java17-python3-ubuntu /opt/entrypoint\.sh "
                         r"/opt/decom\.sh /opt/", copy)
    assert image, copy
    assert image.group(1) == ".".join(_locked("pyspark").split(".")[:2]) == ".".join(SPARK_VERSION.split(".")[:2])
    assert _locked("pyspark") == SPARK_VERSION
    assert final[-1] == 'ENTRYPOINT ["/opt/entrypoint.sh"]'
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and users[-1] == f"{SPARK_UID}:{SPARK_UID}"
    # SPARK_HOME is the pyspark the lock installs; the SparkApplication's main file lies beside it in site-packages
    home = re.search(r"SPARK_HOME=(\S+)", " ".join(ln for ln in final if ln.startswith("ENV "))).group(1)
    site = home.removesuffix("/pyspark")
    assert home.endswith("/pyspark") and MAIN_APPLICATION_FILE == f"local://{site}/smart_energy/spark_job.py"
    assert f"COPY --from=s3a /jars/ {home}/jars/" in final
    assert not SECRET_ENV.search(SPARK_DOCKERFILE.read_text())


def test_s3a_jars_match_pysparks_hadoop():
    """hadoop-aws must be the release of the Hadoop client jars pyspark ships, or S3A fails at class loading."""
    text = " ".join(instructions(SPARK_DOCKERFILE))
    hadoop_aws = re.search(r"org\.apache\.hadoop:hadoop-aws:(\S+)", text).group(1)
    assert re.search(r"com\.amazonaws:aws-java-sdk-bundle:\d", text)
    jars = Path(importlib.util.find_spec("pyspark").origin).parent / "jars"
    clients = sorted(jars.glob("hadoop-client-api-*.jar"))
    assert len(clients) == 1, clients
    assert clients[0].name == f"hadoop-client-api-{hadoop_aws}.jar"


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
    smart_energy.components.images.IMAGE (what the compiled pipelines run), the Spark image
    smart_energy.pipelines.spark_application.SPARK_IMAGE (what the Spark pipeline's SparkApplications run)."""
    from smart_energy.components.images import IMAGE
    from smart_energy.pipelines.spark_application import SPARK_IMAGE

    ci = _ci()
    registry = ci["env"]["REGISTRY"]
    built = {m["image"]: m["dockerfile"] for m in ci["jobs"]["release"]["strategy"]["matrix"]["include"]}
    # serving: the predictor (ServingRuntime smart-energy-xgboost) and the transformers, one image
    assert built == {"components": "components/Dockerfile", "serving": "serving/Dockerfile",
                     "spark": "components/Dockerfile.spark"}
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
    assert f"{values['spark']['repository']}:{values['spark']['tag']}" == SPARK_IMAGE  # what the Spark pipeline runs
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["serving"]["tag"] == values["components"]["tag"] == values["spark"]["tag"] == chart["appVersion"]
    # no placeholder or repository of the former transformer-only image is left anywhere we deploy from
    for path in [*sorted((REPO / "manifests").rglob("*.yaml")), *sorted(CHART.rglob("*.yaml")),
                 REPO / "manifests" / "kind" / "cluster.sh", REPO / "serving" / "Dockerfile"]:
        text = path.read_text()
        assert "smart-energy-transformer" not in text and "smart-energy/transformer" not in text, path


def test_serving_image_runs_both_servers_as_non_root():
    """One image: both servers are in the wheel it installs, its USER is not root, and neither the ServingRuntime
    nor the transformers rely on its entrypoint (both set their command)."""
    lines = instructions(REPO / "serving" / "Dockerfile")
    assert [ln for ln in lines if ln.startswith("USER ")][-1] == "USER 10001:10001"
    assert "COPY serving ./serving" in lines
    for module in ("smart_energy.serving.predictor.__main__", "smart_energy.serving.transformer.__main__"):
        assert importlib.util.find_spec(module) is not None, module
    for overlay in ("kind", "production"):
        objs = [d for d in yaml.safe_load_all(subprocess.run(
            ["kubectl", "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, timeout=60,
            check=True).stdout) if d]
        runtime = next(o for o in objs if o["kind"] == "ServingRuntime")
        commands = [c["command"] for c in runtime["spec"]["containers"]]
        commands += [c["command"] for o in objs if o["kind"] == "InferenceService"
                     for c in o["spec"]["transformer"]["containers"]]
        assert sorted(map(tuple, commands)) == [("python", "-m", "smart_energy.serving.predictor")] + \
            [("python", "-m", "smart_energy.serving.transformer")] * 2


def test_cluster_script_parses_and_installs_serverless_kserve():
    script = REPO / "manifests" / "kind" / "cluster.sh"
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    for needle in ("kind create cluster", "knative/serving", "kserve.yaml", "kubeflow/pipelines",
                   "kube-prometheus-stack", "manifests/overlays/kind", "values-kind.yaml", "kind load docker-image",
                   "spark-operator/spark-operator", "components/Dockerfile.spark", "ghcr.io/smart-energy/spark:dev",
                   "serving/Dockerfile", "ghcr.io/smart-energy/serving:dev", "servingruntime/smart-energy-xgboost"):
        assert needle in text, needle
    # every image built is loaded into kind
    built = set(re.findall(r"docker build .* -t (\S+)", text))
    load = text[text.index("kind load docker-image"):].split("\n\n")[0]
    assert built == {f"ghcr.io/smart-energy/{i}:dev" for i in ("components", "serving", "spark")}
    assert all(image in load for image in built), load
    # and at the end it waits for both InferenceServices to be Ready
    assert "kubectl -n smart-energy wait --for=condition=Ready" in text
    assert "for isvc in energy-forecaster energy-forecaster-dayahead; do" in text
    # the operator installed is the release whose CRD tests/k8s/test_spark.py validates against
    crd_header = (REPO / "tests" / "k8s" / "crds" / "sparkoperator.k8s.io_sparkapplications.yaml").read_text()[:1000]
    tag = re.search(r"tag (v[\d.]+)", crd_header).group(1)
    assert f"SPARK_OPERATOR_VERSION=${{SPARK_OPERATOR_VERSION:-{tag.lstrip('v')}}}" in text
    assert '--set "spark.jobNamespaces={smart-energy}"' in text
