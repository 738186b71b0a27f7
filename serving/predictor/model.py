"""``EnergyPredictor``: the registered XGBoost JSON model behind KServe's V1 and V2 routes.

Takes complete feature rows only (the transformer does the Feast lookup). The same class serves locally and
on a cluster, where it is the ServingRuntime ``smart-energy-xgboost`` (KServe's stock xgboost server would answer
without our ``model_version``, so the canary could not be attributed, and without the day-ahead calibration).
It accepts the stock runtime's V2 request shape too (one tensor per feature, ``content_type: pd``).
A day-ahead model (``horizon_hours: 24``) takes one row per (origin, lead) and answers three outputs,
``p10_kw``, ``p50_kw`` and ``p90_kw``: a direct call gets the training calibration (``conformal_kw``, flagged
``calibration: "training"``). The transformer asks for ``raw_p10_kw``/``raw_p50_kw``/``raw_p90_kw`` (the raw
quantiles, and ``conformal_kw`` in the answer's parameters) and calibrates them on each meter's rolling window
(``components/calibration.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import ModelMissingError

from smart_energy.components.calibration import RAW_OUTPUTS
from smart_energy.components.registry import MODEL_FILE, load_booster
from smart_energy.components.online_rows import next_hour_kw
from smart_energy.serving.logic import RequestError, check_requested_outputs, parse_v1, parse_v2

OUTPUT_NAME = "output-0"  # what KServe's xgboost runtime calls its output


class EnergyPredictor(Model):
    platform = "xgboost_json"

    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.version = ""
        self.features: list[str] = []
        self.ready = False

    def load(self) -> bool:
        """Load ``model.json`` after checking every file's sha256 against ``metadata.json``."""
        if not (Path(self.model_dir) / MODEL_FILE).is_file():
            raise ModelMissingError(str(Path(self.model_dir) / MODEL_FILE))
        self._booster, metadata = load_booster(self.model_dir)
        if metadata.get("horizon_hours") == 24:  # the day-ahead model: pooled + next-hour boosters and the carry
            from smart_energy.components.dayahead import lead_aware

            self._booster = lead_aware(self._booster, metadata, self.model_dir)
        self.version = metadata["version"]
        self.features = list(metadata["features"])
        self.outputs = list(metadata.get("outputs") or [OUTPUT_NAME])
        self.conformal_kw = metadata.get("conformal_kw")
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        # one tensor per feature, in the model's order: the V2 metadata is where clients read it
        return [{"name": f, "datatype": "FP32", "shape": [-1]} for f in self.features]

    def get_output_types(self) -> list[dict]:
        return [{"name": name, "datatype": "FP32", "shape": [-1]} for name in self.outputs]

    def validate(self, payload):
        return payload  # parse_v1 / parse_v2 check the request, and name the problem in a 4xx

    def predict(self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None) -> Union[Dict, InferResponse]:
        if isinstance(payload, InferRequest):
            check_requested_outputs(payload.request_outputs,
                                    self.outputs + (list(RAW_OUTPUTS) if self.conformal_kw is not None else []))
            batch = parse_v2(payload.inputs, self.features)
        else:
            batch = parse_v1(payload, self.features)
        if batch.kind != "features":
            raise RequestError("the predictor takes feature rows; send meter_id requests to the transformer",
                               reason="entity_at_predictor")
        names, parameters = self.outputs, None
        if self.conformal_kw is None:
            columns = [next_hour_kw(self._booster, batch.matrix)]
        else:  # day ahead: P10, P50, P90 per row
            import pandas as pd

            from smart_energy.components.calibration import TRAINING, calibrate
            from smart_energy.components.dayahead import raw_quantiles

            raw = raw_quantiles(self._booster, pd.DataFrame(batch.matrix, columns=self.features))
            columns = list(calibrate(raw, self.conformal_kw).T)
            parameters = {"calibration": TRAINING, "conformal_kw": repr(float(self.conformal_kw))}
            if isinstance(payload, InferRequest) and any(o.name in RAW_OUTPUTS for o in payload.request_outputs or []):
                names, columns = [*names, *RAW_OUTPUTS], columns + list(raw.T)  # the transformer calibrates
        if isinstance(payload, InferRequest):
            outputs = []
            for name, values in zip(names, columns):
                output = InferOutput(name=name, shape=[len(values)], datatype="FP32")
                output.set_data_from_numpy(values.astype("float32"), binary_data=False)
                outputs.append(output)
            return InferResponse(response_id=payload.id, model_name=self.name, model_version=self.version,
                                 infer_outputs=outputs, requested_outputs=payload.request_outputs,
                                 use_binary_outputs=payload.use_binary_outputs, parameters=parameters)
        if len(columns) == 1:
            return {"predictions": columns[0].tolist(), "model_version": self.version}
        return {"predictions": [dict(zip(self.outputs, row)) for row in zip(*(c.tolist() for c in columns))],
                "model_version": self.version, "calibration": TRAINING,
                "calibration_shift_kw": float(self.conformal_kw)}
