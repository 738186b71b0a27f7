"""What both KServe servers share: argument defaults, error answers, the request middleware, and start-up.

KServe's ``ModelServer`` owns the FastAPI app (V1, V2, health, ``/metrics``). Through what it lets us
supply (its app's exception handlers and middleware, its ``registered_models``, ``dataplane`` and
``model_repository_extension``) this module makes every error an ``{"error": ..., "reason": ...}``
answer logged on one line, refuses bodies over ``MAX_BODY_BYTES`` (413, chunked ones too), serves
``/v2/models/<name>/versions/<version>/...`` for the version actually served, and records the
``se_*`` request metrics under the version that answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import logging
import re
import socket
import time
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

import kserve
import orjson
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from kserve.logging import logger
from kserve.model_server import app as kserve_app
from starlette.exceptions import HTTPException as StarletteHTTPException

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings
from smart_energy.serving import metrics
from smart_energy.serving.dataplane import ModelRepositoryRoutes, ReloadableModelRepository, ServingDataPlane, validation_message
from smart_energy.serving.logic import MAX_BODY_BYTES, PredictorUnavailable, RequestError

# reasons for errors that KServe or Starlette answer before our code runs
FALLBACK_REASONS = {400: "invalid_input", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large",
                    503: "unavailable"}
VERSIONED_ROUTE = re.compile(r"^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/infer|/ready)?$")

# the version that answered this request (the predictor's, for the transformer); see ``record_served_version``
_served: contextvars.ContextVar[dict | None] = contextvars.ContextVar("smart_energy_served", default=None)


def record_served_version(version: str) -> None:
    """Count this request in the ``se_*`` metrics under ``version``."""
    holder = _served.get()
    if holder is not None and version:
        holder["version"] = version


def base_parser(settings: Settings, description: str) -> argparse.ArgumentParser:
    """KServe's model-server flags with this project's defaults (no gRPC, quiet per-request logs)."""
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=description)
    parser.set_defaults(model_name=settings.model_name, enable_grpc=False, enable_latency_logging=False)
    parser.add_argument("--model_dir", default=None,
                        help="model directory as `train --model-dir` writes it, or <store>/models/<name>/<version or "
                             "stage> (s3:// or file://); default: the registry's production model")
    parser.add_argument("--log_requests", action="store_true", help="log one access line per request")
    return parser


def _log_refusal(status: int, method: str, path: str, reason: str, message: str) -> None:
    # a refused request is the client's problem or a known outage: one line, no traceback, not an error
    logger.log(logging.WARNING if status >= 500 else logging.INFO, "%s %s %s: %s: %s", status, method, path[:200],
               reason, message[:300])


def _error(status: int, message: str, reason: str, request: Any) -> Response:
    request.state.se_reason = reason
    _log_refusal(status, request.method, request.url.path, reason, message)
    return Response(orjson.dumps({"error": message, "reason": reason}), status_code=status,
                    media_type="application/json")


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
    return _error(400, validation_message(errors), "invalid_request", request)


async def _http_error(request, exc: StarletteHTTPException):
    reason = FALLBACK_REASONS.get(exc.status_code, "client_error" if exc.status_code < 500 else "unavailable")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.url.path[:200]}: see /v2/models/<name>/infer and /v1/models/<name>:predict"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "?")
        message = f"{request.method} is not allowed on {request.url.path[:200]} (allowed: {allowed})"
    response = _error(exc.status_code, message, reason, request)
    response.headers.update(exc.headers or {})
    return response


class ServingMiddleware:
    """Body limit (413, with or without content-length), the versioned V2 routes, a content type on every
    V2 answer, and, when ``record``, the ``se_*`` request metrics under the version that answered."""

    def __init__(self, app, model_name: str, versions: Callable[[], set[str]], default_version: Callable[[], str],
                 record: bool):
        self.app = app
        self.model_name = model_name
        self.versions = versions
        self.default_version = default_version
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
        state = scope.setdefault("state", {})
        status = {"code": 500}
        start = time.perf_counter()
        holder = {"version": self.default_version()}
        token = _served.set(holder)

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if protocol == "v2":
                    message["headers"] = _with_content_type(message.get("headers", []))
            await send(message)

        async def refuse(code: int, message: str, reason: str):
            state["se_reason"] = reason
            _log_refusal(code, scope["method"], scope["path"], reason, message)
            await _send_json(send_status, code, {"error": message, "reason": reason})

        protocol = None
        try:
            versioned = VERSIONED_ROUTE.match(scope["path"])
            match = versioned.groupdict() if versioned else _version_in_query(scope)
            if match is not None:
                name, version, rest = match["name"], match["version"], match["rest"] or ""
                if name != self.model_name:
                    return await refuse(404, f"no model named {name[:60]!r} here", "model_not_found")
                if version not in self.versions():
                    served = ", ".join(sorted(self.versions())) or "none"
                    return await refuse(404, f"model {name} has no version {version[:60]!r} here (serving {served})",
                                        "version_not_found")
                scope = {**scope, "path": f"/v2/models/{name}{rest}", "raw_path": f"/v2/models/{name}{rest}".encode(),
                         "query_string": match.get("query", scope.get("query_string", b""))}
            protocol = self._protocol(scope["path"])
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return await refuse(413, f"request body over {MAX_BODY_BYTES} bytes; split the batch", "body_too_large")
            if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body = await _read_limited(receive)
                if body is None:
                    return await refuse(413, f"request body over {MAX_BODY_BYTES} bytes; split the batch",
                                        "body_too_large")
                receive = _replay(body, receive)
            await self.app(scope, receive, send_status)
        finally:
            _served.reset(token)
            if protocol is not None and self.record:
                code, version = status["code"], holder["version"]
                metrics.REQUESTS.labels(version, protocol, str(code)).inc()
                metrics.REQUEST_DURATION.labels(version).observe(time.perf_counter() - start)
                if code >= 400:
                    fallback = FALLBACK_REASONS.get(code, "internal" if code >= 500 else "client_error")
                    metrics.ERRORS.labels(state.get("se_reason") or fallback).inc()


def _version_in_query(scope) -> dict | None:
    """``/v2/models/<name>[/infer|/ready]?model_version=<v>``: KServe's routes take the version as a query too."""
    unversioned = re.match(r"^/v2/models/(?P<name>[^/]+)(?P<rest>/infer|/ready)?$", scope["path"])
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    versions = [v for k, v in query if k == "model_version"]
    if unversioned is None or not versions or not versions[0]:
        return None
    rest = [(k, v) for k, v in query if k != "model_version"]
    return {**unversioned.groupdict(), "version": versions[0], "query": urlencode(rest).encode()}


def _with_content_type(headers: list) -> list:
    """KServe drops the content type of V2 answers it sends as bytes; name it again."""
    names = {k.lower() for k, _ in headers}
    if b"content-type" in names:
        return headers
    binary = b"inference-header-content-length" in names
    return [*headers, (b"content-type", b"application/octet-stream" if binary else b"application/json")]


async def _read_limited(receive) -> bytes | None:
    """A body sent without content-length (chunked), or None once it passes ``MAX_BODY_BYTES``."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


async def _send_json(send, status: int, content: dict) -> None:
    body = orjson.dumps(content)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _ModelServer(kserve.ModelServer):
    """KServe's ModelServer, whose HTTP server also accepts on ``handed``: a listening socket inherited from
    ``serve`` (its public port), so clients reach this process without a proxy in between."""

    handed: socket.socket | None = None

    async def _serve(self):
        if self.handed is not None and self._rest_server is not None:
            rest = self._rest_server
            own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # the port uvicorn would have bound
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            own.bind(("0.0.0.0", self.http_port))
            own.listen(2048)

            async def both():
                rest.create_application()
                await rest._server.serve(sockets=[own, self.handed])

            self.servers[0].close()  # start()'s coroutine for the port alone, never awaited
            self.servers[0] = both()
        await asyncio.gather(*self.servers)


def start_server(model: kserve.Model, args: argparse.Namespace, settings: Settings, record_requests: bool,
                 predictor_config: kserve.PredictorConfig | None = None, listen_fd: int | None = None) -> None:
    """Start KServe's ModelServer with ``model`` and our additions; blocks until stopped. ``listen_fd``: a
    listening socket (inherited) to accept on as well as ``--http_port``."""
    kserve_app.add_exception_handler(RequestError, _request_error)
    kserve_app.add_exception_handler(PredictorUnavailable, _predictor_unavailable)
    kserve_app.add_exception_handler(SmartEnergyError, _user_error)
    kserve_app.add_exception_handler(RequestValidationError, _validation_error)
    kserve_app.add_exception_handler(StarletteHTTPException, _http_error)
    served = lambda: getattr(model, "served_version", "") or model.version  # noqa: E731
    kserve_app.add_middleware(ServingMiddleware, model_name=model.name, versions=lambda: {served()} - {""},
                              default_version=served, record=record_requests)
    registry = ReloadableModelRepository()
    server = _ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                          registered_models=registry, enable_grpc=args.enable_grpc,
                          enable_latency_logging=args.enable_latency_logging, predictor_config=predictor_config)
    server.dataplane = ServingDataPlane(model_registry=registry)
    server.model_repository_extension = ModelRepositoryRoutes(registry, enabled=settings.model_repository_routes)
    if not args.log_requests:  # after ModelServer() configured logging; a line per request costs latency
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    # everything loaded so far (KServe, Feast, xgboost, the detector) lives as long as the process: keep it out
    # of the collector's full passes, which otherwise stall a request for ~0.15 s every few hundred requests
    gc.collect()
    gc.freeze()
    if listen_fd is not None:
        server.handed = socket.socket(fileno=listen_fd)
    server.start([model])
