"""Structure factors F_cell: nearest-neighbour lookup in the HKL grid and the C's tricubic interpolation.

Mirrors the F_cell part of nanoBragg.c's inner loop: `Fhkl[h0-h_min][k0-k_min][l0-l_min]` when the rounded
index is inside the grid (else default_F), or polin3() (tensor-product cubic Lagrange interpolation on the
4x4x4 neighbourhood starting at floor(h)-1) when interpolation is on. Indices come as (h, k, l) tensors.
A sparse store (config.SparseGrid, an HKL file whose dense grid would be almost empty) gives the same values
through `sparse_lookup` (a binary search over the filled cells' flat indices), tricubic included.
"""

from __future__ import annotations

import warnings

import torch

from .config import SparseGrid, StructureFactors

Tensor = torch.Tensor
HKL = tuple[Tensor, Tensor, Tensor]


class FGrid:
    """The HKL grid as a tensor on the render device, with the C's index bounds."""

    def __init__(
        self, sf: StructureFactors | None, default_F: Tensor, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.default_F = default_F
        # a sparse store (config.SparseGrid): `grid` holds the filled cells' values, `index` (int64) the box's K
        # and L and then their sorted flat indices; dense: `index` is empty
        self.sparse = sf is not None and isinstance(sf.grid, SparseGrid)
        self.index = torch.zeros(0, dtype=torch.int64, device=device)
        if sf is None or sf.hkls == 0:
            self.grid = torch.zeros((1, 1, 1), dtype=dtype, device=device)
            self.shape = (1, 1, 1)
            self.hkls = 0
            self.lo = (0, 0, 0)
            self.hi = (-1, -1, -1)
            return
        with warnings.catch_warnings():  # the readers' grids are read only (setup_cache.value_key): a float64
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # view, never written
            if self.sparse:
                store = sf.grid
                self.grid = torch.cat([torch.as_tensor(store.values, dtype=dtype, device=device).reshape(-1),
                                       torch.full((1,), store.fill, dtype=dtype, device=device)])
                self.index = torch.cat([torch.tensor(store.shape[1:], dtype=torch.int64, device=device),
                                        torch.as_tensor(store.keys, dtype=torch.int64, device=device)])
                self.shape = tuple(store.shape)
            else:
                self.grid = torch.as_tensor(sf.grid, dtype=dtype, device=device)
                self.shape = tuple(self.grid.shape)
        self.hkls = sf.hkls
        self.lo = (sf.h_min, sf.k_min, sf.l_min)
        self.hi = (sf.h_max, sf.k_max, sf.l_max)

    @property
    def ranges(self) -> tuple[int, int, int]:
        return tuple(self.hi[i] - self.lo[i] + 1 for i in range(3))

    @property
    def table(self) -> Tensor:
        """The grid flattened, with default_F appended: the value of every index outside the grid (sparse: the
        filled cells' values, the fill of the other cells, then default_F)."""
        return torch.cat([self.grid.reshape(-1), self.default_F.reshape(1)])

    @property
    def wide_index(self) -> bool:
        return not self.sparse and wide_index(self.grid)

    def nearest(self, hkl0: HKL) -> Tensor:
        """F_cell for the rounded indices (float tensors holding integers)."""
        if self.sparse:
            return sparse_lookup(self.table, self.index, self.lo, self.hi, hkl0)
        return nearest_lookup(self.table, self.shape, self.lo, self.hi, hkl0, wide_index(self.grid))

    def out_of_interpolation_range(self, hkl: HKL) -> Tensor:
        """The C's test that disables interpolation: the 4-point stencil would leave the grid."""
        bad = torch.zeros_like(hkl[0], dtype=torch.bool)
        for x, lo, rng in zip(hkl, self.lo, self.ranges, strict=True):
            bad = bad | ((x - lo + 3) > rng) | (x - 2 < lo)
        return bad

    def tricubic(self, hkl: HKL) -> Tensor:
        """polin3(): cubic Lagrange interpolation through the 4x4x4 neighbours (caller ensures in range)."""
        weights, index = [], []
        for x, lo, size in zip(hkl, self.lo, self.shape, strict=True):
            flr = torch.floor(x)
            nodes = [flr + (j - 1) for j in range(4)]
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
            first = (flr - 1 - lo).long()
            index.append((first[..., None] + torch.arange(4, device=x.device)).clamp(0, size - 1))
        kr, lr = self.shape[1], self.shape[2]
        flat = (index[0][..., :, None, None] * kr + index[1][..., None, :, None]) * lr + index[2][
            ..., None, None, :
        ]
        if self.sparse:  # the same 64 cells, found by binary search
            cube = self.grid[sparse_position(self.index[2:], flat.reshape(-1))].reshape(flat.shape)
        else:
            cube = self.grid.reshape(-1)[flat.reshape(-1)].reshape(flat.shape)  # (..., 4, 4, 4)
        return torch.einsum("...ijk,...i,...j,...k->...", cube, weights[0], weights[1], weights[2])


def wide_index(grid: Tensor) -> bool:
    """Flat grid indices need float64: float32 holds integers exactly only below 2^24."""
    return grid.dtype != torch.float64 and grid.numel() >= 1 << 24


def nearest_lookup(table: Tensor, shape, lo, hi, hkl0: HKL, wide: bool = False) -> Tensor:
    """Fhkl[h0-h_min][k0-k_min][l0-l_min] inside the grid, default_F outside (a pure function: compilable).

    table: the grid (shape (H, K, L)) flattened with default_F appended (FGrid.table); lo, hi: the grid's
    lowest and highest (h, k, l), ints or a tensor (3,) (then no recompile per grid). The flat index is
    computed in the indices' float dtype (float64 when `wide`) and gathered once: SIMD-friendly."""
    h0, k0, l0 = hkl0
    inside = (h0 >= lo[0]) & (h0 <= hi[0]) & (k0 >= lo[1]) & (k0 <= hi[1]) & (l0 >= lo[2]) & (l0 <= hi[2])
    dt = torch.float64 if wide else h0.dtype
    flat = ((h0 - lo[0]).to(dt) * shape[1] + (k0 - lo[1]).to(dt)) * shape[2] + (l0 - lo[2]).to(dt)
    return table[torch.where(inside, flat, -1.0).to(torch.int32)]  # -1: the last entry, default_F


def sparse_position(keys: Tensor, flat: Tensor) -> Tensor:
    """Where each flat grid index (int64) is in the sorted `keys`; len(keys) (the fill's entry) where absent."""
    pos = torch.searchsorted(keys, flat).clamp(max=keys.numel() - 1)
    return torch.where(keys[pos] == flat, pos, keys.numel())


def sparse_lookup(table: Tensor, index: Tensor, lo, hi, hkl0: HKL) -> Tensor:
    """nearest_lookup on a sparse store (config.SparseGrid), bit for bit the dense grid's values.

    table: the filled cells' values, the fill, default_F (FGrid.table); index: int64, the box's K and L, then
    the sorted flat indices ((h0-h_min)*K + k0-k_min)*L + l0-l_min of the values (FGrid.index). The flat index
    is formed in int64 and found by binary search (torch.searchsorted): vectorized, any box up to 2^62 cells."""
    h0, k0, l0 = hkl0
    inside = (h0 >= lo[0]) & (h0 <= hi[0]) & (k0 >= lo[1]) & (k0 <= hi[1]) & (l0 >= lo[2]) & (l0 <= hi[2])

    def offset(x: Tensor, i: int) -> Tensor:
        return torch.where(inside, x - lo[i], 0.0).to(torch.int64)

    flat = (offset(h0, 0) * index[0] + offset(k0, 1)) * index[1] + offset(l0, 2)
    return table[torch.where(inside, sparse_position(index[2:], flat), -1)]  # -1: the last entry, default_F
