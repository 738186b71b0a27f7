"""Benchmark cases, each run in a fresh process by ``benchmarks/run.py`` so peak memory is its own.

A case prints one JSON line: ``{"seconds": ..., ...}``; the runner adds the process's peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def ingest_ours(path: str, out: str) -> dict:
    from smart_energy.components.ingest import ingest_file, write_outputs

    start = time.perf_counter()
    result = ingest_file(path)
    write_outputs(result, out)
    return {"seconds": time.perf_counter() - start, "rows": result.quality.rows_read, "hours": result.quality.hours}


def ingest_pandas(path: str, out: str) -> dict:
    """The plain pandas way: read_csv + to_datetime + resample (no validation, no quarantine)."""
    import pandas as pd

    start = time.perf_counter()
    df = pd.read_csv(path, sep=";", na_values="?", low_memory=False)
    df.index = pd.to_datetime(df["Date"] + " " + df["Time"], format="%d/%m/%Y %H:%M:%S")
    hourly = df.drop(columns=["Date", "Time"]).resample("h").mean()
    Path(out).mkdir(parents=True, exist_ok=True)
    hourly.to_parquet(Path(out) / "hourly.parquet")
    return {"seconds": time.perf_counter() - start, "rows": len(df), "hours": len(hourly)}


def ingest_cli(path: str, out: str) -> dict:
    """`smart-energy ingest PATH --out OUT` (its main, in this process)."""
    import contextlib
    import io

    from smart_energy.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["ingest", path, "--out", out])
    return {"seconds": time.perf_counter() - start, "exit": code}


CASES = {"ingest_ours": ingest_ours, "ingest_pandas": ingest_pandas, "ingest_cli": ingest_cli}


def register(name: str):
    """Decorator for cases defined in other benchmark modules."""
    def wrap(fn):
        CASES[name] = fn
        return fn
    return wrap


if __name__ == "__main__":
    import importlib

    for module in ("benchmarks.features_bench", "benchmarks.fullsize_bench", "benchmarks.serving_bench",
                   "benchmarks.fleet_bench"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
    import benchmarks.cases as cases_module  # the module the other files registered into (not __main__)

    CASES.update(cases_module.CASES)
    name, *args = sys.argv[1:]
    result = CASES[name](*args)
    result.setdefault("peak_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(result))
