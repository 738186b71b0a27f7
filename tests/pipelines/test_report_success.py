"""The pipeline reports its success to a real Prometheus Pushgateway (Debian's prometheus-pushgateway)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import requests

from smart_energy.components.pipeline_steps import PIPELINE_JOB, report_success
from smart_energy.components.settings import Settings
from helpers import free_port, start, stop, wait_http


@pytest.fixture
def pushgateway(tmp_path):
    port = free_port()
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: earlier runs' groups would be read
    proc = start(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}",
                  f"--persistence.file={tmp_path / 'pushgateway.data'}"], tmp_path / "pgw.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=30, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def test_success_is_pushed_with_the_job_label(pushgateway):
    settings = replace(Settings(), pushgateway_url=pushgateway)
    assert report_success(settings, promoted=True, now=1_700_000_000.0)
    text = requests.get(f"http://{pushgateway}/metrics", timeout=5).text
    line = re.search(r'^se_pipeline_last_success_timestamp_seconds\{(.*)\} (\S+)$', text, re.M)
    assert line and f'job="{PIPELINE_JOB}"' in line.group(1)
    assert float(line.group(2)) == 1.7e9
    assert 'model="energy-forecaster"' in line.group(1)  # the settings' next-hour model by default
    assert re.search(r'^se_pipeline_last_run_promoted\{.*\} 1$', text, re.M)
    assert report_success(settings, promoted=False, now=1_700_000_100.0)  # a later run replaces the group
    text = requests.get(f"http://{pushgateway}/metrics", timeout=5).text
    assert "1.7000001e+09" in text and re.search(r'^se_pipeline_last_run_promoted\{.*\} 0$', text, re.M)


def test_each_model_is_its_own_group(pushgateway):
    """The loop's next-hour-only retrain must not refresh the day-ahead model's time (SmartEnergyPipelineStale
    is per model)."""
    settings = replace(Settings(), pushgateway_url=pushgateway)
    assert report_success(settings, promoted=True, model="energy-forecaster-dayahead", now=1_600_000_000.0)
    assert report_success(settings, promoted=True, model="energy-forecaster", now=1_700_000_000.0)
    text = requests.get(f"http://{pushgateway}/metrics", timeout=5).text
    times = dict(re.findall(r'^se_pipeline_last_success_timestamp_seconds\{.*model="([^"]+)".*\} (\S+)$', text, re.M))
    assert {k: float(v) for k, v in times.items()} == {"energy-forecaster-dayahead": 1.6e9, "energy-forecaster": 1.7e9}


def test_no_pushgateway_configured_reports_nothing():
    assert report_success(Settings(pushgateway_url=""), promoted=True) is False
