"""Lattice (shape) transforms F_latt: nanoBragg.c's sincg, sinc3 and the four crystal shape models.

Miller indices come as three tensors (h, k, l) of one shape, so that the sample axis can stay innermost
(contiguous) for vectorized and compiled evaluation.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

ROUND_VOLUME_FACTOR = 0.723601254558268  # the C's sqrt(volume ratio) between cube and sphere
GAUSS_WIDTH = 0.63  # rad_star_sqr / 0.63 in the Gaussian spot
TOPHAT_RADIUS_SQR = 0.3969  # flat-top spot cut-off on rad_star_sqr


def transcendental_calls(shape: str, active: tuple[bool, bool, bool]) -> int:
    """Library transcendental calls per sample of the C's lattice transform (the costliest per-sample work;
    the per-pixel geometry is amortized over the samples): SQUARE, sin(N pi h) and sin(pi h) per active axis
    (sincg); ROUND, sin and cos (sinc3; its sqrt is a hardware instruction); GAUSS, one exp; TOPHAT none.
    tools/bench.py divides the machine's measured sin throughput by this count: the ceiling of any kernel
    that calls the library as the C does. The compiled kernel's SQUARE transform calls none (`sincg_pi`)."""
    if shape == "SQUARE":
        return 2 * sum(active)
    return {"ROUND": 2, "GAUSS": 1}.get(shape, 0)


# sin(pi r) = sum_k (-1)^k pi^(2k+1) r^(2k+1) / (2k+1)!: its Taylor coefficients, Horner order
SIN_PI_COEFFS = tuple((-1) ** k * math.pi ** (2 * k + 1) / math.factorial(2 * k + 1) for k in range(11))
# terms kept per dtype: the first dropped term at |r| = 1/2 is (pi/2)^(2K+1)/(2K+1)!: 2.5e-16 (K = 10) for
# float64, 6.7e-10 (K = 7) for float32, below each dtype's rounding of sin near 1
SIN_PI_TERMS = {torch.float64: 10, torch.float32: 7}


def sin_pi_half(r: Tensor) -> Tensor:
    """sin(pi r) for |r| <= 1/2, as its odd Taylor polynomial (no range reduction needed; relative error of
    the truncation below the dtype's epsilon, exact at r == 0)."""
    terms = SIN_PI_TERMS.get(r.dtype, 10)
    r2 = r * r
    p = SIN_PI_COEFFS[terms - 1] * r2 + SIN_PI_COEFFS[terms - 2]
    for c in reversed(SIN_PI_COEFFS[: terms - 2]):
        p = p * r2 + c
    return r * p


def sin_pi(x: Tensor) -> Tensor:
    """sin(pi x) for any real x: x reduced to r in [-1, 1] by the nearest even integer (exact), folded into
    [-1/2, 1/2] by sin(pi r) = sin(pi (+-1 - r)) (exact: Sterbenz), then `sin_pi_half`. The rounding of x
    itself is the only error, as with the library sin of pi x (whose argument carries the same rounding)."""
    r = x - 2.0 * torch.round(0.5 * x).detach()
    r = torch.where(r > 0.5, 1.0 - r, torch.where(r < -0.5, -1.0 - r, r))
    return sin_pi_half(r)


def sincg_pi(f: Tensor, N: Tensor) -> Tensor:
    """sincg(pi f, N) = sin(N pi f)/sin(pi f) for an offset |f| <= 1/2 from the nearest lattice point, both
    sines as polynomials (`sin_pi`, `sin_pi_half`): no library transcendental; the limit N at f == 0 (the C
    tests x == 0.0 exactly)."""
    zero = f == 0.0
    den = torch.where(zero, 1.0, sin_pi_half(f))
    return torch.where(zero, N.to(f.dtype), sin_pi(f * N) / den)


def sincg(x: Tensor, N: Tensor) -> Tensor:
    """sincg(): sin(N x)/sin(x), with the limit N at x == 0 (the C tests x == 0.0 exactly)."""
    zero = x == 0.0
    den = torch.where(zero, 1.0, torch.sin(x))  # scalars, not ones_like: no filled temporaries (eager)
    return torch.where(zero, N.to(x.dtype), torch.sin(x * N) / den)


def sinc3(x: Tensor) -> Tensor:
    """sinc3(): 3 (sin x / x - cos x) / x^2, 1 at x == 0 (transform of a sphere)."""
    zero = x == 0.0
    xs = torch.where(zero, torch.ones_like(x), x)
    return torch.where(zero, torch.ones_like(x), 3.0 * (torch.sin(xs) / xs - torch.cos(xs)) / (xs * xs))


def square_factors(
    dhkl: tuple[Tensor, Tensor, Tensor],
    hkl0: tuple[Tensor, Tensor, Tensor],
    N: tuple[Tensor, Tensor, Tensor],
    active: tuple[bool, bool, bool],
    polynomial: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-axis sincg(pi h, Na) of the parallelepiped crystal; 1 where the C skips the axis (N <= 1), from the
    offset dhkl = h - h0 from the nearest lattice point h0.

    Evaluated about the nearest lattice point: with h = h0 + f and integer N,
    sin(N pi h)/sin(pi h) = (-1)^((N-1) h0) sin(N pi f)/sin(pi f). This is the C's value (to rounding) and
    stays accurate in float32, where pi*h near a Bragg peak loses all the digits of sin(pi h). For a
    non-integer N (gradients) it continues the transform around every peak alike (docs/gradients.md).

    `polynomial`: both sines as polynomials (`sincg_pi`; the compiled kernel, where a fused loop of
    multiply-adds beats two library calls per axis); else the library sin (eager: one op beats twenty)."""
    out = []
    for dx, x0, n, on in zip(dhkl, hkl0, N, active, strict=True):
        if not on:
            out.append(torch.ones_like(dx))
            continue
        # ((N - 1) h0) mod 2 of integers, by floor (exact; torch.remainder is a library fmod per element)
        m = (torch.round(n.detach()) - 1.0) * x0
        parity = m - 2.0 * torch.floor(0.5 * m)
        value = sincg_pi(dx, n) if polynomial else sincg(math.pi * dx, n)
        out.append((1.0 - 2.0 * parity) * value)
    return out[0], out[1], out[2]


def shape_factor(
    shape: str,
    dhkl: tuple[Tensor, Tensor, Tensor],
    N: tuple[Tensor, Tensor, Tensor],
    a_star: Tensor,
    fudge: Tensor,
) -> Tensor:
    """F_latt for the ROUND, GAUSS and TOPHAT models (SQUARE is the product of square_factors) from the offset
    dhkl = h - h0 from the nearest lattice point."""
    Na, Nb, Nc = N
    NNN = Na * Nb * Nc
    dh, dk, dl = dhkl
    if shape == "ROUND":
        hrad_sqr = dh * dh * Na * Na + dk * dk * Nb * Nb + dl * dl * Nc * Nc
        # sqrt has an infinite derivative at 0: keep the gradient finite at the exact lattice point
        arg = hrad_sqr * fudge
        pos = arg > 0
        root = torch.sqrt(torch.where(pos, arg, torch.ones_like(arg))) * pos
        return NNN * ROUND_VOLUME_FACTOR * sinc3(math.pi * root)
    # reciprocal-space distance with the unrotated a*, b*, c* (1/A), as the C uses them
    dx = dh * a_star[0, 0] + dk * a_star[1, 0] + dl * a_star[2, 0]
    dy = dh * a_star[0, 1] + dk * a_star[1, 1] + dl * a_star[2, 1]
    dz = dh * a_star[0, 2] + dk * a_star[1, 2] + dl * a_star[2, 2]
    rad_star_sqr = (dx * dx + dy * dy + dz * dz) * Na * Na * Nb * Nb * Nc * Nc
    if shape == "GAUSS":
        return NNN * torch.exp(-(rad_star_sqr / GAUSS_WIDTH * fudge))
    if shape == "TOPHAT":
        return NNN * (rad_star_sqr * fudge < TOPHAT_RADIUS_SQR).to(dh.dtype)
    raise ValueError(f"unknown crystal shape {shape!r}")
