"""Lattice (shape) transforms F_latt: nanoBragg.c's sincg, sinc3 and the four crystal shape models."""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

ROUND_VOLUME_FACTOR = 0.723601254558268  # the C's sqrt(volume ratio) between cube and sphere
GAUSS_WIDTH = 0.63  # rad_star_sqr / 0.63 in the Gaussian spot
TOPHAT_RADIUS_SQR = 0.3969  # flat-top spot cut-off on rad_star_sqr


def sincg(x: Tensor, N: Tensor) -> Tensor:
    """sincg(): sin(N x)/sin(x), with the limit N at x == 0 (the C tests x == 0.0 exactly)."""
    zero = x == 0.0
    den = torch.where(zero, torch.ones_like(x), torch.sin(x))
    return torch.where(zero, N * torch.ones_like(x), torch.sin(x * N) / den)


def sinc3(x: Tensor) -> Tensor:
    """sinc3(): 3 (sin x / x - cos x) / x^2, 1 at x == 0 (transform of a sphere)."""
    zero = x == 0.0
    xs = torch.where(zero, torch.ones_like(x), x)
    return torch.where(zero, torch.ones_like(x), 3.0 * (torch.sin(xs) / xs - torch.cos(xs)) / (xs * xs))


def square_factors(hkl: Tensor, N: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-axis sincg(pi h, Na) factors of the parallelepiped crystal (1 where N <= 1, as the C skips them)."""
    out = []
    for i in range(3):
        n = N[i]
        if float(n.detach()) > 1.0:
            out.append(sincg(math.pi * hkl[..., i], n))
        else:
            out.append(torch.ones_like(hkl[..., i]))
    return out[0], out[1], out[2]


def shape_factor(shape: str, hkl: Tensor, hkl0: Tensor, N: tuple[Tensor, Tensor, Tensor], a_star: Tensor,
                 fudge: Tensor) -> Tensor:
    """F_latt for the ROUND, GAUSS and TOPHAT models (SQUARE is the product of square_factors)."""
    Na, Nb, Nc = N
    NNN = Na * Nb * Nc
    d = hkl - hkl0
    if shape == "ROUND":
        hrad_sqr = d[..., 0] ** 2 * Na * Na + d[..., 1] ** 2 * Nb * Nb + d[..., 2] ** 2 * Nc * Nc
        # sqrt has an infinite derivative at 0: keep the gradient finite at the exact lattice point
        arg = hrad_sqr * fudge
        root = torch.sqrt(torch.where(arg > 0, arg, torch.ones_like(arg))) * (arg > 0)
        return NNN * ROUND_VOLUME_FACTOR * sinc3(math.pi * root)
    # reciprocal-space distance with the unrotated a*, b*, c* (1/A), as the C uses them
    dstar = d @ a_star  # (..., 3)
    rad_star_sqr = (dstar * dstar).sum(-1) * Na * Na * Nb * Nb * Nc * Nc
    if shape == "GAUSS":
        return NNN * torch.exp(-(rad_star_sqr / GAUSS_WIDTH * fudge))
    if shape == "TOPHAT":
        return NNN * (rad_star_sqr * fudge < TOPHAT_RADIUS_SQR).to(hkl.dtype)
    raise ValueError(f"unknown crystal shape {shape!r}")
