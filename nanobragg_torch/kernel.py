"""The per-pixel pipeline: nanoBragg.c's `sweep over detector` as one chain of factor functions.

`pixel_kernel` maps a chunk of flat pixel indices to the chunk's pixel values and its share of the C's
omega_sum. It is the only evaluator of the physics: the engine's stateful path (traces, the pinned C's
first evaluation, the running-product sum of -oversample_* and the one-way interpolation switch) and the
batch renderer call the same stages (`pixel_factors`, `sample_indices`, `lattice_factor`,
`structure_factor`, `sample_sum`, `photons`) and only change what differs.

Layout, chosen for SIMD: every per-sample quantity is a separate component tensor (x, y, z) whose innermost,
contiguous axis is the pixel C, and every sample axis (orientation R, layer T, sub-pixel O2, source S) is a
broadcast axis in front of it, summed inside the kernel; a leading cell-set axis B in front of R (batch.py)
broadcasts through. Compiled (AOTInductor or torch.compile, `compiled.py`) the chain becomes a few vectorized
loop nests over pixels; eager, it is the same algebra op by op.

What the kernel does not depend on — the tensors (`KernelInputs`) and the discrete switches (`KernelSpec`)
— is fixed by the plan, so one compiled kernel serves every chunk, image size and sample count.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .constants import R_E_SQR
from .lattice import shape_factor, square_factors
from .polarization import kahn_factor
from .structure_factors import nearest_lookup, sparse_lookup
from .vectors import rotate_axis_xyz

Tensor = torch.Tensor
SAMPLE_DIMS = (-5, -4, -3, -2)  # R, T, O2, S of a per-sample tensor (..., R, T, O2, S, C)


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
    sparse_F: bool = False  # the F grid is a sparse store (structure_factors.sparse_lookup; renders eager)
    precise_hkl: bool = False  # Miller indices (and the geometry under them) in float64 (`index_phase_error`)
    # a multi-panel detector of this many panels (0: a single detector): per-panel geometry gathered per pixel
    # (`panel_view`); the count is part of the variant, so a compiled kernel holds the panel axis static
    panels: int = 0
    # the lattice sines as polynomials (lattice.sincg_pi): set by compiled.py for its fused forms only (not
    # part of `key`: every package is built with it); eager keeps the library sin (one op, not twenty)
    poly_sin: bool = False

    @property
    def key(self) -> str:
        """A stable name for caches of compiled kernels."""
        flags = [self.shape, "".join("1" if a else "0" for a in self.N_active), self.polar]
        for name in ("curved", "point_pixel", "thick_on", "dmin_on", "oversample_thick", "oversample_omega",
                     "has_grid", "wide_index", "sparse_F", "precise_hkl"):
            if getattr(self, name):
                flags.append(name)
        if self.panels:
            flags.append(f"panels{self.panels}")
        return "-".join(flags)


class KernelInputs(NamedTuple):
    """The plan's tensors that the kernel reads (render dtype and device; lengths in metres, angles in rad).
    With `KernelSpec.precise_hkl` the index geometry (`INDEX_FIELDS`) is float64: see `reduced`."""

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
    cells: Tensor  # (R, 3, 3): rows a, b, c of every (phi step, mosaic domain), metres; (B, R, 3, 3) batched
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
    # multi-panel plans (KernelSpec.panels): pixels per panel of the padded raster, S_max*F_max (int64 scalar);
    # then fpixels is F_max, pix0/fdet/sdet/odet are (3, P) and subpixel/pixel_size/close_distance are (P,)
    panel_pixels: Tensor
    # a sparse F store (KernelSpec.sparse_F): int64, the box's K and L, then the sorted flat indices of F_table's
    # values (structure_factors.sparse_lookup); (0,) for a dense grid
    F_index: Tensor


Vec = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class PixelFactors:
    """What `pixel_factors` resolves for a chunk of pixels, independent of the crystal orientation (kernel
    layout: (T, O2, C) per position, (T, O2, S, C) per sample; components as tuples). Fields are named after
    the C variables they mirror; the `_hi` ones are in the index dtype (float64 in a precise_hkl plan)."""

    pos: Vec  # pixel_pos (index dtype)
    airpath: Tensor
    dif: Vec  # diffracted (unit vector)
    inc: Vec  # incident, per source (S, 1)
    dif_hi: Vec
    inc_hi: Vec
    omega: Tensor  # omega_pixel of every (layer, sub-pixel, pixel)
    omega_first: Tensor  # (C,) cached from the first sub-pixel of the first layer
    omega_sum: Tensor  # scalar: the chunk's share of the C's omega_sum
    capture: Tensor | None  # capture_fraction per (layer, sub-pixel, pixel); None without thickness
    capture_last: Tensor | None  # (C,) the C's cached value (last layer, first sub-pixel)
    culled: Tensor | None  # (T, O2, S, C) samples that dmin skips; None without -dmin
    polar_sample: Tensor | None  # polar per sample (-oversample_polar)
    polar_first: Tensor | None  # (C,) polar cached from the pixel's first evaluated source
    toggled: Tensor | None  # product of the per-sample -oversample_thick/polar/omega factors
    scattering: Vec | None = None  # (diffracted - incident)/lambda per sample (-dmin, or kept for a trace)
    stol: Tensor | None = None  # sin(theta)/lambda per sample
    cos_2theta: Tensor | None = None  # incident.diffracted per sample (kept for a trace)


@dataclass(frozen=True)
class Intermediates(PixelFactors):
    """Every stage result of a chunk, kept for a trace (engine.evaluate_chunk(keep=True)): the pixel factors
    and the orientation-dependent stages (R, T, O2, S, C)."""

    hkl: Vec | None = None  # fractional Miller indices (index dtype)
    hkl0: Vec | None = None  # rounded (the C's h0, k0, l0)
    dhkl: Vec | None = None  # h - h0 (render dtype)
    F_latt_axes: Vec | None = None  # the per-axis sincg of a SQUARE crystal (the C's F_latt_a, _b, _c)
    F_latt: Tensor | None = None
    F_cell: Tensor | None = None
    I: Tensor | None = None  # (C,) the sum before scaling (the C's I)

    @classmethod
    def of(cls, f: PixelFactors, **stages) -> Intermediates:
        return cls(**{k.name: getattr(f, k.name) for k in dataclasses.fields(PixelFactors)}, **stages)

# the largest phase error (rad) of sin(N pi h) that a render may take from Miller indices in its own dtype:
# measured, the image sum moves by ~0.4x the estimate, so this keeps it 2.5x inside the 1e-3 float32 gate while
# every benchmark case (at most 5.6e-4, Pilatus) keeps the plain float32 kernel (float64 indices cost 10-26 %)
INDEX_PHASE_TOLERANCE = 1e-3


def index_phase_error(N: tuple[float, float, float], lengths: tuple[float, float, float], lambda_min: float,
                      eps: float) -> float:
    """An estimate of the phase error pi N dh of sin(N pi h) when h = (a.d)/lambda - (a.i)/lambda is formed in
    a dtype of machine epsilon eps: each term is ~|a|/lambda, so dh ~ eps |a|/lambda (the geometry under it
    carries the same relative error). Golden prec_n100_flat: 0.042 rad, image-sum error 1.7e-2 in float32."""
    return math.pi * eps * max(n * a for n, a in zip(N, lengths, strict=True)) / lambda_min


# the inputs that the Miller indices depend on: float64 in a precise_hkl plan (plan.build_plan)
INDEX_FIELDS = ("oversample", "subpixel", "sub_f", "sub_s", "layer_t", "distance", "fdet", "sdet", "odet",
                "pix0", "beam", "layer_step", "incident", "wavelength", "cells")


def miller_indices(cells: Tensor, dif, inc, inv_lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h = a.S, k = b.S, l = c.S with S = (diffracted - incident)/lambda, evaluated as
    (a.diffracted)/lambda - (a.incident)/lambda: no per-sample scattering vector is formed (the kernel's
    memory traffic).

    cells (..., 3, 3) with rows a, b, c; dif, inc: component tuples; all broadcast against each other."""
    out = []
    for v in range(3):
        a = (cells[..., v, 0], cells[..., v, 1], cells[..., v, 2])
        a_dif = a[0] * dif[0] + a[1] * dif[1] + a[2] * dif[2]
        a_inc = (a[0] * inc[0] + a[1] * inc[1] + a[2] * inc[2]) * inv_lam
        out.append(a_dif * inv_lam - a_inc)
    return out[0], out[1], out[2]


# ---- the factors: each a function of tensors, named after the C variable it mirrors -------------------------


def panel_view(x: KernelInputs, flat_idx: Tensor) -> tuple[KernelInputs, Tensor]:
    """A multi-panel plan's inputs as seen by each pixel of the chunk: the panel p = flat // (S_max*F_max) of
    every pixel, its vectors gathered to (3, C) and its pixel size, sub-pixel size and close_distance to (C,),
    so that the single-detector factors below broadcast unchanged; and the index inside the panel."""
    panel = torch.div(flat_idx.to(torch.int64), x.panel_pixels, rounding_mode="floor")
    local = flat_idx.to(torch.int64) - panel * x.panel_pixels
    view = x._replace(
        pix0=x.pix0[:, panel], fdet=x.fdet[:, panel], sdet=x.sdet[:, panel], odet=x.odet[:, panel],
        subpixel=x.subpixel[panel], pixel_size=x.pixel_size[panel], close_distance=x.close_distance[panel],
    )
    return view, local


def pixel_positions(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor) -> Vec:
    """The C's pixel_pos of every (layer T, sub-pixel O2, pixel C): Fdet = subpixel_size*(fpixel*oversample +
    subF) + subpixel_size/2 (likewise Sdet), Odet = layer*step; rotated onto the sphere for -curved_det."""
    dt = x.pix0.dtype  # the index dtype (float64 in a precise_hkl plan)
    # fpixel, spixel of each flat index, in float64 (exact below 2^53 pixels, and SIMD-friendly)
    flat = flat_idx.to(torch.float64)
    width = x.fpixels.to(torch.float64)
    # floor((flat + 1/2) / width) by a multiply: the quotient is >= 1/(2 width) from an integer and its
    # relative rounding ~2e-16, exact while spixels * fpixels < 2e15 (a float64 divide per pixel saved)
    spf = torch.floor((flat + 0.5) * (1.0 / width))
    fp, sp = (flat - spf * width).to(dt), spf.to(dt)
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
    return pos


def solid_angle(spec: KernelSpec, x: KernelInputs, airpath: Tensor) -> Tensor:
    """omega_pixel: pixel^2/airpath^2 * close_distance/airpath, or 1/airpath^2 (-point_pixel)."""
    if spec.point_pixel:
        return 1.0 / (airpath * airpath)
    return x.pixel_size * x.pixel_size / (airpath * airpath) * x.close_distance / airpath


def capture_fraction(spec: KernelSpec, x: KernelInputs, dif: Vec) -> Tensor:
    """capture_fraction of each layer t: exp(-t step mu/parallax) - exp(-(t+1) step mu/parallax), (T, O2, C)."""
    lo = dif[0].dtype
    odet = x.odet.to(lo)
    parallax = dif[0] * odet[0] + dif[1] * odet[1] + dif[2] * odet[2]
    tt = x.layer_t.to(lo)[:, None, None]
    step_mu = x.layer_step.to(lo) * x.layer_mu
    return torch.exp(-tt * step_mu / parallax) - torch.exp(-(tt + 1.0) * step_mu / parallax)


def polarization(spec: KernelSpec, x: KernelInputs, inc: Vec, dif: Vec,
                 culled: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
    """polar (Kahn): (per sample (T, O2, S, C) for -oversample_polar, else None; per pixel (C,) cached from
    the pixel's first evaluated source, else None). Both None for -nopolar."""
    axis = tuple(x.polar_vector[i] for i in range(3))
    if spec.polar == "off":
        return None, None
    difs = tuple(d[:, :, None, :] for d in dif)
    if spec.polar == "sample":
        return kahn_factor(x.kahn, inc, difs, axis), None
    if spec.dmin_on:  # the first (layer, sub-pixel, source) that survives dmin, in the C's order
        polar_all = kahn_factor(x.kahn, inc, difs, axis)  # (T, O2, S, C)
        C = dif[0].shape[-1]
        alive = (~culled).reshape(-1, C)
        first = torch.argmax(alive.to(torch.int8), dim=0)
        polar_first = polar_all.reshape(-1, C).gather(0, first[None, :])[0]
        return None, torch.where(alive.any(0), polar_first, torch.zeros_like(polar_first))
    inc0 = tuple(c[0, 0] for c in inc)
    return None, kahn_factor(x.kahn, inc0, tuple(d[0, 0] for d in dif), axis)


def lattice_factor(spec: KernelSpec, x: KernelInputs, dhkl, hkl0) -> Tensor:
    """F_latt of every sample from its offset dhkl = hkl - hkl0 from the nearest lattice point (`reduced`):
    the product of the per-axis sincg (SQUARE) or the shape model's transform."""
    if spec.shape == "SQUARE":
        fa, fb, fc = lattice_axes(spec, x, dhkl, hkl0)
        return fa * fb * fc
    return shape_factor(spec.shape, dhkl, (x.N[0], x.N[1], x.N[2]), x.a_star, x.fudge)


def lattice_axes(spec: KernelSpec, x: KernelInputs, dhkl, hkl0) -> Vec:
    """F_latt_a, F_latt_b, F_latt_c of a SQUARE crystal: the per-axis sincg (1 on an axis with N <= 1)."""
    return square_factors(dhkl, hkl0, (x.N[0], x.N[1], x.N[2]), spec.N_active, spec.poly_sin)


def structure_factor(spec: KernelSpec, x: KernelInputs, hkl0) -> Tensor:
    """F_cell, nearest neighbour: Fhkl[h0][k0][l0] inside the grid, default_F elsewhere (or everywhere)."""
    if spec.has_grid and spec.sparse_F:
        return sparse_lookup(x.F_table, x.F_index, x.grid_lo, x.grid_hi, hkl0)
    if spec.has_grid:
        return nearest_lookup(x.F_table, x.grid_shape, x.grid_lo, x.grid_hi, hkl0, spec.wide_index)
    return x.default_F


def sample_sum(x: KernelInputs, terms: Tensor) -> Tensor:
    """I: I_bg plus the sum of every sample's F_cell^2 F_latt^2 (times its toggled factors), (..., C)."""
    return x.I_bg + terms.sum(dim=SAMPLE_DIMS)


def running_product_sum(I_bg: Tensor, terms: Tensor, factor: Tensor, reached: Tensor) -> Tensor:
    """Pinned C: `I += term; I *= factor` after each sample, i.e. I = I_bg*prod(f) + sum_k c_k prod_{j>=k} f_j.

    Inputs are (C, K) in the C's sample order; samples the C skips (culled, F_latt == 0) do not multiply."""
    f = torch.where(reached, factor, torch.ones_like(factor))
    suffix = torch.flip(torch.cumprod(torch.flip(f, [1]), dim=1), [1])
    return I_bg * suffix[:, 0] + (terms * suffix).sum(1)


def photons(spec: KernelSpec, x: KernelInputs, I: Tensor, f: PixelFactors) -> Tensor:
    """test = r_e_sqr*fluence*I/steps, times the cached capture fraction, polarization and solid angle."""
    value = R_E_SQR * x.fluence * I / x.steps
    if spec.thick_on and not spec.oversample_thick:
        value = value * f.capture_last
    if f.polar_first is not None:
        value = value * f.polar_first
    if not spec.oversample_omega:
        value = value * f.omega_first
    return value


# ---- the pipeline ---------------------------------------------------------------------------------------------


def pixel_factors(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor, keep: bool = False) -> PixelFactors:
    """Everything of the chunk's pixels that does not depend on the crystal orientation, in the kernel layout:
    positions and directions (T, O2, C), solid angle, capture fraction, dmin culling and polarization
    (T, O2, S, C), the per-sample factors of -oversample_thick/polar/omega (`toggled`, or None). `keep`: also
    the scattering vector and stol of every sample (a trace)."""
    lo = x.pixel_size.dtype  # the render dtype; positions and directions come in the index dtype
    if spec.panels:
        x, flat_idx = panel_view(x, flat_idx)
    pos = pixel_positions(spec, x, flat_idx)
    px, py, pz = pos
    airpath_hi = torch.sqrt(px * px + py * py + pz * pz)
    dif_hi = (px / airpath_hi, py / airpath_hi, pz / airpath_hi)  # (T, O2, C)
    airpath, dif = airpath_hi.to(lo), tuple(d.to(lo) for d in dif_hi)

    omega = solid_angle(spec, x, airpath)
    T, O2 = omega.shape[0], omega.shape[1]
    omega_first = omega[0, 0]  # cached from the first sub-pixel of the first layer
    omega_sum = omega.sum() if spec.oversample_omega else omega_first.sum() * (T * O2)
    capture = capture_fraction(spec, x, dif) if spec.thick_on else None

    inc_hi = tuple(x.incident[:, i, None] for i in range(3))  # (S, 1)
    inc = tuple(i.to(lo) for i in inc_hi)
    scattering = stol = culled = cos_2theta = None
    if keep:
        cos_2theta = torch.stack([dif[i][:, :, None, :] * inc_hi[i] for i in range(3)]).sum(0)
    if spec.dmin_on or keep:  # scattering vectors (T, O2, S, C): (diffracted - incident)/lambda
        scattering = tuple(((dif_hi[i][:, :, None, :] - inc_hi[i]) / x.wavelength[:, None]).to(lo) for i in range(3))
        S = scattering
        stol = 0.5 * torch.sqrt(S[0] * S[0] + S[1] * S[1] + S[2] * S[2])
        if spec.dmin_on:
            culled = (stol > 0.0) & (x.dmin > 0.5 / torch.where(stol > 0, stol, torch.ones_like(stol)))
    polar_sample, polar_first = polarization(spec, x, inc, dif, culled)

    # per-sample factors of -oversample_thick/polar/omega (T, O2, S, C)
    toggled = None
    for on, g in ((spec.oversample_thick, capture), (polar_sample is not None, polar_sample),
                  (spec.oversample_omega, omega)):
        if on:
            g = g if g.dim() == 4 else g[:, :, None, :]
            toggled = g if toggled is None else toggled * g
    return PixelFactors(
        pos=pos, airpath=airpath, dif=dif, inc=inc, dif_hi=dif_hi, inc_hi=inc_hi, omega=omega,
        omega_first=omega_first, omega_sum=omega_sum, capture=capture,
        capture_last=None if capture is None else capture[-1, 0], culled=culled, polar_sample=polar_sample,
        polar_first=polar_first, toggled=toggled, scattering=scattering, stol=stol, cos_2theta=cos_2theta,
    )


def sample_indices(cells: Tensor, f: PixelFactors, x: KernelInputs) -> Vec:
    """Fractional h, k, l of every sample (..., R, T, O2, S, C) for cells (..., R, 3, 3), in the index dtype."""
    difs = tuple(d[:, :, None, :] for d in f.dif_hi)  # (T, O2, 1, C)
    cells = cells.to(x.pix0.dtype)
    return miller_indices(cells[..., None, None, None, None, :, :], difs, f.inc_hi,
                          (1.0 / x.wavelength)[:, None])


def rounded(hkl: Vec) -> Vec:
    """h0, k0, l0: the C's ceil(h - 0.5) (no gradient)."""
    return tuple(torch.ceil(h - 0.5).detach() for h in hkl)


def reduced(x: KernelInputs, hkl: Vec, hkl0: Vec) -> tuple[Vec, Vec]:
    """(h - h0, h0) per axis in the render dtype. The lattice transform needs the offset from the nearest
    lattice point to ~1e-3/N; h = a.S in float32 carries ~1e-7 |h| (0.1 for N = 1000, |h| = 1000), so a
    precise_hkl plan forms h and the offset in float64 and only then rounds to float32."""
    lo = x.pixel_size.dtype
    return tuple((h - h0).to(lo) for h, h0 in zip(hkl, hkl0, strict=True)), tuple(h0.to(lo) for h0 in hkl0)


def sample_terms(terms: Tensor, f: PixelFactors) -> Tensor:
    """F_cell^2 F_latt^2 of every sample times its toggled factors, zero where dmin culls the sample."""
    if f.toggled is not None:
        terms = terms * f.toggled
    if f.culled is not None:
        terms = torch.where(f.culled, torch.zeros_like(terms), terms)
    return terms


def fused_pixels(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor, keep: bool = False):
    """The fused kernel's chain for the pixels `flat_idx` (C,): (PixelFactors, hkl, hkl0, dhkl, F_latt, F_cell,
    the sum I, the pixel values). `pixel_kernel` returns two of these; `kernel_intermediates` (the debug entry)
    all of them."""
    f = pixel_factors(spec, x, flat_idx, keep)
    hkl = sample_indices(x.cells, f, x)
    hkl0 = rounded(hkl)
    dhkl, hkl0_lo = reduced(x, hkl, hkl0)
    F_latt = lattice_factor(spec, x, dhkl, hkl0_lo)
    F_cell = structure_factor(spec, x, hkl0_lo)
    I = sample_sum(x, sample_terms(F_cell * F_cell * F_latt * F_latt, f))
    return f, hkl, hkl0, dhkl, F_latt, F_cell, I, photons(spec, x, I, f)


def pixel_kernel(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel values (C,) ((B, C) for a batch of cell sets) and omega_sum of the pixels `flat_idx` (C,). Sample
    axes, outermost first: orientation R, layer T, sub-pixel O2, source S, then the pixel C (contiguous)."""
    f, *_, value = fused_pixels(spec, x, flat_idx)
    return value, f.omega_sum


def kernel_intermediates(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor) -> tuple[Intermediates, Tensor]:
    """Debug entry: the fused kernel's per-factor values of the pixels `flat_idx` instead of their sum (eager,
    the same chain as `pixel_kernel`), as `engine.evaluate_chunk(keep=True)` keeps them, and the pixel values;
    trace.kernel_trace names from them the factor in which the fused kernel and the general path differ."""
    f, hkl, hkl0, dhkl, F_latt, F_cell, I, value = fused_pixels(spec, x, flat_idx, keep=True)
    axes = lattice_axes(spec, x, dhkl, reduced(x, hkl, hkl0)[1]) if spec.shape == "SQUARE" else None
    inter = Intermediates.of(f, hkl=hkl, hkl0=hkl0, dhkl=dhkl, F_latt_axes=axes, F_latt=F_latt, F_cell=F_cell, I=I)
    return inter, value
