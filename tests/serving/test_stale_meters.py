"""Stale meters through the real servers: a meter silent for 63 h is answered with its weekly profile, flagged in V1
and V2 and counted in Prometheus, not with a forecast made from missing lags; a meter with no usable history gets a
422 with the reason; a healthy meter's answer beside them is the booster's, unchanged."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import requests

from conftest import booster_predict
from helpers import PYTHON, free_port, start, stop, wait_http
from smart_energy.components.feast_store import copy_feature_repo, open_feature_store, publish
from smart_energy.components.features import FEATURES, build_feature_frame, usable_usage
from smart_energy.components.ingest import ingest_file
from smart_energy.components.online_rows import PROFILE_HOURS
from smart_energy.components.settings import Settings

pytestmark = [pytest.mark.servers, pytest.mark.slow]
NAME = "energy-forecaster"
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"
SILENT_HOURS = 63


def silent_after(hourly: pd.DataFrame, meter: str, hours: int) -> pd.DataFrame:
    """``hourly`` as meter ``meter``, then ``hours`` hours with no reading (as ingest writes a hole at the end)."""
    hourly = hourly.assign(meter_id=meter)
    last = hourly["timestamp"].max()
    hole = pd.DataFrame({"meter_id": meter, "timestamp": pd.date_range(last + timedelta(hours=1), periods=hours,
                                                                       freq="h")})
    hole = hole.assign(**{c: np.nan for c in hourly.columns if c not in ("meter_id", "timestamp")})
    hole["valid_minutes"], hole["is_complete"] = 0, False
    return pd.concat([hourly, hole.astype(hourly.dtypes.to_dict())], ignore_index=True)


def profile_kw(hourly: pd.DataFrame, hour: pd.Timestamp) -> float:
    """By hand: the mean of the same weekday and hour over the 4 weeks up to the meter's last complete hour."""
    usage = pd.Series(usable_usage(hourly).to_numpy(), index=pd.DatetimeIndex(hourly["timestamp"])).dropna()
    window = usage[usage.index > usage.index.max() - pd.Timedelta(hours=PROFILE_HOURS)]
    return float(window[(window.index.dayofweek == hour.dayofweek) & (window.index.hour == hour.hour)].mean())


@pytest.fixture(scope="module")
def stale(trained, tmp_path_factory):
    """The six-week model served over a feature repo holding household-1, the same readings then 63 silent hours,
    and a meter whose every hour is incomplete."""
    _, model_dir, metadata = trained
    root = tmp_path_factory.mktemp("stale")
    household = ingest_file(model_dir.parent / "six_weeks.txt").hourly
    # its last hour (17:00, 23 minutes) is incomplete already: 62 more make 63 hours without a complete reading
    silent = silent_after(household, "silent-63h", SILENT_HOURS - 1)
    nothing = silent_after(household.head(1), "no-history", 8 * 24).iloc[1:]
    settings = Settings(feature_repo=copy_feature_repo(root / "repo"), data_root=root / "data",
                        artifact_uri=(root / "a").as_uri())
    publish(pd.concat([household, silent, nothing], ignore_index=True), open_feature_store(settings), settings)
    port, predictor_port = free_port(), free_port()
    env = settings.as_env()
    procs = [start([PYTHON, "-m", "smart_energy.serving.predictor", "--model_dir", str(model_dir), "--http_port",
                    str(predictor_port)], root / "predictor.log", env=env),
             start([PYTHON, "-m", "smart_energy.serving.transformer", "--model_dir", str(model_dir), "--http_port",
                    str(port), "--predictor_host", f"127.0.0.1:{predictor_port}"], root / "transformer.log", env=env)]
    try:
        wait_http(f"http://127.0.0.1:{predictor_port}/v2/health/ready", timeout=90, proc=procs[0])
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=90, proc=procs[1])
        yield {"url": f"http://127.0.0.1:{port}", "model_dir": model_dir, "household": household, "silent": silent,
               "features": build_feature_frame(pd.concat([household, silent], ignore_index=True))}
    finally:
        for proc in procs:
            stop(proc)


def v1(stale, *instances):
    return requests.post(stale["url"] + V1, json={"instances": list(instances)}, timeout=10)


def v2(stale, meters, timestamps=None):
    inputs = [{"name": "meter_id", "datatype": "BYTES", "shape": [len(meters)], "data": meters}]
    if timestamps:
        inputs.append({"name": "timestamp", "datatype": "BYTES", "shape": [len(meters)], "data": timestamps})
    return requests.post(stale["url"] + V2, json={"inputs": inputs}, timeout=10)


def last_row(stale, meter):
    rows = stale["features"][stale["features"]["meter_id"] == meter]
    return rows.iloc[[-1]]


def fallbacks_counted(stale, reason: str) -> float:
    text = requests.get(stale["url"] + "/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith(f'se_fallback_forecasts_total{{reason="{reason}"}}')]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_a_meter_silent_for_63_hours_gets_its_weekly_profile_flagged(stale):
    row = last_row(stale, "silent-63h")
    hour = row["event_timestamp"].iloc[0]
    model_kw = booster_predict(stale["model_dir"], row[FEATURES].to_numpy(dtype=np.float64))[0]
    before = fallbacks_counted(stale, "meter_silent")
    resp = v1(stale, {"meter_id": "silent-63h"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # what the servers answered before: the model on a row whose every recent lag is missing (~3.3 kW here)
    assert body["predictions"][0] != pytest.approx(model_kw, abs=1e-3)
    assert body["predictions"] == [pytest.approx(profile_kw(stale["silent"], hour), rel=1e-9)]
    assert body["fallback"] == ["profile"] and body["fallback_reason"] == ["meter_silent"]
    assert body["stale_hours"] == [SILENT_HOURS]
    assert fallbacks_counted(stale, "meter_silent") == before + 1
    # V2: the same, as parameters
    resp = v2(stale, ["silent-63h"])
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["outputs"][0]["data"] == pytest.approx(body["predictions"], abs=1e-9)
    assert answer["parameters"]["fallback"] == "profile" and answer["parameters"]["stale_hours"] == str(SILENT_HOURS)
    assert answer["parameters"]["fallback_reason"] == "meter_silent"
    # the profile follows the hour: the next weekday-hours differ (not a flat line)
    later = [v1(stale, {"meter_id": "silent-63h", "timestamp": (hour + timedelta(hours=k)).isoformat()}).json()
             for k in range(1, 6)]
    assert [a["stale_hours"] for a in later] == [[SILENT_HOURS + k] for k in range(1, 6)]
    assert [a["predictions"][0] for a in later] == pytest.approx(
        [profile_kw(stale["silent"], hour + timedelta(hours=k)) for k in range(1, 6)], rel=1e-9)
    assert len({round(a["predictions"][0], 6) for a in later}) == 5


def test_a_healthy_meter_beside_a_stale_one_keeps_the_boosters_answer(stale):
    row = last_row(stale, "household-1")[FEATURES].to_numpy(dtype=np.float64)
    alone = v1(stale, {"meter_id": "household-1"}).json()
    assert "fallback" not in alone  # nothing changes in a healthy meter's answer
    both = v1(stale, {"meter_id": "household-1"}, {"meter_id": "silent-63h"}).json()
    assert both["predictions"][0] == pytest.approx(booster_predict(stale["model_dir"], row)[0], abs=1e-6)
    assert both["predictions"][0] == alone["predictions"][0]
    assert both["fallback"] == [None, "profile"] and both["stale_hours"][1] == SILENT_HOURS
    resp = v2(stale, ["household-1", "silent-63h"]).json()
    assert resp["parameters"]["fallback"] == ",profile" and resp["outputs"][0]["data"][0] == alone["predictions"][0]


def test_a_meter_with_no_usable_history_gets_a_422_with_the_reason(stale):
    for resp in (v1(stale, {"meter_id": "no-history"}), v2(stale, ["no-history"]),
                 v1(stale, {"meter_id": "household-1"}, {"meter_id": "no-history"})):
        assert resp.status_code == 422, resp.text
        assert resp.json()["reason"] == "no_history"
        assert "'no-history' has no usable history: no complete hour" in resp.json()["error"]


def test_an_hour_after_the_online_row_is_the_profiles_once_the_meter_is_stale(stale):
    """The online store holds household-1's row for 18:00 (its last complete hour 16:00): 19:00 is still refused as
    before (1 h late is not stale), 22:00 is answered by the profile (5 h without a reading), 2030 is refused."""
    hour = last_row(stale, "household-1")["event_timestamp"].iloc[0]
    late = v1(stale, {"meter_id": "household-1", "timestamp": (hour + timedelta(hours=1)).isoformat()})
    assert late.status_code == 422 and late.json()["reason"] == "stale_features", late.text
    later = v1(stale, {"meter_id": "household-1", "timestamp": (hour + timedelta(hours=4)).isoformat()})
    assert later.status_code == 200, later.text
    body = later.json()
    assert body["fallback"] == ["profile"] and body["stale_hours"] == [5] and body["fallback_reason"] == ["meter_silent"]
    assert body["predictions"][0] == pytest.approx(profile_kw(stale["household"], hour + timedelta(hours=4)), rel=1e-9)
    years = v2(stale, ["household-1"], ["2030-01-01T00:00:00Z"])
    assert years.status_code == 422 and "not the requested" in years.json()["error"], years.text
    assert not math.isnan(body["predictions"][0])
