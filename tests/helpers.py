"""Shared test utilities: free loopback ports, servers started as processes and stopped by pid."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path


from smart_energy.serving.client import free_port, stop_process, wait_ready  # noqa: F401 - free_port is for the tests

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "household_power_consumption_2006-12_2007-02.txt"
PYTHON = sys.executable


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200, failing early if ``proc`` exits (the product's own start-up wait)."""
    wait_ready(url, [proc] if proc is not None else [], timeout)


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None,
          inherit_env: bool = True) -> subprocess.Popen:
    """Start a server process in its own session, output to ``log`` (``env`` over this process's, or alone)."""
    fh = open(log, "wb")
    return subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env={**(os.environ if inherit_env else {}), **(env or {})},
        cwd=cwd or REPO, start_new_session=True,
    )


# the product's own process stopper (used by `smart-energy serve` and the demo) stops test servers too
stop = stop_process


def with_hole(source: Path, dest: Path, holes: list[tuple[str, str]], drop_lines: bool = False) -> Path:
    """A copy of a raw meter file with no readings in each ``[start, end)`` of ``holes``.

    The readings become ``?`` rows, as the UCI data set marks its gaps, or with ``drop_lines`` the lines
    are left out altogether (how other exports show a gap).
    """
    import pandas as pd

    raw = pd.read_csv(source, sep=";", dtype=str, keep_default_na=False)
    stamps = pd.to_datetime(raw["Date"] + " " + raw["Time"], format="%d/%m/%Y %H:%M:%S")
    missing = pd.Series(False, index=raw.index)
    for start, end in holes:
        missing |= (stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))
    if drop_lines:
        raw = raw[~missing]
    else:
        raw.loc[missing, raw.columns[2:]] = "?"
    raw.to_csv(dest, sep=";", index=False)
    return dest


POWER_COLUMNS = ("Global_active_power", "Global_reactive_power", "Global_intensity", "Sub_metering_1",
                 "Sub_metering_2", "Sub_metering_3")


def with_level_shift(source: Path, dest: Path, start: str, factor: float) -> Path:
    """``source`` with every power reading from ``start`` on multiplied by ``factor`` (a household that changed)."""
    import pandas as pd

    raw = pd.read_csv(source, sep=";", dtype=str, keep_default_na=False)
    stamps = pd.to_datetime(raw["Date"] + " " + raw["Time"], format="%d/%m/%Y %H:%M:%S")
    rows = (stamps >= pd.Timestamp(start)) & (raw["Global_active_power"] != "?")
    for column in POWER_COLUMNS:
        raw.loc[rows, column] = (raw.loc[rows, column].astype(float) * factor).map("{:.3f}".format)
    raw.to_csv(dest, sep=";", index=False)
    return dest


class RecordingInferenceService:
    """get/merge-patch one InferenceService as the Kubernetes API would; every merged result is loaded into kserve's
    ``V1beta1InferenceService`` (unknown fields refused), recorded (``patches``, ``patch_times``) and handed to
    ``on_patch`` (e.g. the test's stand-in for Knative's revision split)."""

    def __init__(self, obj: dict, on_patch=None):
        import threading

        self.obj, self.on_patch = obj, on_patch
        self.patches: list[dict] = []
        self.patch_times: list[float] = []
        self.lock = threading.Lock()

    def get(self) -> dict:
        from smart_energy.components.rollout_policy import merge_patch

        with self.lock:
            return merge_patch({}, self.obj)

    def patch(self, body: dict) -> dict:
        import time

        from smart_energy.components.rollout_policy import merge_patch
        from smart_energy.serving.rollout_clients import load_inference_service

        with self.lock:
            merged = merge_patch(self.obj, body)
            load_inference_service(merged)
            self.obj = merged
            self.patches.append(body)
            self.patch_times.append(time.monotonic())
        if self.on_patch is not None:
            self.on_patch(merged)
        return merged

    def percents(self) -> list:
        return [body["spec"]["predictor"].get("canaryTrafficPercent", "absent") for body in self.patches]


@contextlib.contextmanager
def predictor_and_transformer(root: Path, model_dir: Path, env: dict[str, str], timeout: float = 90.0):
    """The predictor and the transformer of ``model_dir`` on free loopback ports (logs in ``root``), ready;
    yields their base URLs ``(predictor, transformer)`` and stops both."""
    port, transformer_port = free_port(), free_port()
    model = ["--model_dir", str(model_dir)]
    procs = [start([PYTHON, "-m", "smart_energy.serving.predictor", *model, "--http_port", str(port)],
                   root / "predictor.log", env=env),
             start([PYTHON, "-m", "smart_energy.serving.transformer", *model, "--http_port", str(transformer_port),
                    "--predictor_host", f"127.0.0.1:{port}"], root / "transformer.log", env=env)]
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=timeout, proc=procs[0])
        wait_http(f"http://127.0.0.1:{transformer_port}/v2/health/ready", timeout=timeout, proc=procs[1])
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{transformer_port}"
    finally:
        for proc in procs:
            stop(proc)
