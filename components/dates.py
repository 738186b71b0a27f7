"""The day/month order of a meter file's dates, decided from the data: one decision for every reader of raw dates.

UCI files write ``d/m/yyyy``, US exports ``m/d/yyyy``, others ``yyyy-mm-dd`` (unambiguous). A date whose first
field is above 12 can only be d/m; one whose second field is above 12 only m/d. When no date settles it (days
1-12 only), the order is the one in which consecutive rows are consecutive in time: read the wrong way, a minute
file jumps a month at every midnight. A file with dates of both kinds, or slash dates beside ISO ones,
contradicts itself and is refused with its first offending line.

Only the distinct date texts are parsed (a file has few: 1,440 rows a day share one), and the file's order
is described by its runs of equal dates, so the decision costs the same for a day or four years of readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from smart_energy.components.errors import SmartEnergyError

DM, MD, ISO = "d/m/yyyy", "m/d/yyyy", "yyyy-mm-dd"
DEFAULT_ORDER = DM  # the UCI format's, for a file none of whose dates settles it
NO_DATE = -1  # a text that is not a date in the decided order

_SLASH = r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$"
_ISO = r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s*$"


class DateOrderError(SmartEnergyError):
    """The file's dates contradict each other; the message names the first offending line."""


@dataclass(frozen=True)
class DateOrder:
    order: str  # DM, MD or ISO
    decided_by: str  # e.g. "day field above 12 at line 2 ...", "consecutive rows: ...", "iso: ..."


def _epoch_days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of each (year, month, day); ``NO_DATE`` where that is not a calendar date."""
    ok = (month >= 1) & (month <= 12) & (day >= 1) & (year >= 1)
    months = (year - 1970) * 12 + np.where(ok, month, 1) - 1
    start = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    end = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    ok &= day <= end - start
    return np.where(ok, start + day - 1, NO_DATE)


def _fields(texts: pd.Series, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(matched, first, second, third) integer fields of each text against ``pattern``."""
    parts = texts.str.extract(pattern)
    matched = parts[0].notna().to_numpy()
    a, b, c = (pd.to_numeric(parts[i]).fillna(0).to_numpy(dtype=np.int64) for i in range(3))
    return matched, a, b, c


def _first(mask_of_runs: np.ndarray) -> int | None:
    return int(np.argmax(mask_of_runs)) if mask_of_runs.any() else None


def decide_date_order(
    texts: Sequence[str | None],
    run_codes: np.ndarray,
    run_lines: np.ndarray,
    line_text: Callable[[int], str],
    source: str,
) -> tuple[DateOrder, np.ndarray]:
    """Decide the file's date order and read every distinct date text in it.

    Args:
        texts: the file's distinct date texts (``None`` for an empty cell).
        run_codes: for each run of rows with the same date text, in file order, its index into ``texts``
            (negative: no date).
        run_lines: the line number (1-based) where each run starts.
        line_text: the raw text of a line, for the refusal's message.
        source: the file, for messages.

    Returns:
        The order and how it was decided, and each text's date as days since 1970-01-01 (``NO_DATE`` where
        it is not a date in that order).

    Raises:
        DateOrderError: some dates are only valid as d/m and others only as m/d, or slash dates sit beside
            ISO ones; the message names the first line that contradicts the lines before it.
    """
    series = pd.Series([t if isinstance(t, str) else "" for t in texts], dtype="object")
    slash, a, b, y = _fields(series, _SLASH)
    iso, iy, im, idd = _fields(series, _ISO)
    as_dm = np.where(slash, _epoch_days(y, b, a), NO_DATE)
    as_md = np.where(slash, _epoch_days(y, a, b), NO_DATE)
    as_iso = np.where(iso, _epoch_days(iy, im, idd), NO_DATE)

    codes = np.asarray(run_codes, dtype=np.int64)
    lines = np.asarray(run_lines, dtype=np.int64)
    keep = codes >= 0
    codes, lines = codes[keep], lines[keep]

    def refuse(later: int, earlier: int, later_is: str, earlier_is: str) -> DateOrderError:
        line = int(lines[later])
        return DateOrderError(
            f"{source}: line {line} ({line_text(line)[:80]!r}) has a date {later_is}, but line {int(lines[earlier])} "
            f"({texts[codes[earlier]]!r}) has one {earlier_is}: the file mixes date formats; write its dates one way"
        )

    first_slash, first_iso = _first(slash[codes]), _first(iso[codes])
    if first_slash is not None and first_iso is not None:
        if first_iso > first_slash:
            raise refuse(first_iso, first_slash, f"in {ISO}", "with slashes")
        raise refuse(first_slash, first_iso, "with slashes", f"in {ISO}")
    if first_iso is not None:
        return DateOrder(ISO, "iso: yyyy-mm-dd dates are unambiguous"), as_iso

    dm_only = (as_dm >= 0) & (as_md < 0)
    md_only = (as_md >= 0) & (as_dm < 0)
    first_dm, first_md = _first(dm_only[codes]), _first(md_only[codes])
    if first_dm is not None and first_md is not None:
        if first_dm < first_md:
            raise refuse(first_md, first_dm, f"only valid as {MD}", f"only valid as {DM}")
        raise refuse(first_dm, first_md, f"only valid as {DM}", f"only valid as {MD}")
    for first, order, days in ((first_dm, DM, as_dm), (first_md, MD, as_md)):
        if first is not None:
            return DateOrder(order, f"day field above 12 at line {int(lines[first])} "
                                    f"({texts[codes[first]]!r} can only be {order})"), days

    # Neither order settled by a field: the one in which successive dates of the file are closest in time.
    both = (as_dm >= 0) & (as_md >= 0)
    seq = codes[both[codes]]
    seq = seq[np.concatenate([[True], seq[1:] != seq[:-1]])] if len(seq) else seq
    if not both.any():
        return DateOrder(DEFAULT_ORDER, f"default: no valid date ({DEFAULT_ORDER}, the UCI format's order)"), as_dm
    if np.array_equal(as_dm[both], as_md[both]):
        return DateOrder(DEFAULT_ORDER, "default: every date reads the same either way (day = month)"), as_dm
    step_dm = np.abs(np.diff(as_dm[seq])).mean() if len(seq) > 1 else 0.0
    step_md = np.abs(np.diff(as_md[seq])).mean() if len(seq) > 1 else 0.0
    if step_dm == step_md:
        return DateOrder(DEFAULT_ORDER, f"default: neither order is settled by the data ({DEFAULT_ORDER}, "
                                        "the UCI format's order)"), as_dm
    order, days = (DM, as_dm) if step_dm < step_md else (MD, as_md)
    return DateOrder(order, f"consecutive rows: the {len(seq) - 1:,} date changes step {min(step_dm, step_md):.1f} "
                            f"days on average as {order}, {max(step_dm, step_md):.1f} the other way"), days


def runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start row, code) of each run of equal codes in a per-row code array."""
    if len(codes) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]]))
    return starts, codes[starts]
