"""Run the training pipeline on this machine with ``kfp.local`` (SubprocessRunner, no Docker, no cluster).

The tasks run as subprocesses of this Python, in this environment (``use_venv=False``: the
project and a pinned kfp are installed here, as in the image), with this process's SE_*
settings. Outputs land under ``pipeline_root/<pipeline>-<timestamp>/<task>/<output>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import HOME, Settings, get_settings

# the task names (KFP's): the shared steps, then one branch per model, the day-ahead one suffixed "-2"
BRANCHES = {"": "energy-forecaster (next hour)", "-2": "energy-forecaster-dayahead (day ahead)"}


def stages(branches) -> list[str]:
    """The task names of a training pipeline with these branches (task suffixes), in pipeline order."""
    return ["ingest", "quality-gate", "split-holdout", "materialize-features"] + [
        f"{step}{suffix}" for suffix in branches for step in ("train", "evaluate", "register", "deploy-request")]


STAGES = stages(BRANCHES)  # training_pipeline's
NEXT_HOUR_STAGES = stages([""])  # next_hour_pipeline's: the first branch alone
TASK_LOG = "tasks.log"  # every task's own output, in the run directory
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_EVENT = re.compile(r"^(?:Executing task '(?P<start>[\w-]+)'|Task '(?P<end>[\w-]+)' finished with status)")


class PipelineRunError(SmartEnergyError):
    """A task of the local run failed; the message names it and, for the gate, gives its reason."""


@dataclass
class LocalRun:
    """Where a local run put its outputs, and what its steps measured."""

    run_dir: Path
    branches: tuple[str, ...] = tuple(BRANCHES)  # the task suffixes of the models it trained
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def artifacts(self) -> dict[str, Path]:
        """``task/output`` -> path of every output artifact written."""
        return {f"{p.parent.name}/{p.name}": p for p in sorted(self.run_dir.glob("*/*"))
                if p.name != "executor_output.json"}

    def read_json(self, task: str, output: str) -> dict[str, Any]:
        return json.loads((self.run_dir / task / output).read_text())

    def read_text(self, task: str, output: str) -> str:
        return (self.run_dir / task / output).read_text()


class _StageClock(logging.Filter):
    """Times each task from kfp.local's own "Executing task" / "finished" log records.

    A filter on the root logger (not a handler) survives kfp.local swapping the handlers.
    """

    def __init__(self, progress=None) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.progress = progress  # a stream for one line per finished task (the terminal's stderr)

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", str(record.getMessage()))
        match = _TASK_EVENT.match(message)
        if match and match["start"]:
            self.started[match["start"]] = record.created
        elif match and match["end"] in self.started:
            self.seconds[match["end"]] = record.created - self.started[match["end"]]
            if self.progress is not None:
                status = message.rsplit(" ", 1)[-1].rstrip(".")
                print(f"  {match['end']:22s} {status:8s} {self.seconds[match['end']]:6.1f} s",
                      file=self.progress, flush=True)
        return True


def default_pipeline_root(settings: Settings) -> Path:
    """``<artifact store>/pipeline-runs`` for a file:// store, else ``<repo>/artifacts/pipeline-runs``."""
    parsed = urlparse(settings.artifact_uri)
    base = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else HOME / "artifacts"
    return base / "pipeline-runs"


def _metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each task's ``metrics`` output, from the executor output kfp.local keeps in the task's folder."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(run_dir.glob("*/executor_output.json")):
        outputs = json.loads(path.read_text()).get("artifacts", {})
        for artifact in outputs.get("metrics", {}).get("artifacts", []):
            out[path.parent.name] = artifact.get("metadata", {})
    return out


def _failure_reason(run_dir: Path) -> str:
    """The gate's verdict when it stopped the run (its report is written before it raises)."""
    from smart_energy.components.pipeline_steps import STOPPED

    report = run_dir / "quality-gate" / "report"
    lines = report.read_text().splitlines() if report.is_file() else []
    return next((line.removeprefix(STOPPED) for line in lines if line.startswith(STOPPED)), "")


def run_local(data: str | Path, pipeline_root: str | Path | None = None, next_hour_only: bool = False,
              **arguments: Any) -> LocalRun:
    """Run ``training_pipeline`` (or ``next_hour_pipeline``) with kfp.local on the readings at ``data`` (a path or URI).

    Args:
        data: the pipeline's ``data_uri``.
        pipeline_root: where task outputs go (default: ``default_pipeline_root``).
        next_hour_only: run ``next_hour_pipeline``, which trains the next-hour model alone (the closed loop's).
        arguments: other pipeline parameters (meter_id, hpo_trials, promotion_threshold, ...).

    Raises:
        PipelineRunError: naming the failed task (and the gate's reason when it stopped the run).
    """
    from kfp import local

    from smart_energy.pipelines import training_pipeline as pipelines

    pipeline = pipelines.next_hour_pipeline if next_hour_only else pipelines.training_pipeline
    name = pipeline.name
    runs = f"{name}-[0-9]*"  # kfp.local's run folders: <name>-<timestamp> (not the other pipeline's)
    settings = get_settings()
    arguments = {"meter_id": settings.meter_id, "max_quarantine_fraction": settings.max_quarantine_fraction} | arguments
    root = Path(pipeline_root) if pipeline_root else default_pipeline_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    data = str(Path(data).resolve()) if "://" not in str(data) else str(data)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    before = set(root.glob(runs))
    clock = _StageClock(progress=sys.stderr)
    logging.getLogger().addFilter(clock)
    # kfp.local prints every task's own output (its executor input, its logs) on stdout; that goes to a
    # log file beside the run, and the terminal keeps kfp.local's one line per task start and finish.
    task_log = root / f".{name}-{os.getpid()}-tasks.log"
    print(f"kfp.local: running {name} on {data} under {root}", file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings(), open(task_log, "w") as log, contextlib.redirect_stdout(log):
            # the project image is not named "python"; kfp.local warns about that on every task
            warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
            pipeline(data_uri=data, **arguments)
    except RuntimeError as err:
        new = sorted(set(root.glob(runs)) - before)
        reason = _failure_reason(new[-1]) if new else ""
        kept = task_log.replace(new[-1] / TASK_LOG) if new else task_log
        raise PipelineRunError(_ANSI.sub("", str(err)) + (f" Reason: {reason}" if reason else "")
                               + f" Task output: {kept}") from None
    finally:
        logging.getLogger().removeFilter(clock)
    run_dir = sorted(set(root.glob(runs)) - before)[-1]
    task_log.replace(run_dir / TASK_LOG)
    tasks = pipeline.pipeline_spec.root.dag.tasks
    return LocalRun(run_dir=run_dir, branches=tuple(s for s in BRANCHES if f"register{s}" in tasks),
                    seconds=clock.seconds, metrics=_metrics(run_dir))
