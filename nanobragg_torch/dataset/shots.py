"""Per-shot parameters: a pure function of (base seed, shot index).

Each varied quantity draws from its own numpy stream, `Generator(PCG64(SeedSequence(seed, spawn_key=(index,
stream))))`, so shot i is the same whichever worker renders it and in whichever order, and switching one
variation on or off leaves the others' draws unchanged. Values are SI (radians, metres, photons/m^2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..config import SimulationConfig, scalar_value
from ..constants import RTD
from ..rng import umat2misset
from .spec import DatasetSpec

# stream ids of the per-shot SeedSequence spawn key: fixed forever (changing one changes every dataset)
_ORIENTATION, _N, _FLUENCE, _WAVELENGTH, _NOISE = range(5)


@dataclass(frozen=True)
class ShotParameters:
    index: int
    misset: tuple[float, float, float] | None  # radians (rotate x, then y, then z: the C's rotate()); None: base
    N: int | None  # Na = Nb = Nc; None: the base flags' -N
    fluence: float  # photons/m^2
    wavelength: float  # metres
    noise_seed: int | None  # the C's -seed for this shot's noise image; None: no noise

    def as_dict(self) -> dict:
        """JSON-ready (the manifest's `params`)."""
        d = dataclasses.asdict(self)
        d["misset"] = list(self.misset) if self.misset is not None else None
        return d


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index, stream))))


def uniform_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix uniform over SO(3): a unit quaternion from three uniforms (Shoemake's method)."""
    u1, u2, u3 = rng.random(3)
    a, b = math.sqrt(1.0 - u1), math.sqrt(u1)
    x, y = a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2)
    z, w = b * math.sin(2 * math.pi * u3), b * math.cos(2 * math.pi * u3)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def shot_parameters(spec: DatasetSpec, base: SimulationConfig, index: int) -> ShotParameters:
    """Shot `index`'s parameters: depends only on the SPEC, the base experiment and (seed, index)."""
    if not 0 <= index < spec.count:
        raise IndexError(f"shot {index} is not in 0..{spec.count - 1}")
    misset = None
    if spec.orientation == "random":
        misset = umat2misset(uniform_rotation(_rng(spec.seed, index, _ORIENTATION)))  # the C's x, y, z order
    elif isinstance(spec.orientation, tuple):
        misset = tuple(v / RTD for v in spec.orientation[index % len(spec.orientation)])
    N = None
    if spec.N.kind == "fixed":
        N = spec.N.values[0]
    elif spec.N.kind == "range":
        N = int(_rng(spec.seed, index, _N).integers(spec.N.values[0], spec.N.values[1], endpoint=True))
    elif spec.N.kind == "choice":
        N = spec.N.values[int(_rng(spec.seed, index, _N).integers(len(spec.N.values)))]
    fluence = scalar_value(base.beam.fluence)
    if spec.fluence_jitter > 0:
        s = math.sqrt(math.log1p(spec.fluence_jitter**2))  # log-normal with mean 1 and this relative rms
        fluence *= math.exp(s * float(_rng(spec.seed, index, _FLUENCE).standard_normal()) - 0.5 * s * s)
    wavelength = scalar_value(base.beam.wavelength)
    if spec.wavelength_jitter > 0:
        wavelength *= 1.0 + spec.wavelength_jitter * float(_rng(spec.seed, index, _WAVELENGTH).standard_normal())
    noise_seed = int(_rng(spec.seed, index, _NOISE).integers(1, 2**31 - 1)) if spec.noise else None
    return ShotParameters(index, misset, N, fluence, wavelength, noise_seed)


def shot_config(base: SimulationConfig, shot: ShotParameters) -> SimulationConfig:
    """The configuration rendered for a shot. Fluence is not set here: the engine's image is proportional
    to it, so the renderer scales the base-fluence image (shots of one geometry then share one batch)."""
    crystal = base.crystal
    if shot.misset is not None:
        crystal = dataclasses.replace(crystal, misset=shot.misset, misset_random=False)
    if shot.N is not None:
        crystal = dataclasses.replace(crystal, Na=float(shot.N), Nb=float(shot.N), Nc=float(shot.N),
                                      sample_x=0.0, sample_y=0.0, sample_z=0.0)
    beam = base.beam
    if shot.wavelength != scalar_value(beam.wavelength):
        beam = dataclasses.replace(beam, wavelength=shot.wavelength)
    return dataclasses.replace(base, crystal=crystal, beam=beam)


def geometry_key(shot: ShotParameters) -> tuple:
    """Shots with equal keys differ only in orientation (and fluence, noise): one simulate_batch call."""
    return (shot.N, shot.wavelength)
