"""Day-ahead probabilistic forecasts: P10, P50 and P90 of each of the next 24 hours.

One XGBoost model over every (origin, lead) pair, trained with XGBoost's own multi-quantile objective
(``reg:quantileerror``) on the same Feast point-in-time rows as the next-hour model: the row at the origin
T (what is known at the start of hour T) plus the lead (1..24: lead 1 is hour T itself) and the target
hour's calendar. The 10-90 band is calibrated by conformalized quantile regression (Romano et al., 2019: widen
or narrow both ends by a quantile of the conformity scores ``max(P10 - y, y - P90)``), on a rolling window:
a forecast made at origin T uses the scores of the pairs whose actuals were known at T, over the last
``CALIBRATION_DAYS`` (the time-ordered validation part's, stored with the model, until a day of them exists).
A fixed calibration from the training window under-covered February on the shared file (0.64 for 0.80): a
household's spread moves with the weeks. The three outputs are then sorted per row, so quantiles never cross,
and power is never negative.

Short leads use what the next-hour model knows (issue 22; chosen on validation splits inside the training
window, ``benchmarks/dayahead_candidates.py``, candidate r3): the model directory also holds a next-hour booster
(``next_hour.json``) trained by ``train``'s own functions on the same origin rows before the same cut-off. At lead
1 the P50 IS its forecast of hour T. Its departure from the pooled model's lead-1 P50 of the same origin (what the
last hours say that the pooled model missed) is carried to the later leads with a decay: P50 at lead L = pooled
P50(L) + ``phi ** (L - 1)`` * (next-hour - pooled P50(1)), one ``phi`` fitted on the time-ordered inner split (both
models out of sample there) and stored in the metadata (``lead_blend.carry``); P10 and P90 move by the same amount
as the P50, before the calibration. A model from before the carry (``lead_blend.weights``: P50 = ``w_L *
next-hour + (1 - w_L) * pooled P50``) is read by the same function, the one rule below holding both.

Where the training window is small, the pooled booster's final refit is repeated under several seeds (its row and
column subsampling) and the forecasts averaged (``bag_seeds``: seeds x pairs within one ``MAX_ORIGINS`` fit, at
most 10), joined into one booster (``bagged``), so the model directory and every server read it unchanged. The mean
of K forecasts is never further from an hour's actual than their average distance is (the absolute error is
convex), so, hour by hour, the bag's P50 error is at most the seeds' mean error (the carry is linear in the pooled
forecasts, so this holds after it); on validation the bag was better than the one seed shipped before (candidate
g3). A fleet or a year of one meter keeps one booster and the same cost.

Baselines for target hour t forecast at origin T: persistence (T-1, the last known hour, for every lead),
seasonal 24 h (t-24 h, known at T for every lead up to 24) and seasonal 168 h (t-168 h).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from smart_energy.components.calibration import (BAND, CALIBRATION_DAYS, MIN_CALIBRATION_PAIRS,  # noqa: F401
                                                 QUANTILES, calibrate, conformal_shift, conformity, pinball_rows,
                                                 rolling_band, rolling_shift)
from smart_energy.components.calibration import HORIZON as HORIZON_HOURS
from smart_energy.components.errors import SmartEnergyError
from smart_energy.components.features import (DRIFT_FEATURES, FEATURES, _calendar,
                                              find_gaps, keep_meters_with_history, training_cutoff, usable_usage,
                                              with_history)
from smart_energy.components.ingest import load_hourly
from smart_energy.components.online_rows import next_hour_kw
from smart_energy.components.settings import Settings, get_settings
from smart_energy.components.threads import xgb_threads

OUTPUTS = ("p10_kw", "p50_kw", "p90_kw")
TARGET_CALENDAR = ["target_hour_of_day", "target_day_of_week", "target_is_weekend", "target_is_holiday"]
DAYAHEAD_FEATURES = FEATURES + ["lead_hours"] + TARGET_CALENDAR
PARAMS: dict[str, Any] = {"objective": "reg:quantileerror", "quantile_alpha": np.array(QUANTILES),
                          "eval_metric": "quantile", "tree_method": "hist", "max_depth": 5, "eta": 0.1,
                          "subsample": 0.8, "colsample_bytree": 0.8, "min_child_weight": 5, "seed": 7}  # nthread: the CPU limit
MAX_ROUNDS, EARLY_STOPPING = 300, 50  # early stopping ends the shared file near 40 rounds (eta 0.1)
# A year of hourly origins (210,240 pairs) at most: an origin's 24 pairs share one row, so more origins add
# little but time (4 years: 816,000 pairs, > 10 min of boosting); beyond it, origins are sampled (seeded).
MAX_ORIGINS = 8760
BASELINES = ("persistence", "seasonal_24h", "seasonal_168h")
NEXT_HOUR_FILE = "next_hour.json"  # the next-hour booster of a lead-aware day-ahead model directory
BLEND_ATTR = "lead_blend_file"  # set on the pooled booster of a lead-aware model: it is not a model alone
CARRY_GRID = np.linspace(0.0, 0.95, 20)  # candidate decays phi of the next-hour model's departure
# The final pooled refit is repeated under this many seeds (the row and column subsampling) and averaged, where
# the fit is small: seeds * pairs stays within one MAX_ORIGINS fit (24 pairs per origin), so a fleet or a year of
# one meter keeps one booster and the same cost; the shared file's 6 weeks (26,364 pairs) get 7 (candidate g3).
BAG_MAX_SEEDS, BAG_BUDGET_PAIRS = 10, MAX_ORIGINS * HORIZON_HOURS


def usage_series(hourly: pd.DataFrame) -> pd.Series:
    """Usable hourly mean kW (complete hours only) indexed by (meter_id, timestamp)."""
    return pd.Series(usable_usage(hourly).to_numpy(), index=pd.MultiIndex.from_arrays(
        [hourly["meter_id"], hourly["timestamp"]])).dropna()


def expand_leads(origins: pd.DataFrame, usage: pd.Series | None = None) -> pd.DataFrame:
    """One row per (origin row, lead 1..24): the origin's features, the lead, the target hour's calendar and,
    given ``usage``, the target (``target_kw``) and the three baselines (NaN where the hour is unknown)."""
    parts = []
    for lead in range(1, HORIZON_HOURS + 1):
        part = origins[["meter_id", "event_timestamp", *FEATURES]].copy()
        part["lead_hours"] = lead
        part["target_timestamp"] = part["event_timestamp"] + pd.Timedelta(hours=lead - 1)
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    target = pd.DatetimeIndex(out["target_timestamp"])
    calendar = _calendar(target)
    for name in TARGET_CALENDAR:
        out[name] = calendar[name.removeprefix("target_")].to_numpy()
    if usage is not None:
        def at(ts: pd.Series) -> np.ndarray:
            return usage.reindex(pd.MultiIndex.from_arrays([out["meter_id"], ts])).to_numpy()

        out["target_kw"] = at(out["target_timestamp"])
        out["persistence"] = out["usage_lag_1h"]
        out["seasonal_24h"] = at(out["target_timestamp"] - pd.Timedelta(hours=24))
        out["seasonal_168h"] = at(out["target_timestamp"] - pd.Timedelta(hours=168))
    return out


def margin(frame: pd.DataFrame) -> np.ndarray:
    """Where the trees start from, per row and quantile: the last 24 h mean (else the last hour, else 1 kW).

    The trees then learn the departure from the day's level; from a constant start, the same trees moved
    every lead toward the all-time median (hold-out P50 MAE 0.836 kW against 0.790 from this margin).
    """
    return start_level(frame["usage_mean_24h"].to_numpy(dtype=float), frame["usage_lag_1h"].to_numpy(dtype=float))


def start_level(mean_24h: np.ndarray, lag_1h: np.ndarray) -> np.ndarray:
    """``margin`` from its two columns: the 24 h mean, else the last hour, else 1 kW, once per quantile."""
    level = np.where(np.isnan(mean_24h), lag_1h, mean_24h)
    level = np.where(np.isnan(level), 1.0, level)
    return np.repeat(level[:, None], len(QUANTILES), axis=1)


def dmatrix(frame: pd.DataFrame, label: bool = False) -> xgb.DMatrix:
    return xgb.DMatrix(frame[DAYAHEAD_FEATURES], label=frame["target_kw"] if label else None,
                       feature_names=DAYAHEAD_FEATURES, base_margin=margin(frame))


@dataclass
class DayAheadModel:
    """A day-ahead model: the pooled quantile booster and, when lead-aware, the next-hour booster with, per lead
    1..24, the share ``carry`` of its departure from the pooled lead-1 P50 that the lead keeps (``phi ** (L - 1)``)
    and, for a model from before the carry, the blend ``weights`` of its forecast (0 in a new model)."""

    pooled: xgb.Booster
    next_hour: xgb.Booster | None = None
    weights: np.ndarray | None = None
    carry: np.ndarray | None = None


def carry_of(phi: float) -> np.ndarray:
    """The share of the next-hour departure each lead 1..24 keeps: ``phi ** (L - 1)`` (1 at lead 1)."""
    return float(phi) ** np.arange(HORIZON_HOURS, dtype=float)


def per_lead(values: np.ndarray | None, lead: np.ndarray) -> np.ndarray:
    """Each row's value of a per-lead vector; 0 (the pooled model alone) for a lead outside 1..24 or no vector."""
    lead = np.asarray(lead, dtype=float)
    out = np.zeros(len(lead))
    if values is None:
        return out
    ok = np.isfinite(lead) & (lead >= 1) & (lead <= HORIZON_HOURS)
    out[ok] = np.asarray(values, dtype=float)[np.rint(lead[ok]).astype(int) - 1]
    return out


def lead_adjust(raw: np.ndarray, next_hour: np.ndarray, pooled_lead1: np.ndarray, lead: np.ndarray,
                w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The lead-aware P50: pooled P50 + ``c`` * (next-hour - pooled lead-1 P50 of the same origin) + ``w`` *
    (next-hour - pooled P50); exactly the next-hour forecast at lead 1. P10 and P90 move by the same amount."""
    p50 = raw[:, 1] + c * (next_hour - pooled_lead1) + w * (next_hour - raw[:, 1])
    p50 = np.where(np.asarray(lead) == 1, next_hour, p50)
    out = raw + (p50 - raw[:, 1])[:, None]
    out[:, 1] = p50
    return out


def lead1_matrix(origin_matrix: np.ndarray) -> np.ndarray:
    """Origin rows (``FEATURES`` columns) asked for lead 1, as ``DAYAHEAD_FEATURES`` columns: the origin hour
    itself, whose calendar is the target's."""
    out = np.empty((len(origin_matrix), len(DAYAHEAD_FEATURES)), dtype=origin_matrix.dtype)
    out[:, : len(FEATURES)] = origin_matrix  # DAYAHEAD_FEATURES starts with FEATURES, in order
    out[:, len(FEATURES)] = 1
    for name in TARGET_CALENDAR:
        out[:, DAYAHEAD_FEATURES.index(name)] = origin_matrix[:, FEATURES.index(name.removeprefix("target_"))]
    return out


def as_lead1(origin_rows: pd.DataFrame) -> pd.DataFrame:
    """``lead1_matrix`` of a frame's origin rows, as a frame."""
    return pd.DataFrame(lead1_matrix(origin_rows[FEATURES].to_numpy(dtype=float)), columns=DAYAHEAD_FEATURES)


def pooled_with_lead1(pooled: xgb.Booster, frame: pd.DataFrame, later: np.ndarray,
                      iteration_range: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """The pooled raw quantiles of ``frame`` and, for its ``later`` rows, the pooled P50 at lead 1 of each row's
    origin (0 elsewhere): one prediction, the lead-1 row asked once per distinct origin row (a request's 24 leads
    share one)."""
    lead1 = np.zeros(len(frame))
    if not later.any():
        return pooled.predict(dmatrix(frame), iteration_range=iteration_range).reshape(-1, 3), lead1
    # float32 is what XGBoost reads anyway: the frame's rows predict as from the frame itself
    matrix = frame[DAYAHEAD_FEATURES].to_numpy(dtype=np.float32)
    distinct, inverse = np.unique(matrix[later, : len(FEATURES)], axis=0, return_inverse=True)
    extra = lead1_matrix(distinct)
    mean_24h, lag_1h = (extra[:, FEATURES.index(c)].astype(float) for c in ("usage_mean_24h", "usage_lag_1h"))
    both = xgb.DMatrix(np.vstack([matrix, extra]), feature_names=DAYAHEAD_FEATURES,
                       base_margin=np.vstack([margin(frame), start_level(mean_24h, lag_1h)]))
    out = pooled.predict(both, iteration_range=iteration_range).reshape(-1, 3)
    lead1[later] = out[len(frame):, 1][np.asarray(inverse).reshape(-1)]
    return out[: len(frame)], lead1


def raw_quantiles(model: DayAheadModel | xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    """(n, 3) kW before calibration: the pooled booster and its margin, moved by the next-hour booster's forecast
    of the origin hour at the short leads (a lead-aware model: ``lead_adjust``; see the module's docstring)."""
    if isinstance(model, xgb.Booster):
        if model.attr(BLEND_ATTR):
            raise SmartEnergyError("this day-ahead model blends a next-hour booster into its short leads: load it "
                                   "with dayahead.load_dayahead(model_dir), not registry.load_booster")
        model = DayAheadModel(model)
    if model.next_hour is None:
        return model.pooled.predict(dmatrix(frame)).reshape(-1, 3)
    lead = frame["lead_hours"].to_numpy()
    w, c = per_lead(model.weights, lead), per_lead(model.carry, lead)
    # lead 1 is the next-hour forecast whatever the pooled model says there: its lead-1 P50 is for the later leads
    raw, lead1 = pooled_with_lead1(model.pooled, frame, (c > 0) & (lead != 1))
    rows = np.flatnonzero((w > 0) | (c > 0))  # the next-hour booster only where it counts
    if len(rows):
        nh = next_hour_kw(model.next_hour, frame[FEATURES].to_numpy(dtype=np.float32)[rows])
        raw[rows] = lead_adjust(raw[rows], nh, lead1[rows], lead[rows], w[rows], c[rows])
    return raw


def load_dayahead(model_dir: str | Path) -> tuple[DayAheadModel, dict[str, Any]]:
    """The verified day-ahead model of ``model_dir`` (every file against the manifest) and its metadata: what
    the predictor, ``predict``, ``evaluate``, ``advise`` and the monitoring report all forecast with."""
    from smart_energy.components.registry import load_booster

    pooled, metadata = load_booster(model_dir)
    return lead_aware(pooled, metadata, model_dir), metadata


def lead_aware(pooled: xgb.Booster, metadata: dict[str, Any], model_dir: str | Path) -> DayAheadModel:
    """The day-ahead model around its pooled booster, already loaded and verified from ``model_dir`` with
    ``metadata`` (``registry.load_booster``): with the next-hour booster and the per-lead carry (or, from before
    the carry, blend weights) it records."""
    from smart_energy.components.registry import EXTRA_MODELS, ModelIntegrityError

    if metadata.get("horizon_hours") != HORIZON_HOURS:
        raise SmartEnergyError(f"{model_dir} is a {metadata.get('horizon_hours', 1)}-hour model, not a day-ahead "
                               f"one (`smart-energy train --horizon 24`)")
    spec = metadata.get("lead_blend")
    if not spec:
        return DayAheadModel(pooled)  # a model from before the blend: the pooled booster alone
    name = spec["next_hour_file"]
    if name not in (metadata.get(EXTRA_MODELS) or {}):
        raise ModelIntegrityError(f"{Path(model_dir) / name}: the blend's next-hour booster is not among the "
                                  f"metadata's {EXTRA_MODELS}; refusing to load")
    vectors = {}
    for key in ("weights", "carry"):
        if spec.get(key) is None:
            continue
        v = np.asarray(spec[key], dtype=float)
        if v.shape != (HORIZON_HOURS,) or not np.all((v >= 0) & (v <= 1)):
            raise ModelIntegrityError(f"{model_dir}: lead_blend {key} must be {HORIZON_HOURS} numbers in [0, 1]")
        vectors[key] = v
    if not vectors:
        raise ModelIntegrityError(f"{model_dir}: lead_blend records neither carry nor weights; refusing to load")
    next_hour = xgb.Booster()
    next_hour.load_model(str(Path(model_dir) / name))
    next_hour.set_param({"nthread": xgb_threads()})
    return DayAheadModel(pooled, next_hour, vectors.get("weights"), vectors.get("carry"))


def bag_seeds(pairs: int) -> int:
    """How many seeds the final pooled refit averages for ``pairs`` training pairs (``BAG_BUDGET_PAIRS``)."""
    return int(min(BAG_MAX_SEEDS, max(1, BAG_BUDGET_PAIRS // max(pairs, 1))))


def bagged(boosters: list[xgb.Booster]) -> xgb.Booster:
    """One booster whose forecast is the mean of ``boosters``' (same data, features, objective and base score;
    any base margin): every leaf value divided by their number, the trees one after another. A forecast is the
    margin plus the sum of its trees' leaves, so the mean of K forecasts is the margin plus the sum of all K
    boosters' leaves over K. XGBoost has no call that joins boosters, so this edits its JSON model format (its
    schema: ``gradient_booster.model`` holds ``trees``, ``tree_info`` and ``iteration_indptr``), and
    ``tests/model/test_dayahead.py`` checks the result against the mean of the boosters' own forecasts."""
    import json

    if len(boosters) == 1:
        return boosters[0]
    models = [json.loads(b.save_raw("json")) for b in boosters]
    out = models[0]
    trees, info, indptr = [], [], [0]
    for m in models:
        if m["learner"]["learner_model_param"] != out["learner"]["learner_model_param"]:
            raise ValueError("bagged boosters must share their base score and outputs")
        model = m["learner"]["gradient_booster"]["model"]
        if model["gbtree_model_param"]["num_parallel_tree"] != "1":
            raise ValueError("bagged boosters must grow one tree per output and round")
        for tree in model["trees"]:
            leaf = np.asarray(tree["left_children"]) == -1
            tree["split_conditions"] = [v / len(boosters) if is_leaf else v
                                        for v, is_leaf in zip(tree["split_conditions"], leaf)]
            tree["base_weights"] = [v / len(boosters) for v in tree["base_weights"]]
            tree["id"] = len(trees)
            trees.append(tree)
        info += model["tree_info"]
        indptr += (indptr[-1] + np.asarray(model["iteration_indptr"][1:])).tolist()
    model = out["learner"]["gradient_booster"]["model"]
    model.update(trees=trees, tree_info=info, iteration_indptr=indptr)
    model["gbtree_model_param"]["num_trees"] = str(len(trees))
    joined = xgb.Booster()
    joined.load_model(bytearray(json.dumps(out).encode()))
    return joined


def fit_carry(raw: np.ndarray, next_hour: np.ndarray, pooled_lead1: np.ndarray, actual: np.ndarray,
              lead: np.ndarray) -> float:
    """The ``CARRY_GRID`` decay ``phi`` whose carry (``carry_of``) gives the least P50 absolute error over the
    leads 2..24 of these (out-of-sample) rows; 0 (the pooled model after lead 1) without such rows."""
    later = lead >= 2
    if not later.any():
        return 0.0
    zeros = np.zeros(int(later.sum()))
    errors = [np.mean(np.abs(lead_adjust(raw[later], next_hour[later], pooled_lead1[later], lead[later], zeros,
                                         per_lead(carry_of(phi), lead[later]))[:, 1] - actual[later]))
              for phi in CARRY_GRID]
    return float(CARRY_GRID[int(np.argmin(errors))])


def pinball(actual: np.ndarray, quantiles: np.ndarray) -> float:
    """Mean pinball (quantile) loss over the three quantiles and the rows, kW."""
    return float(np.mean(pinball_rows(actual, quantiles)))


def training_origins(hourly: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp | None,
                     publish_features: bool = True) -> pd.DataFrame:
    """The origin rows (``train.training_frame``: Feast point in time, each with its hour's ``target_kw``) before
    ``cutoff``; at most ``MAX_ORIGINS``, sampled evenly at random beyond that."""
    from smart_energy.components.train import training_frame

    origins = training_frame(hourly, settings, cutoff, publish_features)
    if len(origins) > MAX_ORIGINS:
        keep = np.sort(np.random.default_rng(7).choice(len(origins), MAX_ORIGINS, replace=False))
        origins = origins.iloc[keep].reset_index(drop=True)
    return origins


def training_pairs(hourly: pd.DataFrame, settings: Settings, cutoff: pd.Timestamp | None,
                   origins: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every (origin, lead) with a complete target before ``cutoff``, origin rows from Feast (point in time);
    at most ``MAX_ORIGINS`` origins, sampled evenly at random beyond that (``training_origins``)."""
    if origins is None:
        origins = training_origins(hourly, settings, cutoff)
    pairs = expand_leads(origins, usage_series(hourly)).dropna(subset=["target_kw"])
    if cutoff is not None:
        pairs = pairs[pairs["target_timestamp"] < cutoff]
    return pairs.reset_index(drop=True)


def fit_dayahead(pairs: pd.DataFrame, origin_rows: pd.DataFrame, params: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Fit the lead-aware day-ahead model on training ``pairs`` and their ``origin_rows`` (what ``train_dayahead``
    and ``benchmarks/dayahead_candidates.py`` both run): the pooled quantile booster, early-stopped on the
    time-ordered last 15 % and refitted on all pairs; the next-hour booster with ``train``'s own functions on the
    origin rows; the carry's decay ``phi`` and the CQR shift on the validation part, both models out of sample.
    Returns the ``DayAheadModel`` and what the metadata records."""
    from smart_energy.components.train import fit_booster, refit, time_split

    fit_part, valid_part = time_split(pairs)
    params = {**PARAMS, "nthread": xgb_threads(), **(params or {})}
    rounds = int(params.pop("num_boost_round", MAX_ROUNDS))
    booster = xgb.train(params, dmatrix(fit_part, True), num_boost_round=rounds,
                        evals=[(dmatrix(valid_part, True), "valid")], early_stopping_rounds=EARLY_STOPPING,
                        verbose_eval=False)
    best = booster.best_iteration + 1
    lead = valid_part["lead_hours"].to_numpy()
    pooled_raw, lead1 = pooled_with_lead1(booster, valid_part, lead != 1, (0, best))
    actual = valid_part["target_kw"].to_numpy()
    # the next-hour model: train's own split and functions on the same origin rows, before the same cut-off
    nh_fit, nh_valid = time_split(origin_rows)
    cap = {"num_boost_round": rounds} if rounds != MAX_ROUNDS else {}  # a --n-estimators cap holds for both
    nh_early, nh_metrics = fit_booster(nh_fit, nh_valid, cap)
    nh_rounds = nh_metrics["best_iteration"] + 1
    nh_final, nh_params = refit(origin_rows, {}, nh_rounds)
    # the carry's decay on the validation pairs whose origin neither early-stopped model was fitted on
    nh_valid_kw = next_hour_kw(nh_early[:nh_rounds], valid_part[FEATURES].to_numpy(dtype=np.float32))
    unseen = (valid_part["event_timestamp"] >= nh_valid["event_timestamp"].min()).to_numpy()
    phi = fit_carry(pooled_raw[unseen], nh_valid_kw[unseen], lead1[unseen], actual[unseen], lead[unseen])
    carry = carry_of(phi)
    raw = lead_adjust(pooled_raw, nh_valid_kw, lead1, lead, np.zeros(len(lead)), per_lead(carry, lead))
    shift = conformal_shift(actual, raw)
    calibrated = calibrate(raw, shift)
    pooled_p50 = np.maximum(pooled_raw[:, 1], 0.0)  # what calibrate makes of it: the P50 is never moved
    by_lead = lambda p50: {k: float(np.mean(np.abs(p50[lead == k] - actual[lead == k])))  # noqa: E731
                           for k in (1, 2, 3, 6, 12, 24) if (lead == k).any()}
    metrics = {"valid_mae_kw": float(np.mean(np.abs(calibrated[:, 1] - actual))),
               "valid_mae_by_lead": by_lead(calibrated[:, 1]),
               "valid_mae_kw_pooled_alone": float(np.mean(np.abs(pooled_p50 - actual))),
               "valid_mae_by_lead_pooled_alone": by_lead(pooled_p50),
               "valid_pinball_kw": pinball(actual, calibrated), "best_iteration": best - 1,
               "valid_pairs": int(len(valid_part)),
               "valid_coverage_before_calibration": float(np.mean((actual >= raw[:, 0]) & (actual <= raw[:, 2]))),
               "valid_coverage_p10_p90": float(np.mean((actual >= calibrated[:, 0]) & (actual <= calibrated[:, 2])))}
    # refit on the whole window, averaged over seeds where the window is small (bag_seeds)
    whole, seeds = dmatrix(pairs, True), bag_seeds(len(pairs))
    final = bagged([xgb.train({**params, "seed": int(params.get("seed", 0)) + k}, whole, num_boost_round=best)
                    for k in range(seeds)])
    final.set_param({"nthread": params["nthread"]})
    final.set_attr(**{BLEND_ATTR: NEXT_HOUR_FILE})  # alone, it is not the model (raw_quantiles refuses it)
    return {"model": DayAheadModel(final, nh_final, None, carry), "phi": phi, "conformal_kw": shift, "metrics": metrics,
            "params": params, "rounds": best, "next_hour_params": nh_params, "next_hour_rounds": nh_rounds,
            "next_hour_metrics": nh_metrics, "seeds": seeds,
            "blend_fitted_on": {"pairs": int(unseen.sum()), "first_origin": str(nh_valid["event_timestamp"].min())}}


def train_dayahead(data: str | Path, model_dir: str | Path, settings: Settings | None = None,
                   holdout_weeks: int = 0, until: str | None = None, params: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Train the P10/P50/P90 day-ahead model on ``data`` and write the model directory (``horizon_hours: 24``)."""
    from smart_energy.components.registry import write_model_dir
    from smart_energy.components.train import library_versions

    settings = settings or get_settings()
    hourly, meters_skipped = keep_meters_with_history(load_hourly(data))
    cutoff = training_cutoff(hourly["timestamp"].min(), hourly["timestamp"].max(), until, holdout_weeks)
    origin_rows = training_origins(hourly, settings, cutoff)
    pairs = training_pairs(hourly, settings, cutoff, origin_rows)
    if len(pairs) < 24 * 48:
        raise SmartEnergyError(f"only {len(pairs)} (origin, lead) pairs to train on; the day-ahead model needs "
                               f"at least two days of origins with complete targets after the first week")
    fit = fit_dayahead(pairs, origin_rows, {"nthread": xgb_threads(settings), **(params or {})})
    final, nh_final, carry = fit["model"].pooled, fit["model"].next_hour, fit["model"].carry
    params, best, shift, metrics = fit["params"], fit["rounds"], fit["conformal_kw"], fit["metrics"]
    nh_params, nh_rounds, nh_metrics, blend_fit = fit["next_hour_params"], fit["next_hour_rounds"], \
        fit["next_hour_metrics"], fit["blend_fitted_on"]
    created = datetime.now(timezone.utc)
    window = hourly if cutoff is None else hourly[hourly["timestamp"] < cutoff]
    metadata = {
        "name": settings.dayahead_model_name, "version": created.strftime("v%Y%m%dT%H%M%SZ-24h"),
        "created_at": created.isoformat(),
        "target": "global_active_power_kw of each of the next 24 hours (mean kW), P10/P50/P90",
        "horizon_hours": HORIZON_HOURS, "quantiles": list(QUANTILES), "outputs": list(OUTPUTS),
        "conformal_kw": shift, "calibration_days": CALIBRATION_DAYS,
        "base_margin": "usage_mean_24h, else usage_lag_1h, else 1.0 (kW), for each quantile", "features": DAYAHEAD_FEATURES, "origin_features": FEATURES,
        "feature_service": "forecast_features_v1",
        "meters": sorted(pairs["meter_id"].unique().tolist()), "meters_skipped": meters_skipped,
        "training_window": {"start": str(pairs["event_timestamp"].min()), "end": str(pairs["target_timestamp"].max()),
                            "pairs": int(len(pairs)), "origins": int(pairs["event_timestamp"].nunique()),
                            "gaps": find_gaps(window)},
        "params": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()} | {
            "num_boost_round": best, "bagged_seeds": fit["seeds"]},
        "metrics": metrics, "library_versions": library_versions(),
        "lead_blend": {
            "next_hour_file": NEXT_HOUR_FILE, "phi": fit["phi"], "carry": [float(c) for c in carry],
            "rule": "P50 at lead L = pooled P50(L) + carry[L-1] * (next-hour forecast of the origin hour - pooled "
                    "P50 at lead 1 of the same origin), carry[L-1] = phi ** (L - 1); exactly the next-hour forecast "
                    "at lead 1; P10/P90 move with the P50; before calibration",
            "fitted_on": blend_fit | {"grid": float(CARRY_GRID[1] - CARRY_GRID[0])},
            "next_hour": {"features": FEATURES, "origins": int(len(origin_rows)), "metrics": nh_metrics,
                          "params": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in nh_params.items()}
                          | {"num_boost_round": nh_rounds}}},
    }
    metadata["advice"] = load_advice(window, settings)
    from smart_energy.components.train import fit_drift_detector

    origins = pairs[pairs["lead_hours"] == 1]  # the origin rows, once each
    metadata["drift"] = {"features": DRIFT_FEATURES, "p_value": settings.drift_p_value, "share": settings.drift_share}
    return write_model_dir(final, metadata, model_dir, detector=fit_drift_detector(origins, settings),
                           extra_models={NEXT_HOUR_FILE: nh_final})


def load_advice(hourly: pd.DataFrame, settings: Settings | None = None) -> dict[str, Any]:
    """Per meter: each load's habits and the savings backtest under every tariff, for the server's advice."""
    from smart_energy.components.advice import habits, savings_backtest
    from smart_energy.components.tariffs import TARIFFS

    out = {}
    for meter, part in hourly.groupby("meter_id"):
        part = part.reset_index(drop=True)
        out[str(meter)] = {"loads": habits(part), "savings": {name: savings_backtest(part, name, settings) for name in TARIFFS},
                           "through": str(part["timestamp"].max())}
    return out


def scoring_pairs(data: pd.DataFrame, history: pd.DataFrame | None, settings: Settings | None
                  ) -> tuple[pd.DataFrame, dict[str, int]]:
    """(origin, lead) pairs whose origin is an hour of ``data`` and whose target is known; ``scored`` marks those
    whose three baselines exist too (the pairs scored; all of them calibrate, as in serving).

    Origin rows come from a scratch Feast store holding ``history`` + ``data`` (the servers' store is untouched).
    """
    from smart_energy.components.feast_store import historical_features, publish, scratch_feature_store

    combined, _ = keep_meters_with_history(with_history(data, history))
    data = data[data["meter_id"].isin(combined["meter_id"].unique())]
    entity = pd.DataFrame({"meter_id": data["meter_id"], "event_timestamp": data["timestamp"]})
    with scratch_feature_store(settings or get_settings()) as (store, scratch):
        publish(combined, store, scratch, materialize=False)
        origins = historical_features(store, entity)
    pairs = expand_leads(origins, usage_series(combined))
    pairs = pairs[pairs["target_timestamp"] <= data["timestamp"].max()]
    have_target = pairs["target_kw"].notna()
    complete = have_target & pairs[list(BASELINES)].notna().all(axis=1)
    skipped = {"target_missing": int((~have_target).sum()), "baseline_missing": int((have_target & ~complete).sum())}
    pairs = pairs[have_target].assign(scored=complete[have_target]).reset_index(drop=True)
    if not pairs["scored"].any():
        raise SmartEnergyError("no (origin, lead) pair can be scored: the data need complete hours a week after "
                               "their first reading")
    return pairs, skipped


def score_pairs(pairs: pd.DataFrame, forecast: np.ndarray) -> dict[str, Any]:
    """P50 MAE, band coverage, pinball loss, MAE by lead, and the baselines on the same pairs."""
    actual = pairs["target_kw"].to_numpy()
    lead = pairs["lead_hours"].to_numpy()
    err = np.abs(forecast[:, 1] - actual)
    by_lead = lambda e: {int(k): float(e[lead == k].mean()) for k in np.unique(lead)}  # noqa: E731
    baselines = {}
    for name in BASELINES:
        berr = np.abs(pairs[name].to_numpy() - actual)
        baselines[name] = {"mae_kw": float(berr.mean()), "mae_by_lead": by_lead(berr)}
    return {"hours_scored": int(len(pairs)), "origins": int(pairs["event_timestamp"].nunique()),
            "mae_kw": float(err.mean()),
            "coverage_p10_p90": float(np.mean((actual >= forecast[:, 0]) & (actual <= forecast[:, 2]))),
            "pinball_kw": pinball(actual, forecast), "quantiles_cross": int(np.sum(np.diff(forecast, axis=1) < 0)),
            "mae_by_lead": by_lead(err), "baselines": baselines}


def split_fallback_pairs(pairs: pd.DataFrame, hourly: pd.DataFrame, settings: Settings | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pairs the model answers, and those of origins the servers answer with the meter's weekly profile
    (``evaluate.split_fallback_hours`` on the origin rows: the same plan as the transformer's), with
    ``fallback_kw`` (the profile at each target hour) and ``fallback_reason``."""
    from smart_energy.components.evaluate import meter_parts, split_fallback_hours
    from smart_energy.components.online_rows import profile_at, profile_forecast

    keys = ["meter_id", "event_timestamp"]
    origins = pairs.drop_duplicates(keys)[[*keys, *FEATURES]].reset_index(drop=True)
    _, stale = split_fallback_hours(origins, list(FEATURES), hourly, settings)
    if stale.empty:
        return pairs, pairs.iloc[:0].assign(fallback_kw=np.zeros(0), fallback_reason=pd.Series(dtype=object))
    reasons = stale.set_index(keys)["fallback_reason"]
    at = pd.MultiIndex.from_frame(pairs[keys])
    is_fallback = at.isin(reasons.index)
    fallback = pairs[is_fallback].reset_index(drop=True)
    kw = np.empty(len(fallback))
    parts = meter_parts(hourly)
    for (meter, origin), rows in fallback.groupby(keys).indices.items():
        kw[rows] = profile_forecast(profile_at(parts(meter), origin), fallback["target_timestamp"].iloc[rows])
    fallback["fallback_kw"] = kw
    fallback["fallback_reason"] = reasons.reindex(pd.MultiIndex.from_frame(fallback[keys])).to_numpy()
    return pairs[~is_fallback].reset_index(drop=True), fallback


def fallback_pair_scores(fallback: pd.DataFrame) -> dict[str, Any]:
    """The profile-answered pairs, counted apart from the model's: origins, pairs, by reason, MAE."""
    if fallback.empty:
        return {"origins": 0, "pairs": 0}
    actual = fallback["target_kw"].to_numpy()
    return {"origins": int(fallback[["meter_id", "event_timestamp"]].drop_duplicates().shape[0]),
            "pairs": int(len(fallback)),
            "by_reason": fallback.drop_duplicates(["meter_id", "event_timestamp"])["fallback_reason"]
            .value_counts().to_dict(),
            "mae_kw": float(np.mean(np.abs(fallback["fallback_kw"].to_numpy() - actual)))}


def score_hourly(booster: xgb.Booster, metadata: dict[str, Any], data: pd.DataFrame, history: pd.DataFrame | None,
                 settings: Settings | None = None) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """Every origin hour of ``data`` scored (each band calibrated on the pairs before it): the result, the pairs
    and their forecasts (what ``evaluate`` prints and the monitoring report plots)."""
    from smart_energy.components.calibration import calibration_counts

    pairs, skipped = scoring_pairs(data, history, settings)
    pairs, fallback = split_fallback_pairs(pairs, with_history(data, history), settings)
    # every pair the model answered with a known actual calibrates the later origins of its meter (what the
    # transformer sees); the scores are over the pairs with the baselines too
    forecast, _, how = rolling_band(raw_quantiles(booster, pairs), pairs, metadata["conformal_kw"])
    scored = pairs.pop("scored").to_numpy(dtype=bool)
    counts = calibration_counts(pairs[scored], how[scored])
    pairs, forecast = pairs[scored].reset_index(drop=True), forecast[scored]
    fallback = fallback[fallback.pop("scored").to_numpy(dtype=bool)].reset_index(drop=True)
    result = {"horizon_hours": HORIZON_HOURS, "model_version": metadata["version"], "quantiles": list(QUANTILES)}
    result |= score_pairs(pairs, forecast) | {"calibration_origins": counts}
    result |= {"fallback": fallback_pair_scores(fallback), "pairs_skipped": skipped, "gaps": find_gaps(data),
               "first_origin": str(pairs["event_timestamp"].min()), "last_origin": str(pairs["event_timestamp"].max())}
    return result, pairs, forecast


def evaluate_dayahead(model_dir: str | Path, data: str | Path, history: str | Path | None = None,
                      last_weeks: int = 0, settings: Settings | None = None) -> dict[str, Any]:
    """Score a day-ahead model on every origin hour of ``data`` (its last weeks with ``last_weeks``); the band of
    each origin is calibrated on its meter's pairs known before it (``calibration.rolling_band``)."""
    from smart_energy.components.evaluate import in_sample, last_weeks_split

    booster, metadata = load_dayahead(model_dir)
    data_hourly, history_hourly = last_weeks_split(load_hourly(data), load_hourly(history) if history else None,
                                                   last_weeks)
    result, pairs, _ = score_hourly(booster, metadata, data_hourly, history_hourly, settings)
    return result | in_sample(metadata, pairs["meter_id"], pairs["event_timestamp"], pairs["target_timestamp"], "pairs")


def next_24h(model_dir: str | Path, hourly: pd.DataFrame) -> pd.DataFrame:
    """P10/P50/P90 for the 24 hours after ``hourly``'s last hour (one meter): timestamp, p10_kw, p50_kw, p90_kw.

    The band is calibrated on the last ``CALIBRATION_DAYS`` of ``hourly`` (the model's forecasts there against
    the actuals, ``recent_scores``), as in the evaluation and the servers; ``calibration`` says whether a day of
    scores existed (``"rolling"``) or the training calibration was used (``"training"``), with the shift.
    """
    from smart_energy.components.features import build_feature_frame

    booster, metadata = load_dayahead(model_dir)  # refuses a next-hour model
    if hourly["meter_id"].nunique() != 1:
        raise SmartEnergyError("next_24h forecasts one meter; pass one meter's readings")
    rows = build_feature_frame(hourly).sort_values("event_timestamp")
    pairs = expand_leads(rows.tail(1))
    origin = pairs["event_timestamp"].iloc[0]
    known = recent_scores(booster, hourly, pd.Series({pairs["meter_id"].iloc[0]: origin}))
    shift, how = rolling_shift(pairs, known, metadata["conformal_kw"])
    forecast = calibrate(raw_quantiles(booster, pairs), shift)
    return pd.DataFrame({"meter_id": pairs["meter_id"].to_numpy(), "timestamp": pairs["target_timestamp"].to_numpy(),
                         **{name: forecast[:, i] for i, name in enumerate(OUTPUTS)},
                         "calibration": how, "calibration_shift_kw": shift})


def recent_scores(model: Any, hourly: pd.DataFrame, origins: pd.Series, chunk: int = 50) -> pd.DataFrame:
    """The conformity scores that calibrate each meter's band at ``origins[meter]``: the model's raw forecasts
    from the meter's origins in the ``CALIBRATION_DAYS`` + 1 days before, against ``hourly``'s actuals known
    then (``meter_id``, ``target_timestamp``, ``lead_hours``, ``score``). Origin rows are built from ``hourly``
    (the features Feast is fed), each meter's from the two weeks before its origin; ``chunk`` meters at a time (a
    meter is 192 origins x 24 leads)."""
    origins = pd.to_datetime(origins.rename(index=str))
    if len(origins) > chunk:
        rows_of = hourly.groupby(hourly["meter_id"].astype(str)).indices
        parts = []
        for i in range(0, len(origins), chunk):
            meters = [m for m in origins.index[i:i + chunk] if m in rows_of]
            if meters:
                part = hourly.iloc[np.sort(np.concatenate([rows_of[m] for m in meters]))]
                parts.append(recent_scores(model, part, origins.loc[meters], chunk))
        return pd.concat(parts, ignore_index=True) if parts else recent_scores(model, hourly.iloc[:0], origins[:0])
    from smart_energy.components.features import build_feature_frame

    meter = hourly["meter_id"].astype(str)
    until = meter.map(origins)
    tail = hourly[until.notna() & (hourly["timestamp"] >= until - pd.Timedelta(days=2 * CALIBRATION_DAYS + 2))
                  & (hourly["timestamp"] < until)]
    empty = pd.DataFrame({"meter_id": pd.Series(dtype=str), "target_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
                          "lead_hours": pd.Series(dtype=int), "score": pd.Series(dtype=float)})
    if tail.empty:
        return empty
    rows = build_feature_frame(tail)
    end = rows["meter_id"].astype(str).map(origins)
    rows = rows[(rows["event_timestamp"] < end)
                & (rows["event_timestamp"] >= end - pd.Timedelta(days=CALIBRATION_DAYS + 1))]
    pairs = expand_leads(rows, usage_series(tail)).dropna(subset=["target_kw"])
    pairs = pairs[pairs["target_timestamp"] < pairs["meter_id"].astype(str).map(origins)]
    if pairs.empty:
        return empty
    scores = conformity(pairs["target_kw"].to_numpy(), raw_quantiles(model, pairs))
    return pd.DataFrame({"meter_id": pairs["meter_id"].astype(str).to_numpy(),
                         "target_timestamp": pairs["target_timestamp"].to_numpy(),
                         "lead_hours": pairs["lead_hours"].to_numpy(), "score": scores})
