"""The training pipeline on readings with multi-day holes (as real meters have): it runs with no flag,
and the hold-out evaluation counts the hours it could not score."""

from __future__ import annotations

import pandas as pd
import pytest

from smart_energy.components.ingest import ingest_file
from smart_energy.components.registry import read_metadata
from helpers import with_hole
from pipeline_helpers import slice_of
from smart_energy.pipelines.local_run import run_local

pytestmark = pytest.mark.slow
HOLES = [("2007-01-02 06:00", "2007-01-05 06:00"),  # 72 h in the training weeks
         ("2007-01-24 00:00", "2007-01-25 12:00")]  # 36 h in the hold-out week


def test_pipeline_runs_through_holes_and_counts_skipped_hours(pipeline_env, shared_data, tmp_path):
    six_weeks = slice_of(shared_data, tmp_path / "six_weeks.txt", 6 * 7 * 1440)
    data = with_hole(six_weeks, tmp_path / "six_weeks_with_holes.txt", HOLES)
    run = run_local(data, tmp_path / "runs", holdout_days=7)
    window = read_metadata(run.run_dir / "train" / "model")["training_window"]
    assert [(g["start"][:16], g["hours"]) for g in window["gaps"]] == [("2007-01-02T06:00", 72)]
    # the hold-out: 2007-01-21 00:00 to the slice's last (partial, incomplete) hour, 2007-01-27 17:00
    hourly = ingest_file(six_weeks).hourly
    holdout = hourly[hourly["timestamp"] >= pd.Timestamp("2007-01-21", tz="UTC")]
    already_incomplete = int((~holdout["is_complete"]).sum())
    ev = run.metrics["evaluate"]
    assert ev["hours_skipped_target_missing"] == 36 + already_incomplete
    assert ev["hours_skipped_no_persistence"] == 1
    # the second hour after the hole lacks the lags of 2, 3 and 24 h: the servers answer it with the meter's weekly
    # profile, so the evaluation scores it apart from the model's hours
    fallback = run.read_json("evaluate", "comparison")["candidate"]["fallback"]
    assert fallback["hours"] == 1 and fallback["by_reason"] == {"lags_missing": 1}
    assert ev["hours_scored"] == len(holdout) - 37 - already_incomplete - fallback["hours"]
    assert ev["mae_kw"] < ev["persistence_mae_kw"]
