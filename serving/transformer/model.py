"""``EnergyTransformer``: entity or feature-row requests in, forecast kW + model version + drift status out.

``preprocess`` validates the request and, for ``meter_id`` rows, reads the features from Feast's
online store; the rows go to the drift window (checked by a background thread) and on to the
predictor as a V2 request (one FP32 tensor per feature, ``content_type: pd``, which our predictor reads
by feature name, and KServe's stock xgboost server too). On a cluster the predictor is our ServingRuntime
``smart-energy-xgboost``, which runs the same predictor as the embedded mode. ``postprocess`` answers in the
protocol the client used, under the version the predictor named in its answer: one transformer fronts both
predictor revisions of a canary, and the rollout controller tells them apart by that label. An answer
naming no version (a stock server) is labelled ``UNKNOWN_VERSION``, never this transformer's own version,
so the controller can see that attribution is impossible instead of crediting production.
"""

from __future__ import annotations

import contextvars
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Union

import httpx
import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse, Model
from kserve.model import append_forwardable_headers
from kserve.protocol.infer_type import RequestedOutput

from smart_energy.components.dayahead import HORIZON_HOURS
from smart_energy.components.feast_store import FEATURE_SERVICE, open_feature_store
from smart_energy.components.online_rows import PROFILE, Planner, profile_forecast
from smart_energy.components.registry import load_drift_detector, read_metadata
from smart_energy.components.settings import Settings
from smart_energy.serving import metrics
from smart_energy.components.calibration import RAW_OUTPUTS
from smart_energy.serving.dayahead import Calibrations, answer_v1, pairs_matrix, shift_parameter
from smart_energy.serving.batching import CallBatcher
from smart_energy.serving.logic import MAX_BATCH_ROWS, Batch, PredictorUnavailable, RequestError, check_requested_outputs, parse_v1, parse_v2
from smart_energy.serving.monitors import DriftMonitor, ForecastErrorTracker
from smart_energy.serving.online import OnlineFeatureReader, check_hours
from smart_energy.serving.server import record_served_version

OUTPUT_NAME = "forecast_kw"
UNKNOWN_VERSION = "unknown"  # the model_version of an answer whose predictor named none
MAX_TRACKED_VERSIONS = 4  # forecast-error trackers kept (a canary has two versions; idle ones are dropped)


@dataclass
class RequestState:
    protocol: str
    batch: Batch
    request_id: str | None
    request: InferRequest | None = None  # the client's V2 request: which outputs it asked for, and how
    targets: list | None = None  # day ahead: each predictor row's target hour


# preprocess and postprocess of one request run in the same task: its state lives here
_request: contextvars.ContextVar[RequestState] = contextvars.ContextVar("smart_energy_request")


def publish_drift(p_values: dict[str, float], drifted: dict[str, bool]) -> None:
    for feature, p in p_values.items():
        metrics.DRIFT_P_VALUE.labels(feature).set(p)
        metrics.DRIFT_DETECTED.labels(feature).set(1.0 if drifted[feature] else 0.0)


def predictor_request(name: str, matrix: np.ndarray, features: list[str], request_id: str) -> InferRequest:
    inputs = []
    column_major = np.asarray(matrix, dtype=np.float32).T
    for feature, column in zip(features, column_major):
        # the predictor speaks JSON: the values set_data_from_numpy(binary_data=False) would list, by tolist()
        # (the same Python floats, without its element-by-element loop)
        inputs.append(InferInput(name=feature, shape=[len(column)], datatype="FP32", data=column.tolist()))
    return InferRequest(model_name=name, infer_inputs=inputs, request_id=request_id,
                        parameters={"content_type": "pd"})


def count_fallbacks(fallback) -> None:
    for reason, kind in zip(fallback.reason, fallback.fallback):
        if kind == PROFILE:
            metrics.FALLBACKS.labels(reason).inc()


def fallback_fields(fallback) -> dict:
    """V1: per row (as ``predictions``), ``"profile"`` or null, why, and the hours without a complete reading."""
    return {"fallback": fallback.fallback, "fallback_reason": fallback.reason, "stale_hours": fallback.stale_hours}


def fallback_parameters(fallback) -> dict:
    """V2 parameters: the same per row, comma-separated (empty for a row the model answered)."""
    return {name: ",".join("" if v is None else str(v) for v in values)
            for name, values in fallback_fields(fallback).items()}


class EnergyTransformer(Model):
    platform = "smart-energy-transformer"

    def __init__(self, name: str, model_dir: str, settings: Settings, batching: bool = True):
        super().__init__(name)
        self.batching = batching  # next hour: requests that arrive during a predictor call share the next one
        self.model_dir = model_dir
        self.settings = settings
        self.version = ""  # of the metadata and drift detector loaded here
        self.served_version = ""  # of the predictor's model, from its last answer
        self.features: list[str] = []
        self.ready = False

    def load(self) -> bool:
        """Read the model's metadata (sha256 checked) and drift detector, open Feast, start the drift thread."""
        metadata = read_metadata(self.model_dir)
        self.metadata = metadata
        self.version = metadata["version"]
        self.dayahead = metadata.get("horizon_hours") == 24
        self.model_features = list(metadata["features"])  # what the predictor takes
        self.features = list(metadata.get("origin_features") or metadata["features"])  # what Feast gives
        self.reader = OnlineFeatureReader(open_feature_store(self.settings),
                                          metadata.get("feature_service", FEATURE_SERVICE), self.features)
        self.reader._resolve()  # fail at start-up, not on the first request
        self.planner = Planner(self.features)
        watched = (metadata.get("drift") or {}).get("features")
        self.drift = DriftMonitor(load_drift_detector(self.model_dir), self.features, self.settings.drift_window,
                                  on_result=publish_drift, watched=watched, share=self.settings.drift_share)
        self.drift.start()
        self.batcher = CallBatcher(self._batched_call, MAX_BATCH_ROWS) if self.batching and not self.dayahead else None
        # one error tracker per answering version: in a canary, each version's MAE is over its own forecasts
        self.errors: OrderedDict[str, ForecastErrorTracker] = OrderedDict()
        if self.dayahead:  # each meter's band calibrated on its own recent scores (components/calibration.py)
            self.calibrations = Calibrations(self.features, metadata["conformal_kw"])
        self.ready = True
        return self.ready

    def stop(self):
        if getattr(self, "drift", None):
            self.drift.stop()
        super().stop()

    def get_input_types(self) -> list[dict]:
        entity = [{"name": "meter_id", "datatype": "BYTES", "shape": [-1]},
                  {"name": "timestamp", "datatype": "BYTES", "shape": [-1]}]
        return entity + [{"name": f, "datatype": "FP32", "shape": [-1]} for f in self.features]

    def get_output_types(self) -> list[dict]:
        names = list(self.metadata.get("outputs") or [OUTPUT_NAME]) if self.dayahead else [OUTPUT_NAME]
        return [{"name": name, "datatype": "FP64", "shape": [-1]} for name in names]

    async def preprocess(self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None) -> InferRequest:
        if isinstance(payload, InferRequest):
            check_requested_outputs(payload.request_outputs, [o["name"] for o in self.get_output_types()])
            state = RequestState("v2", parse_v2(payload.inputs, self.features), payload.id, payload)
        else:
            state = RequestState("v1", parse_v1(payload, self.features), (headers or {}).get("x-request-id"))
        batch = state.batch
        if batch.kind == "entity":
            start = time.perf_counter()
            try:
                batch.matrix, batch.event_hours = self.reader.read(batch.meter_ids)
                # stale meters (components/online_rows.py): their profiles are read for those rows only
                batch.plan = self.planner.plan(batch.matrix, batch.event_hours, batch.hours,
                                               self.settings.stale_after_hours,
                                               lambda rows: self.reader.profiles([batch.meter_ids[i] for i in rows]))
            finally:
                metrics.FEAST_LOOKUP_DURATION.observe(time.perf_counter() - start)
            check_hours(batch.meter_ids, batch.hours, batch.event_hours, batch.plan.fallback)
            refusal = batch.plan.refusal(batch.meter_ids)
            if refusal:
                raise RequestError(refusal, status=422, reason="no_history")
            batch.forecast_hours = [asked or hour for asked, hour in zip(batch.hours, batch.event_hours)]
            self.drift.observe(batch.matrix, keys=list(zip(batch.meter_ids, batch.event_hours)))
        elif self.dayahead:
            raise RequestError("a day-ahead model answers meter_id requests: its 24 rows need the hour the "
                               "meter's online row starts from", reason="entity_required")
        else:
            self.drift.observe(batch.matrix)
        _request.set(state)
        if self.dayahead:
            matrix, state.targets = pairs_matrix(batch.meter_ids, batch.forecast_hours, batch.matrix, self.features)
            request = predictor_request(self.name, matrix, self.model_features, state.request_id or "")
            request.request_outputs = [RequestedOutput(name) for name in RAW_OUTPUTS]  # calibrated here
            return request
        if self.batcher is not None:  # predict() sends batch.matrix, in one call with the requests waiting with it
            return InferRequest(model_name=self.name, infer_inputs=[], request_id=state.request_id or "")
        return predictor_request(self.name, batch.matrix, self.features, state.request_id or "")

    async def predict(self, payload: InferRequest, headers: Dict[str, str] = None,
                      response_headers: Dict[str, str] = None) -> InferResponse:
        if self.batcher is not None:  # next hour (day ahead is not batched): concurrent requests share a call
            rows = np.asarray(_request.get().batch.matrix, dtype=np.float32)
            version, outputs = await self.batcher.submit(rows, headers, response_headers)
            return InferResponse(response_id=payload.id, model_name=self.name, model_version=version,
                                 infer_outputs=[InferOutput(name=name, shape=[len(values)], datatype=dtype, data=values)
                                                for name, dtype, values in outputs])
        return await self._call_predictor(payload, headers, response_headers)

    async def _batched_call(self, rows: np.ndarray, headers, response_headers):
        result = await self._call_predictor(predictor_request(self.name, rows, self.features, ""), headers,
                                            response_headers)
        return result.model_version, [(o.name, o.datatype, o.as_numpy().ravel()) for o in result.outputs]

    async def _call_predictor(self, payload: InferRequest, headers: Dict[str, str] = None,
                              response_headers: Dict[str, str] = None) -> InferResponse:
        config = self.predictor_config
        host = config.predictor_host if config else "?"
        try:
            # as a dict, not KServe's default InferResponse.from_bytes, which drops the answer's model_version
            answer = await self._http_client.infer(f"{config.predictor_base_url}/v2/models/{self.name}/infer",
                                                   data=payload, headers=append_forwardable_headers(headers),
                                                   response_headers=response_headers, is_graph_endpoint=True)
            return InferResponse.from_rest(answer)
        except httpx.HTTPStatusError as err:
            if err.response.status_code >= 500:
                raise PredictorUnavailable(f"predictor at {host} answered {err.response.status_code}; "
                                           f"retry shortly") from None
            raise RequestError(f"predictor at {host} refused the request: {err.response.text[:300]}",
                               status=502, reason="predictor_rejected") from None
        except httpx.HTTPError as err:
            raise PredictorUnavailable(f"predictor at {host} is unreachable ({type(err).__name__}); "
                                       f"retry shortly") from None

    async def postprocess(self, result: InferResponse, headers: Dict[str, str] = None,
                          response_headers: Dict[str, str] = None) -> Union[Dict, InferResponse]:
        state = _request.get()
        if self.dayahead:
            return self._dayahead_answer(state, result)
        kw = np.asarray(result.outputs[0].as_numpy(), dtype=np.float64).ravel()
        version = self._answered_by(result)
        fallback = state.batch.plan if state.batch.kind == "entity" and state.batch.plan.any else None
        if fallback is not None:
            profiled = fallback.rows(PROFILE)
            kw = np.where(profiled, fallback.kw, kw)
            count_fallbacks(fallback)
        histogram = metrics.PREDICTION_KW.labels(version)
        for value in kw:
            histogram.observe(value)
        if state.batch.kind == "entity":
            errors = self._error_tracker(version)
            # a fallback is no forecast of this version's: its hours are not in the version's MAE
            errors.record(state.batch.meter_ids, state.batch.event_hours, state.batch.matrix, kw,
                          remember=None if fallback is None else ~profiled)
            model_mae, persistence_mae, hours = errors.mae()
            if model_mae is not None:
                metrics.FORECAST_MAE.labels(version).set(model_mae)
                metrics.BASELINE_MAE.labels("persistence").set(persistence_mae)
                metrics.FORECAST_SCORED_HOURS.labels(version).set(hours)
        drift = self.drift.status()
        if state.protocol == "v1":
            out = {"predictions": kw.tolist(), "model_version": version, "drift": drift}
            if state.batch.kind == "entity":
                out["meter_ids"] = state.batch.meter_ids
            if fallback is not None:
                out |= fallback_fields(fallback)
            return out
        output = InferOutput(name=OUTPUT_NAME, shape=[len(kw)], datatype="FP64")
        output.set_data_from_numpy(kw, binary_data=False)
        parameters = {"drift_status": drift["status"], "drifted_features": ",".join(drift["drifted_features"])}
        if fallback is not None:
            parameters |= fallback_parameters(fallback)
        return InferResponse(response_id=state.request_id, model_name=self.name, model_version=version,
                             infer_outputs=[output], parameters=parameters,
                             requested_outputs=state.request.request_outputs,
                             use_binary_outputs=state.request.use_binary_outputs)

    def _answered_by(self, result: InferResponse) -> str:
        """The version that produced the answer (the predictor's), counted in this request's metrics."""
        version = result.model_version or UNKNOWN_VERSION
        self.served_version = version
        record_served_version(version)
        return version

    def _error_tracker(self, version: str) -> ForecastErrorTracker:
        tracker = self.errors.get(version)
        if tracker is None:
            tracker = self.errors[version] = ForecastErrorTracker(self.features, window=self.settings.drift_window)
        self.errors.move_to_end(version)
        while len(self.errors) > MAX_TRACKED_VERSIONS:  # the version that answered least recently goes
            self.errors.popitem(last=False)
        return tracker

    def _dayahead_answer(self, state: RequestState, result: InferResponse) -> Union[Dict, InferResponse]:
        columns = {o.name: np.asarray(o.as_numpy(), dtype=np.float64).ravel() for o in result.outputs}
        version = self._answered_by(result)
        drift = self.drift.status()
        meters = state.batch.meter_ids
        fallback = state.batch.plan if state.batch.plan.any else None
        columns, shifts, calibration = self.calibrations.band(
            version, result.parameters, columns, meters, state.batch.event_hours, state.batch.matrix,
            None if fallback is None else ~fallback.rows(PROFILE))
        if fallback is not None:
            # a point forecast: P10 = P50 = P90, no calibrated band (the model did not forecast these meters)
            for row, profile in fallback.profiles.items():
                span = slice(row * HORIZON_HOURS, (row + 1) * HORIZON_HOURS)
                kw = profile_forecast(profile, state.targets[span])
                for values in columns.values():
                    values[span] = kw
            count_fallbacks(fallback)
        if state.protocol == "v1":
            forecasts = answer_v1(meters, state.targets, columns, self.metadata, self.settings.tariff, self.settings)
            for entry, how, shift in zip(forecasts, calibration, shifts):
                entry |= {"calibration": how, "calibration_shift_kw": shift}
            if fallback is not None:
                for row, entry in enumerate(forecasts):
                    if fallback.fallback[row] is not None:
                        entry |= {"fallback": fallback.fallback[row], "fallback_reason": fallback.reason[row],
                                  "stale_hours": fallback.stale_hours[row]}
            return {"forecasts": forecasts, "model_version": version, "drift": drift}
        outputs = []
        for name, values in columns.items():
            output = InferOutput(name=name, shape=[len(meters), len(values) // len(meters)], datatype="FP64")
            output.set_data_from_numpy(values.reshape(len(meters), -1), binary_data=False)
            outputs.append(output)
        parameters = {"drift_status": drift["status"], "first_hour": state.targets[0].isoformat(),
                      "calibration": ",".join(how or "" for how in calibration),
                      "calibration_shift_kw": shift_parameter(shifts)}
        if fallback is not None:
            parameters |= fallback_parameters(fallback)
        return InferResponse(response_id=state.request_id, model_name=self.name, model_version=version,
                             infer_outputs=outputs, parameters=parameters,
                             requested_outputs=state.request.request_outputs,
                             use_binary_outputs=state.request.use_binary_outputs)
