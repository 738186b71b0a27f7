"""French regulated electricity tariffs (EDF "tarif bleu", prices since 1 August 2025) and energy bills.

Prices are EUR per kWh including tax, energy only: the fixed subscription fee (which depends on the
subscribed kVA, not on when energy is used) is out of scope, so every bill here is the energy part.
Clock times: the hourly frame's ``timestamp`` is tz-aware UTC, but the UCI readings are French local
clock times and the whole product takes them as given, so the hour of day of ``timestamp`` *is* the
local clock hour here (no time-zone conversion, no daylight-saving shift).

Off-peak ("heures creuses") is 22:00-06:00 for HP/HC and Tempo. A Tempo day runs 06:00-06:00: the
hours 00:00-05:59 are priced at the colour of the day before. Historical Tempo colours are not in the
data; ``tempo_calendar`` assigns them with a documented, deterministic rule (an assumption).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

import holidays
import numpy as np
import pandas as pd

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import HOLIDAY_COUNTRY
from smart_energy.components.settings import ENV, Settings

OFFPEAK_START, OFFPEAK_END = 22, 6  # local clock hours: off-peak is [22:00, 06:00)
TEMPO_DAY_START = 6  # a Tempo day (and its colour) runs from 06:00 to 06:00
COLOURS = ("blue", "white", "red")
RED_DAYS, WHITE_DAYS = 22, 43  # per Tempo year (1 September - 31 August)
RED_MONTHS = (11, 12, 1, 2, 3)


class TariffError(SmartEnergyError):
    """An unknown tariff, a bad price override or a missing Tempo colour."""


@dataclass(frozen=True)
class Tariff:
    """One tariff's energy prices (EUR/kWh incl. tax) by price key, e.g. ``peak``/``offpeak``."""

    name: str
    prices: Mapping[str, float]
    description: str

    @property
    def has_peak(self) -> bool:
        """Whether the price depends on the hour (False for Base: one price all day)."""
        return len(self.prices) > 1


TARIFFS: dict[str, Tariff] = {
    "base": Tariff("base", {"all": 0.1952}, "one price at every hour"),
    "hp-hc": Tariff("hp-hc", {"peak": 0.2081, "offpeak": 0.1635}, "peak 06:00-22:00, off-peak 22:00-06:00"),
    "tempo": Tariff("tempo", {
        "blue_peak": 0.1494, "blue_offpeak": 0.1232, "white_peak": 0.1730, "white_offpeak": 0.1391,
        "red_peak": 0.6468, "red_offpeak": 0.1460,
    }, "peak/off-peak by day colour: 22 red weekdays Nov-Mar, about 43 white days, the rest blue"),
}
OVERRIDE_EXAMPLE = '{"hp-hc": {"peak": 0.21}}'


def price_overrides(settings: Settings | None = None) -> dict[str, dict[str, float]]:
    """The price overrides of ``settings.tariff_prices`` (``SE_TARIFF_PRICES``, JSON), checked.

    Raises:
        TariffError: invalid JSON, an unknown tariff or price key, or a price that is not a number >= 0.
    """
    text = (settings or Settings.from_env()).tariff_prices.strip()
    if not text:
        return {}
    var = ENV["tariff_prices"]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TariffError(f"{var} is not valid JSON ({err.msg} at character {err.pos}); "
                          f"expected e.g. {OVERRIDE_EXAMPLE}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise TariffError(f"{var} must map tariff names to {{price: EUR/kWh}} objects, e.g. {OVERRIDE_EXAMPLE}")
    for name, prices in data.items():
        if name not in TARIFFS:
            raise TariffError(f"{var}: unknown tariff {name!r}; choose from {', '.join(TARIFFS)}")
        for key, value in prices.items():
            if key not in TARIFFS[name].prices:
                known = ", ".join(TARIFFS[name].prices)
                raise TariffError(f"{var}: {name} has no price {key!r}; its prices are {known}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 100:
                raise TariffError(f"{var}: {name}.{key} must be a price in EUR/kWh, got {value!r}")
    return {name: {k: float(v) for k, v in prices.items()} for name, prices in data.items()}


def get_tariff(name: str | Tariff, settings: Settings | None = None) -> Tariff:
    """The tariff called ``name`` with the settings' price overrides applied (a ``Tariff`` is returned as is).

    Raises:
        TariffError: an unknown name (the message lists the choices) or a bad override.
    """
    if isinstance(name, Tariff):
        return name
    if name not in TARIFFS:
        raise TariffError(f"unknown tariff {name!r}; choose from {', '.join(TARIFFS)}")
    tariff = TARIFFS[name]
    override = price_overrides(settings).get(name)
    return replace(tariff, prices={**tariff.prices, **override}) if override else tariff


def _index(timestamps) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(timestamps)


def is_offpeak(timestamps) -> np.ndarray:
    """True for hours starting at 22:00-05:59 local clock time (the hour of day of ``timestamp`` as given)."""
    hour = _index(timestamps).hour
    return np.asarray((hour >= OFFPEAK_START) | (hour < OFFPEAK_END))


def peak_mask(timestamps, tariff: str | Tariff) -> np.ndarray:
    """True for the tariff's peak-price hours (06:00-22:00); all False for Base, which has no peak."""
    tariff = get_tariff(tariff)
    return ~is_offpeak(timestamps) if tariff.has_peak else np.zeros(len(_index(timestamps)), dtype=bool)


def tempo_day(timestamps) -> np.ndarray:
    """The Tempo day (a date) each hour belongs to: 00:00-05:59 belong to the day before."""
    return np.asarray((_index(timestamps) - pd.Timedelta(hours=TEMPO_DAY_START)).date)


def tempo_calendar(load_kw: pd.Series) -> dict:
    """Each Tempo day's colour, by an assumed deterministic rule (the real colours are not in the data).

    RTE picks red and white days on the coldest days; as a proxy for cold we take the household's own
    mean power of the day. Per Tempo year (September-August), over the days present in ``load_kw``:
    red = the 22 highest-consumption weekdays of November-March that are not French public holidays,
    white = the next 43 highest non-Sunday days, every other day blue (ties go to the earlier day).
    With less than a winter of data the quotas fill the days present, so a short history over-counts
    red days: pass known colours to ``price_per_hour`` instead when you have them.

    Args:
        load_kw: household mean kW per hour, indexed by hour-start timestamp (NaN hours are ignored).

    Returns:
        ``{date: "blue" | "white" | "red"}`` for every Tempo day with at least one known hour.
    """
    load = load_kw.dropna()
    daily = load.groupby(tempo_day(load.index)).mean().sort_index()
    if daily.empty:
        return {}
    days = pd.DatetimeIndex(daily.index)
    fr = holidays.country_holidays(HOLIDAY_COUNTRY, years=range(days.year.min(), days.year.max() + 1))
    colours = dict.fromkeys(daily.index, "blue")
    season = np.where(days.month >= 9, days.year, days.year - 1)
    for year in np.unique(season):
        ranked = daily[season == year].sort_values(ascending=False, kind="stable")  # index is date-sorted
        red_ok = [d.weekday() < 5 and d.month in RED_MONTHS and d not in fr for d in ranked.index]
        red = list(ranked.index[red_ok][:RED_DAYS])
        white = [d for d in ranked.index if d not in red and d.weekday() != 6][:WHITE_DAYS]
        colours.update(dict.fromkeys(white, "white") | dict.fromkeys(red, "red"))
    return colours


def price_per_hour(timestamps, tariff: str | Tariff, colours=None) -> np.ndarray:
    """The energy price (EUR/kWh) of each hour.

    Args:
        timestamps: hour starts (their hour of day is taken as local clock time).
        tariff: a name in ``TARIFFS`` or a ``Tariff`` (e.g. from ``get_tariff`` with overrides).
        colours: Tempo only: one colour for every hour, one per hour, or ``{tempo day: colour}``
            (e.g. from ``tempo_calendar``).

    Raises:
        TariffError: Tempo without a known colour for some hour, or an unknown colour.
    """
    tariff = get_tariff(tariff)
    ts = _index(timestamps)
    off = is_offpeak(ts)
    if tariff.name != "tempo":
        if not tariff.has_peak:
            return np.full(len(ts), next(iter(tariff.prices.values())), dtype=float)
        return np.where(off, tariff.prices["offpeak"], tariff.prices["peak"]).astype(float)
    if colours is None:
        raise TariffError("tempo needs the day colours (blue, white or red); see tariffs.tempo_calendar")
    if isinstance(colours, str):
        hour_colours = np.full(len(ts), colours, dtype=object)
    elif isinstance(colours, Mapping):
        hour_colours = np.array([colours.get(d) for d in tempo_day(ts)], dtype=object)
    else:
        hour_colours = np.asarray(colours, dtype=object)
    bad = sorted({str(c) for c in hour_colours if c not in COLOURS})
    if bad or len(hour_colours) != len(ts):
        raise TariffError(f"tempo needs one colour of {', '.join(COLOURS)} per hour; got {bad or len(hour_colours)}")
    keys = [f"{c}_{'offpeak' if o else 'peak'}" for c, o in zip(hour_colours, off)]
    return np.array([tariff.prices[k] for k in keys], dtype=float)


def bill_eur(hourly_kwh, timestamps, tariff: str | Tariff, colours=None) -> float:
    """The energy bill (EUR, no subscription fee) of ``hourly_kwh`` used in the hours ``timestamps``.

    NaN hours count as no energy.
    """
    kwh = np.nan_to_num(np.asarray(hourly_kwh, dtype=float))
    return float(np.dot(kwh, price_per_hour(timestamps, tariff, colours)))
