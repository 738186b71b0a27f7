"""Rolling-origin backtest (with its plot) and the bounded Optuna search."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from smart_energy.components.train import DEFAULT_PARAMS, train


def test_backtest_cli_writes_weekly_scores_and_plot(shared_data, tmp_path, feature_repo_copy):
    out = tmp_path / "bt"
    proc = subprocess.run([sys.executable, "-m", "smart_energy.cli", "backtest", "--data", str(shared_data),
                           "--out", str(out), "--weeks", "2"], capture_output=True, text=True,
                          env={**os.environ, "SE_FEATURE_REPO": str(feature_repo_copy)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["weeks"] == 2 and summary["hours"] > 300
    weekly = pd.read_csv(out / "backtest_weekly.csv")
    assert list(pd.to_datetime(weekly["week_start"]).dt.strftime("%Y-%m-%d")) == ["2007-02-15", "2007-02-22"]
    assert (weekly["model_mae_kw"] > 0).all()
    forecasts = pd.read_csv(out / "backtest_forecasts.csv")
    assert len(forecasts) == summary["hours"]
    assert forecasts["event_timestamp"].is_monotonic_increasing
    png = (out / "forecast_vs_actual.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_hpo_runs_bounded_trials(shared_data, tmp_path, isolated_settings):
    meta = train(shared_data, tmp_path / "model", isolated_settings, hpo_trials=3, until="2007-01-20")
    assert meta["hpo"]["trials_completed"] == 3  # counted from the study, not the argument echoed
    # the model was fitted with the best trial's parameters: its validation MAE is that trial's
    assert meta["metrics"]["valid_mae_kw"] == pytest.approx(meta["hpo"]["best_valid_mae_kw"], rel=1e-12)
    tuned = {k: meta["params"][k] for k in ("max_depth", "eta", "subsample")}
    assert tuned != {k: DEFAULT_PARAMS[k] for k in tuned}
    assert meta["training_window"]["end"] < "2007-01-20"
