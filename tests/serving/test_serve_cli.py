"""`smart-energy serve`: starts both servers, answers, and leaves nothing behind when it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import requests

from helpers import PYTHON, free_port, start, stop, wait_http


def _children(port: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", "--", f"--http_port {port}"], capture_output=True, text=True).stdout
    return found.split()


def test_serve_answers_then_stops_both_servers_on_sigterm(trained, tmp_path):
    settings, model_dir, metadata = trained
    port, predictor_port = free_port(), free_port()
    proc = start([PYTHON, "-m", "components.cli", "serve", "--model-dir", str(model_dir), "--port", str(port),
                  "--predictor-port", str(predictor_port)], tmp_path / "serve.log", env=settings.as_env())
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=120, proc=proc)
        answer = requests.post(f"http://127.0.0.1:{port}/v1/models/energy-forecaster:predict",
                               json={"instances": [{"meter_id": "household-1"}]}, timeout=10).json()
        assert answer["model_version"] == metadata["version"] and len(answer["predictions"]) == 1
        assert _children(port) and _children(predictor_port)
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)  # a second TERM during clean-up must not orphan the predictor
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while (_children(port) or _children(predictor_port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _children(port) and not _children(predictor_port)
    finally:
        stop(proc)
        for pid in _children(port) + _children(predictor_port):  # orphans, if the test failed
            os.kill(int(pid), signal.SIGKILL)


def test_sigterm_during_start_up_leaves_no_server_behind(trained, tmp_path):
    settings, model_dir, _ = trained
    port, predictor_port = free_port(), free_port()
    proc = start([PYTHON, "-m", "components.cli", "serve", "--model-dir", str(model_dir), "--port", str(port),
                  "--predictor-port", str(predictor_port)], tmp_path / "serve.log", env=settings.as_env())
    try:
        deadline = time.monotonic() + 60
        while not _children(port) and time.monotonic() < deadline:  # both spawned, neither ready yet
            time.sleep(0.05)
        assert _children(port) and _children(predictor_port)
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
        deadline = time.monotonic() + 15
        while (_children(port) or _children(predictor_port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _children(port) and not _children(predictor_port)
    finally:
        stop(proc)
        for pid in _children(port) + _children(predictor_port):
            os.kill(int(pid), signal.SIGKILL)
