"""Canary rollout controller: candidate model on the InferenceService, promoted or rolled back from Prometheus.

``decide`` is the whole policy and a pure function (metrics in, decision out). Around it,
``run_rollout`` reads the registry's candidate/production pointers, patches the KServe
``InferenceService`` (merge patches built as plain dicts, checked against kserve's
``V1beta1InferenceService`` model before they are sent) and queries Prometheus over HTTP.

KServe splits traffic between the latest revision (``canaryTrafficPercent``) and the last
rolled-out one only in Serverless (Knative) mode. Candidate and production are told apart in
Prometheus by the ``model_version`` label the transformer puts on ``se_*`` metrics.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests

from components.settings import Settings, get_settings

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_VERSION_ANNOTATION = "smart-energy.io/model-version"
REJECTED_ANNOTATION = "smart-energy.io/rejected-version"
DEFAULT_MIN_REQUESTS = 20
# a rollout that sees too little traffic for this many hold periods gives up (rolls back)
MAX_WAIT_HOLDS = 3.0


# --------------------------------------------------------------------------- policy (pure)


@dataclass(frozen=True)
class VersionMetrics:
    """What Prometheus says about one model version over the query window."""

    requests: float = 0.0
    error_rate: float | None = None
    p99_latency_seconds: float | None = None
    mae_kw: float | None = None


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float
    max_p99_latency_seconds: float
    max_mae_ratio: float
    min_requests: float = DEFAULT_MIN_REQUESTS

    @classmethod
    def from_settings(cls, settings: Settings, min_requests: float = DEFAULT_MIN_REQUESTS) -> "Thresholds":
        return cls(settings.max_error_rate, settings.max_p99_latency_seconds, settings.max_mae_ratio, min_requests)


@dataclass(frozen=True)
class Decision:
    action: str  # "wait" | "step" | "promote" | "rollback"
    traffic_percent: int  # candidate's share of traffic after the decision
    reason: str


def parse_steps(text: str) -> list[int]:
    """``"10,25,50,100"`` -> ``[10, 25, 50, 100]``; increasing, within (0, 100], ending at 100."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"canary steps must be integers separated by commas, got {text!r}") from None
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise ValueError(f"canary steps must increase within 1..100 and end at 100, got {text!r}")
    return steps


def decide(
    candidate: VersionMetrics,
    production: VersionMetrics | None,
    current_percent: int,
    steps: list[int],
    held_seconds: float,
    hold_seconds: float,
    thresholds: Thresholds,
) -> Decision:
    """The next move of a canary that has had ``current_percent`` of traffic for ``held_seconds``.

    A threshold breach rolls back at once (no need to wait out the hold); a healthy candidate moves
    to the next step once the hold is over and it has served ``min_requests``; after the hold at the
    last step it is promoted. Forecast error is compared only when both versions report it (actuals
    arrive an hour late).
    """
    t = thresholds
    enough = candidate.requests >= t.min_requests
    if enough and candidate.error_rate is not None and candidate.error_rate > t.max_error_rate:
        return Decision("rollback", 0, f"error rate {candidate.error_rate:.4f} > {t.max_error_rate}")
    if enough and candidate.p99_latency_seconds is not None and candidate.p99_latency_seconds > t.max_p99_latency_seconds:
        return Decision(
            "rollback", 0, f"p99 latency {candidate.p99_latency_seconds:.4f}s > {t.max_p99_latency_seconds}s"
        )
    if candidate.mae_kw is not None and production is not None and production.mae_kw:
        ratio = candidate.mae_kw / production.mae_kw
        if ratio > t.max_mae_ratio:
            return Decision("rollback", 0, f"MAE ratio candidate/production {ratio:.3f} > {t.max_mae_ratio}")
    if held_seconds < hold_seconds:
        return Decision("wait", current_percent, f"holding at {current_percent}% ({held_seconds:.0f}/{hold_seconds:.0f}s)")
    if not enough:
        return Decision("wait", current_percent, f"only {candidate.requests:.0f} requests < {t.min_requests:.0f}")
    later = [s for s in steps if s > current_percent]
    if not later:
        return Decision("promote", 100, f"healthy at {current_percent}% for {held_seconds:.0f}s")
    return Decision("step", later[0], f"healthy at {current_percent}% for {held_seconds:.0f}s")


# --------------------------------------------------------------------------- patches (plain dicts)


def storage_uri(artifact_uri: str, model_name: str, version: str) -> str:
    """What the InferenceService serves for a registered version (see ``registry.serving_uri``)."""
    from components.registry import serving_uri

    return serving_uri(artifact_uri, model_name, version)


def canary_patch(uri: str, version: str, percent: int) -> dict[str, Any]:
    """Serve ``uri`` as the latest revision and give it ``percent`` of the traffic."""
    return {
        "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: version}},
        "spec": {"predictor": {"canaryTrafficPercent": percent, "model": {"storageUri": uri}}},
    }


def traffic_patch(percent: int) -> dict[str, Any]:
    return {"spec": {"predictor": {"canaryTrafficPercent": percent}}}


def promote_patch(version: str) -> dict[str, Any]:
    # removing canaryTrafficPercent (null in a merge patch) gives the latest revision all traffic
    return {
        "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: version}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }


def rollback_patches(candidate: str, production_uri: str, production_version: str | None) -> list[dict[str, Any]]:
    """Traffic back to the last rolled-out revision at once, then declare production again."""
    return [
        {"metadata": {"annotations": {REJECTED_ANNOTATION: candidate}}, "spec": {"predictor": {"canaryTrafficPercent": 0}}},
        {
            "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: production_version}},
            "spec": {"predictor": {"canaryTrafficPercent": None, "model": {"storageUri": production_uri}}},
        },
    ]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the API server applies to ``patch_namespaced_custom_object``)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


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


# --------------------------------------------------------------------------- the loop


@dataclass
class Rollout:
    """One rollout of ``candidate`` over ``production``; ``run`` returns the outcome."""

    isvc: Any  # InferenceServiceClient-like: get() and patch(body)
    prometheus: Any  # PrometheusClient-like: version_metrics(version, window_seconds)
    settings: Settings
    candidate: str
    production: str | None
    min_requests: float = DEFAULT_MIN_REQUESTS
    poll_seconds: float | None = None
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def _patch(self, body: dict[str, Any]) -> None:
        self.log(f"patch {body}")
        self.isvc.patch(body)

    def run(self) -> str:
        s = self.settings
        steps, thresholds = parse_steps(s.canary_steps), Thresholds.from_settings(s, self.min_requests)
        current = self.isvc.get()
        annotations = current.get("metadata", {}).get("annotations") or {}
        predictor = current.get("spec", {}).get("predictor", {})
        serving_uri = predictor.get("model", {}).get("storageUri")
        candidate_uri = storage_uri(s.artifact_uri, s.model_name, self.candidate)
        if annotations.get(REJECTED_ANNOTATION) == self.candidate:
            self.log(f"candidate {self.candidate} was rolled back before; register a new one")
            return "rejected-before"
        percent = predictor.get("canaryTrafficPercent")
        if self.candidate == self.production:
            self.log(f"{self.candidate} is already the production version")
            return "nothing-to-do"
        if self.production is None:
            # first model: nothing to compare with and nothing to fall back to
            self._patch(canary_patch(candidate_uri, self.candidate, 100))
            self._patch(promote_patch(self.candidate))
            return "promoted"
        production_uri = storage_uri(s.artifact_uri, s.model_name, self.production)
        if serving_uri == candidate_uri and percent is not None and 0 < percent < 100:
            self.log(f"resuming the canary of {self.candidate} at {percent}%")
        else:
            percent = steps[0]
            self._patch(canary_patch(candidate_uri, self.candidate, percent))
        hold, window = s.canary_hold_seconds, max(2, math.ceil(s.canary_hold_seconds))
        poll = self.poll_seconds or max(0.5, min(hold / 5, 15.0))
        step_started = waiting_since = self.clock()
        while True:
            self.sleep(poll)
            now = self.clock()
            cand = self.prometheus.version_metrics(self.candidate, window)
            prod = self.prometheus.version_metrics(self.production, window)
            decision = decide(cand, prod, percent, steps, now - step_started, hold, thresholds)
            self.log(f"{percent}% {cand} -> {decision.action}: {decision.reason}")
            if decision.action == "wait":
                if now - waiting_since > MAX_WAIT_HOLDS * hold + poll:
                    decision = Decision("rollback", 0, f"no verdict after {now - waiting_since:.0f}s: {decision.reason}")
                else:
                    continue
            if decision.action == "rollback":
                for body in rollback_patches(self.candidate, production_uri, self.production):
                    self._patch(body)
                self.log(f"rolled back {self.candidate}: {decision.reason}")
                return "rolled-back"
            if decision.action == "promote":
                self._patch(promote_patch(self.candidate))
                self.log(f"promoted {self.candidate}")
                return "promoted"
            percent = decision.traffic_percent
            self._patch(traffic_patch(percent))
            step_started = waiting_since = self.clock()


def _j(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body, sort_keys=True)


def dry_run_steps(settings: Settings, candidate: str, production: str | None) -> list[str]:
    """What ``run`` would do, as lines (no cluster, no Prometheus)."""
    steps = parse_steps(settings.canary_steps)
    uri = storage_uri(settings.artifact_uri, settings.model_name, candidate)
    target = f"inferenceservice {settings.namespace}/{settings.inference_service}"
    if production is None:
        return [f"patch {target}: {_j(canary_patch(uri, candidate, 100))}", f"patch {target}: {_j(promote_patch(candidate))}"]
    lines = [f"patch {target}: {_j(canary_patch(uri, candidate, steps[0]))}"]
    for i, percent in enumerate(steps):
        lines.append(
            f"hold {settings.canary_hold_seconds:g}s at {percent}%: roll back if error rate > {settings.max_error_rate}, "
            f"p99 > {settings.max_p99_latency_seconds}s or MAE {candidate}/{production} > {settings.max_mae_ratio} "
            f"(from {settings.prometheus_url})"
        )
        if i + 1 < len(steps):
            lines.append(f"patch {target}: {_j(traffic_patch(steps[i + 1]))}")
    lines.append(f"promote: patch {target}: {_j(promote_patch(candidate))}; registry production -> {candidate}")
    prod_uri = storage_uri(settings.artifact_uri, settings.model_name, production)
    for body in rollback_patches(candidate, prod_uri, production):
        lines.append(f"on rollback: patch {target}: {_j(body)}")
    return lines


# --------------------------------------------------------------------------- CLI


def _cmd_rollout(args: argparse.Namespace) -> int:
    from components import registry
    from components.storage import open_store

    settings = get_settings()
    parse_steps(settings.canary_steps)  # fail early on a bad SE_CANARY_STEPS
    candidate, production = args.candidate, args.production
    store = None
    if candidate is None or production is None:
        store = open_store(settings.artifact_uri, settings)
        candidate = candidate or registry.stage_version(store, settings.model_name, "candidate")
        production = production or registry.stage_version(store, settings.model_name, "production")
    if not candidate:
        print(f"no candidate registered for {settings.model_name}; nothing to roll out", file=sys.stderr)
        return 0
    if args.dry_run:
        for i, line in enumerate(dry_run_steps(settings, candidate, production), 1):
            print(f"{i}. {line}")
        return 0
    rollout = Rollout(
        isvc=InferenceServiceClient(settings.namespace, settings.inference_service),
        prometheus=PrometheusClient(settings.prometheus_url),
        settings=settings, candidate=candidate, production=production, min_requests=args.min_requests,
    )
    outcome = rollout.run()
    if outcome == "promoted":
        store = store or open_store(settings.artifact_uri, settings)
        registry.set_stage(store, settings.model_name, "production", candidate)
    print(outcome)
    return 0 if outcome != "rolled-back" else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="canary-roll the registered candidate onto the InferenceService (promote or roll back from Prometheus)",
        description="Put the registry's candidate model on the KServe InferenceService with a small "
        "canaryTrafficPercent, then step it through SE_CANARY_STEPS every SE_CANARY_HOLD_SECONDS while "
        "Prometheus shows its error rate <= SE_MAX_ERROR_RATE, p99 latency <= SE_MAX_P99_LATENCY_SECONDS "
        "and MAE <= SE_MAX_MAE_RATIO x production's; otherwise roll back. Exit code 1 after a rollback.",
    )
    p.add_argument("--candidate", help="version to roll out (default: the registry's candidate pointer)")
    p.add_argument("--production", help="version serving now (default: the registry's production pointer)")
    p.add_argument("--min-requests", type=float, default=DEFAULT_MIN_REQUESTS,
                   help="requests a step must serve before it can be judged healthy (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the steps it would take and exit")
    p.set_defaults(func=_cmd_rollout)
