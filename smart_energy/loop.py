"""`smart-energy loop`: the closed loop (drift → retrain → canary → promote or roll back), replayed for real.

Replays ``--data`` hour by hour after ``--history``, in accelerated time, through the parts that run in
production: each hour's readings (ingested and quarantined like any file) give the next hour's feature row,
which is pushed to Feast's online store; the forecast is asked of the running transformer → predictor (local
servers, as ``serve`` starts them) by meter and hour; the actual scores it an hour later. The production
model's Alibi Detect detector watches the served rows (``DriftMonitor``, the transformer's own class) and the
served error is compared with persistence on the same hours. Drift, or error at ``SE_RETRAIN_MAE_RATIO`` x
persistence, runs the training pipeline (``pipeline run --local``) on the readings seen so far, at most once
per ``SE_RETRAIN_COOLDOWN_HOURS``. A candidate the pipeline registers is served beside production: it is asked
every hour (so its error is measured on the same hours as production's) and serves ``SE_CANARY_STEPS`` of
them, and the rollout controller's own ``decide`` promotes it or rolls it back. Every move lands in the
registry with its reason, and in Prometheus metrics.

Simulated time: one replayed hour is 3,600 s for the canary's hold (``--canary-hold-hours``).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import requests

from smart_energy.components import registry
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import FEATURES, usable_usage
from smart_energy.components.ingest import ingest_file, require_valid_rows, split_raw_file
from smart_energy.components.online_rows import PROFILE_HOURS, MeterProfile, Planner, model_input, weekly_profile
from smart_energy.components.rollout_policy import Thresholds, VersionMetrics, decide, parse_steps
from smart_energy.components.settings import Settings

# enough past hours for every lag and window of the next hour's feature row, and for the weekly profile of a meter
# silent for up to a week
TAIL_HOURS = PROFILE_HOURS + 24 * 7 + 2
MIN_ERROR_HOURS = 48  # the error trigger needs this many scored hours of the serving model
DEFAULT_CANARY_HOLD_HOURS = 24
DEFAULT_HOLDOUT_DAYS = 3  # the retraining pipeline scores on 3 days; the canary then judges on live hours
REQUEST_TIMEOUT_SECONDS = 10.0

Retrain = Callable[[Path, Path, Settings], dict[str, Any]]  # (raw readings seen, run dir, settings) -> decision


class LoopError(SmartEnergyError):
    """The loop cannot start (no model and no history to train one, data before the history, ...)."""


# --------------------------------------------------------------------------- retraining


def pipeline_retrain(holdout_days: int = DEFAULT_HOLDOUT_DAYS) -> Retrain:
    """Retrain with the next-hour pipeline on kfp.local, as ``pipeline run --local --next-hour-only``; returns its
    register decision. The loop serves the next-hour model alone, so it never trains the day-ahead one."""

    def retrain(raw: Path, run_root: Path, settings: Settings) -> dict[str, Any]:
        from smart_energy.pipelines.local_run import run_local

        run = run_local(raw, pipeline_root=run_root, next_hour_only=True, meter_id=settings.meter_id,
                        holdout_days=holdout_days)
        return run.read_json("register", "decision") | {"run_dir": str(run.run_dir)}

    return retrain


def readings_until(history: Path, data: Path, until: pd.Timestamp, dest: Path) -> Path:
    """One raw file: every line of ``history``, then ``data``'s lines before ``until`` (streamed, header once)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    before, after = dest.with_suffix(".part"), dest.with_suffix(".rest")
    split_raw_file(data, str(until.tz_localize(None) if until.tzinfo else until), before, after)
    opener = gzip.open if history.suffix == ".gz" else open
    with open(dest, "wb") as out:
        with opener(history, "rb") as src:
            shutil.copyfileobj(src, out)
        with open(before, "rb") as src:
            src.readline()  # its header
            shutil.copyfileobj(src, out)
    before.unlink()
    after.unlink()
    return dest


# --------------------------------------------------------------------------- serving


@dataclass
class Deployment:
    """One model version served by its own transformer → predictor pair."""

    version: str
    model_dir: Path
    servers: Any  # serving.client.LocalServers
    session: requests.Session = field(default_factory=requests.Session)

    def forecast(self, meter_id: str, hour: pd.Timestamp) -> tuple[float | None, float, str | None, str, str | None]:
        """(kW or None, seconds, version that answered, error text, fallback) for ``meter_id``'s hour ``hour``;
        fallback is the reason a stale meter's profile answered instead of the model (None: the model did)."""
        body = {"instances": [{"meter_id": meter_id, "timestamp": hour.isoformat()}]}
        start = time.perf_counter()
        try:
            resp = self.session.post(f"{self.servers.url}/v1/models/{self.servers.model_name}:predict", json=body,
                                     timeout=REQUEST_TIMEOUT_SECONDS)
        except requests.RequestException as err:
            return None, time.perf_counter() - start, None, type(err).__name__, None
        seconds = time.perf_counter() - start
        if resp.status_code != 200:
            return None, seconds, None, f"HTTP {resp.status_code}: {resp.text[:200]}", None
        answer = resp.json()
        fallback = (answer.get("fallback_reason") or [None])[0] if answer.get("fallback") else None
        return float(answer["predictions"][0]), seconds, answer.get("model_version"), "", fallback

    def metrics_text(self) -> str:
        return self.session.get(f"{self.servers.url}/metrics", timeout=REQUEST_TIMEOUT_SECONDS).text

    def stop(self) -> None:
        self.session.close()
        self.servers.stop()


@dataclass
class Canary:
    deployment: Deployment
    percent: int
    started_hour: int  # replay index
    step_started_hour: int
    hours: list[int] = field(default_factory=list)  # replay indexes where both versions were asked


# --------------------------------------------------------------------------- the loop


@dataclass
class Loop:
    """The replay. ``run()`` returns the summary and writes the forecasts log, timeline and summary in ``out``."""

    history: Path
    data: Path
    out: Path
    settings: Settings
    retrain: Retrain
    canary_hold_hours: float = DEFAULT_CANARY_HOLD_HOURS
    max_hours: int | None = None
    metrics_port: int | None = None
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        labels = {"registry": self.registry}
        self.m_hours = Counter("se_loop_replayed_hours", "Hours replayed by the closed loop", **labels)
        self.m_alarms = Counter("se_loop_drift_alarms", "Times the watched features turned to data drift", **labels)
        self.m_retrains = Counter("se_loop_retrains", "Training pipeline runs started by the loop", ["trigger"], **labels)
        self.m_promotions = Counter("se_loop_promotions", "Candidates promoted to production by the canary", **labels)
        self.m_rollbacks = Counter("se_loop_rollbacks", "Candidates rolled back by the canary", **labels)
        self.m_served_mae = Gauge("se_loop_served_mae_kw", "MAE (kW) of the forecasts served, last scored hours", **labels)
        self.m_persistence_mae = Gauge("se_loop_persistence_mae_kw", "Persistence MAE (kW) on the same hours", **labels)
        self.m_canary = Gauge("se_loop_canary_traffic_percent", "The candidate's share of the hours it serves", **labels)
        self.m_stage = Gauge("se_model_stage_info", "1 for the version each stage points at", ["stage", "version"],
                             **labels)

    # ----------------------------------------------------------------- set-up

    def _ingest(self, path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
        result = ingest_file(path, meter_id=self.settings.meter_id, min_minutes=self.settings.min_minutes_per_hour)
        require_valid_rows(result, path)
        q = result.quality
        return result.hourly, {"rows_read": q.rows_read, "rows_valid": q.rows_valid, "rows_missing": q.rows_missing,
                               "rows_quarantined": q.rows_quarantined, "quarantine_reasons": q.quarantine_reasons}

    def _deploy(self, version: str) -> Deployment:
        from smart_energy.serving.client import free_port, start_local

        model_dir = registry.download(self.store, self.settings.model_name, version, self.work / "models" / version)
        port, predictor_port = free_port(), free_port()
        log = open(self.out / "logs" / f"{version}.log", "a")
        servers = start_local(model_dir, port, predictor_port, self.settings, log=log)
        self.say(f"loop: serving {version} on 127.0.0.1:{port} (predictor {predictor_port})")
        return Deployment(version, model_dir, servers)

    def _watch(self, deployment: Deployment) -> None:
        """The drift window of the model now in production (its own detector and reference), empty."""
        from smart_energy.serving.monitors import DriftMonitor

        metadata = registry.read_metadata(deployment.model_dir)
        watched = (metadata.get("drift") or {}).get("features")
        # one meter's consecutive hours: judged once the window is full (a day or two of one household is not a
        # sample of its weeks, and K-S calls it drift); the transformer, fed by many meters, judges from 24 rows
        window = self.settings.drift_window
        self.drift = DriftMonitor(registry.load_drift_detector(deployment.model_dir), metadata["features"], window,
                                  min_rows=window, watched=watched, share=self.settings.drift_share)
        self.drift_state = "warming_up"
        self.errors: deque = deque(maxlen=self.settings.drift_window)  # (served, persistence) abs errors

    def _event(self, action: str, hour: pd.Timestamp | None, **fields: Any) -> dict[str, Any]:
        event = {"action": action, "replay_hour": str(hour) if hour is not None else None, **fields}
        self.events.append(event)
        registry.record_event(self.store, self.settings.model_name, {"source": "loop", **event})
        self.say(f"loop: {hour}: {action} " + " ".join(f"{k}={v}" for k, v in fields.items()))
        self._push_metrics()
        return event

    def _set_stage_metric(self) -> None:
        self.m_stage.clear()
        self.m_stage.labels("production", self.production.version).set(1)
        if self.canary:
            self.m_stage.labels("candidate", self.canary.deployment.version).set(1)

    def _push_metrics(self) -> None:
        if self.settings.pushgateway_url:
            from prometheus_client import push_to_gateway

            try:
                push_to_gateway(self.settings.pushgateway_url, job="smart-energy-loop", registry=self.registry,
                                timeout=5)
            except OSError as err:
                self.say(f"loop: could not push metrics to {self.settings.pushgateway_url}: {err}")

    # ----------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        from smart_energy.components.feast_store import apply, open_feature_store, push
        from smart_energy.components.storage import open_store
        from smart_energy.components.online_rows import next_hour_kw

        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.work = self.out / "work"
        self.store = open_store(settings=self.settings)
        self.events: list[dict[str, Any]] = []
        self.canary: Canary | None = None
        seconds = {"retraining": 0.0, "serving_start": 0.0}
        if self.metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(self.metrics_port, addr="127.0.0.1", registry=self.registry)

        history, _ = self._ingest(self.history)
        data, data_quality = self._ingest(self.data)
        if data["timestamp"].min() <= history["timestamp"].max():
            raise LoopError(f"{self.data} starts at {data['timestamp'].min()}, not after the history's last hour "
                            f"{history['timestamp'].max()}; replay readings that follow the history")
        name = self.settings.model_name
        if registry.stage_version(self.store, name, "production") is None:
            self.say(f"loop: no production model of {name}; training one on {self.history}")
            t = time.monotonic()
            decision = self.retrain(self.history, self.out / "pipeline-runs", self.settings)
            seconds["retraining"] += time.monotonic() - t
            self._event("initial-training", None, version=decision.get("version"), reason=decision.get("reason"))
        version = registry.stage_version(self.store, name, "production")
        if version is None:
            raise LoopError(f"no production model of {name} after training on {self.history}; see the pipeline run")

        feast = open_feature_store(self.settings)
        apply(feast, self.settings)
        t = time.monotonic()
        self.production = self._deploy(version)
        seconds["serving_start"] += time.monotonic() - t
        frozen_booster, _ = registry.load_booster(self.production.model_dir)
        frozen_version = version
        self._watch(self.production)
        self._set_stage_metric()

        meter = self.settings.meter_id
        # history then data, one row per hour; the readings known after replay hour i are the first
        # len(history) + i + 1 rows (sliced, never copied or concatenated hour by hour)
        timeline = pd.concat([history, data], ignore_index=True)
        seen = len(history)

        def recent(end: int) -> pd.DataFrame:
            """The known rows (the first ``end``) within ``TAIL_HOURS`` of the newest."""
            part = timeline.iloc[max(0, end - TAIL_HOURS - 1):end]
            return part[part["timestamp"] > part["timestamp"].iloc[-1] - pd.Timedelta(hours=TAIL_HOURS)]

        hours = list(data["timestamp"])
        if self.max_hours is not None:
            hours = hours[: self.max_hours]
        rows: list[dict[str, Any]] = []  # one per replayed hour (the forecasts for it, and its actual)
        pending: dict[pd.Timestamp, dict[str, Any]] = {}
        last_retrain = -10**9
        steps = parse_steps(self.settings.canary_steps)
        thresholds = Thresholds.from_settings(self.settings, min_requests=self.canary_hold_hours)

        planner = Planner(FEATURES)

        def frozen(row: np.ndarray, target: pd.Timestamp, tail: pd.DataFrame) -> tuple[float | None, str | None]:
            """The never-retrained model's answer, decided as the servers decide (``online_rows.plan``), with the
            profile of the loop's own readings."""
            def profiles(_rows: list[int]) -> list[MeterProfile | None]:
                known = weekly_profile(tail)
                return [MeterProfile.from_feast(known["last_complete_hour"].iloc[0], known["profile_kw"].iloc[0])
                        if len(known) else None]

            answer = planner.plan(row[None, :], [target], [None], self.settings.stale_after_hours, profiles)
            if answer.fallback[0] is None:
                return float(next_hour_kw(frozen_booster, row[None, :])[0]), None
            return (answer.kw[0] if answer.fallback[0] == "profile" else None), answer.reason[0]

        def ask_and_log(target: pd.Timestamp, row: np.ndarray, i: int, tail: pd.DataFrame) -> None:
            entry = {"hour": target, "production_version": self.production.version}
            kw, secs, answered, error, fallback = self.production.forecast(meter, target)
            entry |= {"production_kw": kw, "production_seconds": secs, "production_error": error,
                      "production_fallback": fallback}
            entry["frozen_kw"], entry["frozen_fallback"] = frozen(row, target, tail)
            served_by_candidate = False
            if self.canary:
                c = self.canary
                ckw, csecs, _, cerror, cfallback = c.deployment.forecast(meter, target)
                k = i - c.step_started_hour
                served_by_candidate = (k + 1) * c.percent // 100 > k * c.percent // 100 and ckw is not None
                entry |= {"candidate_version": c.deployment.version, "candidate_kw": ckw, "candidate_seconds": csecs,
                          "candidate_error": cerror, "candidate_fallback": cfallback, "canary_percent": c.percent}
                c.hours.append(i)
            entry["served_by"] = "candidate" if served_by_candidate else "production"
            entry["served_version"] = entry["candidate_version"] if served_by_candidate else (answered or
                                                                                              self.production.version)
            entry["served_kw"] = entry["candidate_kw"] if served_by_candidate else kw
            # a stale meter's profile answered, not the model: these hours are counted apart
            entry["fallback"] = entry["candidate_fallback"] if served_by_candidate else fallback
            pending[target] = entry

        # the first hour to forecast follows the history: its feature row is pushed before the replay starts
        tail = recent(seen)
        latest = push(feast, tail, offline=False)
        row = model_input(latest, FEATURES, np.float64)[0]
        ask_and_log(hours[0], row, 0, tail) if len(hours) else None
        self.drift.observe(row[None, :], keys=[(meter, hours[0])])

        for i, hour in enumerate(hours):
            # 1. the hour's readings arrive; its forecasts are scored
            last_two = timeline.iloc[seen + i - 1:seen + i + 1]
            entry = pending.pop(hour, {"hour": hour})
            usage = usable_usage(last_two)
            entry["actual_kw"] = float(usage.iloc[-1]) if pd.notna(usage.iloc[-1]) else None
            entry["persistence_kw"] = float(usage.iloc[-2]) if len(usage) > 1 and pd.notna(usage.iloc[-2]) else None
            if last_two["timestamp"].iloc[0] != hour - pd.Timedelta(hours=1):  # not the hour before
                entry["persistence_kw"] = None
            rows.append(entry)
            self.m_hours.inc()
            scored = entry["actual_kw"] is not None and entry["persistence_kw"] is not None
            if scored and entry.get("served_kw") is not None and entry.get("fallback") is None:
                self.errors.append((abs(entry["served_kw"] - entry["actual_kw"]),
                                    abs(entry["persistence_kw"] - entry["actual_kw"])))
                served, persistence = np.mean(self.errors, axis=0)
                self.m_served_mae.set(served)
                self.m_persistence_mae.set(persistence)
            if i + 1 >= len(hours):
                break
            nxt = hours[i + 1]
            # 2. the next hour's feature row goes to Feast's online store; both servers are asked
            tail = recent(seen + i + 1)
            latest = push(feast, tail, offline=False)
            row = model_input(latest, FEATURES, np.float64)[0]
            if latest["event_timestamp"].iloc[0] != nxt:  # a hole in the data: the row is for the hour after hour
                row = np.full(len(FEATURES), np.nan)
            ask_and_log(nxt, row, i + 1, tail)
            # 3. the monitors
            self.drift.observe(row[None, :], keys=[(meter, nxt)])
            status = self.drift.check()
            entry["drift_status"] = status["status"]
            entry["drifted_features"] = len(status["drifted_features"])
            if status["status"] == "drift" and self.drift_state != "drift":
                self.m_alarms.inc()
                self._event("drift-alarm", hour, version=self.production.version,
                            features=",".join(status["drifted_features"]))
            self.drift_state = status["status"]
            # 4. the canary's verdict, on the hours both versions were asked and scored
            if self.canary:
                self._judge_canary(i, hour, rows, steps, thresholds)
            # 5. retrain?
            trigger = self._trigger()
            if trigger and not self.canary and i - last_retrain >= self.settings.retrain_cooldown_hours:
                last_retrain = i
                t = time.monotonic()
                self._retrain(hour + pd.Timedelta(hours=1), trigger, i)
                seconds["retraining"] += time.monotonic() - t
            if (i + 1) % 24 == 0:
                self._progress(hour, rows[-24:])

        metrics_text = self.production.metrics_text()
        if self.canary:
            self.canary.deployment.stop()
        self.production.stop()
        frame = pd.DataFrame(rows)
        summary = self._summary(frame, frozen_version, data_quality, metrics_text, seconds, started)
        from smart_energy.loop_report import write_outputs

        summary["files"] = write_outputs(frame, summary, self.out)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        return summary

    # ----------------------------------------------------------------- decisions

    def _trigger(self) -> str | None:
        """Why to retrain now (data drift, or served error at the ratio of persistence's), or None."""
        if self.drift_state == "drift":
            drifted = self.drift.status()["drifted_features"]
            return f"data drift: {len(drifted)} of {len(self.drift.features)} watched features ({', '.join(drifted)})"
        if len(self.errors) >= MIN_ERROR_HOURS:
            served, persistence = np.mean(self.errors, axis=0)
            if served >= self.settings.retrain_mae_ratio * persistence:
                return (f"served MAE {served:.3f} kW >= {self.settings.retrain_mae_ratio} x persistence "
                        f"{persistence:.3f} kW over the last {len(self.errors)} scored hours")
        return None

    def _retrain(self, until: pd.Timestamp, trigger: str, i: int) -> None:
        self.m_retrains.labels("drift" if trigger.startswith("data drift") else "error").inc()
        hour = until - pd.Timedelta(hours=1)
        self._event("retrain", hour, trigger=trigger)
        raw = readings_until(self.history, self.data, until, self.work / f"seen-{i:05d}.txt")
        try:
            decision = self.retrain(raw, self.out / "pipeline-runs", self.settings)
        except SmartEnergyError as err:
            self._event("retrain-failed", hour, reason=str(err)[:500])
            return
        finally:
            raw.unlink(missing_ok=True)
        candidate = registry.stage_version(self.store, self.settings.model_name, "candidate")
        if decision.get("stage") != "candidate" or candidate != decision.get("version"):
            self._event("candidate-not-registered", hour, version=decision.get("version"),
                        reason=decision.get("reason"))
            return
        deployment = self._deploy(candidate)
        first = parse_steps(self.settings.canary_steps)[0]
        self.canary = Canary(deployment, first, i + 1, i + 1)
        self.m_canary.set(first)
        self._set_stage_metric()
        self._event("canary-start", hour, version=candidate, percent=first, reason=decision.get("reason"))

    def _version_metrics(self, rows: list[dict[str, Any]], role: str) -> VersionMetrics:
        asked = [rows[j] for j in self.canary.hours if j < len(rows)]
        if not asked:
            return VersionMetrics()
        failed = sum(1 for r in asked if r.get(f"{role}_kw") is None)
        latency = [r[f"{role}_seconds"] for r in asked if r.get(f"{role}_seconds") is not None]
        errs = [abs(r[f"{role}_kw"] - r["actual_kw"]) for r in asked
                if r.get("candidate_kw") is not None and r.get("production_kw") is not None
                and r.get("actual_kw") is not None and r.get("persistence_kw") is not None
                and r.get("fallback") is None]  # a stale meter's profile is both versions' answer: no comparison
        enough = len(errs) >= self.canary_hold_hours
        # a p99 of fewer than 100 requests is their slowest one: one stall on a busy machine would decide
        return VersionMetrics(requests=float(len(asked)), error_rate=failed / len(asked),
                              p99_latency_seconds=float(np.percentile(latency, 99)) if len(latency) >= 100 else None,
                              mae_kw=float(np.mean(errs)) if enough else None)

    def _judge_canary(self, i: int, hour: pd.Timestamp, rows: list[dict[str, Any]], steps: list[int],
                      thresholds: Thresholds) -> None:
        c = self.canary
        cand, prod = self._version_metrics(rows, "candidate"), self._version_metrics(rows, "production")
        held = (i + 1 - c.step_started_hour) * 3600.0
        d = decide(cand, prod, c.percent, steps, held, self.canary_hold_hours * 3600.0, thresholds)
        if d.action == "wait":
            return
        name = self.settings.model_name
        measured = {"candidate_mae_kw": cand.mae_kw, "production_mae_kw": prod.mae_kw,
                    "hours": len(c.hours), "candidate_p99_seconds": cand.p99_latency_seconds}
        if d.action == "step":
            c.percent, c.step_started_hour = d.traffic_percent, i + 1
            self.m_canary.set(c.percent)
            self._event("canary-step", hour, version=c.deployment.version, percent=c.percent, reason=d.reason)
        elif d.action == "rollback":
            c.deployment.stop()
            self.canary = None
            registry.clear_stage(self.store, name, "candidate", f"rolled back by the canary: {d.reason}")
            self.m_rollbacks.inc()
            self.m_canary.set(0)
            self._set_stage_metric()
            self._event("rollback", hour, version=c.deployment.version, reason=d.reason, **measured)
        elif d.action == "promote":
            old = self.production
            registry.set_stage(self.store, name, "production", c.deployment.version,
                               reason=f"promoted by the canary: {d.reason}")
            registry.clear_stage(self.store, name, "candidate", f"promoted to production: {d.reason}")
            self.production, self.canary = c.deployment, None
            old.stop()
            self._watch(self.production)
            self.m_promotions.inc()
            self.m_canary.set(0)
            self._set_stage_metric()
            self._event("promote", hour, version=c.deployment.version, previous=old.version, reason=d.reason,
                        **measured)

    def _progress(self, hour: pd.Timestamp, day: list[dict[str, Any]]) -> None:
        scored = [r for r in day if r.get("served_kw") is not None and r.get("actual_kw") is not None
                  and r.get("persistence_kw") is not None and r.get("fallback") is None]
        mae = np.mean([abs(r["served_kw"] - r["actual_kw"]) for r in scored]) if scored else float("nan")
        pers = np.mean([abs(r["persistence_kw"] - r["actual_kw"]) for r in scored]) if scored else float("nan")
        canary = f", canary {self.canary.deployment.version} at {self.canary.percent}%" if self.canary else ""
        self.say(f"loop: {hour:%Y-%m-%d}: {len(scored)} h scored, served MAE {mae:.3f} kW (persistence {pers:.3f}), "
                 f"drift {self.drift_state}, production {self.production.version}{canary}")

    # ----------------------------------------------------------------- summary

    def _summary(self, frame: pd.DataFrame, frozen_version: str, data_quality: dict[str, Any], metrics_text: str,
                 seconds: dict[str, float], started: float) -> dict[str, Any]:
        has = lambda c: frame[c].notna() if c in frame else pd.Series(False, index=frame.index)  # noqa: E731
        answered = has("served_kw") & has("actual_kw") & has("persistence_kw")
        scored = answered & ~has("fallback")  # the model's hours; a stale meter's profile hours are counted apart
        s, f = frame[scored], frame[answered & has("fallback")]
        mae = lambda c: float((s[c] - s["actual_kw"]).abs().mean()) if len(s) else None  # noqa: E731
        fallback_mae = lambda c: float((f[c] - f["actual_kw"]).abs().mean()) if len(f) else None  # noqa: E731
        count = lambda action: sum(1 for e in self.events if e["action"] == action)  # noqa: E731
        total = time.monotonic() - started
        replayed = len(frame)
        from prometheus_client.parser import text_string_to_metric_families

        transformer = {}
        for family in text_string_to_metric_families(metrics_text):
            if family.name in ("se_forecast_mae_kw", "se_baseline_mae_kw", "se_forecast_scored_hours",
                               "se_fallback_forecasts"):
                for sample in family.samples:
                    transformer[f"{sample.name}{json.dumps(sample.labels, sort_keys=True)}"] = sample.value
        return {
            "hours": int(scored.sum()), "hours_replayed": replayed,
            "hours_skipped": {"target_missing": int((~has("actual_kw")).sum()),
                              "no_persistence": int((has("actual_kw") & ~has("persistence_kw")).sum()),
                              "no_forecast": int((has("actual_kw") & has("persistence_kw") & ~has("served_kw")).sum())},
            "first_hour": str(frame["hour"].min()), "last_hour": str(frame["hour"].max()),
            "mae_kw": mae("served_kw"), "persistence_mae_kw": mae("persistence_kw"), "frozen_mae_kw": mae("frozen_kw"),
            "fallback_hours": int(len(f)), "fallback_hours_asked": int(has("fallback").sum()),
            "fallback_mae_kw": fallback_mae("served_kw"), "fallback_persistence_mae_kw": fallback_mae("persistence_kw"),
            "frozen_version": frozen_version, "production_version": self.production.version,
            "versions_served": sorted(frame.loc[has("served_kw"), "served_version"].dropna().unique().tolist()),
            "watched_features": len(self.drift.features), "drift_share": self.settings.drift_share,
            "drift_alarms": count("drift-alarm"), "retrains": count("retrain"), "promotions": count("promote"),
            "rollbacks": count("rollback"), "events": self.events, "data_quality": data_quality,
            "transformer_metrics": transformer,
            "seconds": {"total": round(total, 1), "retraining": round(seconds["retraining"], 1),
                        "serving_start": round(seconds["serving_start"], 1),
                        "replay_per_week": round((total - seconds["retraining"]) / max(replayed, 1) * 168, 1)},
        }
