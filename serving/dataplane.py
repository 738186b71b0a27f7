"""What both servers change in KServe's data plane, through the objects ``ModelServer`` lets us supply.

- ``ServingDataPlane`` (KServe's ``DataPlane``): every client mistake KServe's own code finds becomes a
  ``RequestError`` (a 4xx naming it, one log line), readiness is false with a reason whenever no model
  is loaded or the predictor is not ready, a V2 body without ``Inference-Header-Content-Length`` is
  JSON whatever its content type (as Triton reads it), that header when present is an integer in range
  (else 400, in JSON mode too), V2 answers leave out null fields, and the model metadata names the
  served version.
- ``ModelRepositoryRoutes`` (KServe's ``ModelRepositoryExtension``, behind ``/v2/repository/...``):
  load, unload and index are refused (403) unless ``SE_MODEL_REPOSITORY_ROUTES`` turns them on;
  ``ReloadableModelRepository`` lets a model unloaded that way be loaded again.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import httpx
import orjson
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from smart_energy.serving.logic import RequestError


class NotReady(RequestError):
    """No model is loaded, or the predictor behind the transformer is not ready (503)."""

    def __init__(self, message: str, reason: str = "not_ready"):
        super().__init__(message, status=503, reason=reason)


def validation_message(errors: list[dict]) -> str:
    """Pydantic/FastAPI validation errors as one line: ``inputs.0.datatype: Field required; ...``."""
    # FastAPI reports both branches of KServe's ``Union[InferenceRequest, bytes]`` body: keep the request's
    errors = [e for e in errors if tuple(e.get("loc", ()))[-1:] != ("bytes",)] or errors
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('body', 'InferenceRequest')) or 'body'}: "
             f"{e.get('msg')}" for e in errors[:5]]
    return "request does not match the V2 inference request schema: " + "; ".join(parts)


def json_part_length(header: str, body_length: int | None) -> int:
    """``Inference-Header-Content-Length`` as the JSON part's byte length: ASCII digits, between 1 and the body's
    length (when known), else a 400 naming the header (``str.isdigit`` alone passes "²", which ``int`` refuses)."""
    value = header.strip()
    number = int(value) if value.isascii() and value.isdigit() else 0
    if number < 1 or (body_length is not None and number > body_length):
        within = f"the body's {body_length} bytes" if body_length is not None else "the body's length"
        raise RequestError(f"{INFERENCE_CONTENT_LENGTH_HEADER}: {header[:40]!r} must be the byte length of the "
                           f"JSON part, an integer between 1 and {within}", reason="bad_header")
    return number


def decode_v2_body(body: bytes, headers: Dict[str, str], model_name: str) -> InferRequest:
    """A V2 request body as KServe's ``InferRequest``: binary tensors after a JSON header when
    ``Inference-Header-Content-Length`` says so, else JSON whatever the content type says."""
    header = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
    if header is None:
        try:
            request = InferenceRequest.model_validate_json(body)
        except ValidationError as err:
            if any(e.get("type") == "json_invalid" for e in err.errors()):
                raise RequestError(f"malformed JSON: {err.errors()[0].get('msg')}", reason="malformed_json") from None
            raise RequestError(validation_message(err.errors()), reason="invalid_request") from None
        return InferRequest.from_inference_request(request, model_name)
    length = json_part_length(header, len(body))
    try:
        return InferRequest.from_bytes(body, length, model_name)
    except (KeyError, TypeError, AttributeError, ValueError) as err:  # InvalidInput is a ValueError
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise RequestError(f"binary V2 request: {detail[:300]}", reason="invalid_request") from None


def _without_nulls(answer: dict) -> dict:
    """The spec types ``id``, ``model_version`` and ``parameters`` as string/object, not nullable."""
    out = {k: v for k, v in answer.items() if v is not None and not (k == "parameters" and not v)}
    out["outputs"] = [{k: v for k, v in o.items() if v is not None} for o in answer.get("outputs", [])]
    return out


def encode_v2_response(response: InferResponse) -> Tuple[bytes, Optional[int]]:
    """A V2 answer as bytes (JSON, or JSON + binary tensors) and the JSON part's length when binary."""
    try:
        body, json_length = response.to_rest()
    except InvalidInput as err:  # an output the client asked for that the model does not have
        raise RequestError(str(err), reason="unknown_output") from None
    if json_length is None:
        return orjson.dumps(_without_nulls(body)), None
    head = orjson.dumps(_without_nulls(orjson.loads(body[:json_length])))
    return head + body[json_length:], len(head)


class ServingDataPlane(DataPlane):
    """KServe's data plane with this project's answers to client mistakes, readiness and V2 encoding."""

    def get_model_from_registry(self, name: str):
        try:
            return super().get_model_from_registry(name)
        except ModelNotFound:
            raise RequestError(f"no model named {name!r} here", status=404, reason="model_not_found") from None

    async def get_model(self, name: str):
        try:
            return await super().get_model(name)
        except ModelNotFound:
            raise RequestError(f"no model named {name!r} here", status=404, reason="model_not_found") from None

    async def model_metadata(self, model_name: str) -> dict:
        out = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        version = getattr(model, "served_version", "") or getattr(model, "version", "")  # the predictor's, if known
        if version:
            out["versions"] = [version]
        out["platform"] = getattr(model, "platform", "") or ""
        return out

    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        if not models:
            raise NotReady("no model is loaded", reason="no_model")
        for name in models:
            if not await self.model_registry.is_model_ready(name):
                raise NotReady(f"model {name} is not ready", reason="model_not_ready")
        await self._predictor_ready()
        return True

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        if self.model_registry.get_model(model_name) is None:
            raise RequestError(f"no model named {model_name!r} here", status=404, reason="model_not_found")
        if not await self.model_registry.is_model_ready(model_name):
            raise NotReady(f"model {model_name} is not ready", reason="model_not_ready")
        if not disable_predictor_health_check:
            await self._predictor_ready(model_name)
        return True

    async def _predictor_ready(self, model_name: str | None = None) -> None:
        config = self.predictor_config
        if not (config and config.predictor_health_check):
            return
        try:
            if model_name is None:
                ready = await self.rest_client.is_server_ready(config.predictor_base_url)
            else:
                ready = await self.rest_client.is_model_ready(config.predictor_base_url, model_name)
        except httpx.HTTPStatusError as err:
            raise NotReady(f"predictor at {config.predictor_host} is not ready ({err.response.status_code})",
                           reason="predictor_unavailable") from None
        except httpx.HTTPError as err:
            raise NotReady(f"predictor at {config.predictor_host} is unreachable ({type(err).__name__})",
                           reason="predictor_unavailable") from None
        if not ready:
            raise NotReady(f"predictor at {config.predictor_host} is not ready", reason="predictor_unavailable")

    def decode(self, body, headers, protocol_version: str = "v1", model_name: str = None):
        if isinstance(body, bytes) and protocol_version.lower() == "v2":
            return decode_v2_body(body, headers or {}, model_name), {}
        header = (headers or {}).get(INFERENCE_CONTENT_LENGTH_HEADER)
        if header is not None and protocol_version.lower() == "v2":
            # `Content-Type: application/json`: FastAPI parsed the body already; the header still has to be one
            length = (headers or {}).get("content-length", "")
            json_part_length(header, int(length) if length.isascii() and length.isdigit() else None)
        try:
            return super().decode(body, headers, protocol_version, model_name)
        except InvalidInput as err:
            reason = "malformed_json" if "Unrecognized request format" in str(err) else "invalid_input"
            raise RequestError(str(err), reason=reason) from None

    def encode(self, model_name, response, headers, req_attributes: Dict) -> Tuple[Any, Dict[str, str]]:
        if isinstance(response, InferResponse):
            body, json_length = encode_v2_response(response)
            extra = {INFERENCE_CONTENT_LENGTH_HEADER: str(json_length)} if json_length is not None else {}
            return body, extra
        return super().encode(model_name, response, headers, req_attributes)


class ModelRepositoryRoutes(ModelRepositoryExtension):
    """KServe's model-repository extension (``/v2/repository/...``), refused unless ``enabled``."""

    def __init__(self, model_registry: ModelRepository, enabled: bool):
        super().__init__(model_registry)
        self.enabled = enabled

    def _check(self, action: str) -> None:
        if not self.enabled:
            raise RequestError(f"model {action} is turned off on this server (an operator turns it on with "
                               f"SE_MODEL_REPOSITORY_ROUTES=true)", status=403, reason="repository_routes_off")

    async def index(self, filter_ready: Optional[bool] = False):
        self._check("index")
        return await super().index(filter_ready)

    async def load(self, model_name: str) -> None:
        self._check("load")
        if not self._model_registry.knows(model_name):
            raise RequestError(f"no model named {model_name!r} here", status=404, reason="model_not_found")
        try:
            await super().load(model_name)
        except ModelNotReady as err:
            raise NotReady(str(err), reason="model_not_ready") from None

    async def unload(self, model_name: str) -> None:
        self._check("unload")
        try:
            await super().unload(model_name)
        except ModelNotFound:
            raise RequestError(f"no model named {model_name!r} is loaded", status=404,
                               reason="model_not_found") from None


class ReloadableModelRepository(ModelRepository):
    """KServe's model repository, which keeps an unloaded model so that ``load`` can bring it back."""

    def __init__(self):
        super().__init__()
        self._unloaded: dict[str, Any] = {}

    def knows(self, name: str) -> bool:
        return name in self._unloaded or self.get_model(name) is not None

    def load(self, name: str) -> bool:
        model = self._unloaded.get(name) or self.get_model(name)
        if not model.ready:
            model.load()
        self.update(model)
        self._unloaded.pop(name, None)
        return model.ready

    def unload(self, name: str):
        model = self.get_model(name)
        super().unload(name)
        model.ready = False
        self._unloaded[name] = model
