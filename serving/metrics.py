"""The ``se_*`` Prometheus metrics, served on each server's HTTP port at ``/metrics`` beside KServe's own.

The names and labels are a contract: the alert rules and the rollout controller query them.
Request metrics are recorded by the transformer (the public entry point), so a request is
counted once, under the ``model_version`` the predictor named in its answer (``"unknown"`` when it named
none); the predictor (on a cluster, the ServingRuntime ``smart-energy-xgboost``) records none of them.
On a cluster each series also carries ``isvc`` (the InferenceService), added at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# tuned for a ~1-15 ms service; the tail buckets catch a stalled predictor
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
KW_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)

REQUESTS = Counter("se_requests", "Inference requests answered, by model version, protocol (v1/v2) and HTTP code",
                   ["model_version", "protocol", "code"])
REQUEST_DURATION = Histogram("se_request_duration_seconds", "Inference request latency, end to end in this server",
                             ["model_version"], buckets=LATENCY_BUCKETS)
PREDICTION_KW = Histogram("se_prediction_kw", "Forecast next-hour mean power (kW) per meter",
                          ["model_version"], buckets=KW_BUCKETS)
DRIFT_P_VALUE = Gauge("se_drift_p_value", "Kolmogorov-Smirnov p-value of the serving window vs the training window",
                      ["feature"])
DRIFT_DETECTED = Gauge("se_drift_detected", "1 when the feature's p-value is below the (corrected) threshold",
                       ["feature"])
FEAST_LOOKUP_DURATION = Histogram("se_feast_lookup_duration_seconds", "Feast online-store read latency per request",
                                  buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))
ERRORS = Counter("se_errors", "Requests that failed, by reason", ["reason"])
FORECAST_MAE = Gauge("se_forecast_mae_kw", "MAE (kW) of this version's next-hour forecasts once the actuals arrived, "
                     "over the last scored hours", ["model_version"])
BASELINE_MAE = Gauge("se_baseline_mae_kw", "MAE (kW) of a naive forecast on the same hours as se_forecast_mae_kw",
                     ["baseline"])
FORECAST_SCORED_HOURS = Gauge("se_forecast_scored_hours", "Hours behind se_forecast_mae_kw", ["model_version"])
FALLBACKS = Counter("se_fallback_forecasts", "Forecasts answered by a stale meter's weekly profile instead of the "
                    "model, by reason (meter_silent: no complete reading for SE_STALE_AFTER_HOURS; lags_missing: most "
                    "usage lags missing)", ["reason"])
# day ahead (components/calibration.py): the bands served, scored as the actuals arrive through the meters' next
# online rows; lead_bucket is one of 1, 2-3, 4-6, 7-12, 13-24 (hours ahead, lead 1 = the origin hour itself)
DAYAHEAD_COVERAGE = Gauge("se_dayahead_coverage", "Share of actuals inside the served P10-P90 band, over the last "
                          "se_dayahead_scored_pairs scored (origin, lead) pairs of this version and lead bucket "
                          "(target 0.8)", ["model_version", "lead_bucket"])
DAYAHEAD_PINBALL = Gauge("se_dayahead_pinball_kw", "Mean pinball loss (kW, over P10/P50/P90) of the served bands, "
                         "on the same pairs as se_dayahead_coverage", ["model_version", "lead_bucket"])
DAYAHEAD_SCORED_PAIRS = Gauge("se_dayahead_scored_pairs", "(origin, lead) pairs behind se_dayahead_coverage",
                              ["model_version", "lead_bucket"])
DAYAHEAD_BANDS = Counter("se_dayahead_bands", "Day-ahead bands served per meter, by calibration: rolling (the "
                         "meter's last 7 days of scores) or training (fewer than a day of them: the model's "
                         "conformal_kw)", ["model_version", "calibration"])
