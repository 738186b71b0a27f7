"""The XGBoost predictor: a KServe model serving the registry's model file (V1 and V2)."""

from smart_energy.serving.predictor.model import EnergyPredictor

__all__ = ["EnergyPredictor"]
