"""``EnergyPredictor``: the registered XGBoost JSON model behind KServe's V1 and V2 routes.

Takes complete feature rows only (the transformer does the Feast lookup). In a cluster the same
``model.json`` is served by KServe's xgboost runtime; this class gives the same numbers, and it
accepts that runtime's V2 request shape too (one tensor per feature, ``content_type: pd``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import ModelMissingError

from smart_energy.components.registry import MODEL_FILE, load_booster
from smart_energy.serving.logic import RequestError, check_requested_outputs, forecast, parse_v1, parse_v2

OUTPUT_NAME = "output-0"  # what KServe's xgboost runtime calls its output


class EnergyPredictor(Model):
    platform = "xgboost_json"

    def __init__(self, name: str, model_dir: str, nthread: int = 1):
        super().__init__(name)
        self.model_dir = model_dir
        self.nthread = nthread
        self.version = ""
        self.features: list[str] = []
        self.ready = False

    def load(self) -> bool:
        """Load ``model.json`` after checking every file's sha256 against ``metadata.json``."""
        if not (Path(self.model_dir) / MODEL_FILE).is_file():
            raise ModelMissingError(str(Path(self.model_dir) / MODEL_FILE))
        self._booster, metadata = load_booster(self.model_dir)
        self._booster.set_param({"nthread": self.nthread})
        self.version = metadata["version"]
        self.features = list(metadata["features"])
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        # one tensor per feature, in the model's order: the V2 metadata is where clients read it
        return [{"name": f, "datatype": "FP32", "shape": [-1]} for f in self.features]

    def get_output_types(self) -> list[dict]:
        return [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}]

    def validate(self, payload):
        return payload  # parse_v1 / parse_v2 check the request, and name the problem in a 4xx

    def predict(self, payload: Union[Dict, InferRequest], headers: Dict[str, str] = None) -> Union[Dict, InferResponse]:
        if isinstance(payload, InferRequest):
            check_requested_outputs(payload.request_outputs, [OUTPUT_NAME])
            batch = parse_v2(payload.inputs, self.features)
        else:
            batch = parse_v1(payload, self.features)
        if batch.kind != "features":
            raise RequestError("the predictor takes feature rows; send meter_id requests to the transformer",
                               reason="entity_at_predictor")
        kw = forecast(self._booster, batch.matrix)
        if isinstance(payload, InferRequest):
            output = InferOutput(name=OUTPUT_NAME, shape=[len(kw)], datatype="FP32")
            output.set_data_from_numpy(kw.astype("float32"), binary_data=False)
            return InferResponse(response_id=payload.id, model_name=self.name, model_version=self.version,
                                 infer_outputs=[output], requested_outputs=payload.request_outputs,
                                 use_binary_outputs=payload.use_binary_outputs)
        return {"predictions": kw.tolist(), "model_version": self.version}
