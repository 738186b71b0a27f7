"""Features next to a multi-day hole in the readings: whatever reaches into it is missing, never bridged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.features import LAGS, WINDOWS, build_feature_frame, find_gaps, usable_usage
from smart_energy.components.ingest import ingest_file
from helpers import with_hole

HOLE = ("2007-01-10 00:00", "2007-01-13 00:00")  # 72 hours


@pytest.fixture(scope="module", params=[False, True], ids=["question-marks", "lines-dropped"])
def gap_hourly(request, shared_data, tmp_path_factory) -> pd.DataFrame:
    path = with_hole(shared_data, tmp_path_factory.mktemp("gap") / "gap.txt", [HOLE], drop_lines=request.param)
    return ingest_file(path).hourly


def test_the_hole_is_found_and_reported(gap_hourly):
    assert find_gaps(gap_hourly) == [{"meter_id": "household-1", "start": "2007-01-10T00:00:00+00:00",
                                      "end": "2007-01-13T00:00:00+00:00", "hours": 72}]


def test_no_feature_crosses_the_hole(gap_hourly):
    start, end = (pd.Timestamp(t, tz="UTC") for t in HOLE)
    usage = usable_usage(gap_hourly).set_axis(gap_hourly["timestamp"])
    # the slice is otherwise complete around the hole, so "missing" below means "in the hole"
    around = usage[(usage.index >= start - pd.Timedelta(days=8)) & (usage.index < end + pd.Timedelta(days=8))]
    assert around.isna().sum() == 72
    features = build_feature_frame(gap_hourly).set_index("event_timestamp")
    after = features[(features.index >= start) & (features.index < end + pd.Timedelta(hours=24 * 7 + 72))]
    hole = pd.date_range(start, end, freq="h", inclusive="left")
    for t, row in after.iterrows():
        for k in LAGS:
            source = t - pd.Timedelta(hours=k)
            if source in hole:
                assert np.isnan(row[f"usage_lag_{k}h"]), (t, k)
            else:
                assert row[f"usage_lag_{k}h"] == pytest.approx(usage[source]), (t, k)
        for w in WINDOWS:
            window = pd.date_range(t - pd.Timedelta(hours=w), t, freq="h", inclusive="left")
            reaches = window.isin(hole).any()
            assert np.isnan(row[f"usage_mean_{w}h"]) == reaches, (t, w)
            if not reaches:
                assert row[f"usage_mean_{w}h"] == pytest.approx(usage[window].mean()), (t, w)
        day = pd.date_range(t - pd.Timedelta(hours=24), t, freq="h", inclusive="left")
        assert np.isnan(row["sub_metering_3_share_24h"]) == day.isin(hole).any(), t
    # right after the hole: only the week-old lag (from before the hole) and the calendar are known
    first = features.loc[end]
    assert first["usage_lag_168h"] == pytest.approx(usage[end - pd.Timedelta(hours=168)])
    assert first[["usage_lag_1h", "usage_lag_24h", "usage_mean_3h", "usage_mean_168h", "usage_std_24h",
                  "unmetered_share_24h"]].isna().all()
