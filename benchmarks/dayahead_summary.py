"""Print a day-ahead `evaluate` JSON as the table `make backtest` shows: MAE by lead beside the baselines."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    r = json.load(open(path))
    b = r["baselines"]
    print(f"day ahead, {r['origins']} origins x 24 leads ({r['hours_scored']:,} pairs, {r['first_origin'][:10]} .. "
          f"{r['last_origin'][:10]}): P50 MAE {r['mae_kw']:.3f} kW, P10-P90 coverage {r['coverage_p10_p90']:.3f} "
          f"(target 0.75-0.85), pinball {r['pinball_kw']:.3f} kW, crossings {r['quantiles_cross']}")
    print(f"{'lead h':>6s} {'model':>7s} " + " ".join(f"{name:>13s}" for name in b))
    for lead in ("1", "2", "3", "6", "12", "18", "24"):
        print(f"{lead:>6s} {r['mae_by_lead'][lead]:7.3f} " + " ".join(f"{v['mae_by_lead'][lead]:13.3f}" for v in b.values()))
    print(f"{'all':>6s} {r['mae_kw']:7.3f} " + " ".join(f"{v['mae_kw']:13.3f}" for v in b.values()))
    better = all(r["mae_kw"] < v["mae_kw"] for v in b.values())
    ok = 0.75 <= r["coverage_p10_p90"] <= 0.85
    print(f"P50 below every baseline: {'OK' if better else 'NO'}; coverage within 0.75-0.85: {'OK' if ok else 'NO'}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluation", help="the JSON that `smart-energy evaluate` printed for a day-ahead model")
    args = parser.parse_args()
    try:
        main(args.evaluation)
    except (OSError, ValueError, KeyError, TypeError) as err:
        why = (err.strerror or str(err)).lower() if isinstance(err, OSError) else \
            f"not a day-ahead evaluate JSON ({type(err).__name__}: {err})"
        print(f"dayahead_summary.py: error: {args.evaluation}: {why}", file=sys.stderr)
        sys.exit(2)
