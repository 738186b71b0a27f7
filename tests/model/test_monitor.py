"""`smart-energy monitor`: the HTML report opened in a real headless browser shows every plot and the same
numbers as its JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.features import DRIFT_FEATURES

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(shared_data, dayahead_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    env = {**os.environ, "SE_FEATURE_REPO": str(copy_feature_repo(root / "feature_repo")),
           "SE_ARTIFACT_URI": (root / "artifacts").as_uri()}
    cli = [sys.executable, "-m", "smart_energy.cli"]
    subprocess.run([*cli, "train", "--data", str(shared_data), "--model-dir", str(root / "model"),
                    "--holdout-weeks", "4", "--n-estimators", "200"], check=True, capture_output=True, env=env)
    shutil.copytree(dayahead_model["model_dir"], root / "dayahead")  # `train --horizon 24 --holdout-weeks 4`
    proc = subprocess.run([*cli, "monitor", "--data", str(shared_data), "--last-weeks", "4", "--model-dir",
                           str(root / "model"), "--dayahead-model", str(root / "dayahead"), "--tariff", "hp-hc",
                           "--out", str(root / "out")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    return {"root": root, "printed": printed, "json": json.loads((root / "out" / "report.json").read_text()),
            "html": root / "out" / "report.html"}


def test_report_numbers(report):
    q, d, p = report["json"]["data_quality"], report["json"]["drift"], report["json"]["performance"]
    assert q["rows_read"] == q["rows_valid"] + q["rows_missing"] + q["rows_quarantined"] == 106_952
    assert p["hours_scored"] == 4 * 7 * 24 and len(p["mae_by_hour_of_day"]) == 24
    assert p["mae_kw"] < p["persistence_mae_kw"] < p["seasonal_24h_mae_kw"]
    assert d["window"] == "week" and d["windows"] == len(d["p_values"]) >= 4
    for row in d["p_values"]:
        assert all(0 <= v <= 1 for k, v in row.items() if k not in ("window_start", "rows", "drift"))
    assert report["printed"]["mae_kw"] == p["mae_kw"]
    assert d["features"] == DRIFT_FEATURES and d["share"] == 0.5
    for row in d["p_values"]:  # a window drifted exactly when half of the watched features did
        below = sum(row[f] < 0.05 / len(DRIFT_FEATURES) for f in DRIFT_FEATURES)
        assert row["drift"] == (below >= len(DRIFT_FEATURES) / 2)


def test_report_day_ahead_and_advice(report):
    day, advice = report["json"]["dayahead"], report["json"]["advice"]
    assert day["origins"] == 4 * 7 * 24 and 0.75 <= day["coverage_p10_p90"] <= 0.85
    assert day["mae_kw"] < min(day[f"{b}_mae_kw"] for b in ("persistence", "seasonal_24h", "seasonal_168h"))
    assert advice["tariff"] == "hp-hc" and len(advice["next_24h"]) == 24
    assert day["savings_eur_per_year"] == advice["savings"]["eur_per_year"] > 0
    assert report["printed"]["dayahead_mae_kw"] == day["mae_kw"]


def test_the_page_renders_every_plot_and_the_json_numbers_in_a_browser(report, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (make test installs it)"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", report["html"].as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    widths = re.findall(r'<img alt="([a-z_]+)"[^>]*data-width="(-?\d+)"', dom)
    assert {name for name, _ in widths} == {"quality", "drift", "forecast", "by_week", "by_hour", "band", "loads"}
    assert all(int(width) > 0 for _, width in widths), widths  # decoded by the browser
    shown = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]+)"', dom))
    assert len(shown) >= 20 and "dayahead.coverage_p10_p90" in shown and "dayahead.savings_eur_per_year" in shown
    for key, value in shown.items():
        section, name = key.split(".")
        assert float(value) == pytest.approx(report["json"][section][name], rel=1e-12), key
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,3000",
                    f"--screenshot={shot}", report["html"].as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
