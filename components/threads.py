"""How many threads XGBoost may use here: the container's CPU limit, not the node's core count.

A pod limited to 1 CPU on a 32-core node that runs 32 OpenMP threads is throttled by the CFS quota at every
period, and each barrier waits for the slowest thread: training that takes 21 s alone took 6 min under load with
a fixed thread count. So the count follows, in order:

1. ``SE_XGB_THREADS`` (the settings' ``xgb_threads``) when it is above 0;
2. the cgroup CPU quota of this process: v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max ..."``), else v1
   ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the smallest along the cgroup's path to the root, rounded up;
3. the CPUs this process may run on (``os.sched_getaffinity``), which a cpuset or ``taskset`` narrows.

The quota never raises the count above the affinity count.

That is the **training** budget. A **serving** process (the predictor, the transformer: ``use_for_serving()`` at
start-up) predicts a few rows per request, where XGBoost's OpenMP threads cost more than they give: on a loaded
2-core box the predictor spent 4-12 ms CPU per request with 2 threads and 0.84 ms with 1, and the idle second
thread spun (libgomp's active wait). So its budget is one thread unless ``SE_XGB_THREADS`` says otherwise
(concurrent requests, not threads, use the other cores), and ``OMP_WAIT_POLICY=PASSIVE`` (unless set) makes an
idle OpenMP thread sleep instead of spinning.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

PROC_SELF = Path("/proc/self")
SERVING_THREADS = 1  # predict on a few rows: one thread is fastest, and leaves the other cores to other requests
TRAINING, SERVING = "training", "serving"
_purpose = TRAINING  # of this process; use_for_serving() changes it


@dataclass(frozen=True)
class CpuBudget:
    threads: int
    source: str  # what decided it, for the start-up log line

    def __str__(self) -> str:
        return f"{self.threads} ({self.source})"


def _mounts(proc: Path) -> dict[str, tuple[Path, str]]:
    """(mount point, root inside the hierarchy) of the cgroup hierarchies: ``"2"`` for the unified one, ``"cpu"``
    for v1's CPU controller. In a container the root is often the container's own cgroup, not ``/``."""
    found: dict[str, tuple[Path, str]] = {}
    try:
        lines = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail:
            continue
        if tail[0] == "cgroup2":
            found.setdefault("2", (Path(fields[4]), fields[3]))
        elif tail[0] == "cgroup" and "cpu" in (tail[2] if len(tail) > 2 else "").split(","):
            found.setdefault("cpu", (Path(fields[4]), fields[3]))
    return found


def _groups(proc: Path) -> dict[str, str]:
    """This process's cgroup path per hierarchy (``"2"`` for the unified one, ``"cpu"`` for v1's)."""
    out: dict[str, str] = {}
    try:
        lines = (proc / "cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out["2"] = path
        elif "cpu" in controllers.split(","):
            out["cpu"] = path
    return out


def _along(mounted: tuple[Path, str], path: str):
    """The cgroup directory of ``path`` under its mount and each of its parents up to the mount."""
    mount, root = mounted
    if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root):]
    node = mount / path.lstrip("/")
    while True:
        yield node
        if node == mount or mount not in node.parents:
            return
        node = node.parent


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(proc: Path = PROC_SELF) -> tuple[float, str] | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5) and the file it came from, or None if unlimited."""
    mounts, groups = _mounts(proc), _groups(proc)
    best: tuple[float, str] | None = None
    if "2" in mounts and "2" in groups:
        for node in _along(mounts["2"], groups["2"]):
            text = _read(node / "cpu.max")
            if not text:
                continue
            quota, _, period = text.partition(" ")
            if quota != "max" and period:
                cpus = int(quota) / int(period)
                if best is None or cpus < best[0]:
                    best = (cpus, f"cgroup v2 {node / 'cpu.max'} = {text}")
    if best is None and "cpu" in mounts and "cpu" in groups:
        for node in _along(mounts["cpu"], groups["cpu"]):
            quota, period = _read(node / "cpu.cfs_quota_us"), _read(node / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                cpus = int(quota) / int(period)
                if best is None or cpus < best[0]:
                    best = (cpus, f"cgroup v1 {node}/cpu.cfs_quota_us = {quota} of {period}")
    return best


def cpu_budget(override: int = 0, proc: Path = PROC_SELF, purpose: str | None = None) -> CpuBudget:
    """The threads XGBoost may use: ``override`` if above 0; else, for training, the cgroup quota capped by the
    affinity count, and for serving ``SERVING_THREADS`` (never more than that). ``purpose`` defaults to this
    process's (``use_for_serving``)."""
    if override > 0:
        return CpuBudget(override, "SE_XGB_THREADS")
    if (purpose or _purpose) == SERVING:
        limit = cpu_budget(proc=proc, purpose=TRAINING)
        return CpuBudget(min(SERVING_THREADS, limit.threads), f"serving budget; the CPU limit is {limit}")
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count() or 1
    limit = cgroup_cpu_limit(proc)
    if limit is not None and math.ceil(limit[0]) < affinity:
        return CpuBudget(max(1, math.ceil(limit[0])), limit[1])
    return CpuBudget(max(1, affinity), f"CPU affinity: {affinity} CPUs")


def use_for_serving() -> None:
    """Mark this process as a server: XGBoost gets the serving budget, and idle OpenMP threads sleep
    (``OMP_WAIT_POLICY=PASSIVE`` unless already set; libgomp reads it when it loads, so call this before
    xgboost is imported)."""
    global _purpose
    _purpose = SERVING
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def xgb_threads(settings=None) -> int:
    """XGBoost's ``nthread`` for this process (see the module docstring)."""
    from smart_energy.components.settings import get_settings

    return cpu_budget((settings or get_settings()).xgb_threads).threads
