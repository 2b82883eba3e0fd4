"""Kahn polarization factor: nanoBragg.c's polarization_factor()."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def kahn_polarization(kahn: Tensor, incident: Tensor, diffracted: Tensor, axis: Tensor) -> Tensor:
    """kahn_factor on (..., 3) vectors (broadcasting over the leading dimensions)."""
    return kahn_factor(kahn, incident.unbind(-1), diffracted.unbind(-1), axis.unbind(-1))


def kahn_factor(kahn: Tensor, inc, dif, axis) -> Tensor:
    """polarization_factor() on component tuples: 0.5 (1 + cos^2 2theta - K cos 2psi sin^2 2theta)."""
    ix, iy, iz = inc
    dx, dy, dz = dif
    cos2t = ix * dx + iy * dy + iz * dz
    cos2t_sqr = cos2t * cos2t
    # B_in = unit(axis x incident), E_in = unit(incident x B_in): unit vectors of the source only
    bx, by, bz = axis[1] * iz - axis[2] * iy, axis[2] * ix - axis[0] * iz, axis[0] * iy - axis[1] * ix
    bn = torch.sqrt(bx * bx + by * by + bz * bz)
    bn = torch.where(bn != 0, bn, torch.ones_like(bn))
    bx, by, bz = bx / bn, by / bn, bz / bn
    ex, ey, ez = iy * bz - iz * by, iz * bx - ix * bz, ix * by - iy * bx
    en = torch.sqrt(ex * ex + ey * ey + ez * ez)
    en = torch.where(en != 0, en, torch.ones_like(en))
    ex, ey, ez = ex / en, ey / en, ez / en
    # the C's psi = -atan2(dif.B_in, dif.E_in) enters only as cos(2 psi) = (x^2 - y^2)/(x^2 + y^2) with
    # x = dif.E_in, y = dif.B_in: the same number without the two library calls (atan2 and cos were a fifth of
    # the compiled kernel's time); psi = atan2(0, 0) = 0 (dif along the beam) gives 1, as in the C
    x = dx * ex + dy * ey + dz * ez
    y = dx * bx + dy * by + dz * bz
    x2, y2 = x * x, y * y
    r2 = x2 + y2
    nonzero = r2 != 0
    cos2psi = torch.where(nonzero, (x2 - y2) / torch.where(nonzero, r2, 1.0), 1.0)
    return 0.5 * (1.0 + cos2t_sqr - kahn * cos2psi * (1.0 - cos2t_sqr))
