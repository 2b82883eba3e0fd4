"""3-vector helpers in torch, mirroring nanoBragg.c's vector routines (rotate, rotate_axis, unitize...).

Vectors are tensors whose last dimension has size 3 (x, y, z). Every function broadcasts and keeps the
input's dtype, device and autograd graph.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def dot(u: Tensor, v: Tensor) -> Tensor:
    """dot_product(): u . v over the last axis."""
    return u[..., 0] * v[..., 0] + u[..., 1] * v[..., 1] + u[..., 2] * v[..., 2]


def cross(u: Tensor, v: Tensor) -> Tensor:
    """cross_product(): u x v."""
    x = u[..., 1] * v[..., 2] - u[..., 2] * v[..., 1]
    y = u[..., 2] * v[..., 0] - u[..., 0] * v[..., 2]
    z = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    return torch.stack((x, y, z), dim=-1)


def norm(v: Tensor) -> Tensor:
    """magnitude(): Euclidean length over the last axis."""
    return torch.sqrt(dot(v, v))


def unitize(v: Tensor) -> tuple[Tensor, Tensor]:
    """unitize(): (unit vector, magnitude); a zero vector stays zero, as in the C."""
    mag = norm(v)
    safe = torch.where(mag != 0, mag, torch.ones_like(mag))
    unit = torch.where((mag != 0).unsqueeze(-1), v / safe.unsqueeze(-1), torch.zeros_like(v))
    return unit, mag


def rotate_xyz(v: Tensor, phix: Tensor, phiy: Tensor, phiz: Tensor) -> Tensor:
    """rotate(): rotate about x, then y, then z (angles in radians, right-handed)."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    cx, sx = torch.cos(phix), torch.sin(phix)
    y, z = y * cx - z * sx, y * sx + z * cx
    cy, sy = torch.cos(phiy), torch.sin(phiy)
    x, z = x * cy + z * sy, -x * sy + z * cy
    cz, sz = torch.cos(phiz), torch.sin(phiz)
    x, y = x * cz - y * sz, x * sz + y * cz
    return torch.stack((x, y, z), dim=-1)


def rotate_axis(v: Tensor, axis: Tensor, phi: Tensor) -> Tensor:
    """rotate_axis(): Rodrigues rotation of v about `axis` by phi (the C does not normalise the axis)."""
    return torch.stack(rotate_axis_xyz(v.unbind(-1), axis.unbind(-1), phi), dim=-1)


def rotate_axis_xyz(v, axis, phi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """rotate_axis() on (x, y, z) component tuples (the fused kernel's layout)."""
    s = torch.sin(phi)
    c = torch.cos(phi)
    ax, ay, az = axis
    vx, vy, vz = v
    d = (ax * vx + ay * vy + az * vz) * (1.0 - c)
    x = ax * d + vx * c + (-az * vy + ay * vz) * s
    y = ay * d + vy * c + (az * vx - ax * vz) * s
    z = az * d + vz * c + (-ay * vx + ax * vy) * s
    return x, y, z


def axis_rotation_matrix(axis: Tensor, phi: Tensor) -> Tensor:
    """Matrix form of rotate_axis(): returns R (..., 3, 3) with R @ v == rotate_axis(v, axis, phi)."""
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    # the three columns R e_j at once: eye[i] holds the i-th component of every e_j (a trailing j axis)
    k = tuple(a[..., None] for a in axis.unbind(-1))
    x, y, z = rotate_axis_xyz((eye[0], eye[1], eye[2]), k, torch.as_tensor(phi)[..., None])
    return torch.stack((x, y, z), dim=-2)
