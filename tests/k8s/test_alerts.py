"""Alert rules: promtool checks and unit tests, coverage of every alert both ways, copies in sync."""

from __future__ import annotations

import re

import subprocess
from pathlib import Path

import yaml

from smart_energy.components.settings import Settings
from k8s_objects import REPO

RULES = REPO / "manifests" / "base" / "monitoring" / "alerts.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
EXPECTED_ALERTS = {
    "SmartEnergyDriftDetected", "SmartEnergyForecastWorseThanBaseline", "SmartEnergyHighLatencyP99",
    "SmartEnergyHighErrorRate", "SmartEnergyCanaryWorseThanProduction", "SmartEnergyPipelineStale",
    "SmartEnergyCanaryRolledBack", "SmartEnergyFallbackShareHigh", "SmartEnergyDayAheadCoverage",
}


def _alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_promtool_check_rules():
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 12 rules found" in out.stdout


def test_promtool_unit_tests_pass():
    out = subprocess.run(["promtool", "test", "rules", str(UNIT_TESTS)], capture_output=True, text=True,
                         timeout=120, cwd=UNIT_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_not_firing():
    assert set(_alerts()) == EXPECTED_ALERTS
    fired, silent = set(), set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert fired == EXPECTED_ALERTS, EXPECTED_ALERTS - fired
    assert silent == EXPECTED_ALERTS, EXPECTED_ALERTS - silent


def test_every_alert_has_severity_and_text():
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_thresholds_match_the_rollout_settings():
    defaults, alerts = Settings(), _alerts()
    assert f"> {defaults.max_p99_latency_seconds}" in alerts["SmartEnergyHighLatencyP99"]["expr"]
    assert f"> {defaults.max_error_rate}" in alerts["SmartEnergyHighErrorRate"]["expr"]
    assert f"{defaults.max_mae_ratio} * min by (isvc) (se_forecast_mae_kw)" in \
        alerts["SmartEnergyCanaryWorseThanProduction"]["expr"]
    assert f">= {defaults.drift_share} * count by (isvc) (se_drift_detected)" in alerts["SmartEnergyDriftDetected"]["expr"]


# series a transformer exports (its PodMonitor adds `isvc`); the pipeline's and the loop's pushed ones carry none
SERVING_METRICS = re.compile(r"\b(se_(?:requests_total|request_duration_seconds_bucket|drift_detected|forecast_mae_kw|"
                             r"baseline_mae_kw|fallback_forecasts_total|prediction_kw_count|dayahead_coverage|dayahead_scored_pairs)|"
                             r"se:[a-z0-9_:]+)\b")


def _aggregations(expr: str) -> list[tuple[str, str]]:
    """(aggregation operator, its grouping) for every sum/min/max/count in the PromQL expression."""
    return [(m.group(1), m.group(2) or "") for m in
            re.finditer(r"\b(sum|min|max|count)\b\s*(?:by\s*\(([^)]*)\))?\s*\(", expr)]


def test_serving_rules_are_per_inference_service():
    """Every aggregation over a transformer's series keeps `isvc`, and every comparison between series matches on it,
    so the next-hour and the day-ahead model never mix (alerts_test.yaml shows it with both models' series)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    serving = [r for g in groups for r in g["rules"] if SERVING_METRICS.search(r["expr"])]
    assert {r.get("alert") or r.get("record") for r in serving} == {
        "se:request_error_ratio:rate5m", "se:request_duration_seconds:p99_5m", "SmartEnergyDriftDetected",
        "SmartEnergyForecastWorseThanBaseline", "SmartEnergyHighLatencyP99", "SmartEnergyHighErrorRate",
        "SmartEnergyCanaryWorseThanProduction", "SmartEnergyFallbackShareHigh", "se:dayahead_coverage:pairs_weighted",
        "SmartEnergyDayAheadCoverage"}
    for rule in serving:
        name = rule.get("alert") or rule.get("record")
        for op, grouping in _aggregations(rule["expr"]):
            assert "isvc" in [g.strip() for g in grouping.split(",")], f"{name}: {op} without `by (isvc, ...)`"
        assert "scalar(" not in rule["expr"] and "on()" not in rule["expr"].replace(" ", ""), name
        for match in re.findall(r"\bon\s*\(([^)]*)\)", rule["expr"]):
            assert "isvc" in match, f"{name}: on({match}) compares across InferenceServices"
        if "alert" in rule:
            assert "{{ $labels.isvc }}" in rule["annotations"]["summary"], name


def test_day_ahead_model_is_tested_firing_and_not_firing():
    """Both models' series are in the unit tests, and each serving alert fires with isvc of the day-ahead model."""
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case.get("alert_rule_test", [])
             for alert in check["exp_alerts"] if alert["exp_labels"].get("isvc") == "energy-forecaster-dayahead"}
    assert fired >= {"SmartEnergyDriftDetected", "SmartEnergyHighLatencyP99", "SmartEnergyHighErrorRate",
                     "SmartEnergyCanaryWorseThanProduction", "SmartEnergyFallbackShareHigh"}
    mixed = [case["name"] for case in cases
             if {"energy-forecaster", "energy-forecaster-dayahead"} <= set(re.findall(
                 r'isvc="([^"]+)"', " ".join(s["series"] for s in case["input_series"])))]
    assert len(mixed) >= 4, mixed


def _exposed_metric_names() -> set[str]:
    """Every sample name our code exposes: serving's collectors, and the gauges the pipeline pushes."""
    import ast

    from prometheus_client.metrics import MetricWrapperBase

    import smart_energy.components.pipeline_steps
    import smart_energy.serving.metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
                "summary": ("_sum", "_count")}
    names = set()
    for collector in vars(smart_energy.serving.metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    import smart_energy.loop

    kinds = {"Gauge": "gauge", "Counter": "counter"}
    for module in (smart_energy.components.pipeline_steps, smart_energy.loop):  # pushed to the Pushgateway
        tree = ast.parse(open(module.__file__).read())
        names |= {call.args[0].value + suffix for call in ast.walk(tree) if isinstance(call, ast.Call)
                  and getattr(call.func, "id", None) in kinds and isinstance(call.args[0], ast.Constant)
                  for suffix in suffixes[kinds[call.func.id]]}
    return names


def test_every_metric_the_rules_use_is_exposed():
    exposed = _exposed_metric_names()
    used = set(re.findall(r"\b(se_[a-z0-9_]+)", RULES.read_text()))
    assert used, "no se_* metric in the rules?"
    assert used <= exposed, sorted(used - exposed)
    # and the ones the alerts are about are among them
    assert {"se_requests_total", "se_request_duration_seconds_bucket", "se_drift_detected", "se_forecast_mae_kw",
            "se_baseline_mae_kw", "se_pipeline_last_success_timestamp_seconds", "se_fallback_forecasts_total"} <= used


def test_generated_copies_are_in_sync():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_alerts", REPO / "manifests" / "sync_alerts.py")
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    for path, text in sync.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run python manifests/sync_alerts.py"
    rule = yaml.safe_load(sync.PROMETHEUS_RULE.read_text())
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
