"""Feature computation at the full data set's size, beside the ingest figures."""

from __future__ import annotations

import time
from pathlib import Path

from smart_energy.components.feast_store import copy_feature_repo
from benchmarks.cases import register


@register("features_build")
def features_build(ingest_dir: str) -> dict:
    """Lags, rolling windows, shares and calendar for every hour of the ingest output."""
    from smart_energy.components.features import build_feature_frame
    from smart_energy.components.ingest import load_hourly

    hourly = load_hourly(ingest_dir)
    start = time.perf_counter()
    features = build_feature_frame(hourly)
    return {"seconds": time.perf_counter() - start, "hours": len(hourly), "rows": len(features)}


@register("features_publish")
def features_publish(ingest_dir: str, repo: str) -> dict:
    """Build + write the offline parquet + feast apply + materialise the online store over the range."""
    from smart_energy.components.feast_store import open_feature_store, publish
    from smart_energy.components.ingest import load_hourly
    from smart_energy.components.settings import Settings

    repo_path = Path(repo)
    copy_feature_repo(repo_path)
    settings = Settings(feature_repo=repo_path)
    hourly = load_hourly(ingest_dir)
    start = time.perf_counter()
    features = publish(hourly, open_feature_store(settings), settings)
    return {"seconds": time.perf_counter() - start, "hours": len(hourly), "rows": len(features)}


def bench(big: Path, work: Path, run_case, shared: Path) -> None:
    ingest_dir = work / "ours"
    if not (ingest_dir / "hourly.parquet").exists():
        run_case("ingest_ours", str(big), str(ingest_dir))
    build = run_case("features_build", str(ingest_dir))
    publish = run_case("features_publish", str(ingest_dir), str(work / "feature_repo"))
    print(f"\n== features for {build['hours']:,} hours (from the {big.name} ingest) ==")
    print(f"{'':36}{'seconds':>10}{'peak MiB':>10}")
    print(f"{'build_feature_frame':36}{build['seconds']:>10.2f}{build['peak_mib']:>10.0f}")
    print(f"{'publish (parquet+apply+materialize)':36}{publish['seconds']:>10.2f}{publish['peak_mib']:>10.0f}")
