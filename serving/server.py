"""What both KServe servers share: argument defaults, error responses, the request middleware, and start-up.

KServe's ``ModelServer`` owns the FastAPI app (V1, V2, health, ``/metrics``); this module adds to it,
before it starts, the handlers that turn our errors into 4xx/503 answers, a body-size limit, the
``se_*`` request metrics, and the model version in the V2 model-metadata route.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import httpx
import kserve
import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from kserve.model_server import app as kserve_app
from kserve.protocol.dataplane import DataPlane

from components.errors import SmartEnergyError
from components.settings import Settings
from serving import metrics
from serving.logic import MAX_BODY_BYTES, PredictorUnavailable, RequestError

# reasons for errors that KServe or FastAPI answer before our code runs
FALLBACK_REASONS = {400: "invalid_input", 404: "model_not_found", 405: "method_not_allowed", 413: "body_too_large",
                    422: "invalid_request", 503: "unavailable"}


def base_parser(settings: Settings, description: str) -> argparse.ArgumentParser:
    """KServe's model-server flags with this project's defaults (no gRPC, quiet per-request logs)."""
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=description)
    parser.set_defaults(model_name=settings.model_name, enable_grpc=False, enable_latency_logging=False)
    parser.add_argument("--model_dir", default=None,
                        help="model directory as `train --model-dir` writes it, or <store>/models/<name>/<version or "
                             "stage> (s3:// or file://); default: the registry's production model")
    parser.add_argument("--log_requests", action="store_true", help="log one access line per request")
    return parser


class VersionedDataPlane(DataPlane):
    """KServe's data plane, whose V2 model metadata also names the model version (``versions``) and platform."""

    async def model_metadata(self, model_name: str) -> dict:
        out = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if getattr(model, "version", None):
            out["versions"] = [model.version]
        out["platform"] = getattr(model, "platform", "") or ""
        return out

    async def ready(self) -> bool:
        # KServe lets a transport error from the predictor health check escape as a 500; it means "not ready"
        try:
            return await super().ready()
        except httpx.HTTPError:
            return False


def _error(status: int, message: str, reason: str, request: Any = None) -> ORJSONResponse:
    if request is not None:
        request.state.se_reason = reason
    return ORJSONResponse(status_code=status, content={"error": message, "reason": reason})


async def _request_error(request, exc: RequestError):
    return _error(exc.status, str(exc), exc.reason, request)


async def _predictor_unavailable(request, exc: PredictorUnavailable):
    return _error(503, str(exc), exc.reason, request)


async def _user_error(request, exc: SmartEnergyError):
    return _error(400, str(exc), "invalid_input", request)


async def _validation_error(request, exc: RequestValidationError):
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx", {})
        return _error(400, f"malformed JSON: {ctx.get('error', 'cannot parse the body')}", "malformed_json", request)
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}" for e in errors[:5]]
    return _error(422, "invalid request: " + "; ".join(parts), "invalid_request", request)


class ServingMiddleware:
    """Refuses bodies over ``MAX_BODY_BYTES`` (413) and, when ``record``, counts and times inference requests."""

    def __init__(self, app, model_version: str, record: bool):
        self.app = app
        self.model_version = model_version
        self.record = record

    @staticmethod
    def _protocol(path: str) -> str | None:
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return "v1"
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return "v2"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        protocol = self._protocol(scope["path"])
        state = scope.setdefault("state", {})
        status = {"code": 500}
        start = time.perf_counter()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        try:
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                state["se_reason"] = "body_too_large"
                await _send_json(send_status, 413, {"error": f"request body over {MAX_BODY_BYTES} bytes; split the "
                                                    f"batch", "reason": "body_too_large"})
                return
            await self.app(scope, _limited(receive), send_status)
        finally:
            if protocol is not None and self.record:
                code = status["code"]
                metrics.REQUESTS.labels(self.model_version, protocol, str(code)).inc()
                metrics.REQUEST_DURATION.labels(self.model_version).observe(time.perf_counter() - start)
                if code >= 400:
                    reason = state.get("se_reason") or FALLBACK_REASONS.get(code, "internal" if code >= 500 else "client_error")
                    metrics.ERRORS.labels(reason).inc()


def _limited(receive):
    """``receive`` that stops a chunked body (no content-length) at ``MAX_BODY_BYTES``."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise RequestError(f"request body over {MAX_BODY_BYTES} bytes; split the batch",
                                   status=413, reason="body_too_large")
        return message

    return wrapped


async def _send_json(send, status: int, content: dict) -> None:
    body = orjson.dumps(content)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def start_server(model: kserve.Model, args: argparse.Namespace, record_requests: bool,
                 predictor_config: kserve.PredictorConfig | None = None) -> None:
    """Start KServe's ModelServer with ``model`` and our additions; blocks until stopped."""
    kserve_app.add_exception_handler(RequestError, _request_error)
    kserve_app.add_exception_handler(PredictorUnavailable, _predictor_unavailable)
    kserve_app.add_exception_handler(SmartEnergyError, _user_error)
    kserve_app.add_exception_handler(RequestValidationError, _validation_error)
    kserve_app.add_middleware(ServingMiddleware, model_version=getattr(model, "version", "unknown"),
                              record=record_requests)
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                                enable_grpc=args.enable_grpc, enable_latency_logging=args.enable_latency_logging,
                                predictor_config=predictor_config)
    server.dataplane = VersionedDataPlane(model_registry=server.registered_models)
    if not args.log_requests:  # after ModelServer() configured logging; a line per request costs latency
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])
