"""A stand-in model server for the rollout integration test: NOT the real predictor.

A tiny HTTP server (stdlib + prometheus_client) whose POST /v2/models/energy-forecaster/infer
answers 200 quickly ("healthy"), or is slow and fails every third request with 500 ("bad"). Each
real request is counted and timed into the se_* metrics the real transformer exposes, labelled
with --model-version, and served on GET /metrics for Prometheus to scrape.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--mode", choices=["healthy", "bad"], required=True)
    parser.add_argument("--mae-kw", type=float, required=True)
    args = parser.parse_args()

    registry = CollectorRegistry()
    requests_total = Counter("se_requests", "requests", ["model_version", "protocol", "code"], registry=registry)
    duration = Histogram("se_request_duration_seconds", "latency", ["model_version"], registry=registry)
    Gauge("se_forecast_mae_kw", "MAE", ["model_version"], registry=registry).labels(args.model_version).set(args.mae_kw)
    counter = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _reply(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            else:
                self._reply(200 if self.path == "/v2/health/ready" else 404, b"{}")

        def do_POST(self):
            start = time.perf_counter()
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code = 200
            if args.mode == "bad":
                time.sleep(0.12)
                code = 500 if next(counter) % 3 == 0 else 200
            body = json.dumps({"model_version": args.model_version, "outputs": [{"data": [1.0]}]}).encode()
            self._reply(code, body)
            duration.labels(args.model_version).observe(time.perf_counter() - start)
            requests_total.labels(args.model_version, "v2", str(code)).inc()

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
