"""``python -m smart_energy.serving.transformer --model_dir DIR --predictor_host HOST:PORT [--http_port 8080]``."""

from __future__ import annotations

import sys
import tempfile

from smart_energy.components.threads import use_for_serving

use_for_serving()  # the transformer loads xgboost too (the drift detector's imports): no spinning OpenMP threads

import kserve  # noqa: E402

from smart_energy.components.errors import SmartEnergyError  # noqa: E402
from smart_energy.components.registry import resolve_model_dir  # noqa: E402
from smart_energy.components.settings import get_settings  # noqa: E402
from smart_energy.serving.server import base_parser, start_server  # noqa: E402
from smart_energy.serving.transformer.model import EnergyTransformer  # noqa: E402

DEFAULT_PREDICTOR_TIMEOUT_SECONDS = 10  # a forecast is ~ms; a stuck predictor should fail fast, not in 600 s


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = base_parser(settings, "Smart Energy transformer: Feast lookup + drift + metrics before the predictor.")
    parser.set_defaults(predictor_host=settings.predictor_host, predictor_protocol="v2",
                        predictor_request_timeout_seconds=DEFAULT_PREDICTOR_TIMEOUT_SECONDS,
                        enable_predictor_health_check=True)
    parser.add_argument("--listen_fd", type=int, default=None,
                        help="also accept on this inherited listening socket (`serve` hands over its public port)")
    parser.add_argument("--predictor_batching", choices=("on", "off"), default="on",
                        help="on: next-hour requests that arrive while a predictor call is in flight share the next "
                        "call (the same answers); off: one call per request")
    parser.add_argument("--online_row_cache", choices=("on", "off"), default="on",
                        help="on: a sqlite online store's rows are kept per meter until the next push or "
                        "materialisation (the same answers); off: one Feast read per request")
    args, _ = parser.parse_known_args(argv)
    if args.predictor_protocol != "v2":
        parser.error("--predictor_protocol must be v2 (the predictor request carries one tensor per feature)")
    try:
        # metadata and drift detector: a local dir, a registry URI, or (no flag, as in the cluster) production
        model_dir = resolve_model_dir(args.model_dir, tempfile.mkdtemp(prefix="se-transformer-"), settings)
        model = EnergyTransformer(args.model_name, str(model_dir), settings, batching=args.predictor_batching == "on")
        model.load()
        if args.online_row_cache == "off":
            model.reader.data_version = None  # serving/online.py: no version to check, no cache
    except SmartEnergyError as err:
        print(f"transformer: error: {err}", file=sys.stderr)
        return 2
    config = kserve.PredictorConfig(predictor_host=args.predictor_host, predictor_protocol=args.predictor_protocol,
                                    predictor_use_ssl=args.predictor_use_ssl,
                                    predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
                                    predictor_request_retries=args.predictor_request_retries,
                                    predictor_health_check=args.enable_predictor_health_check)
    start_server(model, args, settings, record_requests=True, predictor_config=config, listen_fd=args.listen_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
