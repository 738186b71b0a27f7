"""Canary rollout controller: candidate model on the InferenceService, promoted or rolled back from Prometheus.

The policy (``decide``, the patches) is ``smart_energy.components.rollout_policy``; the clients
(Prometheus over HTTP, the Kubernetes custom-object API, kserve's model check) are
``smart_energy.serving.rollout_clients``. Here: the loop, which reads the registry's
candidate/production pointers and patches the KServe ``InferenceService``, its dry run and its CLI.

KServe splits traffic between the latest revision (``canaryTrafficPercent``) and the last
rolled-out one only in Serverless (Knative) mode. Candidate and production are told apart in
Prometheus by the ``model_version`` label the transformer puts on ``se_*`` metrics (the version the
predictor named in its answer), within the InferenceService's own series (label ``isvc``). When that
labelling cannot work (``attribution_problem``: traffic, but none of it on either version), the rollout
stops without a verdict: production keeps (or gets back) all the traffic, nothing is marked rejected,
and the CLI exits 2.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.rollout_policy import (DEFAULT_MIN_REQUESTS, MAX_WAIT_HOLDS, REJECTED_ANNOTATION,
                                                     Decision, Thresholds, attribution_problem, canary_patch, decide,
                                                     parse_steps, promote_patch, restore_patches, rollback_patches,
                                                     storage_uri, traffic_patch)
from smart_energy.components.settings import Settings, get_settings
from smart_energy.serving.rollout_clients import InferenceServiceClient, PrometheusClient

# --------------------------------------------------------------------------- the loop


@dataclass
class Rollout:
    """One rollout of ``candidate`` over ``production``; ``run`` returns the outcome.

    Outcomes: promoted, rolled-back, refused (attribution impossible; the message in ``refusal``),
    rejected-before, nothing-to-do.
    """

    isvc: Any  # InferenceServiceClient-like: get() and patch(body)
    prometheus: Any  # PrometheusClient-like: version_metrics(version, window) and requests_by_version(window)
    settings: Settings
    candidate: str
    production: str | None
    min_requests: float = DEFAULT_MIN_REQUESTS
    poll_seconds: float | None = None
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    refusal: str | None = None  # why the rollout stopped without a verdict (outcome "refused")

    def _patch(self, body: dict[str, Any]) -> None:
        self.log(f"patch {body}")
        self.isvc.patch(body)

    def _attribution(self, window: int, canary_started: bool) -> str | None:
        return attribution_problem(self.prometheus.requests_by_version(window), self.candidate, self.production,
                                   self.min_requests, canary_started, window)

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
        hold, window = s.canary_hold_seconds, max(2, math.ceil(s.canary_hold_seconds))
        if serving_uri == candidate_uri and percent is not None and 0 < percent < 100:
            self.log(f"resuming the canary of {self.candidate} at {percent}%")
        else:
            # production's own traffic must carry its version, or no step could ever be judged
            if refusal := self._attribution(window, canary_started=False):
                self.refusal = refusal
                return "refused"
            percent = steps[0]
            self._patch(canary_patch(candidate_uri, self.candidate, percent))
        poll = self.poll_seconds or max(0.5, min(hold / 5, 15.0))
        step_started = waiting_since = self.clock()
        while True:
            self.sleep(poll)
            now = self.clock()
            if refusal := self._attribution(window, canary_started=True):
                for body in restore_patches(production_uri, self.production):  # no verdict: nothing rejected
                    self._patch(body)
                self.refusal = refusal
                return "refused"
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


# a Kubernetes object name (DNS-1123 label): the InferenceService is named after the model
MODEL_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def rollout_settings(settings: Settings, model: str | None) -> Settings:
    """``settings`` for rolling out ``model``: its registry pointers and the InferenceService of the same name.

    Without ``model``: SE_MODEL_NAME on SE_INFERENCE_SERVICE, as configured.
    """
    if model is None:
        return settings
    if not MODEL_NAME.fullmatch(model):
        raise SmartEnergyError(f"--model {model!r} is not a model/InferenceService name (lowercase letters, digits "
                               f"and '-', at most 63)")
    return replace(settings, model_name=model, inference_service=model)


def _cmd_rollout(args: argparse.Namespace) -> int:
    from smart_energy.components import registry
    from smart_energy.components.storage import open_store

    settings = rollout_settings(get_settings(), args.model)
    parse_steps(settings.canary_steps)  # fail early on a bad SE_CANARY_STEPS
    candidate, production = args.candidate, args.production
    store = None
    if candidate is None or production is None:
        store = open_store(settings.artifact_uri, settings)
        candidate = candidate or registry.stage_version(store, settings.model_name, "candidate")
        production = production or registry.stage_version(store, settings.model_name, "production")
    if not candidate:
        if store is not None and not registry.list_versions(store, settings.model_name):
            known = sorted({k.split("/")[1] for k in store.list("models") if k.count("/") >= 3}
                           - {settings.model_name})
            if known:  # a typo in --model / SE_MODEL_NAME, not a fresh install: say what the store holds
                raise SmartEnergyError(f"model {settings.model_name!r} has no versions in {store.uri}; it holds "
                                       f"{', '.join(known)} (check --model or SE_MODEL_NAME)")
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
        prometheus=PrometheusClient(settings.prometheus_url, isvc=settings.inference_service),
        settings=settings, candidate=candidate, production=production, min_requests=args.min_requests,
    )
    outcome = rollout.run()
    if outcome == "refused":
        print(f"rollout: error: {rollout.refusal}", file=sys.stderr)
        return 2
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
        "and MAE <= SE_MAX_MAE_RATIO x production's; otherwise roll back. Exit code 1 after a rollback; 2 when "
        "the InferenceService's traffic carries neither version (the predictor names no model_version): then "
        "production keeps all the traffic and nothing is marked rejected.",
    )
    p.add_argument("--model", metavar="NAME",
                   help="model to roll out: its registry pointers, and the InferenceService of the same name "
                        "(default: SE_MODEL_NAME on SE_INFERENCE_SERVICE)")
    p.add_argument("--candidate", help="version to roll out (default: the registry's candidate pointer)")
    p.add_argument("--production", help="version serving now (default: the registry's production pointer)")
    p.add_argument("--min-requests", type=float, default=DEFAULT_MIN_REQUESTS,
                   help="requests a step must serve before it can be judged healthy (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the steps it would take and exit")
    p.set_defaults(func=_cmd_rollout)
