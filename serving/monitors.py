"""What the transformer watches off the request path: feature drift, and its own forecast error."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from smart_energy.components.drift import verdict

DRIFT_MIN_ROWS = 24  # KS on fewer complete rows says nothing
DRIFT_CHECK_SECONDS = 5.0  # a 168-row window changes slowly; each check holds the GIL for a few ms


class ForecastErrorTracker:
    """Forecast error once actuals arrive, with no separate actuals feed.

    The online row for hour H carries hour H-1's actual mean power (``usage_lag_1h``) and H-2's
    (``usage_lag_2h``, which was the persistence forecast for H-1). So when a meter is asked about
    hour H and this server forecast H-1 for it, both the model's and persistence's errors for H-1
    are known. Errors are kept over the last ``window`` scored hours, always for both, on the same hours.
    """

    def __init__(self, features: Sequence[str], window: int = 168, max_pending: int = 100_000):
        self.lag1, self.lag2 = features.index("usage_lag_1h"), features.index("usage_lag_2h")
        self.window = window
        self.max_pending = max_pending
        self._pending: dict[tuple[str, datetime], float] = {}
        self._model: deque = deque(maxlen=window)
        self._persistence: deque = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, meter_ids: Sequence[str], hours: Sequence[datetime | None], matrix: np.ndarray,
               forecasts: Sequence[float], remember: Sequence[bool] | None = None) -> None:
        """Score earlier forecasts whose actual this batch reveals, then remember this batch's forecasts (those
        ``remember`` marks: a stale meter's profile fallback is not the model's forecast)."""
        with self._lock:
            for i, (meter, hour, row, kw) in enumerate(zip(meter_ids, hours, matrix, forecasts)):
                if hour is None:
                    continue
                earlier = self._pending.pop((meter, hour - timedelta(hours=1)), None)
                actual, persistence = row[self.lag1], row[self.lag2]
                if earlier is not None and not (math.isnan(actual) or math.isnan(persistence)):
                    self._model.append(abs(earlier - actual))
                    self._persistence.append(abs(persistence - actual))
                if remember is not None and not remember[i]:
                    continue
                if len(self._pending) >= self.max_pending:  # meters that never came back
                    self._pending.pop(next(iter(self._pending)))
                self._pending[(meter, hour)] = float(kw)

    def mae(self) -> tuple[float | None, float | None, int]:
        """(model MAE, persistence MAE, hours scored) over the window; None before any hour is scored."""
        with self._lock:
            if not self._model:
                return None, None, 0
            return float(np.mean(self._model)), float(np.mean(self._persistence)), len(self._model)


# --------------------------------------------------------------------------- drift


class DriftMonitor:
    """Alibi Detect over the last ``window`` distinct feature rows, checked by a daemon thread, never on a request.

    A row is one (meter, feature hour): asking again about a meter whose online row has not changed
    adds nothing, so a dashboard polling one meter cannot fill the window with copies of one row
    (rows sent without a meter are told apart by their values). ``observe`` only updates a bounded
    ordered dict; the thread runs the detector when new rows arrived and publishes ``status()`` and,
    through ``on_result``, the metrics.
    """

    def __init__(self, detector: Any, features: Sequence[str], window: int,
                 min_rows: int = DRIFT_MIN_ROWS, interval: float = DRIFT_CHECK_SECONDS,
                 on_result: Callable[[dict[str, float], dict[str, bool]], None] | None = None,
                 watched: Sequence[str] | None = None, share: float = 0.5):
        self.detector = detector
        # rows come in model order (``features``); the detector watches ``watched`` (all of them for a model
        # saved before the model's metadata named its drift features)
        self.features = list(watched or features)
        self._columns = [list(features).index(f) for f in self.features]
        self.share = share
        self.min_rows = min(min_rows, window)
        self.interval = interval
        self.on_result = on_result
        self.window = window
        self._rows: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._new_rows = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {"status": "unavailable" if detector is None else "warming_up",
                                        "drifted_features": [], "window_rows": 0, "checked_at": None}

    def observe(self, matrix: np.ndarray, keys: Sequence[Hashable] | None = None) -> None:
        """Add rows keyed by (meter, feature hour); without ``keys`` a row's key is its values."""
        keys = keys if keys is not None else [row.tobytes() for row in np.asarray(matrix, dtype=np.float64)]
        with self._lock:
            for key, row in zip(keys, matrix):
                if key in self._rows:
                    continue
                self._rows[key] = row
                self._new_rows += 1
                if len(self._rows) > self.window:
                    self._rows.popitem(last=False)

    def status(self) -> dict[str, Any]:
        return self._status

    def start(self) -> None:
        if self.detector is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as err:  # a detector failure must not stop monitoring
                self._status = {**self._status, "status": "error", "error": str(err)[:200]}

    def check(self) -> dict[str, Any]:
        """Run the detector on the current window (when new rows arrived); returns the status."""
        with self._lock:
            if self._new_rows == 0 or self.detector is None:
                return self._status
            self._new_rows = 0
            window = np.array(list(self._rows.values()), dtype=np.float32)[:, self._columns]
        complete = window[~np.isnan(window).any(axis=1)]
        if len(complete) < self.min_rows:
            self._status = {"status": "warming_up", "drifted_features": [], "window_rows": int(len(complete)),
                            "checked_at": None}
            return self._status
        result = self.detector.predict(complete, return_p_val=True)["data"]
        p_values = np.atleast_1d(result["p_val"])
        flags, is_drift = verdict(p_values, float(result["threshold"]), self.share)
        p_by_feature = {f: float(p) for f, p in zip(self.features, p_values)}
        drifted = dict(zip(self.features, flags))
        self._status = {"status": "drift" if is_drift else "no_drift",
                        "drifted_features": [f for f, d in drifted.items() if d],
                        "window_rows": int(len(complete)),
                        "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.on_result:
            self.on_result(p_by_feature, drifted)
        return self._status
