"""The monitoring report: data quality, drift over time and model performance, as one HTML page and JSON.

The page is self-contained (plots embedded as PNG data), so it opens offline in a browser. Drift is
the model's own Alibi Detect K-S detector run on each window (a day, or a week for spans over three
weeks) of the feature rows Feast serves for the data; performance is the model against persistence and
the seasonal baselines on exactly the same hours.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smart_energy.components.drift import verdict
from smart_energy.components.evaluate import (BASELINES, fallback_scores, last_weeks_split, predict, scoring_frame,
                                              split_fallback_hours)
from smart_energy.components.features import find_gaps, with_history
from smart_energy.components.ingest import ingest_file, load_hourly
from smart_energy.components.registry import load_booster, load_drift_detector
from smart_energy.components.settings import Settings, get_settings

MIN_WINDOW_ROWS = 12  # a K-S test on fewer rows says nothing


def _quality(data: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Ingest counts (raw files) and the hourly frame."""
    if Path(data).suffix in (".parquet",) or Path(data).is_dir():
        hourly = load_hourly(data)
        return {"source": str(data)}, hourly
    result = ingest_file(data)
    q = result.quality
    return {"source": q.source, "rows_read": q.rows_read, "rows_valid": q.rows_valid, "rows_missing": q.rows_missing,
            "rows_quarantined": q.rows_quarantined, "quarantine_reasons": q.quarantine_reasons}, result.hourly


def week_start(ts: pd.Series) -> pd.Series:
    """Monday 00:00 of each timestamp's week (time zone kept)."""
    return ts.dt.floor("D") - pd.to_timedelta(ts.dt.dayofweek, unit="D")


def drift_by_window(frame: pd.DataFrame, detector, features: list[str], freq: str, share: float) -> pd.DataFrame:
    """K-S p-value per watched feature and window (rows: windows; columns: features), plus ``rows`` and ``drift``
    (at least ``share`` of the features below the detector's corrected threshold)."""
    rows = []
    ts = frame["event_timestamp"]
    for start, part in frame.groupby(ts.dt.floor("D") if freq == "D" else week_start(ts)):
        complete = part[features].dropna()
        if len(complete) < MIN_WINDOW_ROWS:
            continue
        result = detector.predict(complete.to_numpy(dtype=np.float32))["data"]
        p_values = np.asarray(result["p_val"], dtype=float)
        flags, is_drift = verdict(p_values, float(result["threshold"]), share)
        rows.append({"window_start": pd.Timestamp(start), "rows": len(complete), "drift": int(is_drift),
                     "threshold": float(result["threshold"]), **dict(zip(features, p_values))})
    return pd.DataFrame(rows)


def build_report(data: str | Path, model_dir: str | Path, history: str | Path | None = None, last_weeks: int = 0,
                 settings: Settings | None = None, dayahead_model: str | Path | None = None,
                 tariff: str | None = None) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Every number of the report (JSON-able) and the frames its plots are drawn from.

    With ``last_weeks``, only the data's last weeks are monitored and the hours before are history (as
    ``evaluate --last-weeks``); data quality is the whole file's.
    """
    settings = settings or get_settings()
    booster, metadata = load_booster(model_dir)
    detector = load_drift_detector(model_dir)
    quality, hourly = _quality(data)
    hourly, history_hourly = last_weeks_split(hourly, load_hourly(history) if history else None, last_weeks)
    per_day = hourly.assign(day=hourly["timestamp"].dt.floor("D")).groupby("day")["is_complete"].sum()
    quality |= {"hours": int(len(hourly)), "hours_complete": int(hourly["is_complete"].sum()),
                "gaps": find_gaps(hourly), "complete_hours_per_day": {str(d.date()): int(n) for d, n in per_day.items()}}

    frame, skipped = scoring_frame(hourly, history_hourly, settings)
    features = metadata["features"]
    # a stale meter's hours are the profile's, not the model's: counted apart (as evaluate and the servers do)
    frame, fallback = split_fallback_hours(frame, features, with_history(hourly, history_hourly), settings)
    watched = (metadata.get("drift") or {}).get("features") or features  # older models watched every feature
    frame = frame.assign(forecast_kw=predict(booster, frame, features))
    span_days = (frame["event_timestamp"].max() - frame["event_timestamp"].min()).days
    freq = "D" if span_days <= 21 else "W"
    drift = (drift_by_window(frame, detector, watched, freq, settings.drift_share) if detector is not None
             else pd.DataFrame())
    drifted = {str(r["window_start"].date()): [f for f in watched if r[f] < r["threshold"]]
               for _, r in drift.iterrows() if r["drift"]}

    err = (frame["forecast_kw"] - frame["target_kw"]).abs()
    base_err = {b: (frame[c] - frame["target_kw"]).abs() for b, c in BASELINES.items()}
    same = frame[list(BASELINES.values())].notna().all(axis=1)  # hours where every baseline exists
    week = week_start(frame["event_timestamp"]).dt.date.astype(str)
    hour = frame["event_timestamp"].dt.hour
    by_week = pd.DataFrame({"model": err[same].groupby(week[same]).mean(),
                            **{b: e[same].groupby(week[same]).mean() for b, e in base_err.items()}})
    by_hour = pd.DataFrame({"model": err[same].groupby(hour[same]).mean(),
                            **{b: e[same].groupby(hour[same]).mean() for b, e in base_err.items()}})
    performance = {
        "model_version": metadata["version"], "hours_scored": int(same.sum()), "hours_skipped": skipped,
        **{f"fallback_{k}": v for k, v in fallback_scores(fallback).items()},
        "mae_kw": float(err[same].mean()), **{f"{b}_mae_kw": float(e[same].mean()) for b, e in base_err.items()},
        "mae_by_week": {w: {k: float(v) for k, v in row.items()} for w, row in by_week.iterrows()},
        "mae_by_hour_of_day": {int(h): {k: float(v) for k, v in row.items()} for h, row in by_hour.iterrows()},
    }
    report = {
        "data_quality": quality,
        "drift": {"window": "day" if freq == "D" else "week", "p_value": settings.drift_p_value,
                  "share": settings.drift_share, "features": watched,
                  "windows": int(len(drift)), "windows_drifted": int(drift["drift"].sum()) if len(drift) else 0,
                  "drifted_features_by_window": drifted,
                  "p_values": [{"window_start": str(r["window_start"].date()), "rows": int(r["rows"]),
                                "drift": bool(r["drift"]), **{f: float(r[f]) for f in watched}}
                               for _, r in drift.iterrows()]},
        "performance": performance,
    }
    frames = {"frame": frame, "drift": drift, "per_day": per_day, "by_week": by_week, "by_hour": by_hour}
    if dayahead_model is not None:
        numbers, day_frames = dayahead_section(dayahead_model, hourly, history_hourly, tariff or settings.tariff,
                                               settings)
        report |= numbers
        frames |= day_frames
    return report, frames


def dayahead_section(model_dir: str | Path, data: pd.DataFrame, history: pd.DataFrame | None, tariff: str,
                     settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The day-ahead model on the monitored hours (every origin, rolling calibration) and the advice for the 24 h
    after the data: numbers, and the frames for the band and load plots."""
    from smart_energy.components.advice import LOADS, advise
    from smart_energy.components.dayahead import load_dayahead, next_24h, score_hourly

    model, metadata = load_dayahead(model_dir)
    scored, pairs, forecast = score_hourly(model, metadata, data, history, settings)
    combined = with_history(data, history)
    advice = advise(combined, next_24h(model_dir, combined), tariff, settings)
    numbers = {"model_version": metadata["version"], "hours_scored": scored["hours_scored"],
               "origins": scored["origins"], "mae_kw": scored["mae_kw"], "coverage_p10_p90": scored["coverage_p10_p90"],
               "pinball_kw": scored["pinball_kw"], "calibration_origins": scored["calibration_origins"],
               **{f"{b}_mae_kw": v["mae_kw"] for b, v in scored["baselines"].items()},
               "mae_by_lead": scored["mae_by_lead"], "tariff": tariff,
               **{f"savings_{k}": v for k, v in advice["savings"].items() if k != "method"},
               "savings_method": advice["savings"]["method"]}
    midnight = pairs["event_timestamp"].dt.hour == 0  # one day-ahead forecast per day, as a household gets it
    band = pairs.loc[midnight, ["target_timestamp", "target_kw"]].assign(
        p10_kw=forecast[midnight.to_numpy(), 0], p50_kw=forecast[midnight.to_numpy(), 1],
        p90_kw=forecast[midnight.to_numpy(), 2])
    day = combined[combined["timestamp"] >= combined["timestamp"].max().floor("D")]
    if len(day) < 24:  # the last day is partial: the last complete one
        start = combined["timestamp"].max().floor("D") - pd.Timedelta(days=1)
        day = combined[(combined["timestamp"] >= start) & (combined["timestamp"] < start + pd.Timedelta(days=1))]
    today = pd.DataFrame({load.name: day[load.column].to_numpy() for load in LOADS},
                         index=day["timestamp"].dt.hour.to_numpy())
    return {"dayahead": numbers, "advice": advice}, {"band": band, "today": today, "advice": advice}


def png_base64(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(frames: dict[str, pd.DataFrame], features: list[str]) -> dict[str, str]:
    """The report's plots as base64 PNGs, by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    per_day = frames["per_day"]
    fig, ax = plt.subplots(figsize=(11, 2.6))
    ax.bar(per_day.index, per_day.values, width=0.8, color="tab:green")
    ax.axhline(24, color="black", lw=0.6, ls=":")
    ax.set_ylabel("complete hours")
    ax.set_title("Data quality: complete hours per day (24 = no reading missing)")
    out["quality"] = png_base64(fig)

    drift = frames["drift"]
    if len(drift):
        fig, ax = plt.subplots(figsize=(11, 0.28 * len(features) + 1.5))
        logp = -np.log10(np.clip(drift[features].to_numpy(dtype=float).T, 1e-12, 1))
        image = ax.imshow(logp, aspect="auto", cmap="magma_r", vmin=0, vmax=12)
        ax.set_yticks(range(len(features)), features, fontsize=7)
        ax.set_xticks(range(len(drift)), drift["window_start"].dt.strftime("%m-%d"), rotation=90, fontsize=7)
        fig.colorbar(image, ax=ax, label="-log10 K-S p-value")
        ax.set_title("Drift: K-S p-value per feature and window against the model's training reference")
        out["drift"] = png_base64(fig)

    frame = frames["frame"].set_index("event_timestamp")
    frame = frame.reindex(pd.date_range(frame.index.min(), frame.index.max(), freq="h"))  # gaps break the lines
    fig, ax = plt.subplots(figsize=(11, 3.2))
    ax.plot(frame.index, frame["target_kw"], color="black", lw=0.8, label="actual")
    ax.plot(frame.index, frame["forecast_kw"], color="tab:blue", lw=0.8, label="forecast")
    ax.set_ylabel("mean kW in the hour")
    ax.set_title("Forecast vs actual (next hour)")
    ax.legend(loc="upper right")
    out["forecast"] = png_base64(fig)

    for name, title, xlabel in (("by_week", "MAE by week", "week starting"),
                                ("by_hour", "MAE by hour of day", "hour of day")):
        table = frames[name]
        fig, ax = plt.subplots(figsize=(11, 3))
        for column in table.columns:
            ax.plot([str(i) for i in table.index], table[column], marker="o", lw=2 if column == "model" else 1,
                    label=column)
        ax.set_ylabel("MAE (kW)")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{title}: model vs baselines on the same hours")
        ax.legend(ncol=4, fontsize=8)
        out[name] = png_base64(fig)
    if "band" in frames:
        out |= dayahead_plots(frames)
    return out


def dayahead_plots(frames: dict[str, Any]) -> dict[str, str]:
    """The day-ahead band over the actuals, and today's loads against the recommended windows."""
    import matplotlib.pyplot as plt

    band = frames["band"].set_index("target_timestamp")
    band = band.reindex(pd.date_range(band.index.min(), band.index.max(), freq="h"))
    fig, ax = plt.subplots(figsize=(11, 3.2))
    ax.fill_between(band.index, band["p10_kw"], band["p90_kw"], color="tab:blue", alpha=0.25, lw=0, label="P10-P90")
    ax.plot(band.index, band["p50_kw"], color="tab:blue", lw=0.9, label="P50")
    ax.plot(band.index, band["target_kw"], color="black", lw=0.7, label="actual")
    ax.set_ylabel("mean kW in the hour")
    ax.set_title("Day ahead: each day's forecast made at midnight for its 24 hours, over the actuals")
    ax.legend(loc="upper right", ncol=3, fontsize=8)
    out = {"band": png_base64(fig)}

    advice, today = frames["advice"], frames["today"]
    prices = [row["price_eur_per_kwh"] for row in advice["next_24h"]]
    hours = [int(row["timestamp"][11:13]) for row in advice["next_24h"]]
    fig, axes = plt.subplots(len(today.columns), 1, figsize=(11, 1.6 * len(today.columns) + 0.6), sharex=True)
    for ax, load in zip(axes, advice["loads"]):
        ax.bar(today.index, today[load["name"]], color="tab:gray", width=0.8, label="today (last day of data)")
        window = load["recommended_window"]
        if window:
            start, end = int(window["start"][11:13]), int(window["end"][11:13]) or 24
            spans = [(start, end)] if end > start else [(start, 24), (0, end)]
            for i, (a, b) in enumerate(spans):
                ax.axvspan(a - 0.5, b - 0.5, color="tab:green", alpha=0.25, lw=0,
                           label="recommended next 24 h" if i == 0 else None)
        ax.set_ylabel(f"{load['name']}\nkW", fontsize=8)
        twin = ax.twinx()
        twin.step(sorted(hours), [p for _, p in sorted(zip(hours, prices))], where="mid", color="tab:red", lw=0.8)
        twin.set_ylabel("EUR/kWh", fontsize=7, color="tab:red")
        ax.legend(loc="upper left", fontsize=7)
    axes[-1].set_xlabel("hour of day")
    axes[-1].set_xticks(range(0, 24, 2))
    axes[0].set_title(f"Where each load ran on the last day vs the recommended window ({advice['tariff']} prices, red)")
    out["loads"] = png_base64(fig)
    return out


def cell(key: str, value: float | None, fmt: str = "{:,.3f}") -> str:
    """A table cell whose number readers and tests find by ``data-key``; a dash, and no data-value, for no figure
    (the yearly saving under 28 backtested days)."""
    if value is None:
        return "<td>–</td>"
    return f'<td data-key="{html.escape(key)}" data-value="{value!r}">{fmt.format(value)}</td>'


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    """One self-contained page; every number shown carries its JSON key in ``data-key``."""
    num = cell
    q, d, p = report["data_quality"], report["drift"], report["performance"]
    img = lambda name: (f'<img alt="{name}" src="data:image/png;base64,{images[name]}">'  # noqa: E731
                        if name in images else "<p>(no drift detector saved with this model)</p>")
    counts = "".join(f"<tr><th>{k}</th>{num('data_quality.' + k, q[k], '{:,}')}</tr>"
                     for k in ("rows_read", "rows_valid", "rows_missing", "rows_quarantined", "hours", "hours_complete")
                     if k in q)
    reasons = "".join(f"<tr><th>{html.escape(r)}</th><td>{n:,}</td></tr>"
                      for r, n in q.get("quarantine_reasons", {}).items()) or "<tr><td>none</td></tr>"
    gaps = "".join(f"<li>{g['start']} .. {g['end']} ({g['hours']} h)</li>" for g in q["gaps"]) or "<li>none</li>"
    drifted = "".join(f"<li>{w}: {', '.join(f)}</li>" for w, f in d["drifted_features_by_window"].items()) \
        or "<li>no window drifted</li>"
    maes = "".join(f"<tr><th>{name}</th>{num(f'performance.{key}', p[key])}</tr>"
                   for name, key in [("model " + p["model_version"], "mae_kw"),
                                     *((b, f"{b}_mae_kw") for b in BASELINES)])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Smart Energy monitoring report</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:1em auto}}td,th{{padding:2px 10px;text-align:right}}
th{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Smart Energy monitoring report</h1>
<p>Data: {html.escape(str(q['source']))}. Model: {html.escape(p['model_version'])}.</p>
<h2>Data quality</h2><table>{counts}</table>
<h3>Quarantined rows by reason</h3><table>{reasons}</table>
<h3>Gaps of 24 h or more</h3><ul>{gaps}</ul>{img('quality')}
<h2>Drift</h2>
<p>K-S test per watched feature and {d['window']} (p &lt; {d['p_value']}, Bonferroni-corrected); a window
drifted when at least {d['share']:.0%} of the {len(d['features'])} features did:
<span data-key="drift.windows_drifted" data-value="{d['windows_drifted']}">{d['windows_drifted']}</span> of
<span data-key="drift.windows" data-value="{d['windows']}">{d['windows']}</span> windows drifted.</p>
<ul>{drifted}</ul>{img('drift')}
<h2>Model performance</h2>
<p><span data-key="performance.hours_scored" data-value="{p['hours_scored']}">{p['hours_scored']:,}</span>
hours scored, model and baselines on the same hours{fallback_html(p)}.</p>
<table><tr><th>forecast</th><th>MAE kW</th></tr>{maes}</table>
{img('forecast')}{img('by_week')}{img('by_hour')}
{dayahead_html(report, img, num)}
<script>/* for readers and tests: each plot says whether it decoded */
for (const i of document.images) i.dataset.width = i.complete ? i.naturalWidth : -1;</script>
</body></html>
"""


def fallback_html(performance: dict[str, Any]) -> str:
    """The hours a stale meter's profile answered, apart from the model's (empty when there were none)."""
    hours = performance.get("fallback_hours", 0)
    if not hours:
        return ""
    mae, persistence = performance["fallback_mae_kw"], performance["fallback_persistence_mae_kw"]
    return (f'; <span data-key="performance.fallback_hours" data-value="{hours}">{hours:,}</span> more hours were '
            f'a stale meter\'s, answered by its weekly profile (MAE <span data-key="performance.fallback_mae_kw" '
            f'data-value="{mae!r}">{mae:.3f}</span> kW, persistence {persistence:.3f}) and are not counted above')


def dayahead_html(report: dict[str, Any], img, num) -> str:
    """The day-ahead and advice section (empty without a day-ahead model)."""
    if "dayahead" not in report:
        return ""
    d, a = report["dayahead"], report["advice"]
    rows = "".join(f"<tr><th>{label}</th>{num(f'dayahead.{key}', d[key])}</tr>" for label, key in [
        ("P50 MAE kW (all leads)", "mae_kw"), ("P10-P90 coverage", "coverage_p10_p90"), ("pinball kW", "pinball_kw"),
        ("persistence MAE kW", "persistence_mae_kw"), ("seasonal 24 h MAE kW", "seasonal_24h_mae_kw"),
        ("seasonal 168 h MAE kW", "seasonal_168h_mae_kw")])
    savings = "".join(f"<tr><th>{label}</th>{num(f'dayahead.savings_{key}', d[f'savings_{key}'], fmt)}</tr>"
                      for label, key, fmt in [("saving EUR/year", "eur_per_year", "{:,.2f}"),
                                              ("kWh moved/year", "kwh_shifted_per_year", "{:,.0f}"),
                                              ("energy bill EUR/year", "bill_eur_per_year", "{:,.0f}"),
                                              ("daily peak reduction kW", "peak_kw_reduction", "{:.3f}"),
                                              ("days backtested", "days_backtested", "{:,}")])
    windows = "".join(f"<li>{html.escape(load['name'])}: "
                      + (f"{load['recommended_window']['start'][11:16]} to {load['recommended_window']['end'][11:16]}"
                         if load["recommended_window"] else "no shift advised")
                      + f" (typical run {load['typical_run_hours']:g} h, {load['kwh_per_day']:.2f} kWh/day)</li>"
                      for load in a["loads"])
    caveat = f"<p><b>{html.escape(d['savings_caveat'])}</b></p>" if d.get("savings_caveat") else ""
    return f"""<h2>Day ahead and advice</h2>
<p>Model {html.escape(d['model_version'])}: {d['origins']:,} origins x 24 leads, each band calibrated on the
meter's actuals of the week before it ({d['calibration_origins']['rolling']:,} origins; the first day's
{d['calibration_origins']['training']:,} with the training calibration), as the servers calibrate it.</p>
<table>{rows}</table>{img('band')}
<h3>Next 24 hours ({html.escape(a['tariff'])})</h3><ul>{windows}</ul>{img('loads')}
<table>{savings}</table>{caveat}<p>{html.escape(d['savings_method'])}</p>"""


def write_report(report: dict[str, Any], images: dict[str, str], out: str | Path) -> dict[str, Path]:
    """``report.html`` and ``report.json`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.html").write_text(render_html(report, images))
    return {"html": out / "report.html", "json": out / "report.json"}
