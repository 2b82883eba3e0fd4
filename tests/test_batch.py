"""simulate_batch: one call, (B, S, F) images, per-element gradients, same values as single renders."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from nanobragg_torch.batch import expand_configs, simulate_batch
from nanobragg_torch.config import CrystalConfig, DetectorConfig, SimulationConfig, StructureFactors
from nanobragg_torch.refine import misset_rotation, oriented_reciprocal_matrix
from nanobragg_torch.simulate import simulate

DT = torch.float64
DEG = math.pi / 180.0
B = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """These renders are tiny: see the `one_thread` fixture."""


def base() -> SimulationConfig:
    det = DetectorConfig(fpixels=10, spixels=8, pixel_size=0.4e-3, distance=40e-3, oversample=2, Xbeam=1.5e-3,
                         Ybeam=2.1e-3)
    xtal = CrystalConfig(cell=(30e-10, 40e-10, 50e-10, 88 * DEG, 93 * DEG, 95 * DEG), Na=3, Nb=4, Nc=5,
                         default_F=10.0, interpolate=False, mosaic_spread=0.2 * DEG, mosaic_domains=2,
                         phisteps=2, osc=0.3 * DEG)
    return SimulationConfig(detector=det, crystal=xtal)


def missets(requires_grad: bool = True) -> torch.Tensor:
    m = torch.tensor([[5.0, 11.0, 17.0], [-20.0, 3.0, 40.0], [0.0, 60.0, -7.0]], dtype=DT) * DEG
    return m.requires_grad_(requires_grad)


def single(cfg: SimulationConfig) -> torch.Tensor:
    return simulate(cfg, DT)


@pytest.mark.parametrize("vectorize", [True, False])
def test_batched_misset_equals_single_renders(vectorize):
    m = missets(False)
    imgs = simulate_batch(base(), {"crystal.misset": m}, dtype=DT, vectorize=vectorize)
    assert imgs.shape == (B, 8, 10)
    for i in range(B):
        ref = single(replace(base(), crystal=replace(base().crystal, misset=tuple(m[i]))))
        torch.testing.assert_close(imgs[i], ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))
    assert not torch.equal(imgs[0], imgs[1])


@pytest.mark.parametrize("vectorize", [True, False])
def test_per_element_gradients(vectorize):
    """d(image_i)/d(misset_j) is zero for i != j and equals the single render's gradient for i == j."""
    m = missets()
    imgs = simulate_batch(base(), {"crystal.misset": m}, dtype=DT, vectorize=vectorize)
    w = torch.rand((8, 10), generator=torch.Generator().manual_seed(1), dtype=DT)
    for i in range(B):
        (g,) = torch.autograd.grad((imgs[i] * w).sum(), m, retain_graph=True)
        for j in range(B):
            if j != i:
                assert torch.count_nonzero(g[j]) == 0
        mi = m.detach()[i].clone().requires_grad_()
        ref = single(replace(base(), crystal=replace(base().crystal, misset=tuple(mi))))
        (gi,) = torch.autograd.grad((ref * w).sum(), mi)
        assert (gi != 0).all()
        torch.testing.assert_close(g[i], gi, rtol=1e-10, atol=0)


def test_batched_matrices():
    """(B, 3, 3) orientation matrices through CrystalConfig.reciprocal_matrix, with per-element gradients."""
    cfg = base()
    cfg = replace(cfg, crystal=replace(cfg.crystal, misset=None))
    A = torch.stack([oriented_reciprocal_matrix(cfg.crystal.cell, misset_rotation(r), 1e-10)
                     for r in missets(False)]).requires_grad_()
    imgs = simulate_batch(cfg, {"crystal.reciprocal_matrix": A}, dtype=DT, vectorize=True)
    (g,) = torch.autograd.grad(imgs[1].sum(), A)
    assert torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[2]) == 0 and torch.count_nonzero(g[1]) > 0
    ref = simulate_batch(base(), {"crystal.misset": missets(False)}, dtype=DT)
    torch.testing.assert_close(imgs.detach(), ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


def test_geometry_batch_falls_back_to_loop():
    """Elements that differ in the detector cannot share pixel factors: vectorize=True refuses, auto loops."""
    d = torch.tensor([38e-3, 40e-3, 45e-3], dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="detector.distance"):
        simulate_batch(base(), {"detector.distance": d}, dtype=DT, vectorize=True)
    imgs = simulate_batch(base(), {"detector.distance": d}, dtype=DT)
    (g,) = torch.autograd.grad(imgs[2].sum(), d)
    assert g[0] == 0 and g[1] == 0 and g[2] != 0
    for i, cfg in enumerate(expand_configs(base(), {"detector.distance": d.detach()})):
        torch.testing.assert_close(imgs[i].detach(), single(cfg), rtol=1e-12, atol=0)


def test_list_of_configs_and_interpolation_fallback():
    grid = torch.rand((9, 9, 9), generator=torch.Generator().manual_seed(2), dtype=DT) * 10 + 5
    sf = StructureFactors(grid.numpy(), -4, -4, -4, 729)
    cfgs = [replace(c, crystal=replace(c.crystal, structure_factors=sf))
            for c in expand_configs(base(), {"crystal.misset": missets(False)[:2]})]
    torch.testing.assert_close(simulate_batch(cfgs, dtype=DT, vectorize=True),
                               torch.stack([single(c) for c in cfgs]), rtol=1e-12, atol=0)
    interp = [replace(c, crystal=replace(c.crystal, interpolate=True)) for c in cfgs]
    with pytest.raises(ValueError, match="interpolation"):
        simulate_batch(interp, dtype=DT, vectorize=True)


def test_chunked_batch_matches_unchunked():
    m = missets(False)
    a = simulate_batch(base(), {"crystal.misset": m}, dtype=DT, vectorize=True)
    b = simulate_batch(base(), {"crystal.misset": m}, dtype=DT, vectorize=True, samples_per_chunk=B * 16 * 3)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
