"""`smart-energy`: the command line. Each subcommand is a thin shell over a stage's functions.

Subcommands register themselves from their own module (``add_parser(subparsers)``), so a
stage owns its flags; errors a user can fix exit with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from components.settings import get_settings

# modules that contribute subcommands, in the order `--help` lists them
COMMAND_MODULES = [
    "components.cli",
    "components.feast_store",
    "components.train",
    "components.evaluate",
    "components.backtest",
    "components.registry_cli",
    "pipelines.cli",
    "serving.cli",
    "serving.rollout",
]


from components.errors import SmartEnergyError as UserError  # noqa: E402  (re-exported for subcommands)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from components.ingest import ingest_file, print_summary, require_valid_rows, write_outputs

    settings = get_settings()
    result = ingest_file(args.raw, meter_id=args.meter_id, min_minutes=settings.min_minutes_per_hour)
    paths = write_outputs(result, args.out)  # the quarantine is kept even when nothing was valid
    print_summary(result.quality, stream=sys.stderr)
    require_valid_rows(result, args.out)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    settings = get_settings()
    p = sub.add_parser(
        "ingest",
        help="validate raw 1-minute readings, quarantine bad rows, resample to hourly parquet",
        description="Parse a UCI-format meter file (.txt, .csv, optionally .gz), validate every row, "
        "write DIR/hourly.parquet, DIR/quarantine.csv (every rejected row with its line and reason) "
        "and DIR/quality.json (counts that add up: read = valid + missing + quarantined).",
    )
    p.add_argument("raw", type=Path, help="raw meter file")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--meter-id", default=settings.meter_id, help="meter id (default %(default)s, env SE_METER_ID)")
    p.set_defaults(func=_cmd_ingest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smart-energy",
        description="Smart Energy: smart-meter ingest, Feast features, XGBoost next-hour forecasts, "
        "KFP pipelines and KServe serving. Configuration comes from SE_* environment variables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # stage not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError) as err:
        print(f"smart-energy {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
