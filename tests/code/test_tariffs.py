"""Tariff arithmetic against bills computed by hand, Tempo's colour rule, and price overrides from the settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings
from smart_energy.components.tariffs import (
    TARIFFS, TariffError, bill_eur, get_tariff, is_offpeak, price_per_hour, tempo_calendar, tempo_day,
)


def hours(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(s, tz="UTC") for s in stamps])


def test_base_is_one_price_at_every_hour():
    ts = hours("2007-01-10 03:00", "2007-01-10 12:00", "2007-01-10 21:00")
    assert bill_eur([1.0, 2.0, 0.5], ts, "base") == pytest.approx(3.5 * 0.1952)


def test_hp_hc_switches_at_22_00_and_06_00():
    ts = hours("2007-01-10 21:00", "2007-01-10 22:00", "2007-01-11 05:00", "2007-01-11 06:00")
    np.testing.assert_allclose(price_per_hour(ts, "hp-hc"), [0.2081, 0.1635, 0.1635, 0.2081])
    # peak 1 + 8 kWh, off-peak 2 + 4 kWh
    assert bill_eur([1.0, 2.0, 4.0, 8.0], ts, "hp-hc") == pytest.approx(9 * 0.2081 + 6 * 0.1635)
    day = pd.date_range("2007-01-10", periods=24, freq="h", tz="UTC")
    assert list(np.flatnonzero(is_offpeak(day))) == [0, 1, 2, 3, 4, 5, 22, 23]


def test_tempo_prices_by_colour_and_tempo_day():
    # a Tempo day runs 06:00-06:00: 02:00 on the 11th is still the 10th's (red) off-peak
    ts = hours("2007-01-10 12:00", "2007-01-11 02:00", "2007-01-11 07:00", "2007-01-11 23:00")
    days = ("2007-01-10", "2007-01-10", "2007-01-11", "2007-01-11")
    assert list(tempo_day(ts)) == [pd.Timestamp(d).date() for d in days]
    colours = {pd.Timestamp("2007-01-10").date(): "red", pd.Timestamp("2007-01-11").date(): "white"}
    np.testing.assert_allclose(price_per_hour(ts, "tempo", colours), [0.6468, 0.1460, 0.1730, 0.1391])
    assert bill_eur([2.0, 3.0, 1.0, 4.0], ts, "tempo", colours) == pytest.approx(
        2 * 0.6468 + 3 * 0.1460 + 0.1730 + 4 * 0.1391)
    assert bill_eur([1.0, 1.0, 1.0, 1.0], ts, "tempo", "blue") == pytest.approx(2 * 0.1494 + 2 * 0.1232)
    per_hour = ["white", "red", "blue", "red"]
    np.testing.assert_allclose(price_per_hour(ts, "tempo", per_hour), [0.1730, 0.1460, 0.1494, 0.1460])


def test_tempo_needs_known_colours():
    ts = hours("2007-01-10 12:00")
    with pytest.raises(TariffError, match="tempo needs"):
        price_per_hour(ts, "tempo")
    with pytest.raises(TariffError, match="green"):
        price_per_hour(ts, "tempo", "green")
    with pytest.raises(TariffError):
        price_per_hour(ts, "tempo", {})  # no colour for that day


def test_nan_hours_bill_nothing():
    ts = hours("2007-01-10 12:00", "2007-01-10 13:00")
    assert bill_eur([np.nan, 1.0], ts, "hp-hc") == pytest.approx(0.2081)


def test_tempo_calendar_rule():
    """22 red weekdays of Nov-Mar (no public holiday), 43 white non-Sundays, by consumption; the rest blue."""
    ts = pd.date_range("2006-09-01 06:00", "2007-09-01 05:00", freq="h", tz="UTC")
    days = pd.DatetimeIndex(tempo_day(ts))
    rng = np.random.default_rng(0)
    daily = pd.Series(rng.permutation(len(days.unique())).astype(float), index=days.unique())
    load = pd.Series(daily.reindex(days).to_numpy(), index=ts)
    colours = pd.Series(tempo_calendar(load))
    colours.index = pd.DatetimeIndex(colours.index)
    assert len(colours) == 365
    assert (colours == "red").sum() == 22 and (colours == "white").sum() == 43
    red, white = colours.index[colours == "red"], colours.index[colours == "white"]
    assert (red.dayofweek < 5).all() and red.month.isin([11, 12, 1, 2, 3]).all()
    assert pd.Timestamp("2006-12-25") not in red and pd.Timestamp("2007-01-01") not in red  # holidays
    assert (white.dayofweek != 6).all()
    holidays = pd.to_datetime(["2006-11-01", "2006-11-11", "2006-12-25", "2007-01-01"])
    eligible = colours.index[(colours.index.dayofweek < 5) & colours.index.month.isin([11, 12, 1, 2, 3])
                             & ~colours.index.isin(holidays)]
    assert daily[red].min() > daily[eligible.difference(red)].max()
    rest = colours.index[(colours != "red") & (colours.index.dayofweek != 6)]
    assert daily[white].min() > daily[rest.difference(white)].max()


def test_overrides_from_settings():
    s = Settings.from_env({"SE_TARIFF_PRICES": '{"hp-hc": {"peak": 0.21}, "tempo": {"red_peak": 0.7}}'})
    hp_hc = get_tariff("hp-hc", s)
    assert hp_hc.prices == {"peak": 0.21, "offpeak": 0.1635}
    ts = hours("2007-01-10 12:00", "2007-01-10 23:00")
    assert bill_eur([1.0, 1.0], ts, hp_hc) == pytest.approx(0.21 + 0.1635)
    assert get_tariff("tempo", s).prices["red_peak"] == 0.7
    assert get_tariff("base", s) == TARIFFS["base"]
    assert TARIFFS["hp-hc"].prices["peak"] == 0.2081  # the table itself is untouched
    assert Settings.from_env(s.as_env()) == s


def test_overrides_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SE_TARIFF_PRICES", '{"base": {"all": 0.25}}')
    assert bill_eur([2.0], hours("2007-01-10 12:00"), "base") == pytest.approx(0.5)


@pytest.mark.parametrize("text,expected", [
    ('{"hp-hc": {"peak": 0.21', "SE_TARIFF_PRICES is not valid JSON"),
    ("peak=0.21", "SE_TARIFF_PRICES is not valid JSON"),
    ('[0.21]', "must map tariff names"),
    ('{"hp-hc": 0.21}', "must map tariff names"),
    ('{"edf": {"peak": 0.21}}', "unknown tariff 'edf'; choose from base, hp-hc, tempo"),
    ('{"hp-hc": {"red_peak": 0.21}}', "hp-hc has no price 'red_peak'; its prices are peak, offpeak"),
    ('{"hp-hc": {"peak": -1}}', "must be a price"),
    ('{"hp-hc": {"peak": "cheap"}}', "must be a price"),
])
def test_bad_overrides_give_one_clear_line(text, expected):
    s = Settings(tariff_prices=text)
    with pytest.raises(SmartEnergyError) as err:
        get_tariff("hp-hc", s)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_unknown_tariff_lists_the_choices():
    with pytest.raises(SmartEnergyError, match="unknown tariff 'night'; choose from base, hp-hc, tempo"):
        get_tariff("night")
