"""The cheap set-up (issue 15): value-keyed reuse of the float64 set-up, the polynomial lattice sines of the
compiled kernel, and the background build of a small render's package."""

from __future__ import annotations

import math

import pytest
import torch

from nanobragg_torch import compiled
from nanobragg_torch.config import CrystalConfig, DetectorConfig, SimulationConfig
from nanobragg_torch.crystal import build_crystal
from nanobragg_torch.detector import resolve_geometry
from nanobragg_torch.engine import build_plan, render
from nanobragg_torch.lattice import sin_pi, sin_pi_half, sincg, sincg_pi, square_factors
from nanobragg_torch.setup_cache import CACHES, NotCacheable, clear_all, value_key

CELL = (70e-10, 80e-10, 90e-10, math.radians(75), math.radians(85), math.radians(95))


def config(distance=0.1, twotheta=0.0, misset=(0.1, 0.2, 0.3)) -> SimulationConfig:
    return SimulationConfig(
        detector=DetectorConfig(fpixels=24, spixels=20, pixel_size=1e-4, distance=distance, twotheta=twotheta),
        crystal=CrystalConfig(cell=CELL, misset=misset, Na=5, Nb=6, Nc=7, default_F=100.0),
    )


def fresh_geometry(cfg):
    clear_all()
    return resolve_geometry(cfg, torch.float64, torch.device("cpu"))


def test_value_key_is_by_value_and_refuses_grad():
    assert value_key((1.0, torch.tensor([1.0, 2.0]))) == value_key((1.0, torch.tensor([1.0, 2.0])))
    assert value_key(torch.tensor([1.0, 2.0])) != value_key(torch.tensor([1.0, 2.5]))
    big = torch.arange(100.0)
    key = value_key(big)
    big[7] = -1.0
    assert value_key(big) != key
    with pytest.raises(NotCacheable):
        value_key(torch.tensor(1.0, requires_grad=True))


def test_equal_values_reuse_the_geometry_and_other_values_do_not():
    cfg = config()
    g0 = fresh_geometry(cfg)
    cache = CACHES["geometry"]
    g1 = resolve_geometry(config(), torch.float64, torch.device("cpu"))  # an equal config, another object
    assert cache.hits == 1 and g1.pix0 is g0.pix0
    g2 = resolve_geometry(config(twotheta=0.1), torch.float64, torch.device("cpu"))
    assert cache.misses == 2 and not torch.equal(g2.pix0, g0.pix0)
    # the reused geometry is the one computed afresh
    clear_all()
    again = resolve_geometry(cfg, torch.float64, torch.device("cpu"))
    for name in ("pix0", "fdet", "sdet", "odet", "distance", "close_distance"):
        assert torch.equal(getattr(again, name), getattr(g0, name))


def test_a_tensor_updated_in_place_is_not_served_stale():
    """An optimizer step changes a config tensor in place: the cache sees new values, not the same object."""
    dist = torch.tensor(0.1, dtype=torch.float64)
    cfg = config(distance=dist)
    g0 = fresh_geometry(cfg)
    with torch.no_grad():
        dist.add_(0.01)
    g1 = resolve_geometry(cfg, torch.float64, torch.device("cpu"))
    assert float(g1.distance) == pytest.approx(0.11) and float(g0.distance) == pytest.approx(0.1)


def test_inputs_that_require_grad_are_never_cached():
    dist = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    cfg = config(distance=dist)
    clear_all()
    g = resolve_geometry(cfg, torch.float64, torch.device("cpu"))
    assert g.pix0.requires_grad and not CACHES["geometry"].entries
    g.pix0.sum().backward()
    assert dist.grad is not None


def test_crystal_cache_follows_the_orientation():
    clear_all()
    a = build_crystal(config(), torch.float64, torch.device("cpu"))
    b = build_crystal(config(misset=(0.1, 0.2, 0.31)), torch.float64, torch.device("cpu"))
    c = build_crystal(config(), torch.float64, torch.device("cpu"))
    assert not torch.equal(a.a0, b.a0) and c.a0 is a.a0


def test_cached_plans_render_the_same_image():
    cfg = config()
    clear_all()
    with torch.no_grad():
        cold = render(build_plan(cfg, torch.float64, compile=False)).image
        warm = render(build_plan(config(), torch.float64, compile=False)).image
    assert sum(c.hits for c in CACHES.values()) >= 4
    assert torch.equal(cold, warm)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-15), (torch.float32, 4e-7)])
def test_polynomial_sines_match_the_library(dtype, tol):
    f = torch.linspace(-0.5, 0.5, 20001, dtype=torch.float64)
    assert float((sin_pi_half(f.to(dtype)).double() - torch.sin(math.pi * f)).abs().max()) < tol
    x = torch.linspace(-40.0, 40.0, 40001, dtype=torch.float64)
    xr = x.to(dtype).double()  # the same rounded argument; pi * x itself rounds by ~eps * pi * 40 in float64
    assert float((sin_pi(x.to(dtype)).double() - torch.sin(math.pi * xr)).abs().max()) < tol * 4 + 3e-14
    for n in (5.0, 8.0, 100.0):
        N = torch.tensor(n, dtype=dtype)
        lib = sincg(math.pi * f, torch.tensor(n, dtype=torch.float64))
        poly = sincg_pi(f.to(dtype), N).double()
        assert float((poly - lib).abs().max()) < 4 * tol * n
    assert float(sincg_pi(torch.zeros(1, dtype=dtype), torch.tensor(7.0, dtype=dtype))) == 7.0


def test_polynomial_square_factors_keep_gradients():
    f = torch.tensor([0.013, -0.21, 0.4], dtype=torch.float64, requires_grad=True)
    h0 = torch.tensor([3.0, -2.0, 5.0], dtype=torch.float64)
    N = torch.tensor(6.3, dtype=torch.float64, requires_grad=True)

    def fn(poly):
        return lambda f, N: square_factors((f, f, f), (h0, h0, h0), (N, N, N), (True, True, True), poly)[0]

    assert torch.autograd.gradcheck(fn(True), (f, N))
    a = torch.autograd.grad(fn(True)(f, N).sum(), (f, N))
    b = torch.autograd.grad(fn(False)(f, N).sum(), (f, N))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_background_build_is_one_per_variant(tmp_path, monkeypatch):
    """The second eager plan of a variant starts one detached build; its job file round-trips the variant."""
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("NB_BACKGROUND_COMPILE", "1")
    monkeypatch.delenv("NB_COMPILE", raising=False)
    started = []
    monkeypatch.setattr(compiled, "start_background_build", lambda spec, inputs: started.append((spec, inputs)))
    monkeypatch.setattr(compiled, "_EAGER_PLANS", {})
    plans = [build_plan(config(), torch.float32) for _ in range(3)]
    assert all(p.kernel.mode == "eager" for p in plans) and len(started) == 1
    monkeypatch.undo()
    # the job: written, locked once, and rebuilt into the same variant by build_job (the build itself stubbed)
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    spec, inputs = started[0]
    popen = []
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: popen.append(a[0]))
    compiled.start_background_build(spec, inputs)
    assert compiled.start_background_build(spec, inputs) is None  # locked: one build at a time
    assert len(popen) == 1
    job, path = popen[0][-2:]
    built = []
    monkeypatch.setattr(compiled, "build_package", lambda s, i, idx, p: built.append((s, i, p)))
    monkeypatch.setattr("os.nice", lambda n: 0)
    compiled.build_job(job, path)
    (s, i, p), = built
    assert compiled.variant(s, i) == compiled.variant(spec, inputs) and str(p) == path
    assert not (tmp_path / job).exists() and not compiled.package_path(spec, inputs).with_suffix(".building").exists()
