"""The wheel is the product: built from the repository, installed with the lock into a fresh venv outside
the checkout, it trains on the shared data and serves V1 and V2 answers, finding its feature repo,
servers and compiled pipeline as package data, never through the checkout's layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from helpers import REPO, free_port, start, stop, wait_http

pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.timeout(900)]


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv with the lock and the freshly built wheel, and an environment that knows nothing of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    # built from a copy of the tracked sources: setuptools' build/ cache must neither land in the checkout
    # nor carry stale modules into the wheel
    source = root / "source"
    tracked = _run(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    _run([*_uv(), "build", "--wheel", "--out-dir", str(root / "dist"), str(source)])
    wheels = list((root / "dist").glob("smart_energy-*.whl"))
    assert len(wheels) == 1
    venv = root / "venv"
    _run([*_uv(), "venv", "--quiet", "--python", "3.11", str(venv)])
    python = venv / "bin" / "python"
    _run([*_uv(), "pip", "sync", "--quiet", "--python", str(python), str(REPO / "requirements.lock")])
    _run([*_uv(), "pip", "install", "--quiet", "--no-deps", "--python", str(python), str(wheels[0])])
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SE_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {"SE_HOME": str(root / "home"), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    return {"root": root, "venv": venv, "python": python, "work": work, "env": env, "wheel": wheels[0]}


def test_the_wheel_holds_the_whole_product(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for needed in ("smart_energy/cli.py", "smart_energy/components/train.py", "smart_energy/serving/predictor/model.py",
                   "smart_energy/serving/transformer/__main__.py", "smart_energy/feature_repo/feature_store.yaml",
                   "smart_energy/feature_repo/feature_definitions.py",
                   "smart_energy/pipelines/compiled/training_pipeline.yaml"):
        assert needed in names, needed
    assert not [n for n in names if n.split("/")[0] in ("components", "pipelines", "serving", "tests", "benchmarks")]
    where = _run([str(installed["python"]), "-c", "import smart_energy.components.settings as s; print(s.__file__); "
                  "print(s.CHECKOUT)"], cwd=installed["work"], env=installed["env"]).stdout.split()
    assert where[0].startswith(str(installed["venv"])) and where[1] == "None"


def test_trains_and_serves_outside_the_checkout(installed, shared_data):
    work, env = installed["work"], installed["env"]
    trained = _run(["smart-energy", "train", "--data", str(shared_data), "--model-dir", "model",
                    "--n-estimators", "60"], cwd=work, env=env)
    assert '"version"' in trained.stdout
    home = Path(env["SE_HOME"])
    assert (home / "feature_repo" / "feature_store.yaml").is_file()  # seeded from the package
    assert (home / "feature_repo" / "data" / "online_store.db").is_file()
    port, predictor_port, transformer_port = free_port(), free_port(), free_port()
    proc = start(["smart-energy", "serve", "--model-dir", "model", "--port", str(port), "--predictor-port",
                  str(predictor_port), "--transformer-port", str(transformer_port)],
                 installed["root"] / "serve.log", env=env, cwd=work, inherit_env=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/v2/health/ready", timeout=180, proc=proc)
        v1 = requests.post(url + "/v1/models/energy-forecaster:predict",
                           json={"instances": [{"meter_id": "household-1"}]}, timeout=30)
        assert v1.status_code == 200, v1.text
        forecast = v1.json()["predictions"][0]
        assert 0 < forecast < 10
        v2 = requests.post(url + "/v2/models/energy-forecaster/infer", timeout=30, json={
            "inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": ["household-1"]}]})
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["forecast_kw"]["data"][0] == pytest.approx(forecast)
    finally:
        stop(proc)
