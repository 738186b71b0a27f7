"""Canary rollout controller: candidate model on the InferenceService, promoted or rolled back from Prometheus.

The policy (``decide``, the patches) is ``smart_energy.components.rollout_policy``; the clients
(Prometheus over HTTP, the Kubernetes custom-object API, kserve's model check) are
``smart_energy.serving.rollout_clients``. Here: the loop, which reads the registry's
candidate/production pointers and patches the KServe ``InferenceService``, its dry run and its CLI.

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

from smart_energy.components.rollout_policy import (DEFAULT_MIN_REQUESTS, MAX_WAIT_HOLDS, REJECTED_ANNOTATION,
                                                     Decision, Thresholds, canary_patch, decide, parse_steps,
                                                     promote_patch, rollback_patches, storage_uri, traffic_patch)
from smart_energy.components.settings import Settings, get_settings
from smart_energy.serving.rollout_clients import InferenceServiceClient, PrometheusClient

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
    from smart_energy.components import registry
    from smart_energy.components.storage import open_store

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
    if candidate == production:  # the dry run says what the real run would: nothing to do
        print(f"{candidate} is already the production version; nothing to roll out", file=sys.stderr)
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
