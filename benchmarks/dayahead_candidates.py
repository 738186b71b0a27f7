"""Research for issue 22 part 1: lead-aware day-ahead candidates, compared on a validation split INSIDE the
training window (never on the scored weeks).

Windows on the shared file (what `make backtest` does: train before the last 4 weeks, score on them):
- training window = the hours before ``training_cutoff(..., holdout_weeks=4)``;
- validation = origins in the last ``VALID_DAYS`` days of that window, targets before the cut-off;
- every candidate is fitted on the pairs whose TARGET hour is before the validation start (no target of the
  validation weeks is ever seen), with early stopping on that fit part's own last 15 % (``time_split``), then
  refitted on the whole fit part with the rounds found (as ``train_dayahead`` does).
The band of every candidate is calibrated as ``evaluate`` does it: the fit part's own CQR shift as the fallback,
then the rolling 7-day conformal shift (``calibration.rolling_band``) on the validation pairs known before each origin.
Quantiles are sorted per row and clipped at 0 kW (``calibrate``).

Origin rows come from ``features.build_feature_frame`` (the same columns and values Feast's point-in-time join
returns for event_timestamp = origin), so no feature store is touched. The scored pairs keep only those whose
target and three baselines exist, as ``scoring_pairs`` does (the stale-meter split is not applied here).

Candidates:
 a  pooled   today's pooled model (DAYAHEAD_FEATURES, PARAMS, margin = usage_mean_24h)
 b  leadx    pooled + lead-interaction / lag-at-target features
 c  rel24    pooled, target relative to the value 24 h before the target hour (base_margin; else mean_24h)
 d  blend    next-hour model at lead 1; at lead L a per-lead weight w_L * next-hour + (1 - w_L) * pooled P50,
             w_L fitted on the fit part's inner split (both models' out-of-sample forecasts there)
 e  direct   one model per lead group (1, 2-3, 4-6, 7-12, 13-24), today's features and margin
and a few combinations of them; ``p+d1``: d1 with the meter's weekly profile at the target hour (the same
weekday-hour over the 4 weeks before, what ``meter_profile_fv`` serves online) as a feature; ``k3``/``k6``: d1 with
next-hour-style direct boosters at leads 2-3 / 2-6; ``r1``-``r3``: lead 1 = the next-hour model, whose departure
from the pooled lead-1 P50 is carried to lead L with a per-lead share (r1), with a blend too (r2), or with one
decay ``phi ** (L - 1)`` (r3); and ``shipped``: the product's own code (``dayahead.fit_dayahead`` and
``raw_quantiles``: r3 with g3's bag, trained inside it), which ``train --horizon 24`` ships; ``g1``/``g3``: r3 with
the pooled refit averaged over 5/10 seeds (``g3`` shipped, as ``dayahead.bag_seeds`` caps it); ``g4``/``g5``: r3
with XGBoost's ``num_parallel_tree`` 5/10 instead; ``g2``: r3's carry with a lasting share, f + (1 - f) phi^(L-1).

Run: ``.venv/bin/python -m benchmarks.dayahead_candidates --data SHARED [--scored]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import xgboost as xgb

# One thread unless told: on the shared 2-core machine, 2 OpenMP threads under load were 17x slower than one
# (60 rounds on 18,000 rows: 5.1 s against 0.29 s), and the fit times below are per thread.
os.environ.setdefault("SE_XGB_THREADS", "1")

if not __package__:  # run as a script: import from the repository's root (pyarrow installs a `benchmarks` of its own)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smart_energy.components.dayahead import (DAYAHEAD_FEATURES, EARLY_STOPPING, MAX_ROUNDS, PARAMS, QUANTILES,
                                              as_lead1, bagged, conformal_shift, expand_leads, fit_dayahead,
                                              lead_adjust, raw_quantiles, score_pairs, usage_series)
from smart_energy.components.calibration import rolling_band
from smart_energy.components.features import (FEATURES, build_feature_frame, keep_meters_with_history, labels,
                                              training_cutoff)
from smart_energy.components.ingest import load_hourly
from smart_energy.components.threads import xgb_threads
from smart_energy.components.train import fit_booster, refit, time_split

from benchmarks.bootstrap import day_bootstrap  # noqa: E402

WEEKS = 4
VALID_DAYS = 14
LEADS = (1, 2, 3, 6, 12, 24)
GROUPS = ((1, 1), (2, 3), (4, 6), (7, 12), (13, 24))
EXTRA = ["target_lag_24h", "target_lag_168h", "target_mean_7d", "lag1_over_lead", "last15_over_lead",
         "lag1_minus_mean24"]
LEADX_FEATURES = DAYAHEAD_FEATURES + EXTRA


def log(msg: str) -> None:
    print(f"candidates: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data
def all_pairs(hourly: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Origin rows (features at H with H's target: the next-hour model's rows) and their (origin, lead) pairs."""
    feats = build_feature_frame(hourly).drop(columns=["created"])
    origins = labels(hourly).merge(feats, on=["meter_id", "event_timestamp"], how="inner")
    usage = usage_series(hourly)
    pairs = expand_leads(origins, usage)
    at = lambda ts: usage.reindex(pd.MultiIndex.from_arrays([pairs["meter_id"], ts])).to_numpy()  # noqa: E731
    pairs["target_lag_24h"] = pairs["seasonal_24h"]
    pairs["target_lag_168h"] = pairs["seasonal_168h"]
    week = np.vstack([at(pairs["target_timestamp"] - pd.Timedelta(hours=24 * k)) for k in range(1, 8)])
    with np.errstate(all="ignore"):
        import warnings

        warnings.simplefilter("ignore", RuntimeWarning)
        pairs["target_mean_7d"] = np.nanmean(week, axis=0)
        # the meter's weekly profile at the target hour: the same weekday-hour over the 4 weeks before (what
        # meter_profile_fv serves online), known at the origin for every lead
        month = np.vstack([at(pairs["target_timestamp"] - pd.Timedelta(days=7 * k)) for k in range(1, 5)])
        pairs["target_profile_4w"] = np.nanmean(month, axis=0)
    lead = pairs["lead_hours"].to_numpy(dtype=float)
    pairs["lag1_over_lead"] = pairs["usage_lag_1h"] / lead
    pairs["last15_over_lead"] = pairs["usage_last_15min"] / lead
    pairs["lag1_minus_mean24"] = (pairs["usage_lag_1h"] - pairs["usage_mean_24h"]) / lead
    return origins, pairs


# ---------------------------------------------------------------- model pieces
def margin_mean24(frame: pd.DataFrame) -> np.ndarray:
    return frame["usage_mean_24h"].fillna(frame["usage_lag_1h"]).fillna(1.0).to_numpy(dtype=float)


def margin_rel24(frame: pd.DataFrame) -> np.ndarray:
    """The value 24 h before the target hour (known at the origin for leads 1..24), else today's margin."""
    return frame["target_lag_24h"].fillna(frame["usage_mean_24h"]).fillna(frame["usage_lag_1h"]).fillna(1.0
                                                                                                        ).to_numpy(float)


def margin_mean7d(frame: pd.DataFrame) -> np.ndarray:
    """The mean of the target hour over the last 7 days (the weekly profile), else today's margin."""
    return frame["target_mean_7d"].fillna(frame["usage_mean_24h"]).fillna(frame["usage_lag_1h"]).fillna(1.0
                                                                                                        ).to_numpy(float)


def dm(frame: pd.DataFrame, features: list[str], margin: Callable, label: bool = False) -> xgb.DMatrix:
    m = np.repeat(margin(frame)[:, None], len(QUANTILES), axis=1)
    return xgb.DMatrix(frame[features], label=frame["target_kw"] if label else None, feature_names=features,
                       base_margin=m)


class Quantile:
    """A pooled multi-quantile XGBoost model (PARAMS), early-stopped on the fit part's last 15 %, then refitted."""

    def __init__(self, features: list[str], margin: Callable = margin_mean24, params: dict | None = None):
        self.features, self.margin = features, margin
        self.params = {**PARAMS, "nthread": xgb_threads(), **(params or {})}

    def fit(self, fit: pd.DataFrame) -> "Quantile":
        inner_fit, inner_valid = time_split(fit)
        self.inner_valid = inner_valid
        self.early = early = xgb.train(self.params, dm(inner_fit, self.features, self.margin, True),
                                       num_boost_round=MAX_ROUNDS,
                          evals=[(dm(inner_valid, self.features, self.margin, True), "valid")],
                          early_stopping_rounds=EARLY_STOPPING, verbose_eval=False)
        self.rounds = early.best_iteration + 1
        self.inner_raw = early.predict(dm(inner_valid, self.features, self.margin),
                                       iteration_range=(0, self.rounds)).reshape(-1, 3)
        self.fallback = conformal_shift(inner_valid["target_kw"].to_numpy(), self.inner_raw)
        self.booster = xgb.train(self.params, dm(fit, self.features, self.margin, True), num_boost_round=self.rounds)
        return self

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(dm(frame, self.features, self.margin)).reshape(-1, 3)


class Bagged(Quantile):
    """``Quantile`` with its refit repeated under ``seeds`` seeds (the row and column subsampling), the forecasts
    averaged by the product's own join (``dayahead.bagged``). Early stopping (and so the rounds, the inner forecast
    and the fallback) is the first seed's, as in ``Quantile`` and ``fit_dayahead``."""

    def __init__(self, features: list[str], seeds: int, **kwargs):
        super().__init__(features, **kwargs)
        self.seeds = seeds

    def fit(self, fit: pd.DataFrame) -> "Bagged":
        super().fit(fit)
        matrix = dm(fit, self.features, self.margin, True)
        self.booster = bagged([self.booster] + [xgb.train({**self.params, "seed": int(self.params["seed"]) + k},
                                                          matrix, num_boost_round=self.rounds)
                                                for k in range(1, self.seeds)])
        self.booster.set_param({"nthread": self.params["nthread"]})
        return self


class Direct:
    """One ``Quantile`` per lead group."""

    def __init__(self, features: list[str], margin: Callable = margin_mean24):
        self.features, self.margin = features, margin

    def fit(self, fit: pd.DataFrame) -> "Direct":
        self.models = {}
        inner_valid, inner_raw = [], []
        for lo, hi in GROUPS:
            part = fit[fit["lead_hours"].between(lo, hi)]
            self.models[(lo, hi)] = m = Quantile(self.features, self.margin).fit(part)
            inner_valid.append(m.inner_valid)
            inner_raw.append(m.inner_raw)
        self.inner_valid = pd.concat(inner_valid)
        self.inner_raw = np.vstack(inner_raw)
        self.fallback = conformal_shift(self.inner_valid["target_kw"].to_numpy(), self.inner_raw)
        self.rounds = {f"{lo}-{hi}": m.rounds for (lo, hi), m in self.models.items()}
        return self

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), 3))
        lead = frame["lead_hours"].to_numpy()
        for (lo, hi), m in self.models.items():
            rows = (lead >= lo) & (lead <= hi)
            if rows.any():
                out[rows] = m.raw(frame[rows])
        return out


class NextHour:
    """The next-hour model (train.fit_booster + refit on the origin rows, as ``train`` does)."""

    def fit(self, origins: pd.DataFrame) -> "NextHour":
        inner_fit, inner_valid = time_split(origins)
        self.early, metrics = fit_booster(inner_fit, inner_valid)
        self.rounds = metrics["best_iteration"] + 1
        self.booster, _ = refit(origins, {}, self.rounds)
        return self

    def predict(self, frame: pd.DataFrame, early: bool = False) -> np.ndarray:
        d = xgb.DMatrix(frame[FEATURES], feature_names=FEATURES)
        if early:
            return self.early.predict(d, iteration_range=(0, self.rounds))
        return self.booster.predict(d)


class Blend:
    """P50 at lead L = w_L * next-hour forecast (of the origin hour) + (1 - w_L) * the base model's P50; the
    base's P10/P90 move with its P50 (same offsets). w_1 = 1 is the next-hour model at lead 1 unless the split
    says otherwise; every w_L is chosen on the fit part's inner split (grid 0..1, least absolute error), unless
    ``weights`` gives them."""

    GRID = np.linspace(0, 1, 21)

    def __init__(self, base, next_hour: NextHour, lead1_next_hour: bool = False,
                 weights: dict[int, float] | None = None):
        self.base, self.nh, self.lead1_next_hour, self.fixed = base, next_hour, lead1_next_hour, weights

    def fit(self, fit: pd.DataFrame) -> "Blend":
        self.base.fit(fit)
        iv, raw = self.base.inner_valid, self.base.inner_raw
        nh = self.nh.predict(iv, early=True)  # out of sample on the inner split (fitted before it)
        y, lead = iv["target_kw"].to_numpy(), iv["lead_hours"].to_numpy()
        self.weights = dict(self.fixed or {})  # given weights are kept; else each is chosen on the grid
        for k in range(1, 25) if self.fixed is None else ():
            r = lead == k
            errs = [np.mean(np.abs(w * nh[r] + (1 - w) * raw[r, 1] - y[r])) for w in self.GRID]
            self.weights[k] = float(self.GRID[int(np.argmin(errs))])
        if self.lead1_next_hour:
            self.weights[1] = 1.0  # lead 1 IS the next-hour model's forecast (issue 22: never worse than it)
        self.inner_valid = iv
        self.inner_raw = self._apply(raw, nh, lead)
        self.fallback = conformal_shift(y, self.inner_raw)
        self.rounds = self.base.rounds
        return self

    def _apply(self, raw: np.ndarray, nh: np.ndarray, lead: np.ndarray) -> np.ndarray:
        w = np.array([self.weights[int(k)] for k in lead])
        delta = w * (nh - raw[:, 1])
        return raw + delta[:, None]

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return self._apply(self.base.raw(frame), self.nh.predict(frame), frame["lead_hours"].to_numpy())


class Carry(Blend):
    """The next-hour model's departure from the pooled model at lead 1, carried to the later leads: P50 at lead L
    = pooled P50(L) + c_L * (next-hour forecast - pooled P50 at lead 1 of the same origin), P10/P90 with it; with
    ``both``, also the blend's w_L * (next-hour - pooled P50(L)) (a 2-D grid). c_1 = 1 is the next-hour model."""

    C_GRID = np.linspace(0, 1.2, 25)

    FLOOR_GRID = np.linspace(0, 0.5, 11)

    def __init__(self, base, next_hour: NextHour, both: bool = False, decay: bool = False, floor: bool = False):
        super().__init__(base, next_hour, True)
        self.both, self.decay, self.floor = both, decay, floor

    def fit(self, fit: pd.DataFrame) -> "Carry":
        self.base.fit(fit)
        iv, raw = self.base.inner_valid, self.base.inner_raw
        lead1 = self.base.early.predict(dm(as_lead1(iv), self.base.features, self.base.margin),
                                        iteration_range=(0, self.base.rounds)).reshape(-1, 3)[:, 1]
        nh = self.nh.predict(iv, early=True)
        y, lead = iv["target_kw"].to_numpy(), iv["lead_hours"].to_numpy()
        self.weights, self.carry = {1: 0.0}, {1: 1.0}
        wgrid = self.GRID if self.both else np.zeros(1)
        if self.decay:  # one parameter: c_L = phi ** (L - 1); with ``floor``, c_L = f + (1 - f) * phi ** (L - 1)
            gap = nh - lead1
            share = lambda phi, f: f + (1 - f) * phi ** (lead - 1)  # noqa: E731
            grid = [(phi, f) for phi in np.linspace(0, 0.95, 20) for f in (self.FLOOR_GRID if self.floor else [0.0])]
            errs = [np.mean(np.abs(raw[:, 1] + share(phi, f) * gap - y)) for phi, f in grid]
            phi, f = grid[int(np.argmin(errs))]
            self.carry = {k: f + (1 - f) * phi ** (k - 1) for k in range(1, 25)}
            self.weights = {k: 0.0 for k in range(1, 25)}
        for k in range(2, 25) if not self.decay else ():
            r = lead == k
            best = min(((np.mean(np.abs(raw[r, 1] + c * (nh[r] - lead1[r]) + w * (nh[r] - raw[r, 1]) - y[r])), c, w)
                        for c in self.C_GRID for w in wgrid), key=lambda t: t[0])
            self.carry[k], self.weights[k] = float(best[1]), float(best[2])
        self.inner_valid = iv
        self.inner_raw = self._carry(raw, lead1, nh, lead)
        self.fallback = conformal_shift(y, self.inner_raw)
        self.rounds = self.base.rounds
        return self

    def _carry(self, raw: np.ndarray, lead1: np.ndarray, nh: np.ndarray, lead: np.ndarray) -> np.ndarray:
        c = np.array([self.carry[int(k)] for k in lead])
        w = np.array([self.weights[int(k)] for k in lead])
        return lead_adjust(raw, nh, lead1, lead, w, c)  # the product's rule

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        lead1 = self.base.raw(as_lead1(frame))[:, 1]
        return self._carry(self.base.raw(frame), lead1, self.nh.predict(frame), frame["lead_hours"].to_numpy())


class ShiftedNextHour(NextHour):
    """A next-hour-style model (train.fit_booster + refit) whose target is the hour ``k - 1`` after the origin
    hour: the direct strategy with the next-hour model's objective and features (lead k's own booster)."""

    def __init__(self, k: int):
        self.k = k

    def fit(self, origins: pd.DataFrame) -> "ShiftedNextHour":
        o = origins.sort_values(["meter_id", "event_timestamp"]).reset_index(drop=True)
        y = pd.Series(o["target_kw"].to_numpy(), index=pd.MultiIndex.from_arrays([o["meter_id"], o["event_timestamp"]]))
        want = pd.MultiIndex.from_arrays([o["meter_id"], o["event_timestamp"] + pd.Timedelta(hours=self.k - 1)])
        o = o.assign(target_kw=y.reindex(want).to_numpy()).dropna(subset=["target_kw"])  # within the fit part only
        return super().fit(o.reset_index(drop=True))


class DirectBlend(Blend):
    """d1 with a next-hour-style booster per lead up to ``K`` (lead k's forecast blended with the pooled P50 at
    lead k, w_1 = 1); leads beyond K blend with the lead-K booster's forecast."""

    def __init__(self, base, K: int):
        self.base, self.K = base, K
        self.models = {k: ShiftedNextHour(k) for k in range(1, K + 1)}

    def fit(self, fit: pd.DataFrame) -> "DirectBlend":
        origins = self._origins
        for m in self.models.values():
            m.fit(origins)
        self.base.fit(fit)
        iv, raw = self.base.inner_valid, self.base.inner_raw
        direct = self._direct(iv, early=True)
        y, lead = iv["target_kw"].to_numpy(), iv["lead_hours"].to_numpy()
        self.weights = {}
        for k in range(1, 25):
            r = lead == k
            errs = [np.mean(np.abs(w * direct[r] + (1 - w) * raw[r, 1] - y[r])) for w in self.GRID]
            self.weights[k] = float(self.GRID[int(np.argmin(errs))])
        self.weights[1] = 1.0
        self.inner_raw = self._apply_direct(raw, direct, lead)
        self.fallback = conformal_shift(y, self.inner_raw)
        self.rounds = (self.base.rounds, {k: m.rounds for k, m in self.models.items()})
        return self

    def _direct(self, frame: pd.DataFrame, early: bool = False) -> np.ndarray:
        lead = np.minimum(frame["lead_hours"].to_numpy(), self.K)
        out = np.empty(len(frame))
        for k, m in self.models.items():
            rows = lead == k
            if rows.any():
                out[rows] = m.predict(frame[rows], early=early)
        return out

    def _apply_direct(self, raw: np.ndarray, direct: np.ndarray, lead: np.ndarray) -> np.ndarray:
        w = np.array([self.weights[int(k)] for k in lead])
        return raw + (w * (direct - raw[:, 1]))[:, None]

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return self._apply_direct(self.base.raw(frame), self._direct(frame), frame["lead_hours"].to_numpy())


class WithNextHour(Quantile):
    """The pooled model with the next-hour model's forecast of the origin hour as one more feature (``nh_kw``):
    the trees learn how far each lead follows it. In training the feature is out of fold (the origin rows cut in
    ``K`` time blocks, each forecast by a next-hour booster refitted on the others with the same rounds); at
    forecast time it is the next-hour model's own forecast, as serving would compute it."""

    K = 4

    def __init__(self, nh: "NextHour", origins: pd.DataFrame):
        super().__init__(DAYAHEAD_FEATURES + ["nh_kw"])
        self.nh, self.origins = nh, origins

    def _out_of_fold(self) -> pd.Series:
        o = self.origins.sort_values(["event_timestamp", "meter_id"]).reset_index(drop=True)
        pred = np.empty(len(o))
        for block in np.array_split(np.arange(len(o)), self.K):
            booster, _ = refit(o.drop(index=block), {}, self.nh.rounds)
            pred[block] = booster.predict(xgb.DMatrix(o.loc[block, FEATURES], feature_names=FEATURES))
        return pd.Series(pred, index=pd.MultiIndex.from_arrays([o["meter_id"], o["event_timestamp"]]))

    def fit(self, fit: pd.DataFrame) -> "WithNextHour":
        oof = self._out_of_fold()
        key = pd.MultiIndex.from_arrays([fit["meter_id"], fit["event_timestamp"]])
        return super().fit(fit.assign(nh_kw=oof.reindex(key).to_numpy()))

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return super().raw(frame.assign(nh_kw=self.nh.predict(frame)))


class Shipped:
    """What ``train --horizon 24`` ships: ``dayahead.fit_dayahead`` on the fit pairs and their origin rows (its own
    next-hour booster, blend weights and CQR fallback), forecasts by ``dayahead.raw_quantiles``."""

    def __init__(self, origins: pd.DataFrame):
        self.origins = origins

    def fit(self, fit: pd.DataFrame) -> "Shipped":
        got = fit_dayahead(fit, self.origins)
        self.model, self.fallback = got["model"], got["conformal_kw"]
        self.rounds = (got["rounds"], got["next_hour_rounds"])
        self.weights = {k: float(w) for k, w in enumerate(self.model.carry, start=1)}  # the carry, per lead
        return self

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return raw_quantiles(self.model, frame)


def rolling(model, pairs: pd.DataFrame) -> np.ndarray:
    """``evaluate``'s band for any candidate: raw quantiles, then the one calibration path
    (``calibration.rolling_band``: per-meter 7-day rolling CQR shift, the candidate's fallback, sort, clip)."""
    return rolling_band(model.raw(pairs), pairs, model.fallback)[0]


# ---------------------------------------------------------------- run
def _with(model: DirectBlend, origins: pd.DataFrame) -> DirectBlend:
    model._origins = origins
    return model


def candidates(nh: NextHour, origins: pd.DataFrame) -> dict[str, Callable[[], Any]]:
    return {
        "a  pooled (today)": lambda: Quantile(DAYAHEAD_FEATURES),
        "shipped: r3 + bag, as train --horizon 24 fits it": lambda: Shipped(origins),
        "b  pooled + lead/target-lag features": lambda: Quantile(LEADX_FEATURES),
        "c  pooled, relative to t-24h": lambda: Quantile(DAYAHEAD_FEATURES, margin_rel24),
        "c' pooled, relative to 7-day profile": lambda: Quantile(DAYAHEAD_FEATURES, margin_mean7d),
        "d  next-hour lead 1 + blend with (a)": lambda: Blend(Quantile(DAYAHEAD_FEATURES), nh),
        "e  direct per lead group": lambda: Direct(DAYAHEAD_FEATURES),
        "b+c": lambda: Quantile(LEADX_FEATURES, margin_rel24),
        "b+d": lambda: Blend(Quantile(LEADX_FEATURES), nh),
        "b+e": lambda: Direct(LEADX_FEATURES),
        "b+c'+d": lambda: Blend(Quantile(LEADX_FEATURES, margin_mean7d), nh),
        "d1 (a) blend, lead 1 = next-hour": lambda: Blend(Quantile(DAYAHEAD_FEATURES), nh, True),
        "b+d1 (b) blend, lead 1 = next-hour": lambda: Blend(Quantile(LEADX_FEATURES), nh, True),
        "b+c'+d1 lead 1 = next-hour": lambda: Blend(Quantile(LEADX_FEATURES, margin_mean7d), nh, True),
        "p+d1 d1 + weekly profile at target": lambda: Blend(Quantile(DAYAHEAD_FEATURES + ["target_profile_4w"]), nh,
                                                           True),
        "r1 carry the lead-1 departure": lambda: Carry(Quantile(DAYAHEAD_FEATURES), nh),
        "r2 carry + blend (2-D grid)": lambda: Carry(Quantile(DAYAHEAD_FEATURES), nh, both=True),
        "r3 carry, c_L = phi^(L-1)": lambda: Carry(Quantile(DAYAHEAD_FEATURES), nh, decay=True),
        "g1 r3, pooled bagged over 5 seeds": lambda: Carry(Bagged(DAYAHEAD_FEATURES, 5), nh, decay=True),
        "g3 r3, pooled bagged over 10 seeds": lambda: Carry(Bagged(DAYAHEAD_FEATURES, 10), nh, decay=True),
        "g4 r3, num_parallel_tree 5": lambda: Carry(Quantile(DAYAHEAD_FEATURES, params={"num_parallel_tree": 5}), nh,
                                                      decay=True),
        "g5 r3, num_parallel_tree 10": lambda: Carry(Quantile(DAYAHEAD_FEATURES, params={"num_parallel_tree": 10}),
                                                       nh, decay=True),
        "g2 r3 + a lasting share f + (1-f) phi^(L-1)": lambda: Carry(Quantile(DAYAHEAD_FEATURES), nh, decay=True,
                                                                     floor=True),
        "h1 r3, eta 0.05": lambda: Carry(Quantile(DAYAHEAD_FEATURES, params={"eta": 0.05}), nh, decay=True),
        "h2 r3, depth 3": lambda: Carry(Quantile(DAYAHEAD_FEATURES, params={"max_depth": 3}), nh, decay=True),
        "h3 r3, depth 7": lambda: Carry(Quantile(DAYAHEAD_FEATURES, params={"max_depth": 7}), nh, decay=True),
        "h4 r3, min_child_weight 20": lambda: Carry(Quantile(DAYAHEAD_FEATURES, params={"min_child_weight": 20}), nh,
                                                    decay=True),
        "s1 pooled + next-hour forecast as a feature, lead 1 = next hour": lambda: Blend(
            WithNextHour(nh, origins), nh, True, weights={k: float(k == 1) for k in range(1, 25)}),
        "k3 d1 + next-hour-style boosters for leads 2-3": lambda: _with(DirectBlend(Quantile(DAYAHEAD_FEATURES), 3),
                                                                         origins),
        "k6 d1 + next-hour-style boosters for leads 2-6": lambda: _with(DirectBlend(Quantile(DAYAHEAD_FEATURES), 6),
                                                                         origins),
    }


def scorable(pairs: pd.DataFrame) -> pd.DataFrame:
    keep = pairs["target_kw"].notna() & pairs[["persistence", "seasonal_24h", "seasonal_168h"]].notna().all(axis=1)
    return pairs[keep].sort_values(["event_timestamp", "lead_hours"]).reset_index(drop=True)


def header() -> str:
    return (f"{'candidate':40s}" + "".join(f"{k:>7d}" for k in LEADS)
            + f"{'all':>7s}{'cover':>7s}{'pinball':>8s}{'cross':>6s}{'fit s':>7s}")


def row(label: str, s: dict, seconds: float | None = None) -> str:
    cells = "".join(f"{s['mae_by_lead'][k]:7.3f}" for k in LEADS)
    cov = f"{s['coverage_p10_p90']:7.3f}" if "coverage_p10_p90" in s else f"{'—':>7s}"
    pin = f"{s['pinball_kw']:8.3f}" if "pinball_kw" in s else f"{'—':>8s}"
    cross = f"{s['quantiles_cross']:6d}" if "quantiles_cross" in s else f"{'—':>6s}"
    sec = f"{seconds:7.1f}" if seconds is not None else f"{'':>7s}"
    return f"{label:40s}{cells}{s['mae_kw']:7.3f}{cov}{pin}{cross}{sec}"


def describe(fit_pairs: pd.DataFrame, eval_pairs: pd.DataFrame) -> None:
    print(f"fit: {len(fit_pairs):,} pairs ({fit_pairs['event_timestamp'].min():%Y-%m-%d %H:%M} .. targets before "
          f"{fit_pairs['target_timestamp'].max() + pd.Timedelta(hours=1):%Y-%m-%d %H:%M}); scored: "
          f"{len(eval_pairs):,} pairs, {eval_pairs['event_timestamp'].nunique()} origins "
          f"({eval_pairs['event_timestamp'].min():%Y-%m-%d %H:%M} .. {eval_pairs['event_timestamp'].max():%Y-%m-%d %H:%M})",
          flush=True)


def run(fit_pairs: pd.DataFrame, fit_origins: pd.DataFrame, eval_pairs: pd.DataFrame,
        names: list[str] | None = None, deadline: float | None = None) -> dict[str, Any]:
    """Fit every candidate on ``fit_*`` and forecast ``eval_pairs`` (rolling band): forecasts, seconds, info."""
    start = time.perf_counter()
    nh = NextHour().fit(fit_origins)
    nh_seconds = time.perf_counter() - start
    lead1 = eval_pairs[eval_pairs["lead_hours"] == 1]
    out = {"_nh": (nh.predict(lead1), lead1["target_kw"].to_numpy(), nh_seconds)}
    for name, make in candidates(nh, fit_origins).items():
        if names and not any(name.startswith(n) for n in names):
            continue
        if deadline and time.time() > deadline:
            log(f"deadline: skipping {name}")
            continue
        t0 = time.perf_counter()
        model = make().fit(fit_pairs)
        seconds = time.perf_counter() - t0 + (nh_seconds if isinstance(model, Blend) else 0.0)
        forecast = rolling(model, eval_pairs)
        assert np.all(np.diff(forecast, axis=1) >= 0) and np.all(forecast >= 0)
        out[name] = (forecast, seconds, model.rounds, getattr(model, "weights", None))
        log(f"{name}: {seconds:.1f} s")
        if hasattr(model, "carry"):
            log(f"{name}: carry " + ", ".join(f"L{k}={model.carry[k]:.2f}/{model.weights[k]:.2f}"
                                              for k in (2, 3, 4, 5, 6, 9, 12, 18, 24)))
    return out


def report(runs: list[tuple[pd.DataFrame, dict[str, Any]]]) -> dict[str, dict]:
    """Print the pooled scores of one or more (eval pairs, run) folds, and per-fold overall MAE when several."""
    pairs = pd.concat([p for p, _ in runs], ignore_index=True)
    names = [n for n in runs[0][1] if not n.startswith("_")]
    results, rows, deltas = {}, [], []
    for name in names:
        forecast = np.vstack([r[name][0] for _, r in runs])
        seconds = float(np.mean([r[name][1] for _, r in runs]))
        s = score_pairs(pairs, forecast)
        per_fold = [score_pairs(p, r[name][0])["mae_kw"] for p, r in runs]
        results[name] = s | {"fit_seconds": seconds, "rounds": [r[name][2] for _, r in runs],
                             "weights": runs[-1][1][name][3], "per_fold_mae": per_fold}
        rows.append(row(name, s, seconds) + ("  folds " + " ".join(f"{m:.3f}" for m in per_fold)
                                             if len(runs) > 1 else ""))
        err = np.abs(forecast[:, 1] - pairs["target_kw"].to_numpy())
        if name == names[0]:
            base_err = err
        else:
            lo, mid, hi = day_bootstrap(pairs, err - base_err)
            results[name]["delta_vs_first"] = [lo, mid, hi]
            deltas.append(f"{name[:34]:34s} {mid:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    nh_pred = np.concatenate([r["_nh"][0] for _, r in runs])
    nh_y = np.concatenate([r["_nh"][1] for _, r in runs])
    nh_mae = float(np.mean(np.abs(nh_pred - nh_y)))
    nh_seconds = float(np.mean([r["_nh"][2] for _, r in runs]))
    print("P50 MAE (kW) by lead, P10-P90 coverage, pinball (kW), crossed rows, fit seconds (early stop + refit)")
    print(header())
    for r in rows:
        print(r)
    base = next(iter(results.values()))
    for b, bs in base["baselines"].items():
        print(row(b, bs))
    print(f"{'next-hour model on the lead-1 pairs':40s}{nh_mae:7.3f}{'':>42s}{'':>28s}{nh_seconds:7.1f}")
    for name, s in results.items():
        if s["weights"]:
            w = s["weights"]
            print(f"blend weights of the next-hour forecast ({name}): "
                  + ", ".join(f"L{k}={w[k]:.2f}" for k in (1, 2, 3, 4, 6, 9, 12, 18, 24)))
    if deltas:
        print(f"overall P50 MAE minus {names[0]!r}'s, kW: mean [90 % interval, bootstrap over origin days]")
        for d in deltas:
            print("  " + d)
    print("rounds: " + "; ".join(f"{n.split()[0]}={s['rounds']}" for n, s in results.items()), flush=True)
    return results | {"_next_hour_lead1": nh_mae}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="candidate name prefixes (default: all)")
    parser.add_argument("--scored", nargs="*", default=None,
                        help="also score these candidates (prefixes) on the real scored weeks, for information")
    parser.add_argument("--folds", type=int, default=0,
                        help="also a rolling-origin check: this many 7-day folds at the end of the training window, "
                             "each fitted on everything before it")
    parser.add_argument("--json", type=Path, default=None, help="write every section's scores (all 24 leads) here")
    parser.add_argument("--deadline", type=float, default=None, help="unix time after which no new fit starts")
    args = parser.parse_args()
    from benchmarks import require_file

    require_file(args.data, "--data")
    started = time.perf_counter()
    hourly, _ = keep_meters_with_history(load_hourly(args.data))
    cutoff = training_cutoff(hourly["timestamp"].min(), hourly["timestamp"].max(), None, WEEKS)
    valid_start = cutoff - pd.Timedelta(days=VALID_DAYS)
    origins, pairs = all_pairs(hourly)
    pairs = pairs[pairs["target_kw"].notna()]
    log(f"{len(pairs):,} pairs built in {time.perf_counter() - started:.0f} s; cut-off {cutoff}, validation from "
        f"{valid_start}")
    fit_pairs = pairs[pairs["target_timestamp"] < valid_start].reset_index(drop=True)
    fit_origins = origins[origins["event_timestamp"] < valid_start].reset_index(drop=True)
    valid_pairs = scorable(pairs[(pairs["event_timestamp"] >= valid_start) & (pairs["target_timestamp"] < cutoff)])
    t0 = time.perf_counter()
    print(f"\n== VALIDATION inside the training window: fit before {valid_start:%Y-%m-%d %H:%M}, validate origins "
          f"{valid_start:%Y-%m-%d %H:%M} .. cut-off {cutoff:%Y-%m-%d %H:%M} (targets before it) ==")
    describe(fit_pairs, valid_pairs)
    dump = {"validation": report([(valid_pairs, run(fit_pairs, fit_origins, valid_pairs, args.only, args.deadline))])}
    print(f"section time {time.perf_counter() - t0:.0f} s")
    if args.folds:
        t0 = time.perf_counter()
        print(f"\n== VALIDATION, rolling origin: {args.folds} weekly folds before the cut-off, each fitted on the "
              f"targets before its first origin (pooled scores; per-fold overall MAE at the right) ==")
        runs = []
        for k in range(args.folds, 0, -1):
            lo, hi = cutoff - pd.Timedelta(days=7 * k), cutoff - pd.Timedelta(days=7 * (k - 1))
            fp = pairs[pairs["target_timestamp"] < lo].reset_index(drop=True)
            fo = origins[origins["event_timestamp"] < lo].reset_index(drop=True)
            ev = scorable(pairs[(pairs["event_timestamp"] >= lo) & (pairs["target_timestamp"] < hi)])
            describe(fp, ev)
            runs.append((ev, run(fp, fo, ev, args.only, args.deadline)))
        dump["folds"] = report(runs)
        print(f"section time {time.perf_counter() - t0:.0f} s")
    if args.scored is not None:
        train_pairs = pairs[pairs["target_timestamp"] < cutoff].reset_index(drop=True)
        train_origins = origins[origins["event_timestamp"] < cutoff].reset_index(drop=True)
        scored = scorable(pairs[pairs["event_timestamp"] >= cutoff])
        t0 = time.perf_counter()
        print(f"\n== SCORED WEEKS, for information only (the choice was made on validation): trained before "
              f"{cutoff:%Y-%m-%d %H:%M}, scored on the last {WEEKS} weeks ==")
        describe(train_pairs, scored)
        dump["scored_weeks"] = report([(scored, run(train_pairs, train_origins, scored, args.scored or None,
                                                     args.deadline))])
        print(f"section time {time.perf_counter() - t0:.0f} s")
    if args.json:
        import json

        args.json.write_text(json.dumps(dump, indent=1, default=str))
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
