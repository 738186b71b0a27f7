"""`smart-energy serve`: answers on its own port, brings dead servers back, and leaves nothing behind however
it is stopped. Processes are found through /proc by pid and parentage, never by name."""

from __future__ import annotations

import os
import signal
import re
import socket
import time
from pathlib import Path

import pytest
import requests

from helpers import PYTHON, free_port, start, stop, wait_http

pytestmark = [pytest.mark.servers, pytest.mark.slow]
PREDICT = "/v1/models/energy-forecaster:predict"
BODY = {"instances": [{"meter_id": "household-1"}]}
COMEBACK_SECONDS = 120  # a restart is a fresh Python process loading KServe, xgboost and Feast


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _descendants(pid: int) -> set[int]:
    out, todo = set(), _children(pid)
    while todo:
        child = todo.pop()
        if child not in out:
            out.add(child)
            todo += _children(child)
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _child_running(serve_pid: int, module: str) -> int | None:
    for pid in _children(serve_pid):
        try:
            if module.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") and _running(pid):
                return pid
        except OSError:
            pass
    return None


def _wait_gone(pids: set[int], timeout: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return {p for p in pids if _running(p)}


def _serve(trained, tmp_path, name="serve.log", ports=None):
    settings, model_dir, _ = trained
    port, predictor_port, transformer_port = ports or (free_port(), free_port(), free_port())
    proc = start([PYTHON, "-m", "smart_energy.cli", "serve", "--model-dir", str(model_dir), "--port", str(port),
                  "--predictor-port", str(predictor_port), "--transformer-port", str(transformer_port)],
                 tmp_path / name, env=settings.as_env())
    return proc, f"http://127.0.0.1:{port}"


def _wait_for_line(path: Path, text: str, timeout: float = 15.0) -> str:
    """The log once it holds ``text`` (or at the timeout, as it is)."""
    deadline = time.monotonic() + timeout
    while text not in (log := path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return log


def _cleanup(proc, pids):
    stop(proc)
    for pid in pids:  # orphans, only if the test failed
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _kill_and_watch(serve_pid: int, module: str, url: str) -> tuple[float, list[int]]:
    """SIGKILL one child; poll the public port until it answers 200 again. Returns (seconds, codes seen)."""
    victim = _child_running(serve_pid, module)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at, codes = time.monotonic(), []
    session = requests.Session()
    while time.monotonic() - killed_at < COMEBACK_SECONDS:
        resp = session.post(url + PREDICT, json=BODY, timeout=30)  # a refused connection would raise here
        codes.append(resp.status_code)
        if resp.status_code == 200 and len(codes) > 1:
            break
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert ("predictor" if module == "smart_energy.serving.predictor" else "transformer") in error and "retry" in error, error
        time.sleep(0.1)
    assert codes[-1] == 200, f"{module} not back within {COMEBACK_SECONDS}s"
    assert _child_running(serve_pid, module) not in (None, victim)
    return time.monotonic() - killed_at, codes


def test_killed_servers_come_back_and_sigkill_of_serve_leaves_nothing(trained, tmp_path, capsys):
    proc, url = _serve(trained, tmp_path)
    pids: set[int] = set()
    try:
        wait_http(url + "/v2/health/ready", timeout=120, proc=proc)
        assert requests.post(url + PREDICT, json=BODY, timeout=10).json()["model_version"] == trained[2]["version"]
        predictor_seconds, predictor_codes = _kill_and_watch(proc.pid, "smart_energy.serving.predictor", url)
        transformer_seconds, transformer_codes = _kill_and_watch(proc.pid, "smart_energy.serving.transformer", url)
        with capsys.disabled():
            print(f"\nserve: killed predictor answered 200 again after {predictor_seconds:.1f}s "
                  f"({predictor_codes.count(503)} x 503 meanwhile); killed transformer after "
                  f"{transformer_seconds:.1f}s ({transformer_codes.count(503)} x 503)")
        # the proxy answers as soon as a child does; the supervisor notes it on its next tick (0.2 s, later on a
        # loaded machine)
        log = _wait_for_line(tmp_path / "serve.log", "serve: transformer is back after")
        assert "serve: predictor was killed by SIGKILL; restarting in" in log
        assert "serve: transformer is back after" in log

        pids = _descendants(proc.pid)
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not _wait_gone(pids), "servers outlived a SIGKILLed serve"
    finally:
        _cleanup(proc, pids)


def test_serve_stops_both_servers_on_sigterm_even_sent_twice(trained, tmp_path):
    proc, url = _serve(trained, tmp_path)
    pids: set[int] = set()
    try:
        wait_http(url + "/v2/health/ready", timeout=120, proc=proc)
        pids = _descendants(proc.pid)
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGTERM)  # a second TERM during clean-up must not orphan a server
        assert proc.wait(timeout=40) == 0
        assert not _wait_gone(pids)
    finally:
        _cleanup(proc, pids)


def test_sigterm_during_start_up_leaves_no_server_behind(trained, tmp_path):
    proc, _ = _serve(trained, tmp_path)
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:  # both spawned, neither ready yet
            time.sleep(0.05)
        pids = _descendants(proc.pid)
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
        assert not _wait_gone(pids)
    finally:
        _cleanup(proc, pids)


def test_a_server_that_cannot_start_stops_serve_with_one_line(trained, tmp_path):
    with socket.socket() as taken:  # the predictor's port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, _ = _serve(trained, tmp_path, ports=(free_port(), taken.getsockname()[1], free_port()))
        try:
            assert proc.wait(timeout=120) == 2
        finally:
            _cleanup(proc, set())
    log = (tmp_path / "serve.log").read_text().splitlines()
    errors = [line for line in log if line.startswith("smart-energy serve: error:")]
    assert len(errors) == 1 and re.fullmatch(r"smart-energy serve: error: predictor exited with code \d+ during "
                                             r"start-up", errors[0]), log[-5:]
