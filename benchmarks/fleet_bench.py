"""The fleet at 10, 100 and 1,000 meters (synthetic, `make_fleet.py`; 8 days of minute readings each): ingest,
feature publish, global training and batch prediction, each in its own process, seconds and peak RSS, and the
cost per meter; then 10,000 meters from hourly synthetic data (their minute files would be ~7 GB): publish,
training, and the batch forecast against its 60 s target. Embedded default only: the Spark path is not built."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.cases import register
from benchmarks.make_fleet import load_source, make_fleet, make_fleet_hourly
from smart_energy.components.feast_store import copy_feature_repo

SIZES = (10, 100, 1000)
DAYS = 8


@register("fleet_ingest")
def fleet_ingest(meters_dir: str, out: str) -> dict:
    from smart_energy.components.fleet import ingest_fleet, write_fleet_outputs

    start = time.perf_counter()
    result = ingest_fleet(meters_dir, progress=False)
    write_fleet_outputs(result, out)
    return {"seconds": time.perf_counter() - start, "meters": len(result.by_meter), "hours": len(result.hourly)}


def _settings(repo: str):
    from smart_energy.components.settings import Settings

    return Settings(feature_repo=Path(repo), artifact_uri=(Path(repo).parent / "artifacts").as_uri())


@register("fleet_publish")
def fleet_publish(ingest_dir: str, repo: str) -> dict:
    from smart_energy.components.feast_store import open_feature_store, publish
    from smart_energy.components.ingest import load_hourly

    settings = _settings(repo)
    hourly = load_hourly(ingest_dir)
    start = time.perf_counter()
    rows = publish(hourly, open_feature_store(settings), settings)
    return {"seconds": time.perf_counter() - start, "rows": len(rows)}


@register("fleet_train")
def fleet_train(ingest_dir: str, repo: str, model_dir: str) -> dict:
    from smart_energy.components.train import train

    start = time.perf_counter()
    metadata = train(ingest_dir, model_dir, _settings(repo), publish_features=False)
    return {"seconds": time.perf_counter() - start, "hours": metadata["training_window"]["hours"]}


@register("fleet_predict")
def fleet_predict(ingest_dir: str, repo: str, model_dir: str, out: str) -> dict:
    from smart_energy.components.batch import batch_predict

    result = batch_predict(model_dir, ingest_dir, out, _settings(repo), publish_features=False)
    return {"seconds": result["seconds"]["total"], "meters": result["meters"],
            "online_read": result["seconds"]["online_read"]}


def bench(big: Path, work: Path, run_case, shared: Path) -> None:
    source = load_source(shared)
    print(f"\n== fleet: synthetic meters ({DAYS} days of minute readings each), embedded default ==")
    print(f"{'meters':>7} {'step':10} {'seconds':>9} {'peak MiB':>9} {'ms/meter':>9}")
    for n in SIZES:
        root = work / f"fleet{n}"
        started = time.perf_counter()
        make_fleet(shared, root / "meters", n, DAYS, source=source)
        print(f"{n:7,} {'(generate)':10} {time.perf_counter() - started:9.1f}", flush=True)
        repo = str(copy_feature_repo(root / "feature_repo"))
        steps = [("ingest", run_case("fleet_ingest", str(root / "meters"), str(root / "ingest"))),
                 ("publish", run_case("fleet_publish", str(root / "ingest"), repo)),
                 ("train", run_case("fleet_train", str(root / "ingest"), repo, str(root / "model"))),
                 ("predict", run_case("fleet_predict", str(root / "ingest"), repo, str(root / "model"),
                                      str(root / "forecasts.parquet")))]
        for name, r in steps:
            print(f"{n:7,} {name:10} {r['seconds']:9.2f} {r['peak_mib']:9.0f} {1000 * r['seconds'] / n:9.2f}",
                  flush=True)
    bench_10k(work, run_case, shared)


def bench_10k(work: Path, run_case, shared: Path) -> None:
    """10,000 meters from hourly synthetic data: publish, train, batch forecast (target: forecast <= 60 s)."""
    n = 10_000
    root = work / f"fleet{n}"
    started = time.perf_counter()
    (root / "ingest").mkdir(parents=True, exist_ok=True)
    make_fleet_hourly(shared, n, DAYS + 1).to_parquet(root / "ingest" / "hourly.parquet", index=False)
    print(f"{n:7,} {'(generate)':10} {time.perf_counter() - started:9.1f}  hourly, synthetic", flush=True)
    repo = str(copy_feature_repo(root / "feature_repo"))
    steps = [("publish", run_case("fleet_publish", str(root / "ingest"), repo)),
             ("train", run_case("fleet_train", str(root / "ingest"), repo, str(root / "model"))),
             ("predict", run_case("fleet_predict", str(root / "ingest"), repo, str(root / "model"),
                                  str(root / "forecasts.parquet")))]
    for name, r in steps:
        print(f"{n:7,} {name:10} {r['seconds']:9.2f} {r['peak_mib']:9.0f} {1000 * r['seconds'] / n:9.2f}", flush=True)
    predict = steps[-1][1]
    verdict = "OK" if predict["seconds"] <= 60 else "NOT MET"
    print(f"10,000 meters' next-hour batch forecast (online read {predict['online_read']:.1f} s + predict): "
          f"{predict['seconds']:.1f} s (target <= 60 s) {verdict}")
