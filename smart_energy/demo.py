"""`make demo`: the training pipeline end to end on this machine, then the evaluation and the time per stage.

Runs ``pipelines/training_pipeline.py`` with kfp.local (ingest → quality gate → hold-out split →
features → train → evaluate → register → deploy request) on the shared readings, with the
settings of this environment (artifact store, feature repo), and prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_table(seconds: dict[str, float], total: float) -> str:
    """Seconds per pipeline stage, in pipeline order, and the total."""
    from smart_energy.pipelines.local_run import STAGES

    lines = ["| stage | seconds |", "|---|---:|"]
    lines += [f"| {stage} | {seconds[stage]:.1f} |" for stage in STAGES if stage in seconds]
    lines.append(f"| total (with kfp.local) | {total:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from smart_energy.components.errors import SmartEnergyError
    from smart_energy.pipelines.cli import DEFAULT_DATA, print_run
    from smart_energy.pipelines.local_run import run_local

    parser = argparse.ArgumentParser(prog="python -m smart_energy.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="raw readings (default %(default)s)")
    parser.add_argument("--hpo-trials", type=int, default=0, help="Optuna trials in the train step (default 0)")
    args = parser.parse_args(argv)

    start = time.monotonic()
    try:
        run = run_local(args.data, hpo_trials=args.hpo_trials)
    except SmartEnergyError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    total = time.monotonic() - start
    print("\n" + "=" * 80)
    print_run(run)
    print("time per stage (each a subprocess, as a pod would be):\n")
    print(stage_table(run.seconds, total))

    # --- HOOK: serve the model this run trained and call it once with V1 and V2 (smart_energy.serving.client). ---
    from smart_energy.serving.client import serve_and_call_once

    log_path = run.run_dir / "serving.log"
    print(f"serving {run.run_dir / 'train' / 'model'} on 127.0.0.1 (server logs: {log_path}), "
          "one forecast per protocol:")
    with open(log_path, "wb") as log:
        answers = serve_and_call_once(run.run_dir / "train" / "model", port=free_port(), predictor_port=free_port(),
                                      log=log)
    quality = json.loads((run.run_dir / "ingest" / "hourly" / "quality.json").read_text())
    hour = (datetime.fromisoformat(quality["last_timestamp"]) + timedelta(hours=1)).replace(minute=0, second=0)
    forecast = answers["v1"]["predictions"][0]
    print(f"\n{quality['meter_id']}: {forecast:.2f} kW expected on average in the hour starting "
          f"{hour:%Y-%m-%d %H:%M}, the hour after the last reading (the data's own clock: the meter's local "
          f"time, stored as UTC)")
    # -------------------------------------------------------------------------------------------------
    return 0


if __name__ == "__main__":
    sys.exit(main())
