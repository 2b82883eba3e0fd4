"""The fused pixel kernel: nanoBragg.c's `sweep over detector` for samples that need no per-sample state.

One pure function of tensors (`pixel_kernel`) maps a chunk of flat pixel indices to the chunk's pixel values
and its share of the C's omega_sum. Its layout is chosen for SIMD: every per-sample quantity is a separate
component tensor (x, y, z) whose innermost, contiguous axis is the pixel, and every sample axis
(orientation R, layer T, sub-pixel O2, source S) is a broadcast axis in front of it, summed inside the
kernel. Compiled (AOTInductor or torch.compile, `compiled.py`) the chain becomes a few vectorized loop nests
over pixels: per-pixel factors, then the per-sample terms (one orientation x pixel buffer) and their sum;
eager, it is the same algebra op by op.

What the kernel does not depend on — the tensors (`KernelInputs`) and the discrete switches (`KernelSpec`)
— is fixed by the plan, so one compiled kernel serves every chunk, image size and sample count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .config import R_E_SQR
from .lattice import shape_factor, square_factors
from .polarization import kahn_factor
from .structure_factors import nearest_lookup, wide_index
from .vectors import rotate_axis_xyz

Tensor = torch.Tensor


@dataclass(frozen=True)
class KernelSpec:
    """The discrete switches of the kernel (everything else is a tensor input): one compiled kernel each."""

    shape: str  # SQUARE | ROUND | GAUSS | TOPHAT
    N_active: tuple[bool, bool, bool]  # the C skips sincg on an axis with N <= 1
    curved: bool
    point_pixel: bool
    thick_on: bool
    dmin_on: bool
    polar: str  # "off" (-nopolar) | "pixel" (cached from the first source) | "sample" (-oversample_polar)
    oversample_thick: bool
    oversample_omega: bool
    has_grid: bool  # an HKL grid is loaded (else every F_cell is default_F)
    wide_index: bool = False  # flat grid indices in float64 (a float32 render of a grid of >= 2^24 points)

    @property
    def key(self) -> str:
        """A stable name for caches of compiled kernels."""
        flags = [self.shape, "".join("1" if a else "0" for a in self.N_active), self.polar]
        for name in ("curved", "point_pixel", "thick_on", "dmin_on", "oversample_thick", "oversample_omega",
                     "has_grid", "wide_index"):
            if getattr(self, name):
                flags.append(name)
        return "-".join(flags)


class KernelInputs(NamedTuple):
    """The plan's tensors that the kernel reads (render dtype and device; lengths in metres, angles in rad)."""

    fpixels: Tensor  # int64 scalar
    oversample: Tensor  # O (float)
    subpixel: Tensor  # pixel_size / O
    sub_f: Tensor  # (O2,) sub-pixel index along fast (subF), C order (subS-major)
    sub_s: Tensor  # (O2,) sub-pixel index along slow (subS)
    layer_t: Tensor  # (T,) 0..T-1
    pixel_size: Tensor
    close_distance: Tensor
    distance: Tensor
    fdet: Tensor  # (3,)
    sdet: Tensor
    odet: Tensor
    pix0: Tensor
    beam: Tensor
    polar_vector: Tensor
    layer_step: Tensor
    layer_mu: Tensor
    incident: Tensor  # (Ns, 3): -source direction
    wavelength: Tensor  # (Ns,)
    cells: Tensor  # (R, 3, 3): rows a, b, c of every (phi step, mosaic domain), metres
    N: Tensor  # (3,)
    fudge: Tensor
    a_star: Tensor  # (3, 3)
    F_table: Tensor  # (H*K*L + 1,) the HKL grid flattened, default_F appended (FGrid.table)
    grid_shape: Tensor  # (3,) H, K, L (float)
    grid_lo: Tensor  # (3,) lowest h, k, l of the grid (float)
    grid_hi: Tensor  # (3,) highest
    default_F: Tensor
    I_bg: Tensor
    kahn: Tensor
    fluence: Tensor
    steps: Tensor
    dmin: Tensor


def miller_indices(cells: Tensor, dif, inc, inv_lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h = a.S, k = b.S, l = c.S with S = (diffracted - incident)/lambda, evaluated as
    (a.diffracted)/lambda - (a.incident)/lambda: no per-sample scattering vector is formed (the kernel's
    memory traffic), and the general path calls this too, so that a trace is bitwise the image.

    cells (..., 3, 3) with rows a, b, c; dif, inc: component tuples; all broadcast against each other."""
    out = []
    for v in range(3):
        a = (cells[..., v, 0], cells[..., v, 1], cells[..., v, 2])
        a_dif = a[0] * dif[0] + a[1] * dif[1] + a[2] * dif[2]
        a_inc = (a[0] * inc[0] + a[1] * inc[1] + a[2] * inc[2]) * inv_lam
        out.append(a_dif * inv_lam - a_inc)
    return out[0], out[1], out[2]


def pixel_kernel(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel values (C,) and omega_sum of the pixels `flat_idx` (C,). Sample axes, outermost first:
    orientation R, layer T, sub-pixel O2, source S, then the pixel C (contiguous)."""
    dt = x.pixel_size.dtype
    # fpixel, spixel of each flat index, in float64 (exact below 2^53 pixels, and SIMD-friendly)
    flat = flat_idx.to(torch.float64)
    width = x.fpixels.to(torch.float64)
    spf = torch.floor(flat / width)
    fp, sp = (flat - spf * width).to(dt), spf.to(dt)

    # sub-pixel positions (T, O2, C): Fdet = subpixel_size*(fpixel*oversample + subF) + subpixel_size/2
    Fdet = x.subpixel * (fp * x.oversample + x.sub_f[:, None]) + x.subpixel / 2.0  # (O2, C)
    Sdet = x.subpixel * (sp * x.oversample + x.sub_s[:, None]) + x.subpixel / 2.0
    Odet = (x.layer_t * x.layer_step)[:, None, None]  # (T, 1, 1)
    pos = tuple(Fdet * x.fdet[i] + Sdet * x.sdet[i] + Odet * x.odet[i] + x.pix0[i] for i in range(3))
    if spec.curved:
        beam = tuple(x.distance * x.beam[i] for i in range(3))
        sdet = tuple(x.sdet[i] for i in range(3))
        fdet = tuple(x.fdet[i] for i in range(3))
        tmp = rotate_axis_xyz(beam, sdet, pos[1] / x.distance)
        pos = rotate_axis_xyz(tmp, fdet, pos[2] / x.distance)
    px, py, pz = pos
    airpath = torch.sqrt(px * px + py * py + pz * pz)
    dif = (px / airpath, py / airpath, pz / airpath)  # (T, O2, C)

    # solid angle: pixel^2/airpath^2 * close_distance/airpath, or 1/airpath^2 (-point_pixel)
    if spec.point_pixel:
        omega = 1.0 / (airpath * airpath)
    else:
        omega = x.pixel_size * x.pixel_size / (airpath * airpath) * x.close_distance / airpath
    T, O2 = omega.shape[0], omega.shape[1]
    omega_first = omega[0, 0]
    omega_sum = omega.sum() if spec.oversample_omega else omega_first.sum() * (T * O2)

    # capture fraction of each layer: exp(-t step mu/parallax) - exp(-(t+1) step mu/parallax)
    if spec.thick_on:
        parallax = dif[0] * x.odet[0] + dif[1] * x.odet[1] + dif[2] * x.odet[2]
        tt = x.layer_t[:, None, None]
        step_mu = x.layer_step * x.layer_mu
        capture = torch.exp(-tt * step_mu / parallax) - torch.exp(-(tt + 1.0) * step_mu / parallax)
        capture_last = capture[-1, 0]
    else:
        capture = capture_last = None

    inc = tuple(x.incident[:, i, None] for i in range(3))  # (S, 1)
    difs = tuple(d[:, :, None, :] for d in dif)  # (T, O2, 1, C)

    culled = None
    if spec.dmin_on:  # scattering vectors (T, O2, S, C): (diffracted - incident)/lambda
        S = tuple((difs[i] - inc[i]) / x.wavelength[:, None] for i in range(3))
        stol = 0.5 * torch.sqrt(S[0] * S[0] + S[1] * S[1] + S[2] * S[2])
        culled = (stol > 0.0) & (x.dmin > 0.5 / torch.where(stol > 0, stol, torch.ones_like(stol)))

    # polarization: per sample (-oversample_polar), else cached from the pixel's first evaluated source
    axis = tuple(x.polar_vector[i] for i in range(3))
    polar_sample = None
    if spec.polar == "off":
        polar_first = None
    elif spec.polar == "sample" or spec.dmin_on:
        polar_all = kahn_factor(x.kahn, inc, difs, axis)  # (T, O2, S, C)
        if spec.polar == "sample":
            polar_sample = polar_all
            polar_first = None
        else:  # the first (layer, sub-pixel, source) that survives dmin, in the C's order
            C = flat_idx.shape[0]
            alive = (~culled).reshape(-1, C)
            first = torch.argmax(alive.to(torch.int8), dim=0)
            polar_first = polar_all.reshape(-1, C).gather(0, first[None, :])[0]
            polar_first = torch.where(alive.any(0), polar_first, torch.zeros_like(polar_first))
    else:
        inc0 = tuple(x.incident[0, i] for i in range(3))
        polar_first = kahn_factor(x.kahn, inc0, tuple(d[0, 0] for d in dif), axis)

    # per-sample factors of -oversample_thick/polar/omega (T, O2, S, C)
    toggled = None
    for on, f in ((spec.oversample_thick, capture), (polar_sample is not None, polar_sample),
                  (spec.oversample_omega, omega)):
        if on:
            f = f if f.dim() == 4 else f[:, :, None, :]
            toggled = f if toggled is None else toggled * f

    # Miller indices of every orientation (R, T, O2, S, C)
    cells = x.cells[:, None, None, None, None]  # (R, 1, 1, 1, 1, 3, 3)
    hkl = miller_indices(cells, difs, inc, (1.0 / x.wavelength)[:, None])
    hkl0 = tuple(torch.ceil(h - 0.5).detach() for h in hkl)
    N = (x.N[0], x.N[1], x.N[2])
    if spec.shape == "SQUARE":
        fa, fb, fc = square_factors(hkl, hkl0, N, spec.N_active)
        F_latt = fa * fb * fc
    else:
        F_latt = shape_factor(spec.shape, hkl, hkl0, N, x.a_star, x.fudge)
    if spec.has_grid:
        F_cell = nearest_lookup(x.F_table, x.grid_shape, x.grid_lo, x.grid_hi, hkl0, spec.wide_index)
        contrib = F_cell * F_cell * F_latt * F_latt
    else:
        contrib = x.default_F * x.default_F * F_latt * F_latt
    if toggled is not None:
        contrib = contrib * toggled
    if culled is not None:
        contrib = torch.where(culled, torch.zeros_like(contrib), contrib)
    I = x.I_bg + contrib.sum(dim=(0, 1, 2, 3))

    value = R_E_SQR * x.fluence * I / x.steps
    if spec.thick_on and not spec.oversample_thick:
        value = value * capture_last
    if polar_first is not None:
        value = value * polar_first
    if not spec.oversample_omega:
        value = value * omega_first
    return value, omega_sum


def kernel_spec(plan) -> KernelSpec:
    """The switches of `plan` (an engine.Plan)."""
    d, b = plan.cfg.detector, plan.cfg.beam
    if b.nopolar and not d.oversample_polar:
        polar = "off"
    else:
        polar = "sample" if d.oversample_polar else "pixel"
    return KernelSpec(
        shape=plan.cfg.crystal.shape,
        N_active=plan.N_active,
        curved=d.curved,
        point_pixel=d.point_pixel,
        thick_on=plan.thick_on,
        dmin_on=plan.cfg.crystal.dmin > 0.0,
        polar=polar,
        oversample_thick=d.oversample_thick,
        oversample_omega=d.oversample_omega,
        has_grid=plan.fgrid.hkls > 0,
        wide_index=wide_index(plan.fgrid.grid),
    )


def kernel_inputs(plan) -> KernelInputs:
    """The tensors of `plan` (an engine.Plan) that the kernel reads, contiguous: a compiled package assumes the
    strides it was built with (mosaic cells come out of the set-up transposed)."""
    dt, dev = plan.dtype, plan.device
    g = plan.geom

    def t(v):
        return torch.as_tensor(v, dtype=dt, device=dev)

    O = plan.oversample
    o = torch.arange(O, dtype=dt, device=dev)
    subS, subF = torch.meshgrid(o, o, indexing="ij")
    fg = plan.fgrid
    inputs = KernelInputs(
        fpixels=torch.tensor(plan.cfg.detector.fpixels, dtype=torch.int64, device=dev),
        oversample=t(float(O)),
        subpixel=g.pixel_size / O,
        sub_f=subF.reshape(-1),
        sub_s=subS.reshape(-1),
        layer_t=torch.arange(plan.layers.count, dtype=dt, device=dev),
        pixel_size=g.pixel_size,
        close_distance=g.close_distance,
        distance=g.distance,
        fdet=g.fdet,
        sdet=g.sdet,
        odet=g.odet,
        pix0=g.pix0,
        beam=g.beam,
        polar_vector=g.polar_vector,
        layer_step=plan.layers.step,
        layer_mu=plan.layers.mu,
        incident=-plan.sources.direction,
        wavelength=plan.sources.wavelength,
        cells=plan.cells.reshape(-1, 3, 3),
        N=torch.stack(plan.N),
        fudge=plan.fudge,
        a_star=plan.crystal.a_star,
        F_table=fg.table,
        grid_shape=t(fg.grid.shape),
        grid_lo=t(fg.lo),
        grid_hi=t(fg.hi),
        default_F=fg.default_F,
        I_bg=plan.I_bg,
        kahn=plan.polarization,
        fluence=plan.fluence,
        steps=t(float(plan.steps)),
        dmin=t(plan.cfg.crystal.dmin),
    )
    return KernelInputs(*(t.contiguous() for t in inputs))
