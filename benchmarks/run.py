"""`make bench`: every benchmark measured side by side in one run, with ratios.

Each case runs in its own process (peak RSS is that process's). The data are a generated
2,075,259-row file (the full UCI data set's size) made from the shared slice; the peers section
(statsforecast and mlforecast beside ours, benchmarks/peers_bench.py) runs on the shared slice itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.make_big_data import FULL_UCI_ROWS  # noqa: E402


def run_case(name: str, *args: str, repeat: int = 1) -> dict:
    """Run one case ``repeat`` times, each in a fresh child process; the fastest run's result.

    The best of several runs is the least disturbed by whatever else the machine is doing.
    """
    runs = [_run_once(name, *args) for _ in range(repeat)]
    best = min(runs, key=lambda r: r["seconds"])
    return best | {"runs": len(runs), "all_seconds": [round(r["seconds"], 3) for r in runs]}


def _run_once(name: str, *args: str) -> dict:
    """Run one case in a child process; its JSON result, with the child's own peak RSS in MiB and the
    whole process's wall time (interpreter start and imports included) as ``process_seconds``."""
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cases", name, *args], cwd=REPO,
                          capture_output=True, text=True)
    process_seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"benchmark case {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"process_seconds": process_seconds}


def bench_cli_startup() -> None:
    """`smart-energy --help` and every subcommand's, each a whole process, best of 5."""
    import time

    exe = str(Path(sys.executable).with_name("smart-energy"))
    commands = ["", "ingest", "features", "train", "evaluate", "backtest", "models", "pipeline", "serve", "rollout", "loop"]
    best = {}
    for command in commands:
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([exe, *([command] if command else []), "--help"], capture_output=True, check=True)
            runs.append(time.perf_counter() - start)
        best[command or "(none)"] = min(runs)
    slowest = max(best, key=best.get)
    print("\n== CLI start-up: `smart-energy [COMMAND] --help`, whole process, best of 5 ==")
    print("  ".join(f"{c} {s:.2f}s" for c, s in best.items()))
    print(f"slowest: {slowest} {best[slowest]:.2f} s (target <= 0.3 s)")


def bench_ingest(big: Path, work: Path) -> dict:
    ours = run_case("ingest_ours", str(big), str(work / "ours"), repeat=3)
    base = run_case("ingest_pandas", str(big), str(work / "pandas"), repeat=3)
    cli = run_case("ingest_cli", str(big), str(work / "cli"), repeat=3)
    print(f"\n== ingest {ours['rows']:,} rows ({big.stat().st_size / 2**20:.0f} MiB) ==")
    print(f"{'':28}{'seconds':>10}{'peak MiB':>10}")
    print(f"{'smart-energy ingest':28}{ours['seconds']:>10.2f}{ours['peak_mib']:>10.0f}   (validates, quarantines)")
    print(f"{'pandas read_csv+resample':28}{base['seconds']:>10.2f}{base['peak_mib']:>10.0f}")
    print(f"speed-up: {base['seconds'] / ours['seconds']:.1f}x  (target >= 5x, ours < 3 s; best of 3 runs each: "
          f"ours {ours['all_seconds']}, pandas {base['all_seconds']})")
    whole = cli["process_seconds"]
    print(f"as whole processes (interpreter, imports, parse, write): `smart-energy ingest` {whole:.2f} s, "
          f"pandas {base['process_seconds']:.2f} s: {base['process_seconds'] / whole:.1f}x (target >= 3x)")
    return {"ours": ours, "pandas": base, "cli": cli}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the shared UCI slice")
    parser.add_argument("--rows", type=int, default=FULL_UCI_ROWS)
    parser.add_argument("--only", choices=["ingest", "features", "fullsize", "serving", "loop", "objective", "fleet", "peers"], action="append")
    args = parser.parse_args()
    from benchmarks import require_file

    require_file(args.data, "--data")
    big = REPO / "data" / "bench" / f"household_{args.rows}.txt"
    sections = args.only or ["ingest", "features", "fullsize", "serving", "loop", "objective", "fleet", "peers"]
    if not big.exists() and set(sections) - {"peers"}:  # peers runs on the shared file itself
        print(f"generating {big} ({args.rows:,} rows) ...", flush=True)
        # in a child process: a case's ru_maxrss starts at this process's RSS when it forks the case
        subprocess.run([sys.executable, "-m", "benchmarks.make_big_data", "--source", str(args.data), "--out", str(big),
                        "--rows", str(args.rows)], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "ingest" in sections:
            bench_cli_startup()
            bench_ingest(big, work)
        for section in ("features", "fullsize", "serving", "loop", "objective", "fleet", "peers"):
            if section not in sections:
                continue
            try:
                module = importlib.import_module(f"benchmarks.{section}_bench")
            except ModuleNotFoundError as err:
                if err.name != f"benchmarks.{section}_bench":
                    raise
                print(f"\n== {section}: not built yet ==")
                continue
            module.bench(big=big, work=work, run_case=run_case, shared=args.data)


if __name__ == "__main__":
    main()
