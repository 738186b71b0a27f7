"""The closed loop's outputs: the forecasts it logged (CSV), a timeline plot (PNG) and one HTML page.

The timeline shows the served error against persistence and the never-retrained model (24 h rolling MAE),
the forecasts over the actuals, and how many watched features drifted, with drift alarms, retrains, canaries,
promotions and rollbacks marked where they happened.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import pandas as pd

MARKS = {"retrain": ("tab:orange", "--"), "promote": ("tab:green", "-"), "rollback": ("tab:red", "-")}


def rolling_mae(frame: pd.DataFrame, column: str, hours: int = 24) -> pd.Series:
    """MAE of ``column`` over the last ``hours`` hours, on the hours where served, actual and persistence exist."""
    scored = frame[["served_kw", "actual_kw", "persistence_kw", column]].notna().all(axis=1)
    err = (frame[column] - frame["actual_kw"]).abs().where(scored)
    return err.set_axis(frame["hour"]).rolling(f"{hours}h", min_periods=hours // 2).mean()


def timeline_png(frame: pd.DataFrame, summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, mid, bottom) = plt.subplots(3, 1, figsize=(13, 9), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 3, 1.4]})
    for column, label, style in (("served_kw", "served", {"color": "tab:blue", "lw": 1.8}),
                                 ("persistence_kw", "persistence", {"color": "grey", "lw": 1}),
                                 ("frozen_kw", f"never retrained ({summary['frozen_version']})",
                                  {"color": "tab:purple", "lw": 1, "ls": ":"})):
        top.plot(rolling_mae(frame, column), label=label, **style)
    top.set_ylabel("MAE, last 24 h (kW)")
    top.set_title(f"Closed loop: {summary['hours']} hours scored; served MAE {summary['mae_kw']:.3f} kW, persistence "
                  f"{summary['persistence_mae_kw']:.3f}, never retrained {summary['frozen_mae_kw']:.3f}")
    hourly = frame.set_index("hour")
    mid.plot(hourly.index, hourly["actual_kw"], color="black", lw=0.7, label="actual")
    mid.plot(hourly.index, hourly["served_kw"], color="tab:blue", lw=0.7, label="served forecast")
    mid.set_ylabel("mean kW in the hour")
    if "drifted_features" in hourly:
        bottom.step(hourly.index, hourly["drifted_features"], where="post", color="tab:purple")
    watched = summary.get("watched_features", 0)
    if watched:
        bottom.axhline(summary["drift_share"] * watched, color="tab:purple", ls=":", lw=0.8)
        bottom.set_ylim(0, watched + 0.5)
    bottom.set_ylabel("drifted\nfeatures")
    events = summary["events"]
    starts = [e for e in events if e["action"] == "canary-start"]
    for start in starts:
        t0 = pd.Timestamp(start["replay_hour"])
        end = next((pd.Timestamp(e["replay_hour"]) for e in events if e["action"] in ("promote", "rollback")
                    and e.get("version") == start["version"] and pd.Timestamp(e["replay_hour"]) >= t0),
                   frame["hour"].max())
        for ax in (top, mid, bottom):
            ax.axvspan(t0, end, color="gold", alpha=0.15, lw=0)
    seen = set()
    for event in events:
        if event["replay_hour"] is None:
            continue
        t = pd.Timestamp(event["replay_hour"])
        if event["action"] == "drift-alarm":
            label = "drift alarm" if "drift-alarm" not in seen else None
            top.plot([t], [0.97], marker="v", color="tab:purple", ls="none", label=label,
                     transform=top.get_xaxis_transform())
        elif event["action"] in MARKS:
            color, ls = MARKS[event["action"]]
            for ax in (top, mid, bottom):
                ax.axvline(t, color=color, ls=ls, lw=1.2, label=event["action"] if ax is top and event["action"]
                           not in seen else None)
        seen.add(event["action"])
    if starts:
        top.fill_between([], [], color="gold", alpha=0.3, label="canary")
    top.legend(loc="upper left", fontsize=8, ncol=4)
    mid.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


KEYS = [("hours", "hours scored", "{:,}"), ("mae_kw", "served MAE (kW)", "{:.3f}"),
        ("persistence_mae_kw", "persistence MAE (kW)", "{:.3f}"), ("frozen_mae_kw", "never retrained MAE (kW)", "{:.3f}"),
        ("drift_alarms", "drift alarms", "{}"), ("retrains", "retrains", "{}"), ("promotions", "promotions", "{}"),
        ("rollbacks", "rollbacks", "{}")]


def render_html(summary: dict[str, Any], png: bytes) -> str:
    rows = "".join(f'<tr><th>{label}</th><td data-key="{key}" data-value="{summary[key]!r}">'
                   f'{fmt.format(summary[key]) if summary[key] is not None else "–"}</td></tr>' for key, label, fmt in KEYS)
    events = "".join(f"<tr><td>{html.escape(str(e['replay_hour']))}</td><td>{html.escape(e['action'])}</td>"
                     f"<td>{html.escape(str(e.get('version', '')))}</td>"
                     f"<td>{html.escape(str(e.get('reason') or e.get('trigger') or e.get('features') or ''))}</td></tr>"
                     for e in summary["events"])
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Smart Energy closed loop</title>
<style>body{{font-family:sans-serif;max-width:1250px;margin:1em auto}}td,th{{padding:2px 10px;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>Closed loop replay</h1>
<p>{html.escape(summary['first_hour'])} .. {html.escape(summary['last_hour'])}; production at the end:
{html.escape(summary['production_version'])}.</p>
<table>{rows}</table>
<img alt="timeline" src="data:image/png;base64,{image}">
<h2>Events</h2><table><tr><th>replay hour</th><th>action</th><th>version</th><th>why</th></tr>{events}</table>
<script>for (const i of document.images) i.dataset.width = i.complete ? i.naturalWidth : -1;</script>
</body></html>
"""


def write_outputs(frame: pd.DataFrame, summary: dict[str, Any], out: Path) -> dict[str, str]:
    """``forecasts.csv``, ``timeline.png`` and ``timeline.html`` in ``out``; returns their paths."""
    paths = {"forecasts": out / "forecasts.csv", "timeline_png": out / "timeline.png",
             "timeline_html": out / "timeline.html"}
    frame.to_csv(paths["forecasts"], index=False)
    timeline_png(frame, summary, paths["timeline_png"])
    paths["timeline_html"].write_text(render_html(summary, paths["timeline_png"].read_bytes()))
    return {k: str(v) for k, v in paths.items()}
