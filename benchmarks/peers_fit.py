"""The peers of `make bench` (section ``peers``), fitted and run in their own venv (``.venv-peers``,
``benchmarks/peers.lock``); ``benchmarks/peers_bench.py`` (our venv) writes the input and scores the output.

Input: one household's hourly kW on a gap-free hourly grid (holes already filled causally, for the peers only),
the first hour left out of training (``--cutoff``) and the origin hours to forecast from. Every peer is fitted
once, on the hours before the cut-off, and never refitted; at each origin T it forecasts the 24 hours T .. T+23
from the hours before T (what our day-ahead model knows at T):

- statsforecast ``MSTL(season_length=[24, 168])`` (its default trend model, ``AutoETS(model="ZZN")``) and
  ``AutoARIMA(season_length=24)``: each model's own ``forward(y, h, level)`` applies the fitted parameters to
  the series up to T (ARIMA: the fitted coefficients, fixed, through the Kalman filter; MSTL: its LOESS
  decomposition redone on that series, with the fitted trend model's parameters). P50 is the point forecast,
  P10/P90 the 80 % interval (``level=[80]``).
- mlforecast with LightGBM, one model per quantile (``objective="quantile"``, alpha 0.1/0.5/0.9, LightGBM's
  defaults otherwise; one thread: on ~750 rows OpenMP's threads cost more than they save, and on a busy
  machine they made a 0.2 s fit take 30 s): lags 1, 2, 3, 24, 168, rolling means of lag 1 over 24 and 168 hours, hour and day of
  week, ``target_transforms=[Differences([24])]``; mlforecast's default strategy for 24 steps, recursive (each
  model fed its own earlier steps). Every origin's history goes in one ``predict(h=24, new_df=...)`` call,
  one series per origin.

Writes a parquet of (method, origin, lead, p10, p50, p90), raw as the libraries give them (the caller sorts and
clips), and prints a JSON line of timings on stdout. Imports nothing from smart_energy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import pandas as pd

HORIZON = 24
LEVEL = 80  # P10..P90
QUANTILES = (0.1, 0.5, 0.9)


def log(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


def statsforecast_peer(name: str, model, y: np.ndarray, positions: np.ndarray, train_end: int) -> tuple[np.ndarray, dict]:
    """Fit ``model`` on ``y[:train_end]`` once; at each position p, ``forward`` on ``y[:p]``: (origins, 24, 3)."""
    start = time.perf_counter()
    model.fit(y[:train_end])
    fit_seconds = time.perf_counter() - start
    chosen = describe_arima(model) if isinstance(getattr(model, "model_", None), dict) else None
    log(f"{name}: fitted on {train_end:,} hours in {fit_seconds:.1f} s" + (f" ({chosen})" if chosen else ""))
    out = np.empty((len(positions), HORIZON, 3))
    start = time.perf_counter()
    for i, p in enumerate(positions):
        r = model.forward(y=y[:p], h=HORIZON, level=[LEVEL])
        out[i] = np.column_stack([r[f"lo-{LEVEL}"], r["mean"], r[f"hi-{LEVEL}"]])
        if (i + 1) % 100 == 0 or i + 1 == len(positions):
            elapsed = time.perf_counter() - start
            log(f"{name}: {i + 1}/{len(positions)} origins forwarded, {elapsed:.0f} s")
    forward_seconds = time.perf_counter() - start
    return out, {"fit_seconds": round(fit_seconds, 2), "forecast_seconds": round(forward_seconds, 2),
                 "ms_per_origin": round(1000 * forward_seconds / max(1, len(positions)), 1),
                 **({"model": chosen} if chosen else {})}


def describe_arima(model) -> str:
    from statsforecast.arima import arima_string

    return arima_string(model.model_)


def mlforecast_peer(ds: pd.DatetimeIndex, y: np.ndarray, positions: np.ndarray, train_end: int) -> tuple[np.ndarray, dict]:
    from lightgbm import LGBMRegressor
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.target_transforms import Differences

    models = {f"p{round(q * 100)}": LGBMRegressor(objective="quantile", alpha=q, random_state=7, verbosity=-1,
                                                              n_jobs=1)
              for q in QUANTILES}
    mlf = MLForecast(models=models, freq="h", lags=[1, 2, 3, 24, 168],
                     lag_transforms={1: [RollingMean(window_size=24), RollingMean(window_size=168)]},
                     date_features=["hour", "dayofweek"], target_transforms=[Differences([24])])
    frame = pd.DataFrame({"unique_id": "meter", "ds": ds, "y": y})
    start = time.perf_counter()
    mlf.fit(frame.iloc[:train_end], static_features=[])
    fit_seconds = time.perf_counter() - start
    log(f"mlforecast LightGBM: 3 quantile models fitted on {train_end:,} hours in {fit_seconds:.1f} s "
        f"(features: {', '.join(mlf.ts.features_order_)})")
    start = time.perf_counter()
    history = pd.concat([frame.iloc[:p].assign(unique_id=str(i)) for i, p in enumerate(positions)], ignore_index=True)
    forecast = mlf.predict(h=HORIZON, new_df=history)
    forecast_seconds = time.perf_counter() - start
    forecast["i"] = forecast["unique_id"].astype(int)
    forecast = forecast.sort_values(["i", "ds"])
    expected = ds[positions].to_numpy()[forecast["i"].to_numpy()] + (
        np.tile(np.arange(HORIZON), len(positions)) * np.timedelta64(1, "h"))
    if len(forecast) != len(positions) * HORIZON or not (forecast["ds"].to_numpy() == expected).all():
        raise SystemExit("peers: mlforecast's forecast hours do not line up with the origins")
    out = forecast[list(models)].to_numpy().reshape(len(positions), HORIZON, 3)
    log(f"mlforecast LightGBM: {len(positions)} origins x {HORIZON} h in one predict(new_df=...), "
        f"{forecast_seconds:.1f} s")
    return out, {"fit_seconds": round(fit_seconds, 2), "forecast_seconds": round(forecast_seconds, 2),
                 "ms_per_origin": round(1000 * forecast_seconds / max(1, len(positions)), 1),
                 "strategy": "recursive (mlforecast's default; no max_horizon)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", required=True, help="parquet: ds (hourly, gap-free, UTC), y (kW, no NaN)")
    parser.add_argument("--origins", required=True, help="parquet: origin (UTC hours)")
    parser.add_argument("--cutoff", required=True, help="the first hour left out of training (ISO, UTC)")
    parser.add_argument("--out", required=True, help="parquet written: method, origin, lead, p10, p50, p90")
    parser.add_argument("--only", action="append", choices=["mstl", "autoarima", "mlforecast"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    series = pd.read_parquet(args.series)
    ds = pd.DatetimeIndex(series["ds"]).tz_convert("UTC").tz_localize(None)
    y = series["y"].to_numpy(dtype=float)
    if np.isnan(y).any() or (np.diff(ds.asi8) != 3600 * 10**9).any():
        raise SystemExit("peers: the series must be hourly without holes or NaN (fill them first)")
    origins = pd.DatetimeIndex(pd.read_parquet(args.origins)["origin"]).tz_convert("UTC").tz_localize(None)
    positions = ds.get_indexer(origins)
    if (positions < 0).any():
        raise SystemExit("peers: an origin is not an hour of the series")
    cutoff = pd.Timestamp(args.cutoff).tz_convert("UTC").tz_localize(None)
    train_end = int(np.searchsorted(ds, cutoff))
    if positions.min() < train_end:
        raise SystemExit("peers: an origin lies inside the training window")

    from statsforecast.models import MSTL, AutoARIMA

    peers = {"mstl": lambda: statsforecast_peer("MSTL(24, 168)", MSTL(season_length=[24, 168]), y, positions, train_end),
             "autoarima": lambda: statsforecast_peer("AutoARIMA(24)", AutoARIMA(season_length=24), y, positions,
                                                     train_end),
             "mlforecast": lambda: mlforecast_peer(ds, y, positions, train_end)}
    frames, timings = [], {}
    for name in args.only or list(peers):
        forecast, timings[name] = peers[name]()
        frames.append(pd.DataFrame({"method": name, "origin": np.repeat(origins.to_numpy(), HORIZON),
                                    "lead": np.tile(np.arange(1, HORIZON + 1), len(origins)),
                                    "p10": forecast[:, :, 0].ravel(), "p50": forecast[:, :, 1].ravel(),
                                    "p90": forecast[:, :, 2].ravel()}))
    pd.concat(frames, ignore_index=True).to_parquet(args.out, index=False)
    import lightgbm
    import mlforecast
    import statsforecast

    print(json.dumps({"timings": timings, "train_hours": train_end, "versions": {
        "statsforecast": statsforecast.__version__, "mlforecast": mlforecast.__version__,
        "lightgbm": lightgbm.__version__}}))


if __name__ == "__main__":
    main()
