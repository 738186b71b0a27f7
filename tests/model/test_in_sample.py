"""`evaluate` says when it scores the hours a model was trained on: a warning on stderr and ``in_sample: true``
(next hour and day ahead); hours after the training window, or another meter's, are out of sample."""

from __future__ import annotations

import pandas as pd
import pytest

from smart_energy.components.dayahead import evaluate_dayahead, train_dayahead
from smart_energy.components.evaluate import evaluate, in_sample
from smart_energy.components.ingest import split_raw_file
from smart_energy.components.settings import Settings
from smart_energy.components.train import train

pytestmark = pytest.mark.slow
CUT = "2007-01-14 00:00:00"  # four weeks after the first reading: trained on before, scored after too


@pytest.fixture(scope="module")
def models(shared_data, tmp_path_factory):
    from smart_energy.components.feast_store import copy_feature_repo

    root = tmp_path_factory.mktemp("in_sample")
    early, late = root / "early.txt", root / "late.txt"
    split_raw_file(shared_data, CUT, early, late)
    with open(late) as src, open(root / "two_weeks.txt", "w") as out:  # the two weeks after the cut
        out.writelines(line for _, line in zip(range(14 * 1440 + 1), src))
    settings = Settings(feature_repo=copy_feature_repo(root / "feature_repo"), data_root=root / "data",
                        artifact_uri=(root / "artifacts").as_uri())
    hour = train(early, root / "hour", settings, params={"num_boost_round": 30})
    day = train_dayahead(early, root / "day", settings, params={"num_boost_round": 20})
    return {"root": root, "settings": settings, "early": early, "late": root / "two_weeks.txt",
            "hour": hour, "day": day}


def test_next_hour_on_its_training_hours_warns_and_says_in_sample(models, capsys):
    root = models["root"]
    result = evaluate(root / "hour", models["early"], settings=models["settings"])
    err = capsys.readouterr().err
    assert result["in_sample"] is True
    assert 0.9 * result["hours_scored"] <= result["in_sample_hours"] <= result["hours_scored"]
    assert f"evaluate: warning: {result['in_sample_hours']:,} of {result['hours_scored']:,} scored hours" in err
    assert "training window" in err and "--holdout-weeks" in err


def test_next_hour_after_its_training_window_is_out_of_sample(models, capsys):
    root = models["root"]
    result = evaluate(root / "hour", models["late"], history=models["early"], settings=models["settings"])
    assert result["first_hour"] > models["hour"]["training_window"]["end"]
    assert (result["in_sample"], result["in_sample_hours"]) == (False, 0)
    assert "evaluate: warning" not in capsys.readouterr().err


def test_day_ahead_on_its_training_hours_warns_and_says_in_sample(models, capsys):
    root = models["root"]
    result = evaluate_dayahead(root / "day", models["early"], settings=models["settings"])
    err = capsys.readouterr().err
    assert result["in_sample"] is True and 0 < result["in_sample_pairs"] <= result["hours_scored"]
    assert f"{result['in_sample_pairs']:,} of {result['hours_scored']:,} scored pairs" in err


def test_day_ahead_after_its_training_window_is_out_of_sample(models, capsys):
    root = models["root"]
    result = evaluate_dayahead(root / "day", models["late"], history=models["early"], settings=models["settings"])
    assert (result["in_sample"], result["in_sample_pairs"]) == (False, 0)
    assert "evaluate: warning" not in capsys.readouterr().err


def test_in_sample_needs_the_models_meter_and_hours_inside_the_window(capsys):
    metadata = {"version": "v1", "meters": ["m-1"],
                "training_window": {"start": "2007-01-01 00:00:00+00:00", "end": "2007-01-10 23:00:00+00:00"}}
    hours = pd.Series(pd.to_datetime(["2006-12-31 23:00", "2007-01-05 12:00", "2007-01-10 23:00",
                                      "2007-01-11 00:00"], utc=True))
    assert in_sample(metadata, pd.Series(["m-1"] * 4), hours, hours) == {"in_sample": True, "in_sample_hours": 2}
    assert "2 of 4 scored hours" in capsys.readouterr().err
    assert in_sample(metadata, pd.Series(["m-2"] * 4), hours, hours) == {"in_sample": False, "in_sample_hours": 0}
    # a day-ahead pair is in sample when origin and target both are
    targets = hours + pd.Timedelta(hours=23)
    assert in_sample(metadata, pd.Series(["m-1"] * 4), hours, targets, "pairs")["in_sample_pairs"] == 1
    assert in_sample({"version": "v0"}, pd.Series(["m-1"]), hours[:1], hours[:1])["in_sample"] is False
