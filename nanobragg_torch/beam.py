"""X-ray sources: divergence grid, spectral dispersion and -sourcefile, as nanoBragg.c builds its source list.

Each source is a unit vector pointing from the sample towards the source (the C's source_X/Y/Z), a
wavelength and the C's source_I. The C divides the summed intensity by the number of sources and ignores
source_I: it is kept only for the trace (the C prints it in its source list).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import SimulationConfig, scalar_value
from .constants import SOURCE_DISTANCE
from .detector import Geometry
from .sampling import StepRule, Steps, auto_steps
from .setup_cache import cached, fields_key
from .vectors import rotate_axis, unitize

Tensor = torch.Tensor


@dataclass
class Sources:
    direction: Tensor  # (n, 3) unit vectors towards the sources; incident = -direction
    wavelength: Tensor  # (n,) metres
    weight: Tensor  # (n,) the C's source_I (1/sources, or the -sourcefile column, NaN -> 1): traced, never used


BEAM_STEPS = StepRule(default_range=1.0, range_only_divisor=1.0, count_minus_one=True)


def _step_tensor(user_step, user_range, st: Steps, step: float, dtype, device) -> Tensor:
    """Step as a tensor; derived from a user range tensor (step = range/divisor) so gradients reach it."""
    if user_step is not None and scalar_value(user_step) > 0.0:  # a step <= 0 is the C's "auto" (step = range)
        return torch.as_tensor(user_step, dtype=dtype, device=device)
    if isinstance(user_range, torch.Tensor) and st.divisor is not None and step > 0.0:
        return user_range.to(dtype=dtype, device=device) / st.divisor
    return torch.as_tensor(step, dtype=dtype, device=device)


def _sources_key(cfg: SimulationConfig, geom: Geometry, dtype: torch.dtype, device: torch.device) -> tuple:
    # the beam and polarization axes come resolved in geom; the intensity fields do not shape the sources
    b = fields_key(cfg.beam, "fluence", "polarization", "nopolar", "water_size", "beam_vector", "polar_vector")
    return (b, geom.beam, geom.polar_vector, geom.vert_vector, str(dtype), str(device))


@cached("sources", _sources_key)
def build_sources(cfg: SimulationConfig, geom: Geometry, dtype: torch.dtype, device: torch.device) -> Sources:
    """The source list (reused for equal values: setup_cache)."""
    b = cfg.beam
    lambda0 = torch.as_tensor(b.wavelength, dtype=dtype, device=device)

    def given(x) -> float | None:
        return None if x is None else scalar_value(x)

    hst = auto_steps(b.hdivsteps, given(b.hdivrange), given(b.hdivstep), BEAM_STEPS)
    vst = auto_steps(b.vdivsteps, given(b.vdivrange), given(b.vdivstep), BEAM_STEPS)
    dst = auto_steps(b.dispsteps, given(b.dispersion) or 0.0, None, BEAM_STEPS)  # no -dispstep flag
    (hsteps, hrange, hstep), (vsteps, vrange, vstep), (dsteps, disp, dstep) = (
        (st.count, st.range, st.step) for st in (hst, vst, dst))
    # sanity checks
    if hrange <= 0.0 or hstep <= 0.0 or hsteps <= 0:
        hsteps, hrange, hstep = 1, 0.0, 0.0
    if vrange <= 0.0 or vstep <= 0.0 or vsteps <= 0:
        vsteps, vrange, vstep = 1, 0.0, 0.0
    if disp <= 0.0 or dstep <= 0.0 or dsteps <= 0:
        dsteps, disp, dstep = 1, 0.0, 0.0

    # differentiable range/step where the user gave them as tensors
    def tens(user, value):
        if isinstance(user, torch.Tensor) and value != 0.0:
            return user.to(dtype=dtype, device=device)
        return torch.as_tensor(value, dtype=dtype, device=device)

    if b.sources is not None and len(b.sources) > 0:
        rows = torch.as_tensor(b.sources, dtype=dtype, device=device)
        default_pos = -SOURCE_DISTANCE * geom.beam
        pos = torch.where(torch.isnan(rows[:, :3]), default_pos.expand(rows.shape[0], 3), rows[:, :3])
        lam = torch.where(torch.isnan(rows[:, 4]), lambda0.expand(rows.shape[0]), rows[:, 4])
        weight = torch.where(torch.isnan(rows[:, 3]), torch.ones_like(rows[:, 3]), rows[:, 3])
        return Sources(unitize(pos)[0], lam, weight)

    hrange_t, vrange_t = tens(b.hdivrange, hrange), tens(b.vdivrange, vrange)
    hstep_t = _step_tensor(b.hdivstep, b.hdivrange, hst, hstep, dtype, device)
    vstep_t = _step_tensor(b.vdivstep, b.vdivrange, vst, vstep, dtype, device)
    disp_t = tens(b.dispersion, disp)
    dstep_t = _step_tensor(None, b.dispersion, dst, dstep, dtype, device)

    kept: list[tuple[int, int]] = []
    for ih in range(hsteps):
        for iv in range(vsteps):
            hdiv = hstep * ih - hrange / 2.0
            vdiv = vstep * iv - vrange / 2.0
            test = (hdiv * hdiv - hstep * hstep / 4.0 * (1 - hsteps % 2)) / hrange / hrange if hrange else math.nan
            test2 = (vdiv * vdiv - vstep * vstep / 4.0 * (1 - vsteps % 2)) / vrange / vrange if vrange else math.nan
            total = test + test2
            if b.round_div and total * 4.0 > 1.1:
                continue  # the C's elliptical trim (NaN never trims)
            kept.append((ih, iv))
    n_div = len(kept)
    ih = torch.tensor([k[0] for k in kept], dtype=dtype, device=device)
    iv = torch.tensor([k[1] for k in kept], dtype=dtype, device=device)
    hdiv = hstep_t * ih - hrange_t / 2.0
    vdiv = vstep_t * iv - vrange_t / 2.0
    start = (-SOURCE_DISTANCE * geom.beam).expand(n_div, 3)
    v1 = rotate_axis(start, geom.polar_vector, vdiv)
    v2 = rotate_axis(v1, geom.vert_vector, hdiv)
    idisp = torch.arange(dsteps, dtype=dtype, device=device)
    lam = lambda0 * (1.0 + dstep_t * idisp - disp_t / 2.0)
    pos = v2.repeat_interleave(dsteps, dim=0)
    lam = lam.repeat(n_div)
    weight = torch.full_like(lam, 1.0 / lam.numel())
    return Sources(unitize(pos)[0], lam, weight)
