"""Advice and the savings replay: runs, recommended windows, and a backtest that never moves more energy than
a sub-meter measured nor raises a bill, on synthetic hours computed by hand and on the real shared file."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.advice import (
    LOADS, MAX_SHIFT_HOURS, MIN_DAYS_TO_ANNUALISE, AdviceError, advise, detect_runs, recommend_window, replay,
    savings_backtest,
)
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.ingest import ingest_file
from smart_energy.components.tariffs import bill_eur, is_offpeak, price_per_hour, tempo_calendar

TARIFF_NAMES = ("base", "hp-hc", "tempo")


def synthetic_hourly(days: int, total_kw: float = 0.5, start: str = "2007-01-08") -> pd.DataFrame:
    """A complete hourly frame: a flat household load, sub-meters at 0 (tests set their runs)."""
    ts = pd.date_range(start, periods=24 * days, freq="h", tz="UTC")
    frame = pd.DataFrame({"meter_id": "m-1", "timestamp": ts, "global_active_power_kw": total_kw,
                          "global_reactive_power_kw": 0.1, "voltage_v": 240.0, "global_intensity_a": 2.0,
                          "sub_metering_1_kw": 0.0, "sub_metering_2_kw": 0.0, "sub_metering_3_kw": 0.0,
                          "energy_kwh": total_kw, "last_15min_kw": total_kw, "valid_minutes": 60, "is_complete": True})
    return frame


def add_run(frame: pd.DataFrame, column: str, start: str, hours: int, kw: float) -> None:
    rows = frame["timestamp"].isin(pd.date_range(start, periods=hours, freq="h", tz="UTC"))
    frame.loc[rows, column] += kw
    frame.loc[rows, ["global_active_power_kw", "energy_kwh"]] += kw


def forecast_after(hourly: pd.DataFrame, first_hour: int = 14) -> pd.DataFrame:
    """A naive 24 h forecast (the same hours the day before) starting at ``first_hour`` after the data."""
    start = hourly["timestamp"].max().normalize() + pd.Timedelta(days=1, hours=first_hour)
    ts = pd.date_range(start, periods=24, freq="h")
    same_hour = hourly.set_index("timestamp")["global_active_power_kw"].reindex(ts - pd.Timedelta(days=1))
    p50 = same_hour.fillna(hourly["global_active_power_kw"].mean()).to_numpy()
    return pd.DataFrame({"timestamp": ts, "p10_kw": 0.7 * p50, "p50_kw": p50, "p90_kw": 1.5 * p50})


@pytest.fixture(scope="module")
def hourly(shared_data) -> pd.DataFrame:
    return ingest_file(shared_data).hourly


def test_runs_subtract_standby_and_never_exceed_the_measurement():
    frame = synthetic_hourly(3)
    frame["sub_metering_2_kw"] = 0.03  # a fridge, all the time
    add_run(frame, "sub_metering_2_kw", "2007-01-09 19:00", 2, 1.0)
    add_run(frame, "sub_metering_2_kw", "2007-01-10 09:00", 1, 0.05)  # fridge defrost: not a run
    runs = detect_runs(frame, LOADS[1])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["start"] == pd.Timestamp("2007-01-09 19:00", tz="UTC") and run["hours"] == 2
    assert run["kwh"] == pytest.approx(2 * 1.0) and run["measured_kwh"] == pytest.approx(2 * 1.03)


def test_recommend_window_cheapest_then_lowest_load():
    prices = [0.2, 0.2, 0.1, 0.1, 0.1, 0.2]
    assert recommend_window(prices, [0, 0, 3, 1, 0, 0], 2) == 3  # 0.2 EUR either way; less load at 3-4
    assert recommend_window(prices, [0] * 6, 2) == 2  # full tie: the earliest
    assert recommend_window(prices, [0] * 6, 3) == 2
    assert recommend_window(prices, [0] * 6, 2, free=[True, True, True, False, True, True]) == 1  # 1-2 = 4-5
    assert recommend_window(prices, [0] * 6, 7) is None


def test_replay_by_hand_hp_hc():
    """A 2 kWh laundry run at 19:00-21:00 moves to the off-peak hours with the lowest load the day before."""
    frame = synthetic_hourly(3)
    add_run(frame, "global_active_power_kw", "2007-01-08 00:00", 6, 1.0)  # day 1: busy 00-06 (not a sub-meter)
    frame["energy_kwh"] = frame["global_active_power_kw"]
    add_run(frame, "sub_metering_2_kw", "2007-01-09 19:00", 2, 1.0)
    result = replay(frame, "hp-hc")
    assert len(result.days) == 3 and len(result.moves) == 1
    move = result.moves.iloc[0]
    # off-peak hours of the 9th: 00-06 (busy the day before) and 22-23 (0.5 kW the day before): 22:00
    assert move["to"] == pd.Timestamp("2007-01-09 22:00", tz="UTC") and move["kwh"] == pytest.approx(2.0)
    day = result.days.set_index("day").loc[pd.Timestamp("2007-01-09", tz="UTC")]
    assert day["bill_before"] - day["bill_after"] == pytest.approx(2 * (0.2081 - 0.1635))
    assert day["peak_kw_before"] == pytest.approx(1.5) and day["peak_kw_after"] == pytest.approx(1.5)
    savings = savings_backtest(frame, "hp-hc")
    assert savings["eur_saved_backtested"] == pytest.approx(round(2 * (0.2081 - 0.1635), 2))
    assert savings["kwh_shifted_backtested"] == pytest.approx(2.0)
    assert savings["days_backtested"] == 3
    assert savings["eur_per_year"] is None and "only 3 complete days" in savings["caveat"]  # too few to annualise
    assert savings_backtest(frame, "base")["eur_saved_backtested"] == 0.0  # one price: nothing to gain


def test_a_run_never_lands_on_hours_its_load_already_runs():
    """The heater already heats 00-06; its noon run goes to 22:00, not on top of itself (2 kW from a 1 kW heater)."""
    frame = synthetic_hourly(2)
    add_run(frame, "global_active_power_kw", "2007-01-08 22:00", 2, 2.0)  # the day before: 22-23 looked busy
    frame["energy_kwh"] = frame["global_active_power_kw"]
    add_run(frame, "sub_metering_3_kw", "2007-01-09 00:00", 6, 1.0)
    add_run(frame, "sub_metering_3_kw", "2007-01-09 12:00", 2, 1.0)
    moves = replay(frame, "hp-hc").moves
    assert list(moves["to"]) == [pd.Timestamp("2007-01-09 22:00", tz="UTC")]


def test_two_runs_of_one_load_do_not_stack_in_the_cheapest_hours():
    """Tempo, Sunday 14 Jan 2007 (blue; Saturday white): 22-24 is the cheapest (blue off-peak), 00-06 next
    (Saturday's white off-peak). Two laundry runs: the first takes 22:00, the second 00:00, not 22:00 again."""
    frame = synthetic_hourly(2, start="2007-01-13")
    add_run(frame, "sub_metering_2_kw", "2007-01-14 10:00", 2, 1.0)
    add_run(frame, "sub_metering_2_kw", "2007-01-14 16:00", 2, 1.0)
    moves = replay(frame, "tempo").moves
    assert sorted(moves["to"]) == [pd.Timestamp(f"2007-01-14 {h}", tz="UTC") for h in ("00:00", "22:00")]
    assert moves["eur_saved"].sum() == pytest.approx(2 * (0.1494 - 0.1232) + 2 * (0.1494 - 0.1391))


def test_two_loads_moved_the_same_day_spread_out():
    """Laundry and heater both move off-peak; the heater avoids the hours the laundry now fills (peak power)."""
    frame = synthetic_hourly(2)
    add_run(frame, "sub_metering_2_kw", "2007-01-09 10:00", 2, 1.0)
    add_run(frame, "sub_metering_3_kw", "2007-01-09 16:00", 2, 1.0)
    moves = replay(frame, "hp-hc").moves.set_index("load")["to"]
    assert moves["laundry"] == pd.Timestamp("2007-01-09 00:00", tz="UTC")
    assert moves["water_heater_ac"] == pd.Timestamp("2007-01-09 02:00", tz="UTC")


def test_long_and_kitchen_runs_stay_put():
    frame = synthetic_hourly(2)
    add_run(frame, "sub_metering_3_kw", "2007-01-09 08:00", MAX_SHIFT_HOURS + 1, 1.0)
    add_run(frame, "sub_metering_1_kw", "2007-01-09 19:00", 2, 2.0)
    assert replay(frame, "hp-hc").moves.empty


@pytest.mark.parametrize("tariff", TARIFF_NAMES)
def test_shared_file_replay_moves_only_measured_energy_and_never_raises_a_bill(hourly, tariff):
    result = replay(hourly, tariff)
    days, moves = result.days, result.moves
    assert len(days) == 74  # 17 Dec - 28 Feb: the first day starts at 17:24
    # per run: the energy moved is above standby, so at most what the sub-meter measured in those hours
    assert (moves["kwh"] > 0).all() and (moves["kwh"] <= moves["measured_kwh"] + 1e-9).all()
    # per sub-meter: no more than it measured in all
    for number, moved in moves.groupby("sub_meter")["kwh"].sum().items():
        measured = (hourly[f"sub_metering_{number}_kw"] * hourly["valid_minutes"] / 60).sum()
        assert moved <= measured
    assert set(moves["sub_meter"]) <= {load.sub_meter for load in LOADS if load.shiftable}
    # a run moves within its day
    if not moves.empty:
        day, end = moves["start"].dt.normalize(), moves["to"] + pd.to_timedelta(moves["hours"] - 1, "h")
        assert (moves["to"].dt.normalize() == day).all() and (end.dt.normalize() == day).all()
    # never a higher bill, on any day; the totals agree with the moves
    assert (days["bill_after"] <= days["bill_before"] + 1e-9).all()
    assert (days["bill_before"] - days["bill_after"]).sum() == pytest.approx(moves["eur_saved"].sum())
    assert days["kwh_shifted"].sum() == pytest.approx(moves["kwh"].sum())
    # the bill before is the tariff applied to the measured hours of those days
    frame = hourly.set_index("timestamp")
    in_days = frame.index.normalize().isin(days["day"])
    colours = tempo_calendar(frame["global_active_power_kw"].where(frame["is_complete"])) if tariff == "tempo" else None
    assert days["bill_before"].sum() == pytest.approx(
        bill_eur(frame.loc[in_days, "energy_kwh"], frame.index[in_days], tariff, colours))
    if tariff == "base":
        assert moves.empty
    else:  # moves go to cheaper hours
        to, start = pd.DatetimeIndex(moves["to"]), pd.DatetimeIndex(moves["start"])
        assert (price_per_hour(to, tariff, colours) <= price_per_hour(start, tariff, colours)).all()


def test_shared_file_savings_are_plausible(hourly):
    savings = {name: savings_backtest(hourly, name) for name in TARIFF_NAMES}
    kwh_per_year = hourly["energy_kwh"].sum() * 365 / (hourly["valid_minutes"].sum() / 1440)
    shiftable_per_year = sum(hourly[f"sub_metering_{n}_kw"].sum() for n in (2, 3)) * 365 / (len(hourly) / 24)
    for name, s in savings.items():
        json.dumps(s)
        assert s["days_backtested"] == 74 and "not energy" in s["method"] and s["caveat"] is None
        assert 0.15 * kwh_per_year < s["bill_eur_per_year"] < 0.35 * kwh_per_year  # 0.16-0.30 EUR/kWh on average
        assert 0 <= s["kwh_shifted_per_year"] < shiftable_per_year
        assert 0 <= s["eur_per_year"] < 0.2 * s["bill_eur_per_year"]
    assert savings["base"]["eur_per_year"] == 0 and savings["base"]["peak_kw_reduction"] == 0
    for name in ("hp-hc", "tempo"):
        s = savings[name]
        assert s["kwh_shifted_per_year"] > 1000  # the water heater and laundry move every week
        # at most the peak/off-peak gap on every kWh moved
        gap = 0.2081 - 0.1635 if name == "hp-hc" else 0.6468 - 0.1232
        assert 10 < s["eur_per_year"] <= gap * s["kwh_shifted_per_year"]
        assert 0 < s["peak_kw_reduction"] < 2  # runs leave the evening peak
    assert savings["tempo"]["eur_per_year"] > savings["hp-hc"]["eur_per_year"]  # red days make moving worth more


@pytest.fixture(scope="module")
def quiet_file(shared_data, tmp_path_factory):
    """The shared file's first 8,000 rows (5.5 days) with every sub-meter at 0 (the total unchanged)."""
    path = tmp_path_factory.mktemp("quiet") / "quiet.txt"
    with open(shared_data) as src, open(path, "w") as out:
        out.write(src.readline())
        for _, line in zip(range(8000), src):
            fields = line.rstrip("\n").split(";")
            if "?" not in fields:
                fields[6:9] = ["0.000"] * 3
            out.write(";".join(fields) + "\n")
    return path


def test_no_submeter_activity_recommends_nothing_and_saves_nothing(quiet_file):
    quiet = ingest_file(quiet_file).hourly
    assert (quiet[[load.column for load in LOADS]].fillna(0) == 0).all().all()
    for tariff in TARIFF_NAMES:
        advice = advise(quiet, forecast_after(quiet), tariff)
        assert [load["recommended_window"] for load in advice["loads"]] == [None, None, None]
        assert all(load["kwh_per_day"] == 0 and load["runs_per_day"] == 0 for load in advice["loads"])
        s = advice["savings"]
        assert s["days_backtested"] >= 4
        assert (s["eur_saved_backtested"], s["kwh_shifted_backtested"], s["peak_kw_reduction"]) == (0.0, 0.0, 0.0)


def test_the_same_rows_with_their_submeters_do_move(hourly, quiet_file):
    """Control for the test above: the quiet file's hours, sub-meters kept, are advised and save."""
    rows = hourly[hourly["timestamp"] <= ingest_file(quiet_file).hourly["timestamp"].max()]
    advice = advise(rows, forecast_after(rows), "hp-hc")
    assert advice["savings"]["eur_saved_backtested"] > 0
    assert [load["recommended_window"] is not None for load in advice["loads"]] == [False, True, True]


@pytest.mark.parametrize("tariff", ["hp-hc", "tempo"])
def test_recommended_window_has_the_run_length_and_lies_off_peak(hourly, tariff):
    forecast = forecast_after(hourly, first_hour=14)  # 14:00 today to 13:00 tomorrow: off-peak is 22:00-06:00
    advice = advise(hourly, forecast, tariff)
    json.dumps(advice)
    assert advice["meter_id"] == "household-1" and advice["tariff"] == tariff and len(advice["next_24h"]) == 24
    peak = pd.DatetimeIndex(advice["peak_hours"])
    assert len(peak) == 16 and not is_offpeak(peak).any()
    windows = 0
    for load in advice["loads"]:
        window = load["recommended_window"]
        if not load["shiftable"]:
            assert window is None
            continue
        length = math.ceil(load["typical_run_hours"])
        assert 1 <= length <= 8  # fits the 8 off-peak hours
        start, end = pd.Timestamp(window["start"]), pd.Timestamp(window["end"])
        span = pd.date_range(start, end, freq="h", inclusive="left")
        assert len(span) == length and is_offpeak(span).all()
        windows += 1
    assert windows == 2


def test_base_window_is_the_lowest_forecast_load_and_peak_hours_the_highest(hourly):
    forecast = forecast_after(hourly, first_hour=0)
    advice = advise(hourly, forecast, "base")
    p50 = forecast["p50_kw"].to_numpy()
    assert sorted(pd.DatetimeIndex(advice["peak_hours"])) == sorted(forecast["timestamp"][np.argsort(-p50)[:6]])
    for load in advice["loads"][1:]:
        length = math.ceil(load["typical_run_hours"])
        sums = np.convolve(p50, np.ones(length), "valid")
        start = pd.Timestamp(load["recommended_window"]["start"])
        assert start == forecast["timestamp"].iloc[int(np.argmin(sums))]
    assert {h["price_eur_per_kwh"] for h in advice["next_24h"]} == {0.1952}


def test_tempo_colours_can_be_given(hourly):
    forecast = forecast_after(hourly, first_hour=6)  # one Tempo day
    red = advise(hourly, forecast, "tempo", colours="red")
    assert [h["price_eur_per_kwh"] for h in red["next_24h"]] == [0.6468] * 16 + [0.1460] * 8
    blue = advise(hourly, forecast, "tempo", colours={forecast["timestamp"][0].date(): "blue"})
    assert {h["price_eur_per_kwh"] for h in blue["next_24h"]} == {0.1494, 0.1232}


def test_bad_inputs_are_one_line_errors(hourly):
    forecast = forecast_after(hourly)
    with pytest.raises(SmartEnergyError, match="unknown tariff 'eco'; choose from base, hp-hc, tempo"):
        advise(hourly, forecast, "eco")
    with pytest.raises(AdviceError, match="24 consecutive hours"):
        advise(hourly, forecast.iloc[:23], "hp-hc")
    with pytest.raises(AdviceError, match="lacks columns"):
        advise(hourly, forecast.drop(columns="p90_kw"), "hp-hc")
    with pytest.raises(AdviceError, match="lacks columns"):
        advise(hourly.drop(columns="sub_metering_2_kw"), forecast, "hp-hc")


@pytest.mark.parametrize("tariff", ["base", "hp-hc", "tempo"])
def test_a_multi_day_hole_is_skipped_not_a_crash(shared_data, tmp_path, hourly, tariff):
    """Three days of '?' readings (a meter offline): their Tempo days have no colour from the data, and no day of
    the hole is replayed; the other days are (a 4-year file with holes crashed Tempo's pricing before)."""
    from helpers import with_hole

    holed = ingest_file(with_hole(shared_data, tmp_path / "holed.txt", [("2007-01-10", "2007-01-13")])).hourly
    whole, with_gap = savings_backtest(hourly, tariff), savings_backtest(holed, tariff)
    assert with_gap["days_backtested"] == whole["days_backtested"] - 3
    assert with_gap["eur_per_year"] >= 0 and with_gap["bill_eur_per_year"] > 0


def test_two_days_give_a_caveat_and_no_yearly_figure(shared_data, tmp_path):
    """The issue's case: `advise` on two days of the shared file said 32.61 EUR/yr, annualised from one day."""
    path = tmp_path / "two_days.txt"
    with open(shared_data) as src, open(path, "w") as out:  # 16 Dec 17:24 .. 18 Dec 17:23
        out.writelines(line for _, line in zip(range(2 * 1440 + 1), src))
    two = ingest_file(path).hourly
    for tariff in TARIFF_NAMES:
        advice = advise(two, forecast_after(two), tariff)
        s = json.loads(json.dumps(advice))["savings"]
        assert s["days_backtested"] == 1
        assert s["eur_per_year"] is None and s["kwh_shifted_per_year"] is None and s["bill_eur_per_year"] is None
        assert "only 1 complete day backtested" in s["caveat"] and f"fewer than {MIN_DAYS_TO_ANNUALISE}" in s["caveat"]
        assert "no yearly figure" in s["caveat"] and "not annualised" in s["method"]
        assert s["eur_saved_backtested"] >= 0 and s["bill_eur_backtested"] > 0


@pytest.mark.parametrize("tariff", TARIFF_NAMES)
def test_the_yearly_figure_starts_at_four_weeks(tariff):
    """27 complete days: a caveat, no yearly figure; 28: the yearly figures, no caveat."""
    def frame(days):
        hours = synthetic_hourly(days)
        for day in range(days):  # a 2 kWh laundry run each evening, cheaper at night under hp-hc and tempo
            add_run(hours, "sub_metering_2_kw", str(pd.Timestamp("2007-01-08 19:00") + pd.Timedelta(days=day)), 2, 1.0)
        return hours

    short, enough = savings_backtest(frame(MIN_DAYS_TO_ANNUALISE - 1), tariff), savings_backtest(
        frame(MIN_DAYS_TO_ANNUALISE), tariff)
    assert short["days_backtested"] == 27 and short["eur_per_year"] is None
    assert "only 27 complete days" in short["caveat"]
    assert enough["days_backtested"] == 28 and enough["caveat"] is None
    assert enough["eur_per_year"] is not None and enough["bill_eur_per_year"] > enough["bill_eur_backtested"] > 0
    if tariff == "base":
        assert enough["eur_per_year"] == 0.0
    else:
        assert enough["eur_per_year"] > enough["eur_saved_backtested"] > short["eur_saved_backtested"] > 0
