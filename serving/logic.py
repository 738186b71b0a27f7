"""Serving logic as plain functions and small classes; the KServe models in ``serving/`` only call these.

- ``parse_v1`` / ``parse_v2``: turn a request into a ``Batch`` (entity rows or a feature matrix),
  refusing bad input with a ``RequestError`` that names the problem and carries its HTTP status.
- ``OnlineFeatureReader``: the Feast online lookup for entity requests.
- ``forecast``: the XGBoost call (the same numbers as ``Booster.predict(DMatrix(...))``).
- ``DriftMonitor``: Alibi Detect over a sliding window, run by a background thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from components.errors import SmartEnergyError

MAX_BATCH_ROWS = 1000  # a utility sends one request per meter-batch; larger batches get 413
MAX_BODY_BYTES = 4 * 2**20  # ~1000 rows of 23 features as JSON fit well inside
DRIFT_MIN_ROWS = 24  # KS on fewer complete rows says nothing
DRIFT_CHECK_SECONDS = 5.0  # a 168-row window changes slowly; each check holds the GIL for a few ms
FEATURE_VIEW_REFRESH_SECONDS = 300.0
NUMERIC_DATATYPES = {"FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
ENTITY_FIELDS = ("meter_id", "timestamp")


class RequestError(SmartEnergyError):
    """Input the client must fix; ``status`` is the HTTP code, ``reason`` the ``se_errors_total`` label."""

    def __init__(self, message: str, status: int = 400, reason: str = "invalid_input"):
        super().__init__(message)
        self.status = status
        self.reason = reason


class PredictorUnavailable(SmartEnergyError):
    """The predictor did not answer; the transformer answers 503 until it is back."""

    status = 503
    reason = "predictor_unavailable"


@dataclass
class Batch:
    """One request's rows: entity rows (``meter_ids``, optional ``hours``) or a feature ``matrix``."""

    kind: str  # "entity" | "features"
    meter_ids: list[str] = field(default_factory=list)
    hours: list[datetime | None] = field(default_factory=list)
    matrix: np.ndarray | None = None
    event_hours: list[datetime | None] = field(default_factory=list)  # the online rows' hours (entity rows)

    def __len__(self) -> int:
        return len(self.meter_ids) if self.kind == "entity" else int(self.matrix.shape[0])


# --------------------------------------------------------------------------- validation helpers


def check_batch_size(n: int, max_rows: int = MAX_BATCH_ROWS) -> None:
    if n == 0:
        raise RequestError("empty batch: send at least one row", reason="empty_batch")
    if n > max_rows:
        raise RequestError(f"batch of {n} rows is larger than the maximum of {max_rows}; split it",
                           status=413, reason="batch_too_large")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def to_float_row(values: Sequence[Any], where: str, names: Sequence[str]) -> list[float]:
    """Numbers (or null = missing, as XGBoost treats it) as floats; anything else is refused."""
    out = []
    for name, value in zip(names, values):
        if value is None:
            out.append(math.nan)
        elif type(value) is float or type(value) is int:
            if not math.isfinite(value):
                raise RequestError(f"{where}.{name}: {value} is not a finite number", reason="not_finite")
            out.append(float(value))
        else:
            raise RequestError(f"{where}.{name}: expected a number or null, got {_type_name(value)}",
                               reason="wrong_type")
    return out


def parse_hour(value: Any, where: str) -> datetime | None:
    """An ISO-8601 timestamp (UTC when no zone is given), floored to its hour; None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{where}.timestamp: expected an ISO-8601 string, got {_type_name(value)}",
                           reason="wrong_type")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(f"{where}.timestamp: {value[:40]!r} is not an ISO-8601 timestamp",
                           reason="bad_timestamp") from None
    ts = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    return ts.replace(minute=0, second=0, microsecond=0)


def check_meter_id(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{where}.meter_id: expected a string, got {_type_name(value)}", reason="wrong_type")
    if not value or len(value) > 200:
        raise RequestError(f"{where}.meter_id: must be 1-200 characters", reason="invalid_input")
    return value


# --------------------------------------------------------------------------- V1


def parse_v1(body: Any, features: Sequence[str]) -> Batch:
    """A V1 body: ``{"instances": [...]}`` of entity objects, feature objects or positional feature rows."""
    if isinstance(body, (bytes, str)):  # KServe passes the raw body through when the content-type is not JSON
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise RequestError(f"malformed JSON: {err}", reason="malformed_json") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object with 'instances', got {_type_name(body)}",
                           reason="invalid_body")
    if "instances" not in body:
        raise RequestError("missing field 'instances' (a list of {\"meter_id\": ...} or feature rows)",
                           reason="missing_field")
    instances = body["instances"]
    if not isinstance(instances, list):
        raise RequestError(f"'instances' must be a list, got {_type_name(instances)}", reason="wrong_type")
    check_batch_size(len(instances))
    first = instances[0]
    if isinstance(first, dict) and "meter_id" in first:
        return _v1_entities(instances)
    rows = []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(inst, dict):
            if "meter_id" in inst:
                raise RequestError(f"{where}: mixes entity and feature rows in one batch", reason="invalid_input")
            missing = [f for f in features if f not in inst]
            if missing:
                raise RequestError(f"{where}: missing feature(s) {', '.join(missing[:5])}"
                                   f"{' …' if len(missing) > 5 else ''} (or send 'meter_id' for a Feast lookup)",
                                   reason="missing_field")
            extra = [k for k in inst if k not in features]
            if extra:
                raise RequestError(f"{where}: unknown field(s) {', '.join(map(str, extra[:5]))}",
                                   reason="unknown_field")
            rows.append(to_float_row([inst[f] for f in features], where, features))
        elif isinstance(inst, list):
            if len(inst) != len(features):
                raise RequestError(f"{where}: a feature row needs {len(features)} values in model order, "
                                   f"got {len(inst)}", reason="wrong_shape")
            rows.append(to_float_row(inst, where, features))
        else:
            raise RequestError(f"{where}: expected an object or a list of {len(features)} numbers, "
                               f"got {_type_name(inst)}", reason="wrong_type")
    return Batch("features", matrix=np.asarray(rows, dtype=np.float64))


def _v1_entities(instances: list) -> Batch:
    meter_ids, hours = [], []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        if not isinstance(inst, dict) or "meter_id" not in inst:
            raise RequestError(f"{where}: every row of an entity batch needs 'meter_id'", reason="missing_field")
        extra = [k for k in inst if k not in ENTITY_FIELDS]
        if extra:
            raise RequestError(f"{where}: unknown field(s) {', '.join(map(str, extra[:5]))}; an entity row has "
                               f"'meter_id' and optional 'timestamp'", reason="unknown_field")
        meter_ids.append(check_meter_id(inst["meter_id"], where))
        hours.append(parse_hour(inst.get("timestamp"), where))
    return Batch("entity", meter_ids=meter_ids, hours=hours)


# --------------------------------------------------------------------------- V2 (Open Inference Protocol)


def _column(tensor: Any, where: str) -> list:
    """The values of a 1-D tensor (``[n]`` or ``[n, 1]``) after checking their count against its shape."""
    shape = list(tensor.shape)
    if len(shape) not in (1, 2) or any(type(d) is not int or d < 0 for d in shape) or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(f"{where}: shape {shape} must be [n] or [n, 1]", reason="wrong_shape")
    data = _flat(tensor.data) if isinstance(tensor.data, list) else []
    if len(data) != shape[0]:
        raise RequestError(f"{where}: shape {shape} does not match {len(data)} data values", reason="wrong_shape")
    return data


def _flat(data: list) -> list:
    return [v for row in data for v in row] if data and isinstance(data[0], list) else data


def parse_v2(inputs: Sequence[Any], features: Sequence[str]) -> Batch:
    """V2 inputs: a ``meter_id`` BYTES tensor (+ optional ``timestamp``), one FP tensor ``[n, F]`` in model
    order, or one tensor per feature (named by the feature)."""
    if not inputs:
        raise RequestError("'inputs' is empty: send a 'meter_id' BYTES tensor or feature tensors",
                           reason="empty_batch")
    by_name = {}
    for t in inputs:
        if t.name in by_name:
            raise RequestError(f"input {t.name!r} appears twice", reason="invalid_input")
        by_name[t.name] = t
    if "meter_id" in by_name:
        return _v2_entities(by_name)
    if len(inputs) == 1 and inputs[0].name not in features:
        return _v2_matrix(inputs[0], features)
    unknown = [n for n in by_name if n not in features]
    if unknown:
        raise RequestError(f"unknown input(s) {', '.join(unknown[:5])}; send 'meter_id', one [n, {len(features)}] "
                           f"tensor, or one tensor per feature", reason="unknown_field")
    missing = [f for f in features if f not in by_name]
    if missing:
        raise RequestError(f"missing feature input(s) {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}",
                           reason="missing_field")
    n = None
    columns = []
    for name in features:
        t = by_name[name]
        where = f"inputs[{name}]"
        if t.datatype not in NUMERIC_DATATYPES:
            raise RequestError(f"{where}: datatype {t.datatype} is not numeric (use FP32/FP64)", reason="wrong_type")
        values = _column(t, where)
        if n is None:
            n = len(values)
            check_batch_size(n)
        elif len(values) != n:
            raise RequestError(f"{where}: {len(values)} rows, but other inputs have {n}", reason="wrong_shape")
        columns.append(to_float_row(values, where, [f"[{i}]" for i in range(n)]))
    return Batch("features", matrix=np.asarray(columns, dtype=np.float64).T.copy())


def _v2_matrix(t: Any, features: Sequence[str]) -> Batch:
    where = f"inputs[{t.name}]"
    shape = list(t.shape)
    if len(shape) != 2 or any(type(d) is not int or d < 0 for d in shape):
        raise RequestError(f"{where}: shape {shape} must be [n, {len(features)}]", reason="wrong_shape")
    if shape[1] != len(features):
        raise RequestError(f"{where}: shape {shape} needs {len(features)} columns (the model's features in order)",
                           reason="wrong_shape")
    if t.datatype not in NUMERIC_DATATYPES:
        raise RequestError(f"{where}: datatype {t.datatype} is not numeric (use FP32/FP64)", reason="wrong_type")
    check_batch_size(shape[0])
    data = t.data if isinstance(t.data, list) else []
    flat = _flat(data)
    if len(flat) != shape[0] * shape[1]:
        raise RequestError(f"{where}: shape {shape} does not match {len(flat)} data values", reason="wrong_shape")
    width = len(features)
    rows = [to_float_row(flat[i * width:(i + 1) * width], f"{where}[{i}]", features) for i in range(shape[0])]
    return Batch("features", matrix=np.asarray(rows, dtype=np.float64))


def _v2_entities(by_name: dict[str, Any]) -> Batch:
    extra = [n for n in by_name if n not in ENTITY_FIELDS]
    if extra:
        raise RequestError(f"unknown input(s) {', '.join(extra[:5])} beside 'meter_id' (only 'timestamp' may "
                           f"accompany it)", reason="unknown_field")
    ids = by_name["meter_id"]
    if ids.datatype != "BYTES":
        raise RequestError(f"inputs[meter_id]: datatype must be BYTES, got {ids.datatype}", reason="wrong_type")
    values = _column(ids, "inputs[meter_id]")
    n = len(values)
    check_batch_size(n)
    meter_ids = [check_meter_id(_text(v), f"inputs[meter_id][{i}]") for i, v in enumerate(values)]
    hours: list[datetime | None] = [None] * n
    if "timestamp" in by_name:
        ts = by_name["timestamp"]
        if ts.datatype != "BYTES":
            raise RequestError(f"inputs[timestamp]: datatype must be BYTES, got {ts.datatype}", reason="wrong_type")
        stamps = _column(ts, "inputs[timestamp]")
        if len(stamps) != n:
            raise RequestError(f"inputs[timestamp]: needs {n} values, one per meter_id", reason="wrong_shape")
        hours = [parse_hour(_text(v), f"inputs[timestamp][{i}]") for i, v in enumerate(stamps)]
    return Batch("entity", meter_ids=meter_ids, hours=hours)


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("BYTES value is not UTF-8", reason="wrong_type") from None
    return value


# --------------------------------------------------------------------------- model


def forecast(booster: Any, matrix: np.ndarray) -> np.ndarray:
    """Next-hour kW per row; ``inplace_predict`` gives the numbers of ``booster.predict(DMatrix(matrix))``."""
    return booster.inplace_predict(np.ascontiguousarray(matrix, dtype=np.float32)).astype(np.float64).ravel()


# --------------------------------------------------------------------------- Feast


class OnlineFeatureReader:
    """Reads the feature service's views from Feast's online store, one ``online_read`` per view.

    ``FeatureStore.get_online_features`` deserialises the registry's views on every call (~6 ms here);
    this resolves them once (and again every ``FEATURE_VIEW_REFRESH_SECONDS``) and reads through the
    same provider and entity-key encoding, so the features are Feast's, at ~0.1 ms.
    """

    def __init__(self, store: Any, service_name: str, features: Sequence[str]):
        self.store = store
        self.service_name = service_name
        self.features = list(features)
        self._views: list[tuple[Any, list[int], list[str]]] = []
        self._resolved_at = -math.inf

    def _resolve(self) -> None:
        service = self.store.get_feature_service(self.service_name)
        index = {name: i for i, name in enumerate(self.features)}
        views, seen = [], set()
        for projection in service.feature_view_projections:
            view = self.store.get_feature_view(projection.name)
            names = [f.name for f in projection.features if f.name in index]
            views.append((view, [index[n] for n in names], names))
            seen.update(names)
        missing = [f for f in self.features if f not in seen]
        if missing:
            raise SmartEnergyError(f"feature service {self.service_name} lacks model feature(s) {', '.join(missing)}")
        self._views = views
        self._resolved_at = time.monotonic()

    def read(self, meter_ids: Sequence[str], hours: Sequence[datetime | None] | None = None,
             event_hours_out: list | None = None) -> np.ndarray:
        """Feature matrix in model order; unknown or stale meters raise ``RequestError`` (404 / 422).

        ``event_hours_out``, when given, receives each row's hour (the hour its features forecast).
        """
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        if time.monotonic() - self._resolved_at > FEATURE_VIEW_REFRESH_SECONDS:
            self._resolve()
        keys = [EntityKey(join_keys=["meter_id"], entity_values=[Value(string_val=m)]) for m in meter_ids]
        provider = self.store._get_provider()
        matrix = np.full((len(meter_ids), len(self.features)), np.nan)
        event_hours: list[datetime | None] = [None] * len(meter_ids)
        for view, columns, names in self._views:
            for row, (event_ts, values) in enumerate(provider.online_read(self.store.config, view, keys, names)):
                if values is None:
                    raise RequestError(f"no online features for meter {meter_ids[row]!r} in {view.name} (unknown "
                                       f"meter, or its features were never materialised)",
                                       status=404, reason="unknown_meter")
                for col, name in zip(columns, names):
                    proto = values.get(name)
                    kind = proto.WhichOneof("val") if proto is not None else None
                    if kind is not None:
                        matrix[row, col] = float(getattr(proto, kind))
                if event_ts is not None:
                    event_hours[row] = max(event_hours[row] or event_ts, event_ts)
        for row, wanted in enumerate(hours or []):
            have = event_hours[row]
            have = have.replace(tzinfo=timezone.utc) if have is not None and have.tzinfo is None else have
            if wanted is not None and have != wanted:
                raise RequestError(
                    f"online features for meter {meter_ids[row]!r} are for hour "
                    f"{have.isoformat() if have else 'unknown'}, not the requested {wanted.isoformat()}; "
                    f"the online store holds the latest hour only (push or materialise newer readings)",
                    status=422, reason="stale_features")
        if event_hours_out is not None:
            event_hours_out[:] = [h.replace(tzinfo=timezone.utc) if h is not None and h.tzinfo is None else h
                                  for h in event_hours]
        return matrix


# --------------------------------------------------------------------------- forecast error


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
               forecasts: Sequence[float]) -> None:
        """Score earlier forecasts whose actual this batch reveals, then remember this batch's forecasts."""
        with self._lock:
            for meter, hour, row, kw in zip(meter_ids, hours, matrix, forecasts):
                if hour is None:
                    continue
                earlier = self._pending.pop((meter, hour - timedelta(hours=1)), None)
                actual, persistence = row[self.lag1], row[self.lag2]
                if earlier is not None and not (math.isnan(actual) or math.isnan(persistence)):
                    self._model.append(abs(earlier - actual))
                    self._persistence.append(abs(persistence - actual))
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
    """Alibi Detect over the last ``window`` feature rows, checked by a daemon thread, never on a request.

    ``observe`` only appends to a bounded deque; the thread runs the detector when new rows arrived
    and publishes ``status()`` and, through ``on_result``, the metrics.
    """

    def __init__(self, detector: Any, features: Sequence[str], window: int,
                 min_rows: int = DRIFT_MIN_ROWS, interval: float = DRIFT_CHECK_SECONDS,
                 on_result: Callable[[dict[str, float], dict[str, bool]], None] | None = None):
        self.detector = detector
        self.features = list(features)
        self.min_rows = min(min_rows, window)
        self.interval = interval
        self.on_result = on_result
        self._rows: deque = deque(maxlen=window)
        self._lock = threading.Lock()
        self._new_rows = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {"status": "unavailable" if detector is None else "warming_up",
                                        "drifted_features": [], "window_rows": 0, "checked_at": None}

    def observe(self, matrix: np.ndarray) -> None:
        with self._lock:
            self._rows.extend(matrix)
            self._new_rows += len(matrix)

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
            window = np.array(self._rows, dtype=np.float32)
        complete = window[~np.isnan(window).any(axis=1)]
        if len(complete) < self.min_rows:
            self._status = {"status": "warming_up", "drifted_features": [], "window_rows": int(len(complete)),
                            "checked_at": None}
            return self._status
        result = self.detector.predict(complete, return_p_val=True)["data"]
        p_values = np.atleast_1d(result["p_val"])
        threshold = float(result["threshold"])
        p_by_feature = {f: float(p) for f, p in zip(self.features, p_values)}
        drifted = {f: p < threshold for f, p in p_by_feature.items()}
        self._status = {"status": "drift" if result["is_drift"] else "no_drift",
                        "drifted_features": [f for f, d in drifted.items() if d],
                        "window_rows": int(len(complete)),
                        "checked_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.on_result:
            self.on_result(p_by_feature, drifted)
        return self._status
