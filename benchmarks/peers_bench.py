"""Our forecasts beside the established libraries' (`make bench`, section ``peers``), on the real shared file.

Ours are trained as `make backtest` trains them (``train --holdout-weeks 4``, next hour and ``--horizon 24``)
and scored on exactly the hours and (origin, lead) pairs that ``evaluate --last-weeks 4`` scores: the hours
come from ``evaluate``'s own functions and the pairs from ``dayahead.score_hourly`` (what ``evaluate_dayahead``
runs), and both results are checked against ``evaluate``'s and ``evaluate_dayahead``'s own output.

The peers (statsforecast MSTL and AutoARIMA, mlforecast with LightGBM; see ``benchmarks/peers_fit.py``) run in
their own venv (``.venv-peers``, ``benchmarks/peers.lock``, made by ``benchmarks/peers_env.sh``): this process
writes the household's hourly kW to a file, the peers' process fits each peer once on the hours before the
cut-off and forecasts the next 24 hours from every origin of the scored weeks, without refitting. They take
no holes: for the peers only, a missing hour is filled with the value 24 hours earlier (causal), and the note
says how many. Every peer's P10/P50/P90 is sorted per row and clipped at 0 kW, as ours are.

Run alone: ``python -m benchmarks.peers_bench --data SHARED`` (our venv's python).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
WEEKS = 4
LEADS = (1, 2, 3, 6, 12, 24)
PEERS = {"mstl": "statsforecast MSTL(24, 168), clipped at 0", "autoarima": "statsforecast AutoARIMA(season 24)",
         "mlforecast": "mlforecast LightGBM quantile, Differences([24])"}
SHORT = {"mstl": "MSTL", "autoarima": "AutoARIMA", "mlforecast": "mlforecast"}


def log(message: str) -> None:
    print(f"peers bench: {message}", file=sys.stderr, flush=True)


def peers_python() -> Path:
    """The peers' venv's python, installed from ``benchmarks/peers.lock`` when missing or older than the lock."""
    venv = Path(os.environ.get("PEERS_VENV", REPO / ".venv-peers"))
    subprocess.run(["bash", str(REPO / "benchmarks" / "peers_env.sh"), "install", str(venv)], cwd=REPO, check=True)
    return venv / "bin" / "python"


def train_ours(shared: Path, work: Path) -> dict[str, Path]:
    """Both models trained without the file's last ``WEEKS`` weeks, by the CLI (as `make backtest` does)."""
    exe = Path(sys.executable).with_name("smart-energy")
    dirs = {}
    for name, extra in (("next_hour", []), ("dayahead", ["--horizon", "24"])):
        dirs[name] = work / name
        start = time.perf_counter()
        subprocess.run([str(exe), "train", *extra, "--data", str(shared), "--model-dir", str(dirs[name]),
                        "--holdout-weeks", str(WEEKS)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        log(f"trained ours ({name}, --holdout-weeks {WEEKS}) in {time.perf_counter() - start:.0f} s")
    return dirs


def next_hour_scores(model_dir: Path, shared: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The hours ``evaluate --last-weeks WEEKS`` scores, our predictions for them and the baselines' scores,
    from ``evaluate``'s own functions, checked against ``evaluate`` itself."""
    from smart_energy.components.evaluate import (evaluate, last_weeks_split, predict, score_frame, scoring_frame,
                                                  split_fallback_hours)
    from smart_energy.components.features import with_history
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.registry import load_booster

    booster, metadata = load_booster(model_dir)
    data, history = last_weeks_split(load_hourly(shared), None, WEEKS)
    frame, _ = scoring_frame(data, history)
    frame, _ = split_fallback_hours(frame, metadata["features"], with_history(data, history))
    predicted = predict(booster, frame, metadata["features"])
    result = score_frame(frame, predicted)
    official = evaluate(model_dir, shared, last_weeks=WEEKS)
    if official["hours_scored"] != result["hours_scored"] or not np.isclose(official["mae_kw"], result["mae_kw"]):
        raise SystemExit(f"peers bench: the next-hour hours no longer match `evaluate`'s ({result['hours_scored']} "
                         f"hours, MAE {result['mae_kw']:.4f} against {official['hours_scored']}, "
                         f"{official['mae_kw']:.4f}): update next_hour_scores to follow evaluate()")
    return frame, predicted, result


def dayahead_scores(model_dir: Path, shared: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """The (origin, lead) pairs ``evaluate --last-weeks WEEKS`` scores for a day-ahead model and our calibrated
    P10/P50/P90 for them (``score_hourly``, what ``evaluate_dayahead`` runs), checked against its output."""
    from smart_energy.components.dayahead import evaluate_dayahead, load_dayahead, score_hourly
    from smart_energy.components.evaluate import last_weeks_split
    from smart_energy.components.ingest import load_hourly

    booster, metadata = load_dayahead(model_dir)
    data, history = last_weeks_split(load_hourly(shared), None, WEEKS)
    result, pairs, forecast = score_hourly(booster, metadata, data, history)
    official = evaluate_dayahead(model_dir, shared, last_weeks=WEEKS)
    same = all(np.isclose(official[k], result[k]) for k in ("hours_scored", "mae_kw", "coverage_p10_p90"))
    if not same:
        raise SystemExit(f"peers bench: the day-ahead pairs or forecasts no longer match `evaluate`'s "
                         f"({result['hours_scored']} pairs, MAE {result['mae_kw']:.4f} against "
                         f"{official['hours_scored']}, {official['mae_kw']:.4f}): update dayahead_scores")
    return pairs, forecast, result


def causal_fill(hourly: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One meter's usable hourly kW on a gap-free hourly grid from its first complete hour; each missing hour
    (incomplete, or no row at all) takes the value 24 hours earlier (already filled if missing too; the hour
    before in the first day). Known at any later origin, so causal. Returns the series and how many were filled."""
    from smart_energy.components.features import usable_usage

    if hourly["meter_id"].nunique() != 1:
        raise SystemExit("peers bench: one meter only (the shared household)")
    kw = pd.Series(usable_usage(hourly).to_numpy(), index=pd.DatetimeIndex(hourly["timestamp"])).sort_index()
    kw = kw[kw.first_valid_index():]
    kw = kw.reindex(pd.date_range(kw.index[0], kw.index[-1], freq="h"))
    values = kw.to_numpy(dtype=float).copy()
    missing = np.flatnonzero(np.isnan(values))
    for i in missing:  # in time order: a hole longer than a day takes its own filled values
        values[i] = values[i - 24] if i >= 24 else values[i - 1]
    return pd.DataFrame({"ds": kw.index, "y": values}), int(len(missing))


def run_peers(series: pd.DataFrame, origins: pd.DatetimeIndex, cutoff: pd.Timestamp, work: Path) -> tuple[pd.DataFrame, dict]:
    python = peers_python()
    series.to_parquet(work / "series.parquet", index=False)
    pd.DataFrame({"origin": origins}).to_parquet(work / "origins.parquet", index=False)
    out = work / "peers.parquet"
    proc = subprocess.run([str(python), str(REPO / "benchmarks" / "peers_fit.py"), "--series", str(work / "series.parquet"),
                           "--origins", str(work / "origins.parquet"), "--cutoff", cutoff.isoformat(), "--out", str(out)],
                          cwd=REPO, stdout=subprocess.PIPE, text=True)  # progress on stderr, as it goes
    if proc.returncode != 0:
        raise SystemExit(f"peers bench: the peers' process failed (exit {proc.returncode})")
    return pd.read_parquet(out), json.loads(proc.stdout.strip().splitlines()[-1])


def peer_forecasts(peers: pd.DataFrame, origins: pd.DatetimeIndex, leads: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
    """Per peer, its P10/P50/P90 for each (origin, lead) asked, sorted per row and clipped at 0, and how many
    rows crossed before sorting."""
    out = {}
    for name, part in peers.groupby("method", sort=False):
        index = pd.MultiIndex.from_arrays([pd.DatetimeIndex(part["origin"]).tz_localize("UTC"), part["lead"]])
        where = index.get_indexer(pd.MultiIndex.from_arrays([origins, leads]))
        if (where < 0).any():
            raise SystemExit(f"peers bench: {name} has no forecast for {int((where < 0).sum())} pairs")
        raw = part[["p10", "p50", "p90"]].to_numpy()[where]
        crossed = int(np.any(np.diff(raw, axis=1) < 0, axis=1).sum())
        out[name] = (np.maximum(np.sort(raw, axis=1), 0.0), crossed)
    return out


def fmt_row(label: str, cells: list[float | None], width: int = 7, digits: int = 3) -> str:
    return f"{label:50s}" + "".join(f"{'—':>{width}s}" if c is None else f"{c:{width}.{digits}f}" for c in cells)


def bench(big: Path | None = None, work: Path | None = None, run_case=None, shared: Path | None = None) -> dict:
    from smart_energy.components.dayahead import score_pairs
    from smart_energy.components.evaluate import predict
    from smart_energy.components.features import training_cutoff
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.registry import load_booster

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    shared = Path(shared).resolve()
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=work))
    hourly = load_hourly(shared)
    cutoff = training_cutoff(hourly["timestamp"].min(), hourly["timestamp"].max(), None, WEEKS)
    print(f"\n== peers: ours beside statsforecast and mlforecast, trained before {cutoff:%Y-%m-%d %H:%M} UTC "
          f"(the file's last {WEEKS} weeks held out), scored on those weeks ==", flush=True)
    dirs = train_ours(shared, work)
    frame, nh_pred, nh = next_hour_scores(dirs["next_hour"], shared)
    pairs, ours, da = dayahead_scores(dirs["dayahead"], shared)
    log(f"ours scored: {nh['hours_scored']} next-hour hours, {da['hours_scored']:,} day-ahead pairs")

    series, filled = causal_fill(hourly)
    origins = pd.DatetimeIndex(sorted(set(frame["event_timestamp"]) | set(pairs["event_timestamp"])))
    peers_started = time.perf_counter()
    peers, info = run_peers(series, origins, cutoff, work)

    # next hour: each peer's lead-1 P50 from origin H is its forecast of hour H, made from the hours before H
    hour = pd.DatetimeIndex(frame["event_timestamp"])
    nh_peer = peer_forecasts(peers, hour, np.ones(len(hour), dtype=int))
    actual_h = frame["target_kw"].to_numpy()
    # day ahead
    da_peer = peer_forecasts(peers, pd.DatetimeIndex(pairs["event_timestamp"]), pairs["lead_hours"].to_numpy())
    scored = {"ours": score_pairs(pairs, ours) | {"crossed": da["quantiles_cross"]}}
    for name, (forecast, crossed) in da_peer.items():
        scored[name] = score_pairs(pairs, forecast) | {"crossed": crossed}
    lead1 = (pairs["lead_hours"] == 1).to_numpy()
    nh_booster, nh_meta = load_booster(dirs["next_hour"])  # the next-hour model on the lead-1 pairs' origin rows
    nh_at_lead1 = float(np.mean(np.abs(predict(nh_booster, pairs[lead1], nh_meta["features"])
                                       - pairs.loc[lead1, "target_kw"].to_numpy())))

    train_hours = int((series["ds"] < cutoff).sum())
    t = info["timings"]
    print(f"ours: XGBoost next hour, and day ahead (P10/P50/P90, rolling 7-day conformal band), trained on the hours "
          f"before the cut-off. Peers: fitted once on the same {train_hours:,} hours "
          f"({series['ds'].iloc[0]:%Y-%m-%d %H:%M} .. {cutoff - pd.Timedelta(hours=1):%Y-%m-%d %H:%M}), then at each "
          f"of {len(origins)} origins forecast the next 24 h from the data before it, never refitted (statsforecast: "
          f"each model's forward(), AutoARIMA chose {t['autoarima'].get('model', '?')}; mlforecast: "
          f"predict(new_df=...), {t['mlforecast']['strategy']}); P50 = statsforecast's mean, P10/P90 its 80 % "
          f"interval; every peer's quantiles sorted per row and clipped at 0 kW, as ours are")
    print(f"note: statsforecast and mlforecast take no holes: for the peers only, {filled} missing hour(s) of the "
          f"series were filled causally with the value 24 h earlier; ours and the naives saw the holes, and every "
          f"score is against the real readings")

    print(f"\nnext hour: MAE on the {nh['hours_scored']} hours `evaluate --last-weeks {WEEKS}` scores "
          f"({frame['event_timestamp'].min():%Y-%m-%d %H:%M} .. {frame['event_timestamp'].max():%Y-%m-%d %H:%M}); "
          f"a peer's next hour is its P50 at lead 1")
    print(f"{'':50s}{'MAE kW':>7s}{'/ ours':>7s}")
    ours_mae = nh["mae_kw"]
    print(fmt_row("ours (next-hour XGBoost)", [ours_mae]) + f"{1:7.2f}")
    for name, (forecast, _) in nh_peer.items():
        mae = float(np.mean(np.abs(forecast[:, 1] - actual_h)))
        print(fmt_row(PEERS[name], [mae]) + f"{mae / ours_mae:7.2f}")
    for name, b in nh["baselines"].items():
        base = b.get("model_mae_kw", ours_mae)  # a baseline missing some hours: ours on the hours it covers
        note = "" if "model_mae_kw" not in b else f"   (on its {b['hours']} hours)"
        print(fmt_row(name, [b["mae_kw"]]) + f"{b['mae_kw'] / base:7.2f}" + note)

    print(f"\nday ahead: P50 MAE (kW) by lead on the {da['hours_scored']:,} (origin, lead) pairs "
          f"`evaluate --last-weeks {WEEKS}` scores ({da['origins']} origins); P10-P90 coverage, pinball loss (kW), "
          f"rows whose raw quantiles crossed")
    print(f"{'lead h':50s}" + "".join(f"{str(k):>7s}" for k in LEADS)
          + f"{'all':>7s}{'cover':>7s}{'pinball':>8s}{'crossed':>8s}")
    rows = [("ours (day-ahead XGBoost, evaluate's band)", scored["ours"])] + [(PEERS[n], scored[n]) for n in da_peer]
    for label, s in rows:
        print(fmt_row(label, [s["mae_by_lead"][k] for k in LEADS] + [s["mae_kw"], s["coverage_p10_p90"]])
              + f"{s['pinball_kw']:8.3f}{s['crossed']:8d}")
    print(fmt_row("ours, next-hour model on the lead-1 pairs", [nh_at_lead1]))
    o = scored["ours"]
    for name, b in o["baselines"].items():
        print(fmt_row(name, [b["mae_by_lead"][k] for k in LEADS] + [b["mae_kw"]]))

    print("\nratio to ours (day-ahead P50 MAE, pinball; above 1: ours is better)")
    print(f"{'lead h':50s}" + "".join(f"{str(k):>7s}" for k in LEADS) + f"{'all':>7s}{'pinball':>8s}")
    for label, s in rows[1:]:
        print(fmt_row(label, [s["mae_by_lead"][k] / o["mae_by_lead"][k] for k in LEADS] + [s["mae_kw"] / o["mae_kw"]],
                      digits=2) + f"{s['pinball_kw'] / o['pinball_kw']:8.2f}")
    print(fmt_row("ours, next-hour model on the lead-1 pairs", [nh_at_lead1 / o["mae_by_lead"][1]], digits=2))
    for name, b in o["baselines"].items():
        print(fmt_row(name, [b["mae_by_lead"][k] / o["mae_by_lead"][k] for k in LEADS] + [b["mae_kw"] / o["mae_kw"]],
                      digits=2))

    # where ours loses: the best other method (peer or naive) at each lead 1..24
    others = {SHORT[n]: scored[n] for n in da_peer} | dict(o["baselines"].items())
    best_at = {k: min(others, key=lambda m: others[m]["mae_by_lead"][k]) for k in sorted(o["mae_by_lead"])}
    losses = []
    for k, best in best_at.items():
        if others[best]["mae_by_lead"][k] < o["mae_by_lead"][k]:
            losses.append(f"{k} ({best} {others[best]['mae_by_lead'][k]:.3f} < {o['mae_by_lead'][k]:.3f})")
    best_all = min(others, key=lambda m: others[m]["mae_kw"])
    gain = 100 * (1 - o["mae_kw"] / others[best_all]["mae_kw"])
    print(f"leads (of 1..24) where a peer or naive beats our day-ahead P50: {', '.join(losses) if losses else 'none'}")
    print(f"overall: ours {o['mae_kw']:.3f} kW, best other {best_all} {others[best_all]['mae_kw']:.3f} kW "
          f"(ours {abs(gain):.1f} % {'better' if gain > 0 else 'worse'}); lead 1: our day-ahead "
          f"{o['mae_by_lead'][1]:.3f} kW against our next-hour model's {nh_at_lead1:.3f} kW on the same hours")
    # are the differences more than one February's noise? paired bootstrap over the 28 origin days
    from benchmarks.bootstrap import day_bootstrap

    actual, lead = pairs["target_kw"].to_numpy(), pairs["lead_hours"].to_numpy()
    ours_err = np.abs(ours[:, 1] - actual)
    other_err = {SHORT[n]: np.abs(f[:, 1] - actual) for n, (f, _) in da_peer.items()} | {
        n: np.abs(pairs[n].to_numpy() - actual) for n in o["baselines"]}
    cells = []
    for k, best in best_at.items():
        if others[best]["mae_by_lead"][k] >= o["mae_by_lead"][k] + 0.02:
            continue  # only the leads within 0.02 kW of the best other
        at = lead == k
        lo, mid, hi = day_bootstrap(pairs[at], ours_err[at] - other_err[best][at])
        cells.append(f"{k} {best} {mid:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    lo, mid, hi = day_bootstrap(pairs, other_err[best_all] - ours_err, relative_to=other_err[best_all])
    print("ours minus the best other, kW, at the leads within 0.02 kW of it (paired bootstrap over origin days, "
          f"90 % interval): {'; '.join(cells) if cells else 'none'}")
    print(f"overall gain on {best_all}: {100 * mid:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] (same bootstrap)")
    seconds = time.perf_counter() - started
    print("peer cost: " + "; ".join(f"{SHORT[n]} fit {v['fit_seconds']:.1f} s, forecast {v['forecast_seconds']:.1f} s "
                                    f"({v['ms_per_origin']:.0f} ms/origin)" for n, v in t.items())
          + f"; versions {', '.join(f'{k} {v}' for k, v in info['versions'].items())}")
    print(f"section time {seconds:.0f} s (ours trained and scored in {peers_started - started:.0f} s; load average "
          f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end, {os.cpu_count()} cores)", flush=True)
    return {"next_hour": nh, "dayahead": scored, "peers_info": info, "filled_hours": filled, "seconds": seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared UCI slice")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks import require_file

    require_file(args.data, "--data")
    with tempfile.TemporaryDirectory() as tmp:
        bench(work=Path(tmp), shared=args.data)
