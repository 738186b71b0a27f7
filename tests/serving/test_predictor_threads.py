"""The real predictor under a real 1-CPU limit runs XGBoost with 1 thread.

A cgroup is made here with a quota of one CPU (v1 ``cpu.cfs_quota_us`` = period, or v2 ``cpu.max``), as a pod's
``limits: {cpu: "1"}`` makes; the predictor is started inside it and reports its thread count at start-up, and a
child in the same cgroup reads ``nthread`` back from the booster's own configuration. A predictor pinned to one
CPU with ``taskset`` (no quota) gets 1 thread from the affinity count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from helpers import PYTHON, free_port, start, stop, wait_http
from smart_energy.components.threads import PROC_SELF, _groups, _mounts

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]


@pytest.fixture
def one_cpu_cgroup():
    """A new cgroup limited to 1 CPU; yields (its cgroup.procs file, the limit's description)."""
    mounts, groups = _mounts(PROC_SELF), _groups(PROC_SELF)
    name = f"se-test-{uuid.uuid4().hex[:8]}"
    if "cpu" in mounts:  # cgroup v1's CPU controller
        mount, _ = mounts["cpu"]
        group = mount / groups.get("cpu", "/").lstrip("/") / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("100000")
        expected = "cgroup v1"
    else:
        mount, _ = mounts["2"]
        group = mount / groups.get("2", "/").lstrip("/") / name
        group.mkdir()
        (group / "cpu.max").write_text("100000 100000")
        expected = "cgroup v2"
    try:
        yield group / "cgroup.procs", expected
    finally:
        for _ in range(50):  # the processes have left once stopped
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _in_cgroup(procs: Path, cmd: list[str]) -> list[str]:
    return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "in-cgroup", *cmd]


def _predictor(model_dir: Path, port: int) -> list[str]:
    return [PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir), "--http_port", str(port)]


def _threads_line(log: Path) -> str:
    return next(line for line in log.read_text().splitlines() if "XGBoost threads" in line)


def test_predictor_under_a_one_cpu_limit_uses_one_thread(trained, one_cpu_cgroup, tmp_path, feature_rows):
    settings, model_dir, metadata = trained
    procs, expected = one_cpu_cgroup
    env = {k: v for k, v in settings.as_env().items() if k != "SE_XGB_THREADS"}
    port, log = free_port(), tmp_path / "predictor.log"
    proc = start(_in_cgroup(procs, _predictor(model_dir, port)), log, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=90, proc=proc)
        line = _threads_line(log)
        assert "XGBoost threads 1 (" in line and expected in line, line
        assert str(proc.pid) in procs.read_text().split()  # it really runs in the limited cgroup
        rows = feature_rows[metadata["features"]].dropna().tail(2).to_numpy(dtype=float).tolist()
        answer = requests.post(f"http://127.0.0.1:{port}/v1/models/{metadata['name']}:predict",
                               json={"instances": rows}, timeout=10).json()
        assert answer["model_version"] == metadata["version"] and len(answer["predictions"]) == 2
    finally:
        stop(proc)
    # XGBoost's own view of the booster the predictor builds (registry.load_booster), in the same cgroup
    probe = ("import json, sys; from smart_energy.components.registry import load_booster; "
             "b, _ = load_booster(sys.argv[1]); "
             "print(json.loads(b.save_config())['learner']['generic_param']['nthread'])")
    out = subprocess.run(_in_cgroup(procs, [PYTHON, "-c", probe, str(model_dir)]), capture_output=True, text=True,
                         env={**env, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_pinned_to_one_cpu_uses_one_thread_and_the_setting_overrides(trained, tmp_path):
    settings, model_dir, _ = trained
    taskset = shutil.which("taskset")
    assert taskset, "taskset (util-linux) is part of every Debian system"
    probe = ("from smart_energy.components.threads import cpu_budget; from smart_energy.components.settings "
             "import get_settings; print(cpu_budget(get_settings().xgb_threads))")
    env = {k: v for k, v in settings.as_env().items() if k != "SE_XGB_THREADS"}
    pinned = subprocess.run([taskset, "-c", "0", PYTHON, "-c", probe], capture_output=True, text=True, env=env,
                            timeout=60)
    assert pinned.stdout.strip() == "1 (CPU affinity: 1 CPUs)", pinned.stderr
    forced = subprocess.run([taskset, "-c", "0", PYTHON, "-c", probe], capture_output=True, text=True,
                            env={**env, "SE_XGB_THREADS": "3"}, timeout=60)
    assert forced.stdout.strip() == "3 (SE_XGB_THREADS)", forced.stderr
    assert json.loads((model_dir / "metadata.json").read_text())["params"]["nthread"] >= 1
