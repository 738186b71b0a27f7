"""``python -m smart_energy.serving.predictor --model_dir DIR [--http_port 8081]``: the XGBoost predictor."""

from __future__ import annotations

import sys
import tempfile

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import get_settings
from smart_energy.serving.predictor.model import EnergyPredictor
from smart_energy.components.registry import resolve_model_dir
from smart_energy.serving.server import base_parser, start_server

DEFAULT_NTHREAD = 1  # one row per request: threads cost more than they give


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = base_parser(settings, "Smart Energy XGBoost predictor (KServe V1 + V2).")
    parser.add_argument("--nthread", type=int, default=DEFAULT_NTHREAD, help="XGBoost threads")
    args, _ = parser.parse_known_args(argv)
    try:
        model_dir = resolve_model_dir(args.model_dir, tempfile.mkdtemp(prefix="se-predictor-"), settings)
        model = EnergyPredictor(args.model_name, str(model_dir), args.nthread)
        model.load()
    except SmartEnergyError as err:
        print(f"predictor: error: {err}", file=sys.stderr)
        return 2
    start_server(model, args, settings, record_requests=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
