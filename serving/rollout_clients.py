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


def _walk(data: Any, klass: str | type, path: str, build: bool) -> Any:
    """Check ``data`` against the OpenAPI model ``klass`` (its public ``openapi_types``/``attribute_map``),
    recursively; with ``build``, return the model objects too."""
    import re

    if isinstance(klass, str):
        if m := re.fullmatch(r"list\[(.*)\]", klass):
            return [_walk(item, m.group(1), f"{path}[{i}]", build) for i, item in enumerate(data or [])] \
                if data is not None else None
        if m := re.fullmatch(r"dict\(([^,]*), (.*)\)", klass):
            return {key: _walk(item, m.group(2), f"{path}.{key}", build) for key, item in data.items()} \
                if data is not None else None
        if klass in {"str", "int", "float", "bool", "object", "date", "datetime"}:
            return data
        klass = _model_class(klass)
    if data is None or not getattr(klass, "openapi_types", None):
        return data
    if not isinstance(data, dict):
        raise UnknownFieldError(f"{path or klass.__name__}: expected an object, got {type(data).__name__}")
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    values = {}
    for key, value in data.items():
        if key not in by_json:
            raise UnknownFieldError(f"{path}.{key}: not a field of {klass.__name__}")
        values[by_json[key]] = _walk(value, klass.openapi_types[by_json[key]], f"{path}.{key}", build)
    return klass(**values) if build else None


def check_fields(data: Any, klass: str | type, path: str = "") -> None:
    """Raise ``UnknownFieldError`` for any key not in the OpenAPI model ``klass`` (recursively).

    kserve's own deserializer silently drops unknown keys; a misspelt field would vanish.
    """
    _walk(data, klass, path, build=False)


def load_inference_service(obj: dict[str, Any]):
    """``obj`` as kserve's ``V1beta1InferenceService`` model objects, unknown fields rejected.

    Built through the models' public ``openapi_types``/``attribute_map`` (kserve's and kubernetes' classes
    both), so a manifest is checked against the kserve release we pin.
    """
    from kserve import V1beta1InferenceService

    isvc = _walk(obj, V1beta1InferenceService, "", build=True)
    if isvc.spec is None or isvc.spec.predictor is None:
        raise UnknownFieldError("InferenceService without spec.predictor")
    percent = isvc.spec.predictor.canary_traffic_percent
    if percent is not None and not (isinstance(percent, int) and 0 <= percent <= 100):
        raise UnknownFieldError(f"canaryTrafficPercent {percent!r} is not an integer in 0..100")
    return isvc


# --------------------------------------------------------------------------- Prometheus (HTTP)


def _label(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


class PrometheusClient:
    """Instant queries against Prometheus' ``/api/v1/query``.

    With ``isvc``, every selector also matches ``isvc="<isvc>"``: the label each ``se_*`` series scraped from
    that InferenceService's transformer carries (a PodMonitor relabels it from the pod label
    ``serving.kserve.io/inferenceservice``), so two InferenceServices' versions never mix.
    """

    def __init__(self, url: str, timeout: float = 5.0, isvc: str | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.isvc = isvc

    def _selector(self, *matchers: str, **labels: str) -> str:
        """``{...}`` of ``labels`` (exact), raw ``matchers`` and the isvc scope; empty when there is nothing."""
        all_matchers = [_label(k, v) for k, v in labels.items()] + list(matchers)
        all_matchers += [_label("isvc", self.isvc)] if self.isvc else []
        return "{" + ",".join(all_matchers) + "}" if all_matchers else ""

    def _results(self, promql: str) -> list[dict]:
        resp = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout)
        resp.raise_for_status()
        body = resp.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus query failed: {body.get('error')} ({promql})")
        return body["data"]["result"]

    @staticmethod
    def _value(item: dict) -> float | None:
        value = float(item["value"][1])
        return None if math.isnan(value) or math.isinf(value) else value

    def query(self, promql: str) -> float | None:
        """The single value of an instant query; None when the result is empty or NaN."""
        result = self._results(promql)
        return self._value(result[0]) if result else None

    def requests_by_version(self, window_seconds: int) -> dict[str, float]:
        """Requests the transformer counted in the window, by ``model_version`` (whatever the version)."""
        w = f"{max(int(window_seconds), 2)}s"
        result = self._results(f"sum by (model_version) (increase(se_requests_total{self._selector()}[{w}]))")
        return {item["metric"].get("model_version", ""): self._value(item) or 0.0 for item in result}

    def total_requests(self, window_seconds: int) -> float:
        """Every request the transformer counted in the window, attributed to a version or not."""
        return sum(self.requests_by_version(window_seconds).values())

    def version_metrics(self, version: str, window_seconds: int) -> VersionMetrics:
        sel, w = self._selector(model_version=version), f"{max(int(window_seconds), 2)}s"
        errors = self._selector('code=~"5.."', model_version=version)
        requests_seen = self.query(f"sum(increase(se_requests_total{sel}[{w}]))") or 0.0
        total_rate = self.query(f"sum(rate(se_requests_total{sel}[{w}]))")
        error_rate = self.query(f"sum(rate(se_requests_total{errors}[{w}]))") or 0.0
        return VersionMetrics(
            requests=requests_seen,
            error_rate=error_rate / total_rate if total_rate else None,
            p99_latency_seconds=self.query(
                f"histogram_quantile(0.99, sum by (le) (rate(se_request_duration_seconds_bucket{sel}[{w}])))"
            ),
            mae_kw=self.query(f"max(se_forecast_mae_kw{sel})"),
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
