"""Energy-saving advice: when each appliance load runs, when to run it in the next 24 h, what moving it saves.

Moving a load changes *when* energy is used, not how much: it lowers the bill (cheaper hours) and the
peak power, never the kWh. Hour of day is the ``timestamp``'s as given, i.e. the French local clock time
of the UCI readings (see ``tariffs``). Energy of an hour = its mean kW x its valid minutes / 60 (what was
measured; ``energy_kwh`` for the whole household), so nothing unmeasured is ever moved or billed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.settings import Settings
from smart_energy.components.tariffs import (RED_DAYS, WHITE_DAYS, Tariff, get_tariff, peak_mask, price_per_hour,
                                             tempo_calendar, tempo_day)

RUN_KW = 0.1  # an appliance run draws at least this mean kW above standby in an hour (a fridge: a few tens of watts)
MAX_SHIFT_HOURS = 8  # a run longer than the 8 h off-peak night is not a cycle one reschedules (heating, AC)
PEAK_HOURS_ONE_PRICE = 6  # with one price all day, the "peak hours" are the 6 with the highest forecast P50
# Fewer backtested days than four weeks say too little about a year to annualise: one week's laundry days, a
# cold spell or a holiday would be counted 52 times. Below it the backtest gives its days' totals and a caveat.
MIN_DAYS_TO_ANNUALISE = 28
FORECAST_COLUMNS = ("timestamp", "p10_kw", "p50_kw", "p90_kw")


class AdviceError(SmartEnergyError):
    """The hourly data or the forecast cannot give advice; the message says why in one line."""


@dataclass(frozen=True)
class Load:
    """One appliance load, measured by one sub-meter."""

    name: str
    sub_meter: int
    shiftable: bool

    @property
    def column(self) -> str:
        return f"sub_metering_{self.sub_meter}_kw"


# Shiftable: laundry (washing machine, tumble dryer: start them later) and the water heater (a hot-water tank
# heats whenever the relay lets it; in France usually at night). Sub-meter 3 also carries the air conditioner,
# which is not shiftable, but in this winter data it is the water heater; runs over MAX_SHIFT_HOURS stay put.
# The kitchen is not: cooking happens at mealtimes, and its dishwasher cannot be told from the oven and
# microwave on sub-meter 1, so moving its runs would move meals.
LOADS = (Load("kitchen", 1, False), Load("laundry", 2, True), Load("water_heater_ac", 3, True))
SHIFTABLE = tuple(load for load in LOADS if load.shiftable)


@dataclass
class Replay:
    """The savings backtest in detail: one row per day replayed and one per run moved."""

    days: pd.DataFrame  # day, bill_before, bill_after, peak_kw_before, peak_kw_after, kwh_shifted
    moves: pd.DataFrame  # load, sub_meter, start, to, hours, kwh, measured_kwh, eur_saved


def _grid(hourly: pd.DataFrame) -> pd.DataFrame:
    """One meter's hours on a continuous hourly grid indexed by timestamp (missing hours: NaN, incomplete)."""
    needed = ["timestamp", "global_active_power_kw", "energy_kwh", "valid_minutes", "is_complete",
              *(load.column for load in LOADS)]
    missing = [c for c in needed if c not in hourly.columns]
    if missing:
        raise AdviceError(f"the hourly frame lacks columns {missing} (use ingest's hourly output)")
    if hourly.empty:
        raise AdviceError("no hourly readings to advise on")
    if "meter_id" in hourly.columns and hourly["meter_id"].nunique() > 1:
        raise AdviceError(f"advice is per meter; got {hourly['meter_id'].nunique()} meters")
    frame = hourly.sort_values("timestamp").set_index("timestamp")
    frame = frame.reindex(pd.date_range(frame.index[0], frame.index[-1], freq="h"))
    frame["valid_minutes"] = frame["valid_minutes"].fillna(0)
    frame["is_complete"] = frame["is_complete"].astype("boolean").fillna(False).astype(bool)
    return frame


def standby_kw(kw: pd.Series) -> float:
    """A load's standby level: the median of its hours below ``RUN_KW`` (the fridge on sub-meter 2; else ~0)."""
    quiet = kw[kw < RUN_KW]
    return float(quiet.median()) if len(quiet) else 0.0


def _load_energy(frame: pd.DataFrame, load: Load) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per hour: measured kWh, kWh above standby (never more than measured), and whether the load runs."""
    kw = frame[load.column]
    share = frame["valid_minutes"].to_numpy(dtype=float) / 60
    standby = standby_kw(kw)
    measured = np.nan_to_num(kw.to_numpy(dtype=float)) * share
    above = np.nan_to_num(np.clip(kw.to_numpy(dtype=float) - standby, 0, None)) * share
    return measured, above, (kw > standby + RUN_KW).to_numpy()


def detect_runs(hourly: pd.DataFrame, load: Load) -> pd.DataFrame:
    """The load's runs: consecutive hours whose mean kW is over its standby level + ``RUN_KW``.

    Returns:
        One row per run: ``start`` (hour start), ``hours``, ``kwh`` (energy above standby, the part that can
        move), ``measured_kwh`` (all the sub-meter measured in those hours) and ``row`` (position on the grid).
    """
    frame = _grid(hourly)
    measured, above, on = _load_energy(frame, load)
    edges = np.diff(np.r_[0, on.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    cum_above, cum_measured = np.r_[0, np.cumsum(above)], np.r_[0, np.cumsum(measured)]
    return pd.DataFrame({"start": frame.index[starts], "hours": ends - starts,
                         "kwh": cum_above[ends] - cum_above[starts],
                         "measured_kwh": cum_measured[ends] - cum_measured[starts], "row": starts})


def recommend_window(prices, load_kw, hours: int, free=None) -> int | None:
    """Start of the ``hours`` consecutive hours with the lowest total price, ties to the lowest total load.

    Args:
        prices: EUR/kWh per hour.
        load_kw: the household load expected in those hours (a forecast's P50), the tie-breaker: among
            equally cheap windows the one that adds least to the peak (then the earliest).
        hours: the run length.
        free: optional mask of the hours the window may use.

    Returns:
        The window's first position, or None if no window fits.
    """
    prices = np.asarray(prices, dtype=float)
    n_starts = len(prices) - hours + 1
    if hours < 1 or n_starts < 1:
        return None
    ones = np.ones(hours)
    price_sum = np.round(np.convolve(prices, ones, "valid"), 9)  # equal prices tie despite float sums
    load_sum = np.convolve(np.nan_to_num(np.asarray(load_kw, dtype=float)), ones, "valid")
    ok = np.ones(n_starts, bool) if free is None else np.convolve(~np.asarray(free, bool), ones, "valid") == 0
    order = np.lexsort((np.arange(n_starts), load_sum, price_sum))
    order = order[ok[order]]
    return int(order[0]) if len(order) else None


def _colours(frame: pd.DataFrame, tariff: Tariff, extra_kw: pd.Series | None = None):
    """Tempo colours by ``tempo_calendar``'s rule over the complete hours (and forecast hours); None otherwise."""
    if tariff.name != "tempo":
        return None
    load = frame["global_active_power_kw"].where(frame["is_complete"])
    if extra_kw is not None:
        load = pd.concat([load, extra_kw[extra_kw.index > load.index[-1]]])
    calendar = tempo_calendar(load)
    # a day with no complete hour (a hole in the readings) has no energy to price: blue, the commonest colour
    return {day: calendar.get(day, "blue") for day in tempo_day(load.index)}


def replay(hourly: pd.DataFrame, tariff: str | Tariff, settings: Settings | None = None) -> Replay:
    """Replay each complete day (24 complete hours, local calendar day) moving the shiftable loads' runs.

    Each run of a shiftable load that lies within one day and lasts at most ``MAX_SHIFT_HOURS`` moves
    (its energy above standby, hour by hour) to that day's recommended window: ``recommend_window`` over
    the day's prices with ties broken by a naive forecast known the day before (the household's load at the
    same hours the previous day, plus what was already moved in), among the hours the load is not already
    running. The biggest runs go first. A move is made only when it lowers the day's bill, so no day's bill
    rises; moving saves money and peak power, not energy. Tempo colours follow ``tempo_calendar`` (assumed).
    """
    tariff = get_tariff(tariff, settings)
    frame = _grid(hourly)
    prices = price_per_hour(frame.index, tariff, _colours(frame, tariff))
    energy = np.nan_to_num(frame["energy_kwh"].to_numpy(dtype=float))
    naive = np.nan_to_num(frame["global_active_power_kw"].shift(24).to_numpy(dtype=float))
    days = pd.Series(frame.index.normalize(), index=frame.index)
    full = frame["is_complete"].groupby(days).agg(["sum", "size"])
    full_days = full.index[(full["sum"] == 24) & (full["size"] == 24)]
    profiles = {load.name: _load_energy(frame, load) for load in SHIFTABLE}
    runs = {}
    for load in SHIFTABLE:
        r = detect_runs(hourly, load)
        r = r[(r["hours"] <= MAX_SHIFT_HOURS) & (r["kwh"] > 0)
              & (r["start"].dt.normalize() == (r["start"] + pd.to_timedelta(r["hours"] - 1, "h")).dt.normalize())]
        runs[load.name] = r.assign(day=r["start"].dt.normalize()).sort_values("kwh", ascending=False, kind="stable")
    day_rows, moves = [], []
    for day in full_days:
        first = frame.index.get_loc(day)
        span = slice(first, first + 24)
        price, before = prices[span], energy[span]
        after, expected = before.copy(), naive[span].copy()
        moved_today = len(moves)
        for load in SHIFTABLE:
            _, above, on = profiles[load.name]
            busy = on[span].copy()
            for run in runs[load.name][runs[load.name]["day"] == day].itertuples():
                start, length = run.row - first, run.hours
                moved = above[run.row:run.row + length]
                busy_without = busy.copy()
                busy_without[start:start + length] = False
                to = recommend_window(price, expected, length, free=~busy_without)
                if to is None or to == start:
                    continue
                gain = float(moved @ (price[start:start + length] - price[to:to + length]))
                if gain <= 1e-9:
                    continue
                after[start:start + length] -= moved
                after[to:to + length] += moved
                expected[to:to + length] += moved
                busy = busy_without
                busy[to:to + length] = True
                moves.append({"load": load.name, "sub_meter": load.sub_meter, "start": run.start,
                              "to": frame.index[first + to], "hours": length, "kwh": float(moved.sum()),
                              "measured_kwh": run.measured_kwh, "eur_saved": gain})
        day_rows.append({"day": day, "bill_before": float(before @ price), "bill_after": float(after @ price),
                         "peak_kw_before": float(before.max()), "peak_kw_after": float(after.max()),
                         "kwh_shifted": float(sum(m["kwh"] for m in moves[moved_today:]))})
    day_columns = ["day", "bill_before", "bill_after", "peak_kw_before", "peak_kw_after", "kwh_shifted"]
    move_columns = ["load", "sub_meter", "start", "to", "hours", "kwh", "measured_kwh", "eur_saved"]
    return Replay(pd.DataFrame(day_rows, columns=day_columns), pd.DataFrame(moves, columns=move_columns))


def savings_backtest(hourly: pd.DataFrame, tariff: str | Tariff, settings: Settings | None = None) -> dict:
    """What moving the shiftable loads would have saved, replayed over the data (see ``replay``), per year.

    Returns:
        ``eur_per_year`` and ``kwh_shifted_per_year`` (moved, not saved: the kWh stay the same),
        ``bill_eur_per_year`` (the energy bill before moving), ``peak_kw_reduction`` (mean over the days of
        the day's highest hourly mean kW before minus after; hourly, not the meter's instantaneous kVA),
        ``days_backtested``, the same three totals over the days replayed (``eur_saved_backtested``,
        ``kwh_shifted_backtested``, ``bill_eur_backtested``), ``caveat`` and ``method``. Yearly figures scale the
        days replayed by 365 / days, so a winter-only file annualises winter use and prices (with Tempo, all its
        red days). With fewer than ``MIN_DAYS_TO_ANNUALISE`` days the three yearly figures are None and
        ``caveat`` says how many days there were and why; otherwise ``caveat`` is None.
    """
    tariff = get_tariff(tariff, settings)
    result = replay(hourly, tariff, settings)
    days = result.days
    n = len(days)
    days = days.assign(saved=days["bill_before"] - days["bill_after"], kwh=days["kwh_shifted"])
    colours = ""
    if tariff.name == "tempo" and n:
        # a year has 22 red, 43 white and 300 blue days, whatever the file's span: weigh each colour's mean day
        # by its days per year (a colour absent from the data counts as blue)
        calendar = _colours(_grid(hourly), tariff)
        colour = days["day"].map(lambda d: calendar.get(d.date(), "blue"))
        means = days.groupby(colour)[["saved", "kwh", "bill_before"]].mean()
        per_year = {"red": RED_DAYS, "white": WHITE_DAYS, "blue": 365 - RED_DAYS - WHITE_DAYS}
        yearly = sum(means.loc[c] * k if c in means.index else means.loc["blue"] * k if "blue" in means.index
                     else days[["saved", "kwh", "bill_before"]].mean() * k for c, k in per_year.items())
        colours = (f" with assumed Tempo colours (red/white = the highest-consumption days; each colour's mean day "
                   f"counted {RED_DAYS}/{WHITE_DAYS}/{per_year['blue']} times a year)")
    else:
        yearly = days[["saved", "kwh", "bill_before"]].sum() * (365 / n if n else 0.0)
    total = days[["saved", "kwh", "bill_before"]].sum()
    annual = n >= MIN_DAYS_TO_ANNUALISE
    if annual:
        caveat = None
    elif n == 0:
        caveat = "no complete day (24 complete hours) to backtest, so no saving is estimated"
    else:
        caveat = (f"only {n} complete day{'' if n == 1 else 's'} backtested, fewer than {MIN_DAYS_TO_ANNUALISE}: "
                  f"a year made of them would count each day's laundry, weather or holiday about {365 // n} times, "
                  f"so no yearly figure is given; over those days moving the loads saved "
                  f"{float(total['saved']):.2f} EUR")
    return {
        "eur_per_year": round(float(yearly["saved"]), 2) if annual else None,
        "kwh_shifted_per_year": round(float(yearly["kwh"]), 1) if annual else None,
        "bill_eur_per_year": round(float(yearly["bill_before"]), 2) if annual else None,
        "peak_kw_reduction": round(float((days["peak_kw_before"] - days["peak_kw_after"]).mean()), 3) if n else 0.0,
        "days_backtested": n,
        "eur_saved_backtested": round(float(total["saved"]), 2),
        "kwh_shifted_backtested": round(float(total["kwh"]), 1),
        "bill_eur_backtested": round(float(total["bill_before"]), 2),
        "caveat": caveat,
        "method": (f"Replayed {n} complete day{'' if n == 1 else 's'}, moving each laundry and water-heater run (energy above standby, "
                   f"at most {MAX_SHIFT_HOURS} h, within its day) to that day's cheapest free hours under the "
                   f"{tariff.name} tariff{colours} only when that lowered the energy bill (no subscription fee), "
                   + ("annualised from the days replayed (a winter file annualises winter use)" if annual
                      else f"not annualised (fewer than {MIN_DAYS_TO_ANNUALISE} days)")
                   + "; moving load saves money and peak power, not energy."),
    }


def _forecast(forecast_24h: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in FORECAST_COLUMNS if c not in forecast_24h.columns]
    if missing:
        raise AdviceError(f"the forecast lacks columns {missing}; expected {list(FORECAST_COLUMNS)}")
    fc = forecast_24h.sort_values("timestamp").reset_index(drop=True)
    ts = pd.DatetimeIndex(fc["timestamp"])
    ts = ts.tz_localize("UTC") if ts.tz is None else ts
    if len(fc) != 24 or not (np.diff(ts.asi8) == 3_600_000_000_000).all():
        raise AdviceError(f"the forecast must be 24 consecutive hours; got {len(fc)} rows")
    return fc.assign(timestamp=ts)


def habits(hourly: pd.DataFrame) -> list[dict]:
    """Each load's habits over ``hourly``: kWh per day, share in the 06:00-22:00 peak hours, typical run length
    (median hours), runs per day, whether it is shiftable. Tariff-free, so a model can carry them to a server."""
    frame = _grid(hourly)
    peak_hours = (frame.index.hour >= 6) & (frame.index.hour < 22)
    n_days = float(frame["valid_minutes"].sum()) / 1440
    out = []
    for load in LOADS:
        measured, _, _ = _load_energy(frame, load)
        runs = detect_runs(hourly, load)
        total = float(measured.sum())
        out.append({"name": load.name, "sub_meter": load.sub_meter,
                    "kwh_per_day": round(total / n_days, 3) if n_days else 0.0,
                    "peak_share": round(float(measured[peak_hours].sum()) / total, 3) if total > 0 else 0.0,
                    "typical_run_hours": float(runs["hours"].median()) if len(runs) else 0.0,
                    "runs_per_day": round(len(runs) / n_days, 3) if n_days else 0.0, "shiftable": load.shiftable})
    return out


def plan(forecast_24h: pd.DataFrame, loads: list[dict], tariff: str | Tariff, settings: Settings | None = None,
         colours=None) -> dict:
    """The next 24 h priced, its peak hours, and a window of its typical run length for each shiftable load
    that runs (``loads`` from ``habits``). Tempo ``colours`` as ``price_per_hour`` takes them."""
    tariff = get_tariff(tariff, settings)
    fc = _forecast(forecast_24h)
    ts = pd.DatetimeIndex(fc["timestamp"])
    prices = price_per_hour(ts, tariff, colours)
    p50 = fc["p50_kw"].to_numpy(dtype=float)
    if tariff.has_peak:
        peak = peak_mask(ts, tariff)
    else:
        peak = np.zeros(24, bool)
        peak[np.argsort(-np.nan_to_num(p50, nan=-np.inf), kind="stable")[:PEAK_HOURS_ONE_PRICE]] = True
    planned = []
    for load in loads:
        window = None
        if load["shiftable"] and load["typical_run_hours"] > 0:
            length = min(math.ceil(load["typical_run_hours"]), MAX_SHIFT_HOURS)
            start = recommend_window(prices, p50, length)
            window = {"start": ts[start].isoformat(), "end": (ts[start] + pd.Timedelta(hours=length)).isoformat()}
        planned.append({**load, "peak_share": load["peak_share"] if tariff.has_peak else 0.0,
                        "recommended_window": window})
    return {"tariff": tariff.name,
            "next_24h": [{"timestamp": t.isoformat(), "p10_kw": float(r.p10_kw), "p50_kw": float(r.p50_kw),
                          "p90_kw": float(r.p90_kw), "price_eur_per_kwh": float(p)}
                         for t, r, p in zip(ts, fc.itertuples(), prices)],
            "peak_hours": [t.isoformat() for t in ts[peak]], "loads": planned}


def advise(hourly: pd.DataFrame, forecast_24h: pd.DataFrame, tariff: str | Tariff,
           settings: Settings | None = None, colours=None) -> dict:
    """Advice for the next 24 h: prices, peak hours, each load's habits and best window, and the savings backtest.

    Args:
        hourly: one meter's hourly frame (``ingest_file(path).hourly`` or ``load_hourly``).
        forecast_24h: 24 consecutive hours with ``timestamp, p10_kw, p50_kw, p90_kw``.
        tariff: ``base``, ``hp-hc`` or ``tempo`` (prices overridden by ``settings.tariff_prices``) or a ``Tariff``.
        colours: Tempo only: the known colour(s) of the next 24 h (one colour, or ``{tempo day: colour}``);
            days not given take ``tempo_calendar``'s rule over the history plus the forecast P50 (assumed).

    Returns:
        JSON-able: ``meter_id``, ``tariff``, ``next_24h`` (timestamp, p10/p50/p90 kW, price), ``peak_hours``
        (the hours of the tariff's peak price, 06:00-22:00; with one price all day, the
        ``PEAK_HOURS_ONE_PRICE`` hours of highest P50), ``loads`` (kwh_per_day, peak_share = share of the
        load's energy in peak-price hours (0 for Base), typical_run_hours = median run length,
        runs_per_day, shiftable, recommended_window ``{start, end}`` (end exclusive) of the typical run
        length for a shiftable load that runs, else null) and ``savings`` (``savings_backtest``: with fewer
        than ``MIN_DAYS_TO_ANNUALISE`` backtested days its yearly figures are null and its ``caveat`` says why).
        Moving a load saves money and peak power, not energy.

    Raises:
        SmartEnergyError: an unknown tariff (listing the choices), a bad forecast or hourly frame.
    """
    tariff = get_tariff(tariff, settings)
    frame = _grid(hourly)
    fc = _forecast(forecast_24h)
    if tariff.name == "tempo" and (colours is None or isinstance(colours, Mapping)):
        ts = pd.DatetimeIndex(fc["timestamp"])
        rule = _colours(frame, tariff, pd.Series(fc["p50_kw"].to_numpy(dtype=float), index=ts))
        colours = {**rule, **(colours or {})}
    meter = str(hourly["meter_id"].iloc[0]) if "meter_id" in hourly.columns else (settings or Settings()).meter_id
    return {"meter_id": meter, **plan(fc, habits(hourly), tariff, settings, colours),
            "savings": savings_backtest(hourly, tariff, settings)}
