"""The rollout controller's clients: kserve's InferenceService model check, Prometheus, Kubernetes."""

from __future__ import annotations

import math
from typing import Any

import requests

from smart_energy.components.rollout_policy import VersionMetrics

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


class UnknownFieldError(ValueError):
    """A manifest or patch field the kserve/kubernetes models do not know."""


def _model_class(name: str):
    import kserve.models
    import kubernetes.client

    return getattr(kserve.models, name, None) or getattr(kubernetes.client, name)


def check_fields(data: Any, klass: str | type, path: str = "") -> None:
    """Raise ``UnknownFieldError`` for any key not in the OpenAPI model ``klass`` (recursively).

    kserve's own deserializer silently drops unknown keys; a misspelt field would vanish.
    """
    import re

    if isinstance(klass, str):
        if m := re.fullmatch(r"list\[(.*)\]", klass):
            for i, item in enumerate(data or []):
                check_fields(item, m.group(1), f"{path}[{i}]")
            return
        if m := re.fullmatch(r"dict\(([^,]*), (.*)\)", klass):
            for key, item in (data or {}).items():
                check_fields(item, m.group(2), f"{path}.{key}")
            return
        if klass in {"str", "int", "float", "bool", "object", "date", "datetime"}:
            return
        klass = _model_class(klass)
    if data is None or not getattr(klass, "openapi_types", None):
        return
    if not isinstance(data, dict):
        raise UnknownFieldError(f"{path or klass.__name__}: expected an object, got {type(data).__name__}")
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    for key, value in data.items():
        if key not in by_json:
            raise UnknownFieldError(f"{path}.{key}: not a field of {klass.__name__}")
        check_fields(value, klass.openapi_types[by_json[key]], f"{path}.{key}")


def _kserve_api_client():
    """kserve's ApiClient, able to resolve the kubernetes classes (V1ObjectMeta, V1EnvVar...) it refers to."""
    import kserve.models
    from kserve import ApiClient

    class _ApiClient(ApiClient):
        def _ApiClient__deserialize(self, data, klass):  # the name-mangled private deserializer
            if isinstance(klass, str) and not klass.startswith(("list[", "dict(")) \
                    and klass not in self.NATIVE_TYPES_MAPPING and not hasattr(kserve.models, klass):
                klass = _model_class(klass)
            return ApiClient._ApiClient__deserialize(self, data, klass)

    return _ApiClient()


def load_inference_service(obj: dict[str, Any]):
    """``obj`` as kserve's ``V1beta1InferenceService`` (kserve ApiClient deserialization), unknown fields rejected."""
    import json

    from kserve import V1beta1InferenceService

    check_fields(obj, V1beta1InferenceService)

    class _Response:
        data = json.dumps(obj)

    isvc = _kserve_api_client().deserialize(_Response(), "V1beta1InferenceService")
    if isvc.spec is None or isvc.spec.predictor is None:
        raise UnknownFieldError("InferenceService without spec.predictor")
    percent = isvc.spec.predictor.canary_traffic_percent
    if percent is not None and not (isinstance(percent, int) and 0 <= percent <= 100):
        raise UnknownFieldError(f"canaryTrafficPercent {percent!r} is not an integer in 0..100")
    return isvc


# --------------------------------------------------------------------------- Prometheus (HTTP)


class PrometheusClient:
    """Instant queries against Prometheus' ``/api/v1/query``."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> float | None:
        """The single value of an instant query; None when the result is empty or NaN."""
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout)
        resp.raise_for_status()
        body = resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {body.get('error')} ({promql})")
        result = body["data"]["result"]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    def version_metrics(self, version: str, window_seconds: int) -> VersionMetrics:
        sel, w = f'model_version="{version}"', f"{max(int(window_seconds), 2)}s"
        requests_seen = self.query(f"sum(increase(se_requests_total{{{sel}}}[{w}]))") or 0.0
        total_rate = self.query(f"sum(rate(se_requests_total{{{sel}}}[{w}]))")
        error_rate = self.query(f'sum(rate(se_requests_total{{{sel},code=~"5.."}}[{w}]))') or 0.0
        return VersionMetrics(
            requests=requests_seen,
            error_rate=error_rate / total_rate if total_rate else None,
            p99_latency_seconds=self.query(
                f"histogram_quantile(0.99, sum by (le) (rate(se_request_duration_seconds_bucket{{{sel}}}[{w}])))"
            ),
            mae_kw=self.query(f"max(se_forecast_mae_kw{{{sel}}})"),
        )


# --------------------------------------------------------------------------- Kubernetes


class InferenceServiceClient:
    """Get and merge-patch one InferenceService through the ``kubernetes`` client."""

    def __init__(self, namespace: str, name: str, api=None):
        if api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api = client.CustomObjectsApi()
        self.api, self.namespace, self.name = api, namespace, name

    def get(self) -> dict[str, Any]:
        return self.api.get_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name)

    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        check_fields(body, "V1beta1InferenceService")
        return self.api.patch_namespaced_custom_object(GROUP, API_VERSION, self.namespace, PLURAL, self.name, body)
