"""Serving logic as plain functions and small classes; the KServe models in ``serving/`` only call these.

- ``parse_v1`` / ``parse_v2``: turn a request into a ``Batch`` (entity rows or a feature matrix),
  refusing bad input with a ``RequestError`` that names the problem and carries its HTTP status.
- ``forecast``: the XGBoost call (the same numbers as ``Booster.predict(DMatrix(...))``).

The Feast lookup is in ``serving/online.py``; drift and forecast-error monitoring in ``serving/monitors.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import numpy as np
import orjson

from smart_energy.components.errors import SmartEnergyError

MAX_BATCH_ROWS = 1000  # a utility sends one request per meter-batch; larger batches get 413
MAX_BODY_BYTES = 4 * 2**20  # ~1000 rows of 23 features as JSON fit well inside
FP32_MAX = float(np.finfo(np.float32).max)  # the model computes in FP32: larger values would become inf
NUMERIC_DATATYPES = {"FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
ENTITY_FIELDS = ("meter_id", "timestamp")
# the forecast-error monitor steps one hour back from a row's hour: keep that step inside datetime's range
EARLIEST_HOUR = datetime.min.replace(tzinfo=timezone.utc) + timedelta(hours=1)
LATEST_HOUR = datetime.max.replace(tzinfo=timezone.utc) - timedelta(hours=1)


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
    forecast_hours: list[datetime | None] = field(default_factory=list)  # the hours answered (entity rows)
    plan: Any = None  # online_rows.Plan of entity rows: the model's rows and the stale meters' fallbacks

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
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range
                number = 2 * FP32_MAX if value > 0 else -2 * FP32_MAX
            if math.isnan(number) or type(value) is float and math.isinf(number):
                raise RequestError(f"{where}.{name}: {value} is not a finite number", reason="not_finite")
            if abs(number) > FP32_MAX:
                raise RequestError(f"{where}.{name}: {str(value)[:24]} is outside the FP32 range the model "
                                   f"computes in (|x| <= {FP32_MAX:.4g})", reason="out_of_range")
            out.append(number)
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
    try:  # a zone offset can push year 1 or 9999 out of datetime's range once in UTC
        ts = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    except OverflowError:
        ts = None
    if ts is None or not EARLIEST_HOUR <= ts < LATEST_HOUR:
        raise RequestError(f"{where}.timestamp: {value[:40]!r} is out of range (years 1-9999 in UTC)",
                           reason="bad_timestamp")
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


def check_requested_outputs(requested: Sequence[Any] | None, available: Sequence[str]) -> None:
    """The V2 ``outputs`` a client asked for must be ones the model answers."""
    unknown = [o.name for o in requested or [] if o.name not in available]
    if unknown:
        raise RequestError(f"unknown output(s) {', '.join(map(repr, unknown[:5]))}; this model answers "
                           f"{', '.join(map(repr, available))}", reason="unknown_output")


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("BYTES value is not UTF-8", reason="wrong_type") from None
    return value
