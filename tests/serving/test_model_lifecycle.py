"""Who can change what a server serves, and what it says it serves.

- KServe's model-repository routes (load/unload) are refused unless SE_MODEL_REPOSITORY_ROUTES is on;
  turned on, an unloaded model makes readiness false (with the reason) until it is loaded again.
- The transformer's answers and ``se_*`` metrics carry the version of the predictor that answered.
- Model integrity covers every file of a version: a changed drift reference stops both servers with
  one line and exit code 2.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import requests

from smart_energy.components.registry import ModelIntegrityError, read_metadata, write_manifest
from conftest import start_predictor
from helpers import PYTHON, free_port, start, stop, wait_http

pytestmark = [pytest.mark.servers, pytest.mark.slow]
NAME = "energy-forecaster"
ENTITY = {"instances": [{"meter_id": "household-1"}]}


def _relabelled(model_dir, dest, version):
    shutil.copytree(model_dir, dest)
    meta = json.loads((dest / "metadata.json").read_text())
    (dest / "metadata.json").write_text(json.dumps(meta | {"version": version}))
    write_manifest(dest)  # a deliberate change: sealed again
    return dest


@pytest.mark.parametrize("which", ["url", "predictor_url"])
def test_unload_and_load_are_refused_by_default(served, which):
    base = getattr(served, which)
    for action in ("unload", "load"):
        resp = requests.post(f"{base}/v2/repository/models/{NAME}/{action}", timeout=10)
        assert resp.status_code == 403 and "SE_MODEL_REPOSITORY_ROUTES" in resp.json()["error"], resp.text
    assert requests.get(f"{base}/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(f"{base}/v2/models/{NAME}/ready", timeout=10).status_code == 200


def test_turned_on_an_unloaded_model_is_not_ready_until_loaded_again(served, feature_rows, tmp_path):
    from smart_energy.components.features import FEATURES

    port = free_port()
    proc = start_predictor(served.model_dir, port, {**served.env, "SE_MODEL_REPOSITORY_ROUTES": "true"},
                           tmp_path / "predictor.log")
    base = f"http://127.0.0.1:{port}"
    row = {"instances": [[float(v) for v in feature_rows[FEATURES].dropna().iloc[-1]]]}
    try:
        wait_http(f"{base}/v2/health/ready", timeout=90, proc=proc)
        assert requests.post(f"{base}/v1/models/{NAME}:predict", json=row, timeout=10).status_code == 200
        assert requests.post(f"{base}/v2/repository/models/{NAME}/unload", timeout=10).json() == \
            {"name": NAME, "unload": True}
        ready = requests.get(f"{base}/v2/health/ready", timeout=10)
        assert ready.status_code == 503 and "no model is loaded" in ready.json()["error"]
        assert requests.post(f"{base}/v1/models/{NAME}:predict", json=row, timeout=10).status_code == 404
        assert requests.post(f"{base}/v2/repository/models/other/load", timeout=10).status_code == 404
        assert requests.post(f"{base}/v2/repository/models/{NAME}/load", timeout=10).json() == \
            {"name": NAME, "load": True}
        assert requests.get(f"{base}/v2/health/ready", timeout=10).status_code == 200
        assert requests.post(f"{base}/v1/models/{NAME}:predict", json=row, timeout=10).status_code == 200
    finally:
        stop(proc)


def test_transformer_answers_with_the_predictors_version(served, tmp_path):
    """The transformer holds the metadata of one version; the predictor it calls serves another."""
    predictor_port, port = free_port(), free_port()
    procs = [start_predictor(_relabelled(served.model_dir, tmp_path / "canary", "v-canary"), predictor_port,
                             served.env, tmp_path / "predictor.log")]
    procs.append(start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(served.model_dir), "--http_port",
                        str(port), "--predictor_host", f"127.0.0.1:{predictor_port}"], tmp_path / "transformer.log",
                       env=served.env))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"http://127.0.0.1:{predictor_port}/v2/health/ready", timeout=90, proc=procs[0])
        wait_http(f"{base}/v2/health/ready", timeout=90, proc=procs[1])
        v1 = requests.post(f"{base}/v1/models/{NAME}:predict", json=ENTITY, timeout=10).json()
        v2 = requests.post(f"{base}/v2/models/{NAME}/infer", timeout=10, json={
            "inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": ["household-1"]}]}).json()
        assert v1["model_version"] == v2["model_version"] == "v-canary" != served.metadata["version"]
        assert requests.get(f"{base}/v2/models/{NAME}", timeout=10).json()["versions"] == ["v-canary"]
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'se_requests_total{code="200",model_version="v-canary",protocol="v1"} 1.0' in metrics
        assert f'model_version="{served.metadata["version"]}"' not in metrics
    finally:
        for proc in procs:
            stop(proc)


def test_a_changed_drift_reference_stops_both_servers_with_one_line(served, tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(served.model_dir, bad)
    reference = next(p for p in sorted((bad / "drift").rglob("*")) if p.is_file() and p.suffix == ".npy")
    data = reference.read_bytes()
    reference.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))  # the last reference value, changed
    with pytest.raises(ModelIntegrityError, match="drift/.*does not match MANIFEST.json"):
        read_metadata(bad)
    for module in ("smart_energy.serving.predictor", "smart_energy.serving.transformer"):
        proc = subprocess.run([PYTHON, "-m", module, "--model_dir", str(bad), "--http_port", str(free_port())],
                              capture_output=True, text=True, timeout=120, env={**served.env, "PATH": "/usr/bin:/bin"})
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
                 and not line.startswith(" ") and "PyTorch" not in line]
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert len(lines) == 1 and "refusing to load" in lines[0] and "Traceback" not in proc.stderr, lines


def test_integrity_covers_every_file(served, tmp_path):
    extra = tmp_path / "extra"
    shutil.copytree(served.model_dir, extra)
    (extra / "drift" / "planted.json").write_text("{}")
    with pytest.raises(ModelIntegrityError, match="planted.json: not listed"):
        read_metadata(extra)
    missing = tmp_path / "missing"
    shutil.copytree(served.model_dir, missing)
    victim = next(p for p in sorted((missing / "drift").rglob("*")) if p.is_file())
    victim.unlink()
    with pytest.raises(ModelIntegrityError, match="listed in MANIFEST.json but missing"):
        read_metadata(missing)
    manifest = json.loads((served.model_dir / "MANIFEST.json").read_text())
    assert set(manifest["files"]) >= {"model.json", "metadata.json", *(
        str(p.relative_to(served.model_dir)) for p in (served.model_dir / "drift").rglob("*") if p.is_file())}
