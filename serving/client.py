"""Start the predictor and transformer locally as processes, and call them: what `serve` and the demo use.

``start_local`` runs ``python -m smart_energy.serving.predictor`` and ``python -m smart_energy.serving.transformer`` on
127.0.0.1 ports (KServe binds every interface; clients here always call loopback), waits until
the transformer is ready (which checks the predictor), and ``stop`` ends both by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings, get_settings

STARTUP_TIMEOUT_SECONDS = 90.0


@dataclass
class LocalServers:
    predictor: subprocess.Popen
    transformer: subprocess.Popen
    url: str  # the transformer
    predictor_url: str
    model_name: str

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both servers. Ctrl-C or TERM arriving meanwhile (pressed twice, or forwarded by `timeout`)
        is ignored until they are down, so it cannot leave one of them running."""
        held = {}
        if threading.current_thread() is threading.main_thread():
            held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for proc in (self.transformer, self.predictor):
                stop_process(proc, timeout)
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc``, SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def _spawn(module: str, args: list[str], env: dict[str, str], log: IO | None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=log, stderr=subprocess.STDOUT if log
                            else None, start_new_session=True)


def wait_ready(url: str, procs: list[subprocess.Popen], timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SmartEnergyError(f"{' '.join(proc.args[2:4])} exited with code {proc.returncode} during start-up")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise SmartEnergyError(f"{url} not ready within {timeout:.0f}s")


def start_local(model_dir: str | Path, port: int = 8080, predictor_port: int = 8081, settings: Settings | None = None,
                log: IO | None = None) -> LocalServers:
    """Start predictor (``predictor_port``) and transformer (``port``) on ``model_dir``; returns when ready."""
    settings = settings or get_settings()
    env = {**os.environ, **settings.as_env(), "SE_PREDICTOR_HOST": f"127.0.0.1:{predictor_port}"}
    name = settings.model_name
    common = ["--model_dir", str(model_dir), "--model_name", name]
    predictor = _spawn("smart_energy.serving.predictor", [*common, "--http_port", str(predictor_port)], env, log)
    transformer = _spawn("smart_energy.serving.transformer", [*common, "--http_port", str(port),
                                                 "--predictor_host", f"127.0.0.1:{predictor_port}"], env, log)
    servers = LocalServers(predictor, transformer, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{predictor_port}",
                           name)
    try:
        wait_ready(f"{servers.url}/v2/health/ready", [predictor, transformer])
    except BaseException:
        servers.stop()
        raise
    return servers


def predict_v1(url: str, model_name: str, meter_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """V1 entity request: ``{"instances": [{"meter_id": ...}]}``."""
    resp = requests.post(f"{url}/v1/models/{model_name}:predict", json={"instances": [{"meter_id": meter_id}]},
                         timeout=timeout)
    resp.raise_for_status()
    return resp.json()


def predict_v2(url: str, model_name: str, meter_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """V2 entity request: one BYTES tensor ``meter_id``."""
    body = {"inputs": [{"name": "meter_id", "datatype": "BYTES", "shape": [1], "data": [meter_id]}]}
    resp = requests.post(f"{url}/v2/models/{model_name}/infer", json=body, timeout=timeout)
    resp.raise_for_status()
    return resp.json()


def serve_and_call_once(model_dir: str | Path, port: int, predictor_port: int, settings: Settings | None = None,
                        meter_id: str | None = None, log: IO | None = None, out: IO = sys.stdout) -> dict[str, Any]:
    """Start both servers, ask for one forecast with V1 and one with V2, print both answers, stop."""
    settings = settings or get_settings()
    meter_id = meter_id or settings.meter_id
    servers = start_local(model_dir, port, predictor_port, settings, log)
    try:
        answers = {"v1": predict_v1(servers.url, servers.model_name, meter_id),
                   "v2": predict_v2(servers.url, servers.model_name, meter_id)}
    finally:
        servers.stop()
    for protocol, answer in answers.items():
        print(f"{protocol.upper()} answer for {meter_id}: {json.dumps(answer)}", file=out)
    return answers
