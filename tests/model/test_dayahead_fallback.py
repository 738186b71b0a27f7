"""`evaluate` of a day-ahead model counts the origins the servers answer with the meter's weekly profile apart
from the model's, as the next-hour `evaluate` does: after a 72 h hole in the scored weeks, the first origins back
have most usage lags missing."""

from __future__ import annotations

from helpers import with_hole

from smart_energy.components.dayahead import evaluate_dayahead
from smart_energy.components.feast_store import copy_feature_repo
from smart_energy.components.settings import Settings


def test_fallback_origins_are_counted_apart(dayahead_model, shared_data, tmp_path):
    settings = Settings(feature_repo=copy_feature_repo(tmp_path / "repo"), artifact_uri=(tmp_path / "a").as_uri())
    holed = with_hole(shared_data, tmp_path / "holed.txt", [("2007-02-10 00:00", "2007-02-13 00:00")])
    plain = evaluate_dayahead(dayahead_model["model_dir"], shared_data, last_weeks=4, settings=settings)
    result = evaluate_dayahead(dayahead_model["model_dir"], holed, last_weeks=4, settings=settings)
    assert plain["fallback"] == {"origins": 0, "pairs": 0}
    fallback = result["fallback"]
    assert fallback["origins"] >= 1 and 1 <= fallback["pairs"] <= 24 * fallback["origins"]
    assert set(fallback["by_reason"]) == {"lags_missing"} and fallback["mae_kw"] > 0
    # the hole takes pairs away; of those left, the profile's are no longer the model's
    assert result["hours_scored"] + fallback["pairs"] < plain["hours_scored"]
