"""Frozen configuration objects, in SI units (metres, radians, photons/m^2).

The fields record what the user asked for; `None` means "not given", so that the physics modules can apply
nanoBragg.c's auto-selection rules (beam centre per convention, phi/divergence/dispersion/thickness step
counts, oversampling). Continuous parameters may be Python floats or torch tensors: a tensor that requires
grad carries its gradient through the render. Unit conversions from the C's flags happen once, in `cli`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .constants import DEFAULT_FLUENCE

Scalar = float | torch.Tensor
Vec3 = tuple[float, float, float] | torch.Tensor

Convention = Literal["MOSFLM", "XDS", "ADXV", "DENZO", "DIALS", "CUSTOM"]
Pivot = Literal["BEAM", "SAMPLE"]
Shape = Literal["SQUARE", "ROUND", "GAUSS", "TOPHAT"]


def scalar_value(x: Scalar) -> float:
    """A config scalar as a Python float (float64), for the C's discrete decisions (never float32-rounded)."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


@dataclass(frozen=True)
class PanelConfig:
    """One flat detector module (dxtbx's Panel) in the simulation's lab frame (the frame of the beam vector).

    `origin` is the lab position of the outer corner of pixel (0, 0), the C's pix0_vector: pixel (s, f) has its
    centre at origin + (f + 1/2) pixel_size fast_axis + (s + 1/2) pixel_size slow_axis. The normal is
    fast x slow (the C's odet) and must point away from the sample. Pixels are square, as in the C."""

    origin: Vec3  # m
    fast_axis: Vec3  # unit
    slow_axis: Vec3  # unit
    pixel_size: Scalar  # m
    fpixels: int
    spixels: int
    name: str = ""
    thickness: Scalar = 0.0  # m (detector_thick of this module)
    mu: Scalar | None = None  # 1/m


@dataclass(frozen=True)
class DetectorConfig:
    fpixels: int = 1024
    spixels: int = 1024
    pixel_size: Scalar = 0.1e-3
    distance: Scalar = 100.0e-3
    close_distance: Scalar | None = None
    convention: Convention = "MOSFLM"
    pivot: Pivot = "BEAM"  # only honoured by CUSTOM; the other conventions force their own
    Xbeam: Scalar | None = None
    Ybeam: Scalar | None = None
    Xclose: Scalar | None = None
    Yclose: Scalar | None = None
    ORGX: Scalar | None = None  # pixels
    ORGY: Scalar | None = None
    fdet_vector: Vec3 | None = None  # custom axes (CUSTOM convention)
    sdet_vector: Vec3 | None = None
    odet_vector: Vec3 | None = None
    twotheta_axis: Vec3 | None = None
    pix0_vector: Vec3 | None = None  # user pix0 (metres); see quirks PIX0_OVERRIDE
    rotx: Scalar = 0.0
    roty: Scalar = 0.0
    rotz: Scalar = 0.0
    twotheta: Scalar = 0.0
    thickness: Scalar = 0.0  # detector_thick (m)
    thickstep: Scalar | None = None  # detector_thickstep (m)
    thicksteps: int | None = None
    mu: Scalar | None = None  # detector_mu (1/m); None: 1/thickness as the C warns
    curved: bool = False
    point_pixel: bool = False
    oversample: int | None = None  # None: the C's recommended oversampling
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    roi: tuple[int, int, int, int] | None = None  # xmin, xmax, ymin, ymax (inclusive, as the C tests)
    mask: np.ndarray | None = field(default=None, compare=False)  # (spixels, fpixels); 0 = skip pixel
    # a multi-panel detector: when given, the panels replace the single detector's size, pixel, axes and
    # placement fields (convention, beam centre, distance, rotations); the beam comes from BeamConfig.beam_vector
    panels: tuple[PanelConfig, ...] | None = None


@dataclass(frozen=True)
class BeamConfig:
    wavelength: Scalar = 1.0e-10  # lambda0 (m)
    fluence: Scalar = DEFAULT_FLUENCE
    beam_vector: Vec3 | None = None  # custom
    polar_vector: Vec3 | None = None  # custom
    polarization: Scalar = 0.0  # Kahn factor (-polar)
    nopolar: bool = False
    hdivrange: Scalar | None = None  # rad
    vdivrange: Scalar | None = None
    hdivstep: Scalar | None = None
    vdivstep: Scalar | None = None
    hdivsteps: int | None = None
    vdivsteps: int | None = None
    round_div: bool = True
    dispersion: Scalar | None = None  # delta-lambda/lambda (fraction)
    dispsteps: int | None = None
    sources: np.ndarray | None = field(
        default=None, compare=False
    )  # -sourcefile rows: X Y Z I lambda (NaN=default)
    water_size: Scalar = 0.0  # m


@dataclass(frozen=True)
class SparseGrid:
    """An F grid stored by its filled cells (the HKL readers' choice when a dense grid would be almost empty):
    cell ((h-h_min)*K + k-k_min)*L + l-l_min of the (H, K, L) box holds values[i] where keys[i] is that index,
    `fill` elsewhere (the dense grid's default_F). Lookups (structure_factors.FGrid) give the dense grid's
    values bit for bit."""

    keys: np.ndarray  # (n,) int64, sorted, distinct
    values: np.ndarray | torch.Tensor  # (n,) F; a tensor may require grad
    shape: tuple[int, int, int]  # (H, K, L): the dense grid's shape
    fill: float = 0.0

    ndim = 3

    @property
    def cells(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    def dense(self) -> np.ndarray:
        """The dense float64 grid (the caller checks that it fits: memory.check_allocation)."""
        grid = np.full(self.shape, self.fill, dtype=np.float64)
        values = self.values.detach().cpu().numpy() if isinstance(self.values, torch.Tensor) else self.values
        grid.reshape(-1)[self.keys] = values
        return grid


@dataclass(frozen=True)
class StructureFactors:
    """The C's Fhkl grid: F[h-h_min, k-k_min, l-l_min]; `grid` may be a tensor that requires grad, or a
    SparseGrid."""

    grid: np.ndarray | torch.Tensor | SparseGrid
    h_min: int
    k_min: int
    l_min: int
    hkls: int  # number of entries read (0: no HKL data)

    @property
    def h_max(self) -> int:
        return self.h_min + self.grid.shape[0] - 1

    @property
    def k_max(self) -> int:
        return self.k_min + self.grid.shape[1] - 1

    @property
    def l_max(self) -> int:
        return self.l_min + self.grid.shape[2] - 1


@dataclass(frozen=True)
class CrystalConfig:
    cell: tuple[Scalar, Scalar, Scalar, Scalar, Scalar, Scalar] | None = (
        None  # a,b,c (m), alpha,beta,gamma (rad)
    )
    reciprocal_matrix: np.ndarray | torch.Tensor | None = (
        None  # MOSFLM A: rows a*,b*,c* (1/Angstrom x lambda)
    )
    misset: tuple[Scalar, Scalar, Scalar] | None = None  # rad
    misset_random: bool = False
    misset_seed: int = 0  # the user's -misset_seed (the C defaults it to the noise seed)
    Na: Scalar = 1.0
    Nb: Scalar = 1.0
    Nc: Scalar = 1.0
    sample_x: float = 0.0  # -xtalsize etc. (m); > 0 overrides N
    sample_y: float = 0.0
    sample_z: float = 0.0
    shape: Shape = "SQUARE"
    fudge: Scalar = 1.0
    phi0: Scalar = 0.0
    osc: Scalar | None = None
    phistep: Scalar | None = None
    phisteps: int | None = None
    spindle_axis: Vec3 | None = None  # custom
    mosaic_spread: Scalar | None = None  # rad
    mosaic_domains: int | None = None
    mosaic_seed: int = 12345678  # the user's -mosaic_seed (C default)
    structure_factors: StructureFactors | None = field(default=None, compare=False)
    default_F: Scalar = 0.0
    interpolate: bool | None = None  # None: the C's auto choice from N
    dmin: float = 0.0  # m


@dataclass(frozen=True)
class SimulationConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    crystal: CrystalConfig = field(default_factory=CrystalConfig)
    c_compat: bool = False  # True: pinned nanoBragg.c exactly (serial build); False: the fixed C (see quirks)
    pix0_override: bool = False  # True: a user pix0_vector places the detector (the documented meaning)
