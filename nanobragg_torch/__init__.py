"""nanobragg_torch: a vectorized, differentiable PyTorch twin of nanoBragg.c."""

from .config import BeamConfig, CrystalConfig, DetectorConfig, PanelConfig, SimulationConfig, StructureFactors
from .simulate import simulate, simulate_with_trace

__all__ = [
    "BeamConfig",
    "CrystalConfig",
    "DetectorConfig",
    "PanelConfig",
    "SimulationConfig",
    "StructureFactors",
    "simulate",
    "simulate_with_trace",
]
