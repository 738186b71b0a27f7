"""Write the PrometheusRule and the chart's copy from manifests/base/monitoring/alerts.yaml.

The plain Prometheus rules file is the one source of truth (promtool tests it); run this after
editing it: ``python manifests/sync_alerts.py``. tests/k8s fails when the copies are stale.
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "base" / "monitoring" / "alerts.yaml"
PROMETHEUS_RULE = HERE / "base" / "monitoring" / "prometheusrule.yaml"
CHART_COPY = HERE.parent / "helm" / "smart-energy" / "files" / "alerts.yaml"
HEADER = "# GENERATED from manifests/base/monitoring/alerts.yaml by manifests/sync_alerts.py; do not edit.\n"


def prometheus_rule(rules: dict) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "smart-energy", "labels": {"release": "kube-prometheus-stack"}},
        "spec": rules,
    }


def rendered() -> dict[Path, str]:
    text = SOURCE.read_text()
    rule = prometheus_rule(yaml.safe_load(text))
    return {
        PROMETHEUS_RULE: HEADER + yaml.safe_dump(rule, sort_keys=False, width=120),
        CHART_COPY: HEADER + text,
    }


def main() -> None:
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
