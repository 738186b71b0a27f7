"""The transformer: Feast lookup, drift window and metrics in front of the predictor."""

from smart_energy.serving.transformer.model import EnergyTransformer

__all__ = ["EnergyTransformer"]
