"""Crystal: unit cell or MOSFLM matrix, misset, phi rotation about the spindle and mosaic domains.

Mirrors nanoBragg.c's cell set-up (user cell -> default reciprocal orientation, or A matrix / lambda; misset
rotation; real-space vectors from reciprocal cross products; re-generated reciprocal vectors), the crystal
size (N from -xtalsize), and the per-step rotations of the phi loop (rotate_axis) and mosaic loop
(rotate_umat).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import SimulationConfig, scalar_value
from .constants import RTD
from .sampling import StepRule, auto_steps
from .setup_cache import cached
from .vectors import axis_rotation_matrix, cross, dot, norm, rotate_xyz

Tensor = torch.Tensor


@dataclass
class Crystal:
    a0: Tensor  # (3, 3) rows a, b, c: real-space vectors in metres at phi = 0, no mosaic
    a_star: Tensor  # (3, 3) rows a*, b*, c* in 1/Angstrom (the C keeps them unscaled), after misset
    cell: tuple[float, ...]  # a, b, c (A), alpha, beta, gamma (deg), as the C prints them
    reciprocal_cell: tuple[float, ...]
    volume: float  # A^3
    Na: Tensor
    Nb: Tensor
    Nc: Tensor
    misset_deg: tuple[float, float, float] | None  # random misset angles, when drawn


def cell_reciprocal(cell, t) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
    """The C's user_cell block: default-orientation reciprocal vectors (1/A) from a,b,c (A) and angles (rad)."""
    a, b, c, alpha, beta, gamma = (t(x) for x in cell)
    aavg = (alpha + beta + gamma) / 2
    skew = torch.sin(aavg) * torch.sin(aavg - alpha) * torch.sin(aavg - beta) * torch.sin(aavg - gamma)
    V_cell = 2.0 * a * b * c * torch.sqrt(torch.abs(skew))
    V_star = 1.0 / V_cell
    as_len = b * c * torch.sin(alpha) * V_star
    bs_len = c * a * torch.sin(beta) * V_star
    cs_len = a * b * torch.sin(gamma) * V_star
    sin_gs = c * V_star / as_len / bs_len
    cos_as = (torch.cos(beta) * torch.cos(gamma) - torch.cos(alpha)) / (torch.sin(beta) * torch.sin(gamma))
    cos_bs = (torch.cos(gamma) * torch.cos(alpha) - torch.cos(beta)) / (torch.sin(gamma) * torch.sin(alpha))
    cos_gs = (torch.cos(alpha) * torch.cos(beta) - torch.cos(gamma)) / (torch.sin(alpha) * torch.sin(beta))
    sin_gs = torch.clamp(sin_gs, max=1.0)
    zero = torch.zeros_like(a)
    a_star = torch.stack((as_len, zero, zero))
    b_star = torch.stack((bs_len * cos_gs, bs_len * sin_gs, zero))
    c_star = torch.stack(
        (
            cs_len * cos_bs,
            cs_len * (cos_as - cos_bs * cos_gs) / sin_gs,
            cs_len * V_cell / (a * b * c * sin_gs),
        )
    )
    return a_star, b_star, c_star, V_cell, (a, b, c)


CRYSTAL_FIELDS = ("cell", "reciprocal_matrix", "misset", "misset_random", "misset_seed", "Na", "Nb", "Nc",
                  "sample_x", "sample_y", "sample_z")  # what build_crystal reads of CrystalConfig


def _crystal_key(cfg: SimulationConfig, dtype: torch.dtype, device: torch.device) -> tuple:
    c = cfg.crystal
    return (tuple(getattr(c, name) for name in CRYSTAL_FIELDS), cfg.beam.wavelength, str(dtype), str(device))


@cached("crystal", _crystal_key)
def build_crystal(cfg: SimulationConfig, dtype: torch.dtype, device: torch.device) -> Crystal:
    """The cell set-up (reused for equal values: setup_cache)."""
    c = cfg.crystal

    def t(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    lambda0 = t(cfg.beam.wavelength)
    user_cell = c.cell is not None
    a_star = b_star = c_star = None
    if user_cell:
        cell_A = tuple(t(c.cell[i]) * 1e10 for i in range(3)) + tuple(t(c.cell[i]) for i in range(3, 6))
        a_star, b_star, c_star, V_user, lengths = cell_reciprocal(cell_A, t)
    if c.reciprocal_matrix is not None:
        A = t(c.reciprocal_matrix) * (1e-10 / lambda0)
        a_star, b_star, c_star = A[0], A[1], A[2]
    if a_star is None:
        raise ValueError("crystal needs a unit cell (-cell) or an orientation matrix (-mat)")

    misset_deg = None
    misset = c.misset
    if c.misset_random:
        from .rng import random_misset  # numba: imported only when needed (start-up time)

        rx, ry, rz = random_misset(c.misset_seed)
        misset = (rx, ry, rz)
        misset_deg = tuple(v * RTD for v in misset)
    # the three vectors of a triple as the rows of one (3, 3) tensor: each step below is one batched op
    recip = torch.stack((a_star, b_star, c_star))
    if misset is not None:
        mx, my, mz = (t(v) for v in misset)
        recip = rotate_xyz(recip, mx, my, mz)

    # rows b* x c*, c* x a*, a* x b*: the directions of a, b, c
    real = cross(recip.roll(-1, 0), recip.roll(-2, 0))
    V_star = dot(recip[0], real[0])
    if user_cell:
        # force b* x c* = a/V_cell etc. so that the user's cell lengths take
        real = real * (torch.stack(lengths) / V_user / norm(real))[:, None]
        V_star = 1.0 / V_user
    V_cell = 1.0 / V_star
    real = real * V_cell  # rows a, b, c (Angstrom)
    recip = cross(real.roll(-1, 0), real.roll(-2, 0)) * V_star

    cell_print = _cell_parameters(real)
    recip_print = _cell_parameters(recip)

    a0 = real * 1e-10
    Na, Nb, Nc = t(c.Na), t(c.Nb), t(c.Nc)
    lengths_m = norm(a0)
    beamsize_clip = (c.sample_x, c.sample_y, c.sample_z)
    N = []
    for i, (n_user, size) in enumerate(zip((Na, Nb, Nc), beamsize_clip, strict=True)):
        if size > 0:
            n_user = torch.ceil(t(size) / lengths_m[i].detach())
        if float(n_user.detach()) <= 1.0:
            n_user = torch.ones_like(n_user) if not n_user.requires_grad else n_user.clamp(min=1.0)
        N.append(n_user)
    return Crystal(
        a0=a0,
        a_star=recip,
        cell=cell_print,
        reciprocal_cell=recip_print,
        volume=float(V_cell.detach()),
        Na=N[0],
        Nb=N[1],
        Nc=N[2],
        misset_deg=misset_deg,
    )


def _cell_parameters(rows: Tensor) -> tuple[float, ...]:
    """Lengths and angles (deg) of the rows a, b, c, the way the C derives them for its printout (floats: one
    transfer, then Python arithmetic)."""
    a, b, c = rows.detach().tolist()

    def dot3(u, v):
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    la, lb, lc = (math.sqrt(dot3(v, v)) for v in (a, b, c))

    def ang(u, v, lu, lv):
        cosv = dot3(u, v) / lu / lv
        return math.acos(max(-1.0, min(1.0, cosv))) * RTD

    return (la, lb, lc, ang(b, c, lb, lc), ang(a, c, la, lc), ang(a, b, la, lb))


def _given(x) -> float | None:
    return None if x is None else scalar_value(x)


@dataclass
class PhiSweep:
    phi: Tensor  # (phisteps,) radians
    phi0: float
    osc: float
    phistep: float
    steps: int


PHI_STEPS = StepRule(default_range=1.0 / RTD, range_only_divisor=2.0, count_minus_one=False,
                     zero_count_is_one=True, keep_zero_step=True)


def resolve_phi(cfg: SimulationConfig, dtype: torch.dtype, device: torch.device) -> PhiSweep:
    """The C's phi auto-selection (phisteps, osc, phistep); phi = phi0 + phistep*phi_tic."""
    c = cfg.crystal
    st = auto_steps(c.phisteps, _given(c.osc), _given(c.phistep), PHI_STEPS)
    steps, osc, step = st.count, st.range, st.step
    if st.divisor is not None and isinstance(c.osc, torch.Tensor):
        step_t = c.osc / st.divisor
    else:
        step_t = c.phistep if isinstance(c.phistep, torch.Tensor) else step
    phi0_t = torch.as_tensor(c.phi0, dtype=dtype, device=device)
    step_t = torch.as_tensor(step_t, dtype=dtype, device=device)
    tics = torch.arange(steps, dtype=dtype, device=device)
    phi = phi0_t + step_t * tics
    return PhiSweep(phi=phi, phi0=float(phi0_t.detach()), osc=osc, phistep=step, steps=steps)


@dataclass
class Mosaic:
    umats: Tensor  # (domains, 3, 3)
    spread: float
    domains: int


def _mosaic_key(cfg: SimulationConfig, dtype: torch.dtype, device: torch.device) -> tuple:
    c = cfg.crystal
    return (c.mosaic_spread, c.mosaic_domains, c.mosaic_seed, str(dtype), str(device))


@cached("mosaic", _mosaic_key)
def resolve_mosaic(cfg: SimulationConfig, dtype: torch.dtype, device: torch.device) -> Mosaic:
    """The C's mosaic_domains auto-selection and its domain matrices (mosaic_rotation_umat)."""
    c = cfg.crystal
    spread = -1.0 if c.mosaic_spread is None else scalar_value(c.mosaic_spread)
    domains = -1 if c.mosaic_domains is None else c.mosaic_domains
    if domains <= 0:
        if spread < 0.0:
            domains, spread = 1, 0.0
        else:
            domains = 1 if spread == 0.0 else 10
    else:
        if spread < 0.0:
            spread, domains = 0.0, 1
        elif spread == 0.0:
            domains = 1
    if spread > 0.0:
        from .rng import mosaic_umats  # numba: imported only when needed (start-up time)

        u = torch.as_tensor(mosaic_umats(spread, domains, c.mosaic_seed), dtype=dtype, device=device)
        if isinstance(c.mosaic_spread, torch.Tensor) and c.mosaic_spread.requires_grad:
            u = _rescale_umats(u, c.mosaic_spread.to(dtype=dtype, device=device), spread)
    else:
        u = torch.eye(3, dtype=dtype, device=device).expand(domains, 3, 3).clone()
    return Mosaic(umats=u, spread=spread, domains=domains)


def _rescale_umats(u: Tensor, spread_t: Tensor, spread: float) -> Tensor:
    """Differentiable dependence on the spread with the random axes held fixed: each domain's rotation angle
    scales linearly with the spread (as in mosaic_rotation_umat, rot = mosaicity * f(r3))."""
    trace = u[:, 0, 0] + u[:, 1, 1] + u[:, 2, 2]
    angle = torch.arccos(torch.clamp((trace - 1.0) / 2.0, -1.0, 1.0))
    axis = torch.stack((u[:, 2, 1] - u[:, 1, 2], u[:, 0, 2] - u[:, 2, 0], u[:, 1, 0] - u[:, 0, 1]), dim=-1)
    sin_a = torch.sin(angle)
    safe = torch.where(sin_a.abs() > 1e-30, 2.0 * sin_a, torch.ones_like(sin_a))
    axis = axis / safe.unsqueeze(-1)
    scaled = angle.detach() * (spread_t / spread)
    r = axis_rotation_matrix(axis, scaled)
    return torch.where((sin_a.abs() > 1e-30).reshape(-1, 1, 1), r, u)


def _cells_key(crystal: Crystal, phi: PhiSweep, mosaic: Mosaic, spindle: Tensor, c_compat: bool) -> tuple:
    return (crystal.a0, phi.phi, mosaic.umats, spindle, c_compat, str(crystal.a0.device))


@cached("cells", _cells_key)
def rotated_cells(crystal: Crystal, phi: PhiSweep, mosaic: Mosaic, spindle: Tensor, c_compat: bool) -> Tensor:
    """(phisteps, domains, 3, 3): rows a, b, c after the phi rotation (rotate_axis) then the mosaic umat.

    In c_compat mode a step with phi == 0 exactly keeps the previous rotation (the C's `if(phi != 0.0)`
    stale-rotation quirk); the very first evaluation of the image is handled by the engine.
    """
    R = axis_rotation_matrix(spindle, phi.phi)  # (P, 3, 3)
    if c_compat:
        R = stale_phi_rotations(R, phi.phi)
    ap = crystal.a0 @ R.transpose(-1, -2)  # (P, 3 vectors, 3): every row v of a0 times R^T
    return ap[:, None] @ mosaic.umats.transpose(-1, -2)  # (P, M, 3, 3): then every umat


def stale_phi_rotations(R: Tensor, phi: Tensor) -> Tensor:
    """Replace the rotation of each phi == 0 step by the last rotation the C would have computed before it
    (the previous step's, cyclically the last step's for step 0)."""
    zero = (phi.detach() == 0.0).cpu().numpy()
    if not zero.any() or zero.all():
        return R
    n = len(zero)
    src = np.arange(n)
    for i in range(n):
        if zero[i]:
            j = (i - 1) % n
            while zero[j]:
                j = (j - 1) % n
            src[i] = j
    return R[torch.as_tensor(src, device=R.device)]
