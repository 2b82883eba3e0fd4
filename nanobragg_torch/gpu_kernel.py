"""The GPU form of `kernel.pixel_kernel`: one fused Triton kernel per chunk, as nanoBragg's CUDA version.

Each program takes BLOCK pixels and runs the C's loops over detector layers, sub-pixels, sources and
orientations (phi step x mosaic domain) inside the kernel, summing in registers: no per-sample tensor is ever
stored, so memory is the image and a few small tables whatever the sample count. The arithmetic is the
evaluator's (kernel.py's factors, in the same dtypes: the index geometry in float64 for `precise_hkl`, the
rest in the render dtype), written element-wise; `tests/test_gpu_kernel.py` checks it against `pixel_kernel`
on the CPU through Triton's interpreter (TRITON_INTERPRET=1), and `tox -e cuda` on a device.

Used (compiled.KernelRunner, mode "triton") for renders without gradients on a CUDA device when `triton`
imports (the `gpu` extra) and `unsupported()` finds nothing against the plan; with gradients the plan takes its
autograd path (torch.compile of `pixel_kernel`), which this kernel does not replace.

Variants (`SIN_MODES`): the lattice sines as the polynomials of lattice.sincg_pi ("poly", default: multiply-adds
only) or the device's library sine ("libsin").
"""

from __future__ import annotations

import functools
import math

import torch

from .constants import R_E_SQR
from .kernel import KernelInputs, KernelSpec
from .lattice import GAUSS_WIDTH, ROUND_VOLUME_FACTOR, SIN_PI_COEFFS, TOPHAT_RADIUS_SQR

Tensor = torch.Tensor

try:  # the `gpu` extra
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

SIN_MODES = ("poly", "libsin")
BLOCK = 128  # pixels per program
SHAPES = {"SQUARE": 0, "ROUND": 1, "GAUSS": 2, "TOPHAT": 3}
POLAR = {"off": 0, "pixel": 1, "sample": 2}

# packed scalar inputs (one small tensor each, built once per plan: no host read per chunk)
IX_FIELDS = ("oversample", "subpixel", "distance", "fdet", "sdet", "odet", "pix0", "beam", "layer_step")
LO_FIELDS = ("pixel_size", "close_distance", "polar_vector", "layer_mu", "N", "fudge", "a_star", "grid_shape",
             "grid_lo", "grid_hi", "default_F", "I_bg", "kahn", "fluence", "steps", "dmin")


def available() -> bool:
    """Whether triton imports (it need not find a device: the interpreter runs on the CPU)."""
    return triton is not None


def unsupported(spec: KernelSpec, x: KernelInputs) -> str | None:
    """Why this plan cannot take the Triton kernel (None: it can)."""
    if triton is None:
        return "triton is not installed (pip install 'nanobragg-torch[gpu]')"
    if spec.panels:
        return "multi-panel detectors take the torch kernel"
    if x.cells.dim() not in (3, 4):
        return "cells must be (R, 3, 3) or (B, R, 3, 3)"
    return None


def _offsets(names: tuple[str, ...], x: KernelInputs) -> dict[str, int]:
    out, at = {}, 0
    for name in names:
        out[name] = at
        at += getattr(x, name).numel()
    return out


IX_AT = dict(oversample=0, subpixel=1, distance=2, fdet=3, sdet=6, odet=9, pix0=12, beam=15, layer_step=18)
LO_AT = dict(pixel_size=0, close_distance=1, polar_vector=2, layer_mu=5, N=6, fudge=9, a_star=10, grid_shape=19,
             grid_lo=22, grid_hi=25, default_F=28, I_bg=29, kahn=30, fluence=31, steps=32, dmin=33)


def packed(x: KernelInputs) -> tuple[Tensor, Tensor, int]:
    """The scalar and 3-vector inputs as two flat tensors on the inputs' device (index dtype, render dtype),
    and the image width (read from the device once per plan, not per chunk)."""
    ix = torch.cat([getattr(x, n).reshape(-1) for n in IX_FIELDS])
    lo = torch.cat([getattr(x, n).reshape(-1).to(x.pixel_size.dtype) for n in LO_FIELDS])
    assert _offsets(IX_FIELDS, x) == IX_AT and _offsets(LO_FIELDS, x) == LO_AT, "packed layout changed"
    return ix.contiguous(), lo.contiguous(), int(x.fpixels)


if triton is not None:

    @triton.jit
    def _sin_pi_half(r, TERMS: tl.constexpr):
        """lattice.sin_pi_half: sin(pi r), |r| <= 1/2, Horner over SIN_PI_COEFFS (TERMS of them)."""
        r2 = r * r
        if TERMS == 10:
            p = C9 * r2 + C8
            p = p * r2 + C7
            p = p * r2 + C6
            p = p * r2 + C5
            p = p * r2 + C4
        else:
            p = C6 * r2 + C5
            p = p * r2 + C4
        p = p * r2 + C3
        p = p * r2 + C2
        p = p * r2 + C1
        p = p * r2 + C0
        return r * p

    @triton.jit
    def _sin_pi(x, TERMS: tl.constexpr):
        """lattice.sin_pi: reduce by the nearest even integer, fold into [-1/2, 1/2]."""
        r = x - 2.0 * tl.floor(0.5 * x + 0.5)
        r = tl.where(r > 0.5, 1.0 - r, tl.where(r < -0.5, -1.0 - r, r))
        return _sin_pi_half(r, TERMS)

    @triton.jit
    def _sincg_axis(dh, h0, n, POLY: tl.constexpr, TERMS: tl.constexpr):
        """lattice.square_factors for one active axis: (-1)^((N-1) h0) sincg(pi dh, N)."""
        m = (tl.floor(n + 0.5) - 1.0) * h0
        parity = m - 2.0 * tl.floor(0.5 * m)
        zero = dh == 0.0
        if POLY:
            den = tl.where(zero, 1.0, _sin_pi_half(dh, TERMS))
            num = _sin_pi(dh * n, TERMS)
        else:
            den = tl.where(zero, 1.0, tl.sin(dh * PI))
            num = tl.sin(dh * n * PI)
        value = tl.where(zero, n, num / den)
        return (1.0 - 2.0 * parity) * value

    @triton.jit
    def _unit_cross(ux, uy, uz, vx, vy, vz):
        """u x v normalized (a zero vector stays zero: the C's unitize of a zero vector)."""
        cx = uy * vz - uz * vy
        cy = uz * vx - ux * vz
        cz = ux * vy - uy * vx
        n = tl.sqrt(cx * cx + cy * cy + cz * cz)
        n = tl.where(n != 0, n, 1.0)
        return cx / n, cy / n, cz / n

    @triton.jit
    def _kahn(kahn, ix, iy, iz, dx, dy, dz, ax, ay, az):
        """polarization.kahn_factor for one source (scalars ix..) and per-pixel directions dx.."""
        cos2t = ix * dx + iy * dy + iz * dz
        c2 = cos2t * cos2t
        bx, by, bz = _unit_cross(ax, ay, az, ix, iy, iz)  # B_in = polar axis x incident
        ex, ey, ez = _unit_cross(ix, iy, iz, bx, by, bz)  # E_in = incident x B_in
        px = dx * ex + dy * ey + dz * ez
        py = dx * bx + dy * by + dz * bz
        x2 = px * px
        y2 = py * py
        r2 = x2 + y2
        cos2psi = tl.where(r2 != 0, (x2 - y2) / tl.where(r2 != 0, r2, 1.0), 1.0)
        return 0.5 * (1.0 + c2 - kahn * cos2psi * (1.0 - c2))

    @triton.jit
    def _rotate(vx, vy, vz, ax, ay, az, phi):
        """vectors.rotate_axis_xyz."""
        s = tl.sin(phi)
        c = tl.cos(phi)
        d = (ax * vx + ay * vy + az * vz) * (1.0 - c)
        x = ax * d + vx * c + (-az * vy + ay * vz) * s
        y = ay * d + vy * c + (az * vx - ax * vz) * s
        z = az * d + vz * c + (-ay * vx + ax * vy) * s
        return x, y, z

    @triton.jit
    def _geometry(g, fpx, spx, sf, ss, lt, CURVED: tl.constexpr):
        """kernel.pixel_positions for one (layer, sub-pixel), then airpath and the unit diffracted direction
        (index dtype). g: the packed index-dtype inputs (IX_AT)."""
        os_ = tl.load(g + 0)
        sub = tl.load(g + 1)
        Fdet = sub * (fpx * os_ + sf) + sub / 2.0
        Sdet = sub * (spx * os_ + ss) + sub / 2.0
        Odet = lt * tl.load(g + 18)
        px = Fdet * tl.load(g + 3) + Sdet * tl.load(g + 6) + Odet * tl.load(g + 9) + tl.load(g + 12)
        py = Fdet * tl.load(g + 4) + Sdet * tl.load(g + 7) + Odet * tl.load(g + 10) + tl.load(g + 13)
        pz = Fdet * tl.load(g + 5) + Sdet * tl.load(g + 8) + Odet * tl.load(g + 11) + tl.load(g + 14)
        if CURVED:
            dist = tl.load(g + 2)
            tx, ty, tz = _rotate(dist * tl.load(g + 15) + 0.0 * px, dist * tl.load(g + 16) + 0.0 * px,
                                 dist * tl.load(g + 17) + 0.0 * px,
                                 tl.load(g + 6), tl.load(g + 7), tl.load(g + 8), py / dist)
            px, py, pz = _rotate(tx, ty, tz, tl.load(g + 3), tl.load(g + 4), tl.load(g + 5), pz / dist)
        air = tl.sqrt(px * px + py * py + pz * pz)
        return air, px / air, py / air, pz / air

    @triton.jit
    def _sweep(out_ptr, omega_ptr, flat_ptr, n_pix, width, pi_ptr, pl_ptr, subf_ptr, subs_ptr, layer_ptr,
               inc_ptr, lam_ptr, cells_ptr, table_ptr, n_table, T, O2, S, R,
               SHAPE: tl.constexpr, NA: tl.constexpr, NB: tl.constexpr, NC: tl.constexpr, CURVED: tl.constexpr,
               POINT: tl.constexpr, THICK: tl.constexpr, DMIN: tl.constexpr, POLAR: tl.constexpr,
               OS_THICK: tl.constexpr, OS_OMEGA: tl.constexpr, GRID: tl.constexpr, WIDE: tl.constexpr,
               POLY: tl.constexpr, TERMS: tl.constexpr, BLOCK: tl.constexpr):
        """Pixel values of BLOCK pixels for cell set b = program_id(1) (out (B, n_pix)), and each pixel's
        omega contribution (omega (n_pix,), written by b == 0)."""
        LO = out_ptr.dtype.element_ty
        IX = pi_ptr.dtype.element_ty
        b = tl.program_id(1)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        live = offs < n_pix
        flat = tl.load(flat_ptr + offs, mask=live, other=0).to(tl.int64)
        spi = flat // width
        fpx = (flat - spi * width).to(IX)
        spx = spi.to(IX)
        pixel_size = tl.load(pl_ptr + 0)
        close = tl.load(pl_ptr + 1)
        polx = tl.load(pl_ptr + 2)
        poly_ = tl.load(pl_ptr + 3)
        polz = tl.load(pl_ptr + 4)
        mu = tl.load(pl_ptr + 5)
        Na = tl.load(pl_ptr + 6)
        Nb = tl.load(pl_ptr + 7)
        Nc = tl.load(pl_ptr + 8)
        kahn = tl.load(pl_ptr + 30)
        dmin = tl.load(pl_ptr + 33)
        step = tl.load(pi_ptr + 18).to(LO)
        odx = tl.load(pi_ptr + 9).to(LO)
        ody = tl.load(pi_ptr + 10).to(LO)
        odz = tl.load(pi_ptr + 11).to(LO)
        gsh1 = tl.load(pl_ptr + 20)  # the HKL grid: shape, lowest and highest h, k, l (LO_AT)
        gsh2 = tl.load(pl_ptr + 21)
        glo0 = tl.load(pl_ptr + 22)
        glo1 = tl.load(pl_ptr + 23)
        glo2 = tl.load(pl_ptr + 24)
        ghi0 = tl.load(pl_ptr + 25)
        ghi1 = tl.load(pl_ptr + 26)
        ghi2 = tl.load(pl_ptr + 27)

        zero = tl.zeros([BLOCK], dtype=LO)
        acc = zero
        omega_px = zero
        omega_first = zero
        capture_last = zero
        polar_first = zero
        found = zero != zero
        cell_base = cells_ptr + b * R * 9
        for t in range(T):
            lt = tl.load(layer_ptr + t)
            for o in range(O2):
                air_hi, dx_hi, dy_hi, dz_hi = _geometry(pi_ptr, fpx, spx, tl.load(subf_ptr + o),
                                                        tl.load(subs_ptr + o), lt, CURVED)
                air = air_hi.to(LO)
                dx = dx_hi.to(LO)
                dy = dy_hi.to(LO)
                dz = dz_hi.to(LO)
                if POINT:  # solid_angle
                    omega = 1.0 / (air * air)
                else:
                    omega = pixel_size * pixel_size / (air * air) * close / air
                first_to = (t == 0) & (o == 0)
                omega_first = tl.where(first_to, omega, omega_first)
                omega_px += omega
                factor_to = zero + 1.0  # the per-sample factors of (t, o): -oversample_thick/omega
                if THICK:  # capture_fraction
                    parallax = dx * odx + dy * ody + dz * odz
                    ltl = lt.to(LO)
                    step_mu = step * mu
                    capture = tl.exp(-ltl * step_mu / parallax) - tl.exp(-(ltl + 1.0) * step_mu / parallax)
                    capture_last = tl.where((t == T - 1) & (o == 0), capture, capture_last)
                    if OS_THICK:
                        factor_to = factor_to * capture
                if OS_OMEGA:
                    factor_to = factor_to * omega
                for s in range(S):
                    ix = tl.load(inc_ptr + 3 * s)
                    iy = tl.load(inc_ptr + 3 * s + 1)
                    iz = tl.load(inc_ptr + 3 * s + 2)
                    lam = tl.load(lam_ptr + s)
                    inv_lam = 1.0 / lam
                    factor = factor_to
                    alive = live
                    if DMIN:  # the scattering vector's stol against dmin
                        sx = ((dx_hi - ix) / lam).to(LO)
                        sy = ((dy_hi - iy) / lam).to(LO)
                        sz = ((dz_hi - iz) / lam).to(LO)
                        stol = 0.5 * tl.sqrt(sx * sx + sy * sy + sz * sz)
                        culled = (stol > 0.0) & (dmin > 0.5 / tl.where(stol > 0, stol, 1.0))
                        alive = alive & ~culled
                    if POLAR == 2:
                        factor = factor * _kahn(kahn, ix.to(LO), iy.to(LO), iz.to(LO), dx, dy, dz, polx, poly_, polz)
                    if POLAR == 1:
                        if DMIN:  # the pixel's first (layer, sub-pixel, source) that survives dmin
                            pk = _kahn(kahn, ix.to(LO), iy.to(LO), iz.to(LO), dx, dy, dz, polx, poly_, polz)
                            polar_first = tl.where(alive & ~found, pk, polar_first)
                            found = found | alive
                        else:
                            if s == 0:
                                pk = _kahn(kahn, ix.to(LO), iy.to(LO), iz.to(LO), dx, dy, dz, polx, poly_, polz)
                                polar_first = tl.where(first_to, pk, polar_first)
                    part = zero
                    for r in range(R):
                        base = cell_base + r * 9
                        a0 = tl.load(base + 0)
                        a1 = tl.load(base + 1)
                        a2 = tl.load(base + 2)
                        b0 = tl.load(base + 3)
                        b1 = tl.load(base + 4)
                        b2 = tl.load(base + 5)
                        c0 = tl.load(base + 6)
                        c1 = tl.load(base + 7)
                        c2 = tl.load(base + 8)
                        # kernel.miller_indices: (a.d)/lambda - (a.i)/lambda, index dtype
                        h = (a0 * dx_hi + a1 * dy_hi + a2 * dz_hi) * inv_lam - (a0 * ix + a1 * iy + a2 * iz) * inv_lam
                        k = (b0 * dx_hi + b1 * dy_hi + b2 * dz_hi) * inv_lam - (b0 * ix + b1 * iy + b2 * iz) * inv_lam
                        l = (c0 * dx_hi + c1 * dy_hi + c2 * dz_hi) * inv_lam - (c0 * ix + c1 * iy + c2 * iz) * inv_lam
                        h0 = tl.ceil(h - 0.5)
                        k0 = tl.ceil(k - 0.5)
                        l0 = tl.ceil(l - 0.5)
                        dh = (h - h0).to(LO)
                        dk = (k - k0).to(LO)
                        dl = (l - l0).to(LO)
                        h0l = h0.to(LO)
                        k0l = k0.to(LO)
                        l0l = l0.to(LO)
                        if SHAPE == 0:  # SQUARE
                            F_latt = zero + 1.0
                            if NA:
                                F_latt = F_latt * _sincg_axis(dh, h0l, Na, POLY, TERMS)
                            if NB:
                                F_latt = F_latt * _sincg_axis(dk, k0l, Nb, POLY, TERMS)
                            if NC:
                                F_latt = F_latt * _sincg_axis(dl, l0l, Nc, POLY, TERMS)
                        elif SHAPE == 1:  # ROUND: sinc3 of pi sqrt(hrad_sqr fudge)
                            arg = (dh * dh * Na * Na + dk * dk * Nb * Nb + dl * dl * Nc * Nc) * tl.load(pl_ptr + 9)
                            xr = tl.sqrt(tl.where(arg > 0, arg, 1.0)) * PI
                            sinc3 = 3.0 * (tl.sin(xr) / xr - tl.cos(xr)) / (xr * xr)
                            F_latt = Na * Nb * Nc * ROUND_VOL * tl.where(arg > 0, sinc3, 1.0)
                        else:  # GAUSS, TOPHAT: distance with the unrotated a*, b*, c*
                            qx = dh * tl.load(pl_ptr + 10) + dk * tl.load(pl_ptr + 13) + dl * tl.load(pl_ptr + 16)
                            qy = dh * tl.load(pl_ptr + 11) + dk * tl.load(pl_ptr + 14) + dl * tl.load(pl_ptr + 17)
                            qz = dh * tl.load(pl_ptr + 12) + dk * tl.load(pl_ptr + 15) + dl * tl.load(pl_ptr + 18)
                            rad = (qx * qx + qy * qy + qz * qz) * Na * Na * Nb * Nb * Nc * Nc
                            if SHAPE == 2:
                                F_latt = Na * Nb * Nc * tl.exp(-(rad / GAUSS_W * tl.load(pl_ptr + 9)))
                            else:
                                F_latt = tl.where(rad * tl.load(pl_ptr + 9) < TOPHAT_R2, Na * Nb * Nc, 0.0) + zero
                        if GRID:  # structure_factors.nearest_lookup
                            inside = ((h0l >= glo0) & (h0l <= ghi0) & (k0l >= glo1) & (k0l <= ghi1)
                                      & (l0l >= glo2) & (l0l <= ghi2))
                            if WIDE:
                                fl = (((h0l - glo0).to(tl.float64) * gsh1.to(tl.float64) + (k0l - glo1).to(tl.float64))
                                      * gsh2.to(tl.float64) + (l0l - glo2).to(tl.float64))
                            else:
                                fl = ((h0l - glo0) * gsh1 + (k0l - glo1)) * gsh2 + (l0l - glo2)
                            idx = tl.where(inside, fl.to(tl.int32), n_table - 1)
                            F_cell = tl.load(table_ptr + idx, mask=live, other=0.0)
                        else:
                            F_cell = tl.load(pl_ptr + 28)
                        part += F_cell * F_cell * F_latt * F_latt
                    part = part * factor
                    if DMIN:
                        part = tl.where(alive, part, 0.0)
                    acc += part
        if POLAR == 1 and DMIN:
            polar_first = tl.where(found, polar_first, 0.0)
        value = (tl.load(pl_ptr + 29) + acc) * (R_E * tl.load(pl_ptr + 31) / tl.load(pl_ptr + 32))
        if THICK and not OS_THICK:
            value = value * capture_last
        if POLAR == 1:
            value = value * polar_first
        if not OS_OMEGA:
            value = value * omega_first
            omega_px = omega_first * (T * O2)
        tl.store(out_ptr + b * n_pix + offs, value, mask=live)
        tl.store(omega_ptr + offs, omega_px, mask=live & ((offs * 0 + b) == 0))

    # the constants the jit functions read as globals (triton takes module-level floats as constexprs)
    PI = tl.constexpr(math.pi)
    R_E = tl.constexpr(R_E_SQR)
    ROUND_VOL = tl.constexpr(ROUND_VOLUME_FACTOR)
    GAUSS_W = tl.constexpr(GAUSS_WIDTH)
    TOPHAT_R2 = tl.constexpr(TOPHAT_RADIUS_SQR)
    C0, C1, C2, C3, C4, C5, C6, C7, C8, C9 = (tl.constexpr(c) for c in SIN_PI_COEFFS[:10])


@functools.cache
def _sin_terms(dtype: torch.dtype) -> int:
    return 10 if dtype == torch.float64 else 7


def pixel_kernel_triton(spec: KernelSpec, x: KernelInputs, flat_idx: Tensor,
                        params: tuple[Tensor, Tensor, int] | None = None, sin: str = "poly") -> tuple[Tensor, Tensor]:
    """`kernel.pixel_kernel` as one Triton launch: pixel values (C,) ((B, C) for cells (B, R, 3, 3)) and
    omega_sum. `params`: `packed(x)` if the caller keeps it (one per plan); `sin`: one of SIN_MODES."""
    reason = unsupported(spec, x)
    if reason:
        raise RuntimeError(f"triton kernel: {reason}")
    if sin not in SIN_MODES:
        raise ValueError(f"triton kernel: sin mode {sin!r} is not one of {SIN_MODES}")
    ix, lo, width = params if params is not None else packed(x)
    dtype = x.pixel_size.dtype
    flat_idx = flat_idx.to(torch.int32).contiguous()
    n = flat_idx.shape[0]
    batched = x.cells.dim() == 4
    B = x.cells.shape[0] if batched else 1
    R = x.cells.shape[-3]
    out = torch.empty((B, n), dtype=dtype, device=flat_idx.device)
    omega = torch.empty((n,), dtype=dtype, device=flat_idx.device)
    if n:
        grid = (triton.cdiv(n, BLOCK), B)
        N = spec.N_active
        _sweep[grid](
            out, omega, flat_idx, n, width, ix, lo, x.sub_f, x.sub_s, x.layer_t, x.incident, x.wavelength,
            x.cells.contiguous(), x.F_table, x.F_table.shape[0], x.layer_t.shape[0], x.sub_f.shape[0],
            x.wavelength.shape[0], R,
            SHAPE=SHAPES[spec.shape], NA=N[0], NB=N[1], NC=N[2], CURVED=spec.curved, POINT=spec.point_pixel,
            THICK=spec.thick_on, DMIN=spec.dmin_on, POLAR=POLAR[spec.polar], OS_THICK=spec.oversample_thick,
            OS_OMEGA=spec.oversample_omega, GRID=spec.has_grid, WIDE=spec.wide_index, POLY=sin == "poly",
            TERMS=_sin_terms(dtype), BLOCK=BLOCK,
        )
    return (out if batched else out[0]), omega.sum()
