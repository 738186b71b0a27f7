"""The fleet at 10, 100, 1,000 and 10,000 meters (synthetic, `make_fleet.py`): ingest, feature publish, global
training and batch prediction, each in its own process, on the embedded default and on Spark in local mode
(SE_ENGINE=spark) side by side: seconds, peak RSS of the whole process tree (Spark's JVM and Python workers
included) and the cost per meter. 10, 100 and 1,000 meters have 8 days of minute readings each; 10,000 meters
are hourly synthetic data (9 days; their minute files would be ~7 GB). Then the 10,000-meter batch forecast
against its 60 s target, the per-meter cost from 100 to 10,000 meters, and the extrapolation to 100,000.

Then the day-ahead model's training cost (``dayahead_section``, embedded engine: the day-ahead model trains
there only) at 1,000 and 10,000 meters of hourly synthetic data, by phase: the Feast point-in-time join and the
``MAX_ORIGINS`` sampling, ``fit_dayahead`` (pooled ``reg:quantileerror`` booster + next-hour booster + carry),
and the per-meter advice; and ``reg:quantileerror``'s cost per row and round on 0.1 to 0.8 million pairs of the
10,000-meter fleet, 30 rounds, no early stopping (is it super-linear, as absolute error's per-leaf medians were?).

Run the day-ahead part alone: ``python -m benchmarks.fleet_bench --data SHARED --dayahead [--sizes 1000 10000]``."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

if not __package__:  # run as a script: import from the repository's root (pyarrow installs a `benchmarks` of its own)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cases import register  # noqa: E402
from benchmarks.make_fleet import load_source, make_fleet, make_fleet_hourly  # noqa: E402
from smart_energy.components.feast_store import copy_feature_repo  # noqa: E402

SIZES = (10, 100, 1000)
DAYS = 8
ENGINES = ("embedded", "spark")
STEPS = ("publish", "train", "predict")


class TreePeak:
    """Peak RSS (MiB) of this process and all its descendants, sampled every 0.2 s (Spark's JVM is a child)."""

    def __init__(self) -> None:
        import psutil

        self.peak, self._stop, self._me = 0.0, threading.Event(), psutil.Process()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self._me, *self._me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(0.2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


@register("fleet_ingest")
def fleet_ingest(meters_dir: str, out: str) -> dict:
    from smart_energy.components.fleet import ingest_fleet, write_fleet_outputs

    def step() -> dict:
        result = ingest_fleet(meters_dir, progress=False)
        write_fleet_outputs(result, out)
        return {"meters": len(result.by_meter), "hours": len(result.hourly)}

    return _measured(step)


def _settings(repo: str, engine: str):
    from smart_energy.components.settings import Settings

    return Settings(feature_repo=Path(repo), artifact_uri=(Path(repo).parent / "artifacts").as_uri(), engine=engine,
                    feature_source="data/hourly_features" + (".parquet" if engine == "embedded" else ""))


def _measured(step):
    """Run ``step() -> dict`` with the process tree's peak RSS, sampled (a child's ``ru_maxrss`` starts at its
    parent's RSS when it was forked, which the runner's own work would inflate); Spark stopped first, so its JVM
    is counted whole."""
    peak = TreePeak()
    start = time.perf_counter()
    result = step()
    result["seconds"] = time.perf_counter() - start
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
    result["peak_mib"] = peak.stop()
    return result


@register("fleet_publish")
def fleet_publish(ingest_dir: str, repo: str, engine: str) -> dict:
    from smart_energy.components.feast_store import open_feature_store, publish
    from smart_energy.components.ingest import load_hourly

    settings = _settings(repo, engine)

    def step() -> dict:
        if engine == "spark":  # Spark reads the parquet itself
            from smart_energy.components.spark_engine import read_hourly, spark_session

            hourly = read_hourly(spark_session(settings), ingest_dir)
        else:
            hourly = load_hourly(ingest_dir)
        publish(hourly, open_feature_store(settings), settings)
        return {}

    return _measured(step)


@register("fleet_train")
def fleet_train(ingest_dir: str, repo: str, model_dir: str, engine: str) -> dict:
    from smart_energy.components.train import train

    return _measured(lambda: {"hours": train(ingest_dir, model_dir, _settings(repo, engine),
                                             publish_features=False)["training_window"]["hours"]})


@register("fleet_predict")
def fleet_predict(ingest_dir: str, repo: str, model_dir: str, out: str, engine: str) -> dict:
    """The batch forecast from the features the publish step put in the online store (read back, then predicted)."""
    from smart_energy.components.batch import batch_predict

    def step() -> dict:
        r = batch_predict(model_dir, ingest_dir, out, _settings(repo, engine), publish_features=False)
        return {"meters": r["meters"], "online_read": r["seconds"]["online_read"]}

    return _measured(step)


@register("fleet_train_dayahead")
def fleet_train_dayahead(ingest_dir: str, repo: str, advice_meters: str) -> dict:
    """``train_dayahead``'s phases on a published fleet: the Feast join and the ``MAX_ORIGINS`` sampling
    (``training_origins``, ``training_pairs``), ``fit_dayahead``, and ``load_advice`` on the first
    ``advice_meters`` meters (the rest extrapolated linearly: it is a per-meter loop)."""
    from smart_energy.components.dayahead import (fit_dayahead, load_advice, training_origins,
                                                  training_pairs)
    from smart_energy.components.features import keep_meters_with_history, labels
    from smart_energy.components.ingest import load_hourly

    settings = _settings(repo, "embedded")

    def step() -> dict:
        hourly, _ = keep_meters_with_history(load_hourly(ingest_dir))
        t = time.perf_counter()
        origins = training_origins(hourly, settings, None, publish_features=False)
        pairs = training_pairs(hourly, settings, None, origins)
        features = time.perf_counter() - t
        t = time.perf_counter()
        fit = fit_dayahead(pairs, origins)
        fitted = time.perf_counter() - t
        meters = sorted(hourly["meter_id"].unique())
        some = set(meters[:int(advice_meters)])
        t = time.perf_counter()
        load_advice(hourly[hourly["meter_id"].isin(some)].reset_index(drop=True), settings)
        advice = (time.perf_counter() - t) * len(meters) / len(some)
        return {"meters": len(meters), "hours": len(hourly), "candidate_origins": int(len(labels(hourly))),
                "origins": len(origins), "pairs": len(pairs), "features_seconds": features, "fit_seconds": fitted,
                "rounds": [fit["rounds"], fit["next_hour_rounds"]], "seeds": fit["seeds"], "advice_seconds": advice,
                "advice_meters_measured": len(some)}

    return _measured(step)


@register("fleet_quantile_rows")
def fleet_quantile_rows(ingest_dir: str) -> dict:
    """``reg:quantileerror`` (the day-ahead ``PARAMS``, one thread) for 30 rounds on 1/2, 1, 2 and 4 x
    ``MAX_ORIGINS`` sampled origins' pairs of the fleet (features built from the hourly data, as Feast's)."""
    import numpy as np
    import xgboost as xgb

    from smart_energy.components.dayahead import MAX_ORIGINS, PARAMS, dmatrix, expand_leads, usage_series
    from smart_energy.components.features import build_feature_frame, keep_meters_with_history, labels
    from smart_energy.components.ingest import load_hourly

    hourly, _ = keep_meters_with_history(load_hourly(ingest_dir))
    rows = labels(hourly).merge(build_feature_frame(hourly).drop(columns=["created"]),
                                on=["meter_id", "event_timestamp"])
    usage = usage_series(hourly)
    out = []
    start = time.perf_counter()
    for factor in (0.5, 1, 2, 4):
        n = min(len(rows), int(factor * MAX_ORIGINS))
        pick = np.sort(np.random.default_rng(7).choice(len(rows), n, replace=False))
        pairs = expand_leads(rows.iloc[pick].reset_index(drop=True), usage).dropna(subset=["target_kw"])
        matrix = dmatrix(pairs, True)
        t = time.perf_counter()
        xgb.train({**PARAMS, "nthread": 1}, matrix, num_boost_round=30)
        seconds = time.perf_counter() - t
        out.append({"origins": n, "pairs": len(pairs), "seconds": seconds,
                    "us_per_pair_round": 1e6 * seconds / (len(pairs) * 30)})
    return {"seconds": time.perf_counter() - start, "sizes": out}


def dayahead_section(shared: Path, work: Path, run_case, sizes: tuple[int, ...] = (1000, 10_000)) -> dict:
    """The day-ahead training cost at fleet size (hourly synthetic data, 9 days a meter), embedded engine."""
    from smart_energy.components.dayahead import MAX_ORIGINS
    from smart_energy.components.ingest import write_hourly_parquet

    print(f"\n== fleet, day-ahead training (embedded; hourly synthetic data, {DAYS + 1} days a meter; features "
          f"published first, not timed; at most MAX_ORIGINS = {MAX_ORIGINS:,} origins are sampled) ==")
    print(f"{'meters':>7} {'origins':>9} {'sampled':>8} {'pairs':>8} {'join s':>7} {'fit s':>7} {'rounds':>9} "
          f"{'seeds':>5} {'us/pair':>8} {'advice s':>9} {'total s':>8} {'ms/meter':>9} {'peak MiB':>8}")
    results = {}
    for n in sizes:
        root = work / f"dayahead{n}"
        (root / "ingest").mkdir(parents=True, exist_ok=True)
        write_hourly_parquet(make_fleet_hourly(shared, n, DAYS + 1), root / "ingest" / "hourly.parquet")
        repo = str(copy_feature_repo(root / "feature_repo"))
        run_case("fleet_publish", str(root / "ingest"), repo, "embedded")
        r = run_case("fleet_train_dayahead", str(root / "ingest"), repo, str(min(n, 1000)))
        total = r["features_seconds"] + r["fit_seconds"] + r["advice_seconds"]
        results[n] = r | {"total_seconds": total}
        advice = f"{r['advice_seconds']:9.1f}" + ("*" if r["advice_meters_measured"] < n else " ")
        print(f"{n:7,} {r['candidate_origins']:9,} {r['origins']:8,} {r['pairs']:8,} {r['features_seconds']:7.1f} "
              f"{r['fit_seconds']:7.1f} {str(tuple(r['rounds'])):>9} {r['seeds']:5d} "
              f"{1e6 * r['fit_seconds'] / r['pairs']:8.1f} "
              f"{advice}{total:8.1f} {1000 * total / n:9.2f} {r['peak_mib']:8.0f}", flush=True)
    if any(r["advice_meters_measured"] < n for n, r in results.items()):
        print("* advice measured on the first 1,000 meters, extrapolated linearly (a per-meter loop)")
    big = max(sizes)
    q = run_case("fleet_quantile_rows", str(work / f"dayahead{big}" / "ingest"))
    print(f"reg:quantileerror alone (day-ahead PARAMS, 1 thread, 30 rounds) on the {big:,}-meter fleet's pairs: "
          + "; ".join(f"{s['pairs']:,} pairs {s['seconds']:.1f} s = {s['us_per_pair_round']:.2f} us/pair/round"
                      for s in q["sizes"]), flush=True)
    return {"sizes": results, "quantile_rows": q["sizes"]}


def _row(n: int, name: str, results: dict[str, dict]) -> str:
    cells = [f"{n:7,} {name:8}"]
    for engine in ENGINES:
        r = results.get(engine)
        cells.append(f"{r['seconds']:9.2f} {r['peak_mib']:8.0f} {1000 * r['seconds'] / n:9.2f}" if r else f"{'':28}")
    return "  ".join(cells)


def _run_size(n: int, root: Path, run_case) -> dict[str, dict[str, dict]]:
    """Publish, train and predict on both engines for the fleet ingested in ``root / 'ingest'``."""
    results: dict[str, dict[str, dict]] = {step: {} for step in STEPS}
    for engine in ENGINES:
        repo = str(copy_feature_repo(root / engine / "feature_repo"))
        model = str(root / engine / "model")
        results["publish"][engine] = run_case("fleet_publish", str(root / "ingest"), repo, engine)
        results["train"][engine] = run_case("fleet_train", str(root / "ingest"), repo, model, engine)
        results["predict"][engine] = run_case("fleet_predict", str(root / "ingest"), repo, model,
                                              str(root / engine / "forecasts.parquet"), engine)
    for step in STEPS:
        print(_row(n, step, results[step]), flush=True)
    return results


def bench(big: Path, work: Path, run_case, shared: Path) -> None:
    source = load_source(shared)
    print("\n== fleet: synthetic meters, embedded default vs Spark local mode (SE_ENGINE=spark), same data ==")
    print(f"{'meters':>7} {'step':8}  {'embedded s':>9} {'peak MiB':>8} {'ms/meter':>9}  "
          f"{'spark s':>9} {'peak MiB':>8} {'ms/meter':>9}")
    sizes: dict[int, dict] = {}
    for n in SIZES:
        root = work / f"fleet{n}"
        started = time.perf_counter()
        make_fleet(shared, root / "meters", n, DAYS, source=source)
        generated = time.perf_counter() - started
        ingest = run_case("fleet_ingest", str(root / "meters"), str(root / "ingest"))
        print(f"{n:7,} {'ingest':8}  {ingest['seconds']:9.2f} {ingest['peak_mib']:8.0f} "
              f"{1000 * ingest['seconds'] / n:9.2f}  (one step for both; generated in {generated:.1f} s)", flush=True)
        sizes[n] = _run_size(n, root, run_case)
    n = 10_000
    root = work / f"fleet{n}"
    (root / "ingest").mkdir(parents=True, exist_ok=True)
    from smart_energy.components.ingest import write_hourly_parquet

    write_hourly_parquet(make_fleet_hourly(shared, n, DAYS + 1), root / "ingest" / "hourly.parquet")
    print(f"{n:7,} {'(hourly synthetic data, 9 days: no ingest)':40}", flush=True)
    sizes[n] = _run_size(n, root, run_case)
    summarise(sizes)
    dayahead_section(shared, work, run_case)


def summarise(sizes: dict[int, dict]) -> None:
    """The 60 s target, per-meter cost from 100 to 10,000 meters, and 100,000 meters extrapolated."""
    predict = sizes[10_000]["predict"]["embedded"]
    verdict = "OK" if predict["seconds"] <= 60 else "NOT MET"
    print(f"10,000 meters' next-hour batch forecast, embedded (online read {predict['online_read']:.1f} s + predict): "
          f"{predict['seconds']:.1f} s (target <= 60 s) {verdict}")
    for engine in ENGINES:
        for step in ("publish", "train"):
            cost = {n: 1000 * sizes[n][step][engine]["seconds"] / n for n in (100, 1000, 10_000)}
            flat = cost[10_000] <= 1.25 * cost[1000] and cost[1000] <= 1.25 * cost[100]
            print(f"{engine:8} {step:7} ms/meter at 100 / 1,000 / 10,000 meters: {cost[100]:.2f} / {cost[1000]:.2f} / "
                  f"{cost[10_000]:.2f}  {'flat or falling' if flat else 'RISING'}")
    for engine in ENGINES:
        total = sum(sizes[10_000][s][engine]["seconds"] for s in STEPS)
        peak = max(sizes[10_000][s][engine]["peak_mib"] for s in STEPS)
        print(f"100,000 meters extrapolated ({engine}, linear from 10,000): ~{10 * total / 60:.0f} min on these 2 cores, "
              f"peak ~{10 * peak / 1024:.1f} GiB if memory grows with the meters")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared UCI slice")
    parser.add_argument("--dayahead", action="store_true", help="only the day-ahead training cost")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000])
    args = parser.parse_args()
    from benchmarks import require_file

    require_file(args.data, "--data")
    import tempfile

    from benchmarks.run import run_case as run

    if not args.dayahead:
        sys.exit("run the whole fleet section through benchmarks/run.py --only fleet; --dayahead runs its last part")
    with tempfile.TemporaryDirectory() as tmp:
        dayahead_section(args.data.resolve(), Path(tmp), run, tuple(args.sizes))
