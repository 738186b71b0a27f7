"""`smart-energy serve`: the predictor and transformer on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from components.registry import resolve_model_dir
from components.settings import get_settings

DEFAULT_PORT = 8080
DEFAULT_PREDICTOR_PORT = 8081


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.client import start_local

    settings = get_settings()
    # TERM ends `serve` like Ctrl-C, from the start: during start-up, start_local stops what it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="se-serve-") as tmp:
        model_dir = resolve_model_dir(args.model_dir, Path(tmp) / "model", settings)
        try:
            servers = start_local(model_dir, args.port, args.predictor_port, settings)
        except (KeyboardInterrupt, SystemExit):
            return 0
        print(f"serving {settings.model_name} from {model_dir}: transformer {servers.url} "
              f"(V1 /v1/models/{settings.model_name}:predict, V2 /v2/models/{settings.model_name}/infer), "
              f"predictor {servers.predictor_url}; Ctrl-C stops", file=sys.stderr)
        try:
            while servers.transformer.poll() is None and servers.predictor.poll() is None:
                time.sleep(0.5)
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            servers.stop()
        return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the forecaster locally: KServe predictor + Feast/drift transformer",
                       description="Start the XGBoost predictor (--predictor-port) and the transformer (--port) on "
                       "127.0.0.1 with the model from --model-dir, else the registry's production model "
                       "(SE_ARTIFACT_URI). The transformer reads features from the Feast online store (SE_FEATURE_REPO).")
    p.add_argument("--model-dir", type=Path, help="a `train --model-dir` output (default: registry production)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="transformer HTTP port (default %(default)s)")
    p.add_argument("--predictor-port", type=int, default=DEFAULT_PREDICTOR_PORT,
                   help="predictor HTTP port (default %(default)s)")
    p.set_defaults(func=_cmd_serve)
