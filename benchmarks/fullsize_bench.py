"""The full data set's size (2,075,259 minute rows, four years with multi-day gaps) beside the 3-month slice.

Each step runs in its own process on both files, so time and peak memory per row can be compared:
ingest, feature publish (parquet + apply + materialise), Feast historical retrieval (DuckDB offline
store) of every training row, and `smart-energy train --data RAW` as a user runs it (no flags). Then
the whole training pipeline with kfp.local on the full file.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from smart_energy.components.feast_store import copy_feature_repo
from benchmarks.cases import register

TRAIN_PEAK_LIMIT_MIB = 1536


def _repo(path: str) -> Path:
    """A fresh copy of the feature repo's definitions and config at ``path``."""
    repo = Path(path)
    copy_feature_repo(repo)
    return repo


@register("historical_retrieval")
def historical_retrieval(ingest_dir: str, repo: str) -> dict:
    """Point-in-time rows for every complete hour from a published repo (what training reads)."""
    from smart_energy.components.feast_store import historical_features, open_feature_store
    from smart_energy.components.features import labels
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.settings import Settings

    entity_df = labels(load_hourly(ingest_dir))
    store = open_feature_store(Settings(feature_repo=Path(repo)))
    start = time.perf_counter()
    rows = historical_features(store, entity_df)
    return {"seconds": time.perf_counter() - start, "rows": len(rows)}


@register("train_cli")
def train_cli(raw: str, repo: str, model_dir: str) -> dict:
    """`smart-energy train --data RAW --model-dir M` in this process, as a user runs it (no flags)."""
    import json

    os.environ["SE_FEATURE_REPO"] = str(_repo(repo))
    os.environ["SE_ARTIFACT_URI"] = (Path(model_dir).parent / "artifacts").as_uri()
    from smart_energy.cli import main

    start = time.perf_counter()
    code = main(["train", "--data", raw, "--model-dir", model_dir])
    seconds = time.perf_counter() - start
    meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    return {"seconds": seconds, "exit": code, "hours": meta["training_window"]["hours"],
            "gaps": len(meta["training_window"]["gaps"])}


@register("pipeline_local")
def pipeline_local(raw: str, root: str) -> dict:
    """The training pipeline with kfp.local; peak memory is the largest task's (each task is a process)."""
    os.environ["SE_FEATURE_REPO"] = str(_repo(Path(root) / "feature_repo"))
    os.environ["SE_ARTIFACT_URI"] = (Path(root) / "artifacts").as_uri()
    from smart_energy.pipelines.local_run import run_local

    start = time.perf_counter()
    run = run_local(raw, Path(root) / "runs")
    return {"seconds": time.perf_counter() - start, "hours_scored": run.metrics["evaluate"]["hours_scored"],
            "mae_kw": run.metrics["evaluate"]["mae_kw"],
            "persistence_mae_kw": run.metrics["evaluate"]["persistence_mae_kw"],
            "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _steps(raw: Path, work: Path, run_case) -> dict[str, dict]:
    from benchmarks.features_bench import features_publish  # noqa: F401  (registers the case)

    ingest_dir, repo = work / "ingest", work / "feature_repo"
    return {
        "ingest": run_case("ingest_ours", str(raw), str(ingest_dir)),
        "feature publish": run_case("features_publish", str(ingest_dir), str(repo)),
        "historical retrieval": run_case("historical_retrieval", str(ingest_dir), str(repo)),
        "smart-energy train": run_case("train_cli", str(raw), str(work / "train_repo"), str(work / "model")),
    }


def bench(big: Path, work: Path, run_case, shared: Path) -> None:
    small = _steps(shared, work / "3months", run_case)
    full = _steps(big, work / "4years", run_case)
    rows = full["ingest"]["rows"] / small["ingest"]["rows"]
    print(f"\n== full data set: {small['ingest']['rows']:,} rows (3 months) vs {full['ingest']['rows']:,} rows "
          f"(4 years with gaps, {rows:.1f}x the rows) ==")
    print(f"{'step':24}{'3 months s':>12}{'MiB':>7}{'4 years s':>12}{'MiB':>7}{'time x':>9}{'memory x':>10}")
    for step in small:
        s, f = small[step], full[step]
        print(f"{step:24}{s['seconds']:>12.2f}{s['peak_mib']:>7.0f}{f['seconds']:>12.2f}{f['peak_mib']:>7.0f}"
              f"{f['seconds'] / s['seconds']:>9.1f}{f['peak_mib'] / s['peak_mib']:>10.2f}")
    train = full["smart-energy train"]
    verdict = "ok" if train["peak_mib"] <= TRAIN_PEAK_LIMIT_MIB else "OVER THE LIMIT"
    print(f"smart-energy train on 4 years: {train['hours']:,} training hours, {train['gaps']} gaps reported, "
          f"peak RSS {train['peak_mib']:.0f} MiB (limit {TRAIN_PEAK_LIMIT_MIB} MiB): {verdict}")
    pipe = run_case("pipeline_local", str(big), str(work / "pipeline"))
    print(f"pipeline run --local on 4 years: {pipe['seconds']:.0f} s, largest task {pipe['peak_mib']:.0f} MiB; "
          f"hold-out {pipe['hours_scored']} h, MAE {pipe['mae_kw']:.3f} kW vs persistence "
          f"{pipe['persistence_mae_kw']:.3f} kW")
