"""XGBoost's thread count follows the CPU limit: cgroup v2 cpu.max, the v1 quota, the affinity count, the override.

The parsing is checked on small /proc and cgroupfs trees written here (v1 and v2, a container whose cgroup root is
its own, nested limits); ``tests/serving/test_predictor_threads.py`` runs the real predictor in a real cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smart_energy.components.settings import Settings
from smart_energy.components.threads import cgroup_cpu_limit, cpu_budget, xgb_threads

AFFINITY = len(os.sched_getaffinity(0))


def _proc(tmp: Path, mountinfo: list[str], cgroup: list[str]) -> Path:
    proc = tmp / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text("\n".join(mountinfo) + "\n")
    (proc / "cgroup").write_text("\n".join(cgroup) + "\n")
    return proc


def _v2(tmp: Path, path: str, cpu_max: dict[str, str], root: str = "/") -> Path:
    mount = tmp / "cgroup2"
    for rel, text in cpu_max.items():
        (mount / rel).mkdir(parents=True, exist_ok=True)
        (mount / rel / "cpu.max").write_text(text + "\n")
    return _proc(tmp, [f"30 25 0:26 {root} {mount} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"], [f"0::{path}"])


def test_v2_quota_rounds_up(tmp_path):
    proc = _v2(tmp_path, "/kubepods/pod1/c1", {"kubepods/pod1/c1": "150000 100000"})
    cpus, source = cgroup_cpu_limit(proc)
    assert cpus == 1.5 and "cpu.max = 150000 100000" in source
    assert cpu_budget(proc=proc).threads == min(2, AFFINITY)


def test_v2_unlimited_falls_back_to_affinity(tmp_path):
    proc = _v2(tmp_path, "/c1", {"c1": "max 100000"})
    assert cgroup_cpu_limit(proc) is None
    budget = cpu_budget(proc=proc)
    assert budget.threads == AFFINITY and "affinity" in budget.source


def test_v2_the_tightest_limit_along_the_path_wins(tmp_path):
    proc = _v2(tmp_path, "/a/b", {"a": "100000 100000", "a/b": "max 100000"})
    assert cgroup_cpu_limit(proc)[0] == 1.0
    assert cpu_budget(proc=proc).threads == 1


def test_v2_in_a_container_whose_cgroup_is_the_mount_root(tmp_path):
    # /proc/self/cgroup says "0::/" and cpu.max sits at the mount point itself
    proc = _v2(tmp_path, "/", {".": "50000 100000"})
    assert cgroup_cpu_limit(proc)[0] == 0.5
    assert cpu_budget(proc=proc).threads == 1  # half a CPU is still one thread


def test_v2_mount_root_below_the_hierarchy_root(tmp_path):
    # mountinfo's root is the container's cgroup: strip it from /proc/self/cgroup's path
    proc = _v2(tmp_path, "/kubepods/pod1/c1", {".": "100000 100000"}, root="/kubepods/pod1/c1")
    assert cgroup_cpu_limit(proc)[0] == 1.0


def test_v1_quota(tmp_path):
    mount = tmp_path / "cpu"
    (mount / "job").mkdir(parents=True)
    (mount / "job" / "cpu.cfs_quota_us").write_text("100000\n")
    (mount / "job" / "cpu.cfs_period_us").write_text("100000\n")
    (mount / "cpu.cfs_quota_us").write_text("-1\n")
    (mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc(tmp_path, [f"40 30 0:35 / {mount} rw - cgroup cgroup rw,cpu",
                            f"41 30 0:36 / {tmp_path / 'mem'} rw - cgroup cgroup rw,memory"],
                 ["4:memory:/job", "1:cpu:/job", "0::/"])
    cpus, source = cgroup_cpu_limit(proc)
    assert cpus == 1.0 and source.startswith("cgroup v1")
    assert cpu_budget(proc=proc).threads == 1


def test_no_cgroup_files_at_all(tmp_path):
    proc = tmp_path / "empty"
    proc.mkdir()
    assert cgroup_cpu_limit(proc) is None
    assert cpu_budget(proc=proc).threads == AFFINITY


def test_the_setting_overrides(tmp_path):
    proc = _v2(tmp_path, "/c1", {"c1": "100000 100000"})
    assert cpu_budget(3, proc=proc).threads == 3
    assert xgb_threads(Settings(xgb_threads=5)) == 5
    assert Settings.from_env({"SE_XGB_THREADS": "4"}).xgb_threads == 4


@pytest.mark.parametrize("module", ["components/train.py", "components/dayahead.py", "serving/predictor/__main__.py"])
def test_no_hard_coded_thread_count(module):
    text = (Path(__file__).resolve().parents[2] / module).read_text()
    assert '"nthread": 2' not in text and "DEFAULT_NTHREAD" not in text


def test_serving_budget_is_one_thread_within_the_limit_and_the_setting_still_overrides(tmp_path):
    proc = _v2(tmp_path, "/c1", {"c1": "150000 100000"})
    training = cpu_budget(proc=proc, purpose="training")
    serving = cpu_budget(proc=proc, purpose="serving")
    assert training.threads == min(2, AFFINITY)
    assert serving.threads == 1 and "serving budget" in serving.source and str(training) in serving.source
    assert cpu_budget(3, proc=proc, purpose="serving").threads == 3


def test_a_server_process_uses_the_serving_budget_and_passive_openmp_threads():
    import subprocess
    import sys

    probe = ("import os; from smart_energy.components import threads; before = threads.xgb_threads(); "
             "threads.use_for_serving(); print(before, threads.xgb_threads(), os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k not in ("SE_XGB_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(cpu_budget(purpose="training").threads), "1", "PASSIVE"]
    kept = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE", "SE_XGB_THREADS": "2"})
    assert kept.stdout.split() == ["2", "2", "ACTIVE"], kept.stderr
