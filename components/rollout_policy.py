"""The canary rollout's policy, as plain functions: when to step, promote or roll back, and the patches.

``decide`` is the whole policy and a pure function (metrics in, decision out); the patches are plain
merge-patch dicts for KServe's ``InferenceService``. The controller that applies them (Prometheus and
Kubernetes clients, the loop, the CLI) is ``smart_energy.serving.rollout``; the training pipeline's
deploy request builds the same first patch from here.

Candidate and production are told apart by the ``model_version`` label the transformer puts on its ``se_*``
metrics: the version the predictor named in its answer, or ``"unknown"`` when it named none (KServe's stock
xgboost server). ``attribution_problem`` says when that labelling cannot work, so the canary is stopped
instead of judged. With too little traffic to prove anything (an idle service, 0 requests), the rollout
waits as before, and gives up (rolls back) after ``MAX_WAIT_HOLDS`` holds without a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from smart_energy.components.settings import Settings

MODEL_VERSION_ANNOTATION = "smart-energy.io/model-version"
REJECTED_ANNOTATION = "smart-energy.io/rejected-version"
DEFAULT_MIN_REQUESTS = 20
# a rollout that sees too little traffic for this many hold periods gives up (rolls back)
MAX_WAIT_HOLDS = 3.0
ATTRIBUTION_IMPOSSIBLE = "the predictor reports no model_version, so canary attribution is impossible"


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


def attribution_problem(requests_by_version: Mapping[str, float], candidate: str, production: str,
                        min_requests: float, canary_started: bool, window_seconds: float) -> str | None:
    """Why the canary's traffic cannot be attributed by version (the refusal message), or None.

    Args:
        requests_by_version: the requests the InferenceService's transformer counted in the last
            ``window_seconds``, by ``model_version`` label.
        canary_started: False before the first canary patch (only production serves), True during a step.

    The transformer counted at least ``min_requests``, yet none carry production's version (before the canary)
    or either version (during a step): a candidate judged on that would be rolled back for a lack of traffic
    that is only a lack of labels. Below ``min_requests`` (an idle service) nothing is proven and None is
    returned: the caller keeps its no-verdict rule.
    """
    total = sum(requests_by_version.values())
    cand, prod = requests_by_version.get(candidate, 0.0), requests_by_version.get(production, 0.0)
    attributed = cand + prod if canary_started else prod
    if total < min_requests or attributed > 0:
        return None
    seen = ", ".join(f"{version} {n:.0f}" for version, n in sorted(requests_by_version.items(), key=lambda kv: -kv[1])
                     if n > 0)
    versions = f"production {production} {prod:.0f}" + (f", candidate {candidate} {cand:.0f}" if canary_started else "")
    return (f"{ATTRIBUTION_IMPOSSIBLE} (the transformer counted {total:.0f} requests in the last {window_seconds:g}s: "
            f"{versions}; by model_version: {seen})")


# --------------------------------------------------------------------------- patches (plain dicts)


def storage_uri(artifact_uri: str, model_name: str, version: str) -> str:
    """What the InferenceService serves for a registered version (see ``registry.serving_uri``)."""
    from smart_energy.components.registry import serving_uri

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


def restore_patches(production_uri: str, production_version: str | None) -> list[dict[str, Any]]:
    """All traffic back on the last rolled-out (production) revision at once, then production's model declared again.

    ``canaryTrafficPercent`` stays 0 in the second patch: that patch makes a new revision (production's model),
    and a traffic target on the *latest* revision means Knative's latest *ready* one, which is the candidate's
    until the new revision is up. Removed there, it would hand the candidate 100 % for that while; at 0 the
    rolled-out revision keeps it all, and the next canary patch starts from production's model.
    """
    return [
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
        {
            "metadata": {"annotations": {MODEL_VERSION_ANNOTATION: production_version}},
            "spec": {"predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": production_uri}}},
        },
    ]


def rollback_patches(candidate: str, production_uri: str, production_version: str | None) -> list[dict[str, Any]]:
    """``restore_patches``, the first one also naming the candidate rejected (never tried again)."""
    first, second = restore_patches(production_uri, production_version)
    return [merge_patch(first, {"metadata": {"annotations": {REJECTED_ANNOTATION: candidate}}}), second]


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
