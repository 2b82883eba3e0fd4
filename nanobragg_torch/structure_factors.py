"""Structure factors F_cell: nearest-neighbour lookup in the HKL grid and the C's tricubic interpolation.

Mirrors the F_cell part of nanoBragg.c's inner loop: `Fhkl[h0-h_min][k0-k_min][l0-l_min]` when the rounded
index is inside the grid (else default_F), or polin3() (tensor-product cubic Lagrange interpolation on the
4x4x4 neighbourhood starting at floor(h)-1) when interpolation is on.
"""

from __future__ import annotations

import torch

from .config import StructureFactors

Tensor = torch.Tensor


class FGrid:
    """The HKL grid as a tensor on the render device, with the C's index bounds."""

    def __init__(self, sf: StructureFactors | None, default_F: Tensor, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.default_F = default_F
        if sf is None or sf.hkls == 0:
            self.grid = None
            self.hkls = 0
            self.lo = (0, 0, 0)
            self.hi = (-1, -1, -1)
            return
        self.grid = torch.as_tensor(sf.grid, dtype=dtype, device=device)
        self.hkls = sf.hkls
        self.lo = (sf.h_min, sf.k_min, sf.l_min)
        self.hi = (sf.h_max, sf.k_max, sf.l_max)

    @property
    def ranges(self) -> tuple[int, int, int]:
        return tuple(self.hi[i] - self.lo[i] + 1 for i in range(3))

    def nearest(self, hkl0: Tensor) -> Tensor:
        """F_cell for rounded indices hkl0 (float tensor of integers, (..., 3))."""
        if self.grid is None:
            return self.default_F.expand(hkl0.shape[:-1])
        lo = torch.tensor(self.lo, dtype=hkl0.dtype, device=hkl0.device)
        hi = torch.tensor(self.hi, dtype=hkl0.dtype, device=hkl0.device)
        inside = ((hkl0 >= lo) & (hkl0 <= hi)).all(-1)
        idx = torch.where(inside.unsqueeze(-1), hkl0 - lo, torch.zeros_like(hkl0)).long()
        kr, lr = self.grid.shape[1], self.grid.shape[2]
        flat = (idx[..., 0] * kr + idx[..., 1]) * lr + idx[..., 2]
        values = self.grid.reshape(-1)[flat.reshape(-1)].reshape(flat.shape)
        return torch.where(inside, values, self.default_F)

    def out_of_interpolation_range(self, hkl: Tensor) -> Tensor:
        """The C's test that disables interpolation: the 4-point stencil would leave the grid."""
        if self.grid is None:
            return torch.zeros(hkl.shape[:-1], dtype=torch.bool, device=hkl.device)
        bad = torch.zeros(hkl.shape[:-1], dtype=torch.bool, device=hkl.device)
        rng = self.ranges
        for i in range(3):
            x = hkl[..., i]
            bad = bad | ((x - self.lo[i] + 3) > rng[i]) | (x - 2 < self.lo[i])
        return bad

    def tricubic(self, hkl: Tensor) -> Tensor:
        """polin3(): cubic Lagrange interpolation through the 4x4x4 neighbours (caller ensures in range)."""
        assert self.grid is not None
        flr = torch.floor(hkl)
        lo = torch.tensor(self.lo, dtype=hkl.dtype, device=hkl.device)
        base = (flr - 1 - lo).long()  # index of the first stencil point per axis
        weights = []
        for i in range(3):
            x = hkl[..., i]
            nodes = [flr[..., i] + (j - 1) for j in range(4)]
            w = []
            for j in range(4):
                num = torch.ones_like(x)
                den = torch.ones_like(x)
                for m in range(4):
                    if m != j:
                        num = num * (x - nodes[m])
                        den = den * (nodes[j] - nodes[m])
                w.append(num / den)
            weights.append(torch.stack(w, dim=-1))  # (..., 4)
        off = torch.arange(4, device=hkl.device)
        hi = (base[..., 0, None] + off).clamp(0, self.grid.shape[0] - 1)
        ki = (base[..., 1, None] + off).clamp(0, self.grid.shape[1] - 1)
        li = (base[..., 2, None] + off).clamp(0, self.grid.shape[2] - 1)
        kr, lr = self.grid.shape[1], self.grid.shape[2]
        flat = (hi[..., :, None, None] * kr + ki[..., None, :, None]) * lr + li[..., None, None, :]
        cube = self.grid.reshape(-1)[flat.reshape(-1)].reshape(flat.shape)  # (..., 4, 4, 4)
        return torch.einsum("...ijk,...i,...j,...k->...", cube, weights[0], weights[1], weights[2])
