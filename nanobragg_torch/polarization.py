"""Kahn polarization factor: nanoBragg.c's polarization_factor()."""

from __future__ import annotations

import torch

from .vectors import cross, dot, unitize

Tensor = torch.Tensor


def kahn_polarization(kahn: Tensor, incident: Tensor, diffracted: Tensor, axis: Tensor) -> Tensor:
    """0.5 (1 + cos^2 2theta - K cos(2 psi) sin^2 2theta), psi the azimuth of the diffracted ray about the
    incident beam measured from the E-vector nearest `axis` (the C's polar_vector). Broadcasts over leading
    dimensions of incident/diffracted."""
    cos2t = dot(incident, diffracted)
    cos2t_sqr = cos2t * cos2t
    sin2t_sqr = 1 - cos2t_sqr
    B_in = unitize(cross(axis.expand_as(incident), incident))[0]
    E_in = unitize(cross(incident, B_in))[0]
    E_out = dot(diffracted, E_in)
    B_out = dot(diffracted, B_in)
    psi = -torch.atan2(B_out, E_out)
    return 0.5 * (1.0 + cos2t_sqr - kahn * torch.cos(2 * psi) * sin2t_sqr)
