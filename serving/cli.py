"""`smart-energy serve`: the predictor and transformer on this machine, supervised, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from smart_energy.components.settings import get_settings

DEFAULT_PORT = 8080
DEFAULT_PREDICTOR_PORT = 8081
DEFAULT_TRANSFORMER_PORT = 8082


def _cmd_serve(args: argparse.Namespace) -> int:
    from smart_energy.components.registry import resolve_model_dir
    from smart_energy.serving.supervise import serve_supervised

    settings = get_settings()
    # TERM ends `serve` like Ctrl-C, from the start; whatever was started by then is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="se-serve-") as tmp:
        try:
            model_dir = resolve_model_dir(args.model_dir, Path(tmp) / "model", settings).resolve()
        except (KeyboardInterrupt, SystemExit):
            return 0
        serve_supervised(model_dir, args.port, args.predictor_port, args.transformer_port,
                         {**os.environ, **settings.as_env()}, settings.model_name, hop=args.hop,
                         batching=args.predictor_batching == "on",
                         online_row_cache=args.online_row_cache == "on")
        return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the forecaster locally: KServe predictor + Feast/drift transformer",
                       description="Serve on 127.0.0.1:--port the transformer (Feast lookup, drift) in front of the "
                       "XGBoost predictor, with the model from --model-dir, else the registry's production model "
                       "(SE_ARTIFACT_URI). Both run as supervised child processes: one that dies is restarted, and "
                       "meanwhile clients get 503 with the reason. The transformer reads features from the Feast "
                       "online store (SE_FEATURE_REPO).")
    p.add_argument("--model-dir", type=Path, help="a `train --model-dir` output (default: registry production)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the public HTTP port (default %(default)s)")
    p.add_argument("--predictor-port", type=int, default=DEFAULT_PREDICTOR_PORT,
                   help="predictor HTTP port (default %(default)s)")
    p.add_argument("--transformer-port", type=int, default=DEFAULT_TRANSFORMER_PORT,
                   help="transformer HTTP port behind the public one (default %(default)s)")
    p.add_argument("--hop", choices=("handoff", "proxy"), default="handoff",
                   help="handoff (default): the transformer accepts on the public port itself; proxy: serve relays "
                   "every request to it (one more hop, ~1 ms of CPU per request)")
    p.add_argument("--predictor-batching", choices=("on", "off"), default="on",
                   help="on (default): next-hour requests that arrive while a predictor call is in flight share the "
                   "next call (the same answers, fewer calls under load); off: one call per request")
    p.add_argument("--online-row-cache", choices=("on", "off"), default="on",
                   help="on (default): with the sqlite online store, each meter's row is read once per push or "
                   "materialisation (the same answers); off: one Feast read per request")
    p.set_defaults(func=_cmd_serve)
