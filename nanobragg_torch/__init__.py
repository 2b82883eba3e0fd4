"""nanobragg_torch: a vectorized, differentiable PyTorch twin of nanoBragg.c."""

from .config import BeamConfig, CrystalConfig, DetectorConfig, PanelConfig, SimulationConfig, StructureFactors
from .derivatives import derivative_images
from .simulate import simulate, simulate_with_trace

__all__ = [
    "BeamConfig",
    "CrystalConfig",
    "DetectorConfig",
    "PanelConfig",
    "SimulationConfig",
    "StructureFactors",
    "derivative_images",
    "simulate",
    "simulate_with_trace",
]
