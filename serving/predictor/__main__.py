"""``python -m smart_energy.serving.predictor --model_dir DIR [--http_port 8081]``: the XGBoost predictor.

On a cluster this is the container of the ServingRuntime ``smart-energy-xgboost``, started with
``--model_name={{.Name}} --model_dir=/mnt/models`` (where KServe's storage initializer put the version folder).
XGBoost gets the serving budget (components/threads.py: one thread per predict, within the container's CPU limit;
``SE_XGB_THREADS`` overrides); the start-up log says how many.
"""

from __future__ import annotations

import sys
import tempfile

from smart_energy.components.threads import cpu_budget, use_for_serving

use_for_serving()  # before xgboost loads: one thread per predict, and libgomp's idle threads sleep

from smart_energy.components.errors import SmartEnergyError  # noqa: E402
from smart_energy.components.settings import get_settings  # noqa: E402
from smart_energy.serving.predictor.model import EnergyPredictor  # noqa: E402
from smart_energy.components.registry import resolve_model_dir  # noqa: E402
from smart_energy.serving.server import base_parser, start_server  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = base_parser(settings, "Smart Energy XGBoost predictor (KServe V1 + V2).")
    args, _ = parser.parse_known_args(argv)
    try:
        model_dir = resolve_model_dir(args.model_dir, tempfile.mkdtemp(prefix="se-predictor-"), settings)
        model = EnergyPredictor(args.model_name, str(model_dir))  # load_booster sets XGBoost's threads
        model.load()
    except SmartEnergyError as err:
        print(f"predictor: error: {err}", file=sys.stderr)
        return 2
    print(f"predictor: {model.name} version {model.version}, XGBoost threads {cpu_budget(settings.xgb_threads)}", file=sys.stderr,
          flush=True)
    start_server(model, args, settings, record_requests=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
