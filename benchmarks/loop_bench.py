"""The closed loop's wall time per replayed week, on the shared file as it is and with a level shift.

Six weeks of history train the first model (the training pipeline), the remaining 33 days are replayed hour
by hour through real servers. Retraining (a kfp.local pipeline run each) is timed apart from the replay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.ingest import split_raw_file
from smart_energy.components.settings import Settings

REPLAY_START = "2007-01-27 00:00:00"
SHIFT_AT = "2007-02-03 00:00:00"


def level_shift(source: Path, dest: Path, start: str, factor: float) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import with_level_shift

    return with_level_shift(source, dest, start, factor)


def run_loop(history: Path, data: Path, work: Path) -> dict:
    settings = Settings(feature_repo=copy_feature_repo(work / "feature_repo"), artifact_uri=(work / "artifacts").as_uri())
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "loop", "--history", str(history), "--data",
                           str(data), "--out", str(work / "out")], capture_output=True, text=True,
                          env={**os.environ, **settings.as_env()})
    if proc.returncode != 0:
        raise SystemExit(f"loop failed:\n{proc.stderr[-3000:]}")
    return json.loads((work / "out" / "summary.json").read_text())


def bench(big: Path, work: Path, run_case, shared: Path) -> None:
    history, replay = work / "loop_history.txt", work / "loop_replay.txt"
    split_raw_file(shared, REPLAY_START, history, replay)
    shifted = level_shift(replay, work / "loop_replay_shifted.txt", SHIFT_AT, 1.6)
    print("\n== loop: the closed loop on the shared file (6 weeks history, 33 days replayed) ==")
    print(f"{'replay':28s} {'hours':>6s} {'s/week':>7s} {'replay s/week':>13s} {'retrains':>8s} {'promoted':>8s} "
          f"{'rolled back':>11s} {'served MAE':>10s} {'persistence':>11s} {'never retrained':>15s}")
    for label, data in (("as recorded", replay), (f"x1.6 from {SHIFT_AT[:10]}", shifted)):
        s = run_loop(history, data, work / label.replace(" ", "_").replace(".", "_"))
        weeks = s["hours_replayed"] / 168
        print(f"{label:28s} {s['hours_replayed']:6d} {s['seconds']['total'] / weeks:7.1f} "
              f"{s['seconds']['replay_per_week']:13.1f} {s['retrains']:8d} {s['promotions']:8d} {s['rollbacks']:11d} "
              f"{s['mae_kw']:10.3f} {s['persistence_mae_kw']:11.3f} {s['frozen_mae_kw']:15.3f}", flush=True)
        print(f"  {s['seconds']['retraining']:.0f} s of {s['seconds']['total']:.0f} s retraining; a replayed week "
              f"without retraining is {168 * 3600 / s['seconds']['replay_per_week']:,.0f}x real time; "
              f"drift alarms {s['drift_alarms']}", flush=True)
