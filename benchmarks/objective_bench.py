"""The training objective, side by side: XGBoost's absolute error against the default (pseudo-Huber).

Two questions, one run: the cost per row and boosting round as the rows grow (a fleet's 0.2 to 1.8 million
hourly rows: absolute error recomputes each leaf as a median of its residuals, pseudo-Huber does not), and
the held-out MAE each one gives, on the real household (rolling weekly hold-outs, two seeds) and on synthetic
fleets (`make_fleet.py`). Run by `make bench` (section `objective`) or alone:
``python -m benchmarks.objective_bench --data SHARED``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

if not __package__:  # run as a script: import from the repository's root (pyarrow installs a `benchmarks` of its own)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.make_fleet import make_fleet_hourly  # noqa: E402
from smart_energy.components.features import FEATURES, build_feature_frame, labels
from smart_energy.components.ingest import ingest_file
from smart_energy.components.train import DEFAULT_PARAMS, fit_booster, holdout_start, refit, time_split, with_start

# the earlier default: absolute error, no cap on the leaf step (XGBoost's max_delta_step 0)
OBJECTIVES = {"absolute error": {"objective": "reg:absoluteerror", "max_delta_step": 0.0}, "default": {}}
ROUNDS = 100


def feature_rows(hourly: pd.DataFrame) -> pd.DataFrame:
    """Feature rows with their next-hour target (the training frame, without Feast)."""
    return build_feature_frame(hourly).merge(labels(hourly), on=["meter_id", "event_timestamp"])


def held_out_mae(train: pd.DataFrame, held_out: pd.DataFrame, params: dict) -> float:
    """``train.train``'s recipe without Feast: early stopping on the time split, refit, then score ``held_out``."""
    _, metrics = fit_booster(*time_split(train), params)
    booster, _ = refit(train, params, metrics["best_iteration"] + 1)
    pred = booster.predict(xgb.DMatrix(held_out[FEATURES], feature_names=FEATURES))
    return float(np.mean(np.abs(pred - held_out["target_kw"].to_numpy())))


def cost(frame: pd.DataFrame) -> None:
    print(f"{'meters':>7} {'rows':>10} " + " ".join(f"{name + ' us/row/round':>28}" for name in OBJECTIVES))
    meters = frame["meter_id"].unique()
    for n in (1_000, 3_000, 10_000):
        part = time_split(frame[frame["meter_id"].isin(meters[:n])])[0]
        matrix = xgb.DMatrix(part[FEATURES], label=part["target_kw"], feature_names=FEATURES)
        cells = []
        for params in OBJECTIVES.values():
            start = time.perf_counter()
            xgb.train(with_start({**DEFAULT_PARAMS, **params}, part["target_kw"]), matrix, ROUNDS)
            cells.append(1e6 * (time.perf_counter() - start) / len(part) / ROUNDS)
        print(f"{n:7,} {len(part):10,} " + " ".join(f"{c:28.3f}" for c in cells), flush=True)


def household(shared: Path) -> None:
    frame = feature_rows(ingest_file(shared).hourly)
    end = frame["event_timestamp"].max()
    cuts = [end - pd.Timedelta(days=7 * k) for k in range(1, 7)]
    scores = {name: [] for name in OBJECTIVES}
    for seed in (7, 8):
        for cut in cuts:
            train = frame[frame["event_timestamp"] < cut]
            week = frame[(frame["event_timestamp"] >= cut) & (frame["event_timestamp"] < cut + pd.Timedelta(days=7))]
            for name, params in OBJECTIVES.items():
                scores[name].append(held_out_mae(train, week, {**params, "seed": seed}))
    print(f"household, {len(cuts)} rolling weekly hold-outs x 2 seeds, persistence "
          f"{np.mean(np.abs(frame['usage_lag_1h'] - frame['target_kw'])[frame['event_timestamp'] >= cuts[-1]]):.3f} kW:")
    for name, values in scores.items():
        print(f"  {name:15} mean MAE {np.mean(values):.4f} kW  (weeks: {' '.join(f'{v:.3f}' for v in values[:6])})")


def fleets(shared: Path) -> None:
    for meters, days, weeks, seed in ((300, 30, 2, 7), (1_000, 14, 1, 3)):
        hourly = make_fleet_hourly(shared, meters, days, seed=seed)
        frame = feature_rows(hourly)
        cut = holdout_start(hourly, weeks)
        train, held_out = frame[frame["event_timestamp"] < cut], frame[frame["event_timestamp"] >= cut]
        cells = []
        for params in OBJECTIVES.values():
            start = time.perf_counter()
            cells.append(f"{held_out_mae(train, held_out, params):.4f} kW ({time.perf_counter() - start:.0f} s)")
        print(f"fleet of {meters:,} x {days} days, last {weeks} week(s) held out: " +
              ", ".join(f"{name} {cell}" for name, cell in zip(OBJECTIVES, cells)), flush=True)


def bench(big: Path, work: Path, run_case, shared: Path) -> None:
    warnings.filterwarnings("ignore", message=".*huber_slope.*are not used")  # absolute error ignores the slope
    print(f"\n== training objective: absolute error vs the default ({DEFAULT_PARAMS['objective']}, "
          f"slope {DEFAULT_PARAMS['huber_slope']} kW) ==", flush=True)
    cost(feature_rows(make_fleet_hourly(shared, 10_000, 9)))
    household(shared)
    fleets(shared)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared UCI slice")
    args = parser.parse_args()
    from benchmarks import require_file

    require_file(args.data, "--data")
    bench(Path(), Path(), None, args.data)
