"""The cheap set-up and kernel (issue 15): value-keyed reuse of the set-up and of whole plans, the polynomial
lattice sines of the compiled kernel, the library-free polarization and pixel split, and the background build
of a small render's package."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nanobragg_torch import compiled
from nanobragg_torch.config import CrystalConfig, DetectorConfig, SimulationConfig
from nanobragg_torch.crystal import build_crystal
from nanobragg_torch.detector import resolve_geometry
from nanobragg_torch.engine import render
from nanobragg_torch.lattice import sin_pi, sin_pi_half, sincg, sincg_pi, square_factors
from nanobragg_torch.plan import build_plan
from nanobragg_torch.setup_cache import CACHES, HASH_LIMIT, NotCacheable, clear_all, value_key

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


def test_value_key_tells_types_and_zeros_apart():
    """The checks memo must not pass a float where an int was checked, nor -0.0 for 0.0 (equal under ==)."""
    assert value_key(8) != value_key(8.0) and value_key(True) != value_key(1)
    assert value_key(0.0) != value_key(-0.0) and value_key(torch.tensor([0.0])) != value_key(torch.tensor([-0.0]))
    assert value_key((1, 2.5, "x", None)) == value_key((1, 2.5, "x", None))


def test_read_only_grids_are_keyed_by_identity_others_by_value():
    """An HKL reader's grid is read only all the way down: its identity stands for its values (no 3 ms hash per
    plan). A writable array, or a read-only view of a writable one, is hashed: an in-place change shows."""
    grid = np.arange(1000.0).reshape(10, 10, 10)
    key = value_key(grid)
    grid[3, 3, 3] = -1.0
    assert value_key(grid) != key
    view = grid[:]
    view.flags.writeable = False
    key = value_key(view)
    grid[4, 4, 4] = -2.0  # through the writable base
    assert value_key(view) != key
    frozen = np.arange(1000.0).reshape(10, 10, 10).copy()  # owns its memory
    frozen.flags.writeable = False
    assert value_key(frozen) == value_key(frozen) and value_key(frozen) != value_key(frozen.copy())
    # a writable array or tensor too large to hash cheaply is not cached at all (a mask, a user's grid)
    for big in (np.zeros(HASH_LIMIT // 8 + 1), torch.zeros(HASH_LIMIT // 4 + 1)):
        with pytest.raises(NotCacheable):
            value_key(big)
    huge = np.zeros(HASH_LIMIT)
    huge.flags.writeable = False
    assert value_key(huge) == value_key(huge)


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
        again = config()
        plan = build_plan(again, torch.float64, compile=False)  # an equal config: the plan memo
        warm = render(plan).image
        assert CACHES["plan"].hits == 1 and plan.cfg is again
        # a new orientation: a new plan and crystal; the detector, the beam and their checks are reused
        build_plan(config(misset=(0.1, 0.2, 0.31)), torch.float64, compile=False)
        assert CACHES["plan"].misses == 2 and CACHES["crystal"].misses == 2
        assert CACHES["geometry"].hits >= 1 and CACHES["checks"].hits >= 3
    assert torch.equal(cold, warm)


def test_plan_memo_is_by_value_and_never_holds_a_graph():
    dist = torch.tensor(0.1, dtype=torch.float64)
    clear_all()
    with torch.no_grad():
        a = build_plan(config(distance=dist), torch.float64, compile=False)
        dist.add_(0.01)  # an optimizer step in place: a new plan, not the stale one
        b = build_plan(config(distance=dist), torch.float64, compile=False)
    assert float(b.geom.distance) == pytest.approx(0.11) and float(a.geom.distance) == pytest.approx(0.1)
    assert CACHES["plan"].hits == 0
    grad = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    p1 = build_plan(config(distance=grad), torch.float64, compile=False)
    p2 = build_plan(config(distance=grad), torch.float64, compile=False)
    assert CACHES["plan"].hits == 0 and p1.geom.pix0.requires_grad and p1.geom.pix0 is not p2.geom.pix0


def test_plan_memo_chooses_the_compiled_form_anew(monkeypatch):
    """A package built since the plan was memoized (a background build) is taken by the next equal plan."""
    clear_all()
    monkeypatch.delenv("NB_COMPILE", raising=False)
    modes = iter([("eager", "eager"), ("aot", "eager")])
    monkeypatch.setattr("nanobragg_torch.plan.choose_mode", lambda *a: next(modes))
    first = build_plan(config(), torch.float32)
    second = build_plan(config(), torch.float32)
    assert CACHES["plan"].hits == 1 and first.kernel.mode == "eager" and second.kernel.mode == "aot"
    assert second.kernel.inputs is first.kernel.inputs


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


def _kahn_with_atan2(kahn, inc, dif, axis):
    """polarization_factor() as the C writes it: psi = -atan2(dif.B_in, dif.E_in), then cos(2 psi)."""
    b = torch.linalg.cross(axis.expand_as(inc), inc)
    b = b / b.norm(dim=-1, keepdim=True)
    e = torch.linalg.cross(inc, b)
    e = e / e.norm(dim=-1, keepdim=True)
    cos2t = (inc * dif).sum(-1)
    psi = -torch.atan2((dif * b).sum(-1), (dif * e).sum(-1))
    return 0.5 * (1.0 + cos2t**2 - kahn * torch.cos(2.0 * psi) * (1.0 - cos2t**2))


def test_polarization_without_atan2_is_the_cs_factor():
    """cos(2 atan2(y, x)) = (x^2 - y^2)/(x^2 + y^2): the kernel's Kahn factor agrees with the C's form to
    rounding, for any incidence, direction and polarization axis, and is 1 along the beam (atan2(0, 0) = 0)."""
    from nanobragg_torch.polarization import kahn_polarization

    g = torch.Generator().manual_seed(5)
    inc = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g, dtype=torch.float64), dim=-1)
    dif = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g, dtype=torch.float64), dim=-1)
    axis = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    for kahn in (0.0, 0.5, 0.99, -1.0):
        k = torch.tensor(kahn, dtype=torch.float64)
        torch.testing.assert_close(kahn_polarization(k, inc, dif, axis), _kahn_with_atan2(k, inc, dif, axis),
                                   rtol=1e-14, atol=1e-14)
    along = kahn_polarization(torch.tensor(0.9, dtype=torch.float64), inc[:3], inc[:3], axis)
    torch.testing.assert_close(along, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    # the gradient is finite along the beam too (the guarded division)
    d = inc[:1].clone().requires_grad_(True)
    kahn_polarization(torch.tensor(0.9, dtype=torch.float64), inc[:1], d, axis).sum().backward()
    assert torch.isfinite(d.grad).all()


def test_lattice_sign_is_the_parity_of_n_minus_1_times_h0():
    """(-1)^((N-1) h0) by floor, for negative and large h0 in float32 and float64, as the library remainder."""
    for dtype in (torch.float32, torch.float64):
        h0 = torch.arange(-3000.0, 3001.0, dtype=dtype)
        f = torch.full_like(h0, 0.05)  # N f < 1: sin(N pi f)/sin(pi f) > 0
        for n in (2.0, 5.0, 8.0):
            N = torch.tensor(n, dtype=dtype)
            got = square_factors((f, f, f), (h0, h0, h0), (N, N, N), (True, False, False))[0]
            sign = 1.0 - 2.0 * torch.remainder((n - 1.0) * h0, 2.0)
            assert torch.equal(torch.sign(got), sign)


def test_pixel_split_by_multiply_is_exact():
    """fpixel, spixel of a flat index without a division: exact at every row boundary, for odd and huge widths."""
    from nanobragg_torch.kernel import pixel_positions

    for width, rows in ((1, 5), (7, 9), (2463, 3), (4096, 4), (99_991, 3)):
        flat = torch.arange(width * rows, dtype=torch.int32)
        one, zero, eye = (torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                          torch.eye(3, dtype=torch.float64))
        x = SimpleNamespace(pix0=torch.zeros(3, dtype=torch.float64), fpixels=torch.tensor(width), subpixel=one[0],
                            oversample=one[0], sub_f=zero, sub_s=zero, layer_t=zero, layer_step=zero[0],
                            fdet=eye[0], sdet=eye[1], odet=eye[2])
        spec = SimpleNamespace(curved=False)
        px, py, _ = pixel_positions(spec, x, flat)
        assert torch.equal(px[0, 0], (flat % width).double() + 0.5)
        assert torch.equal(py[0, 0], (flat // width).double() + 0.5)


def test_background_build_is_one_per_variant(tmp_path, monkeypatch):
    """The first eager plan of a variant starts one detached build (later ones none); its job file round-trips
    the variant."""
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


def test_chunk_budget_follows_the_kernel_form():
    """engine.chunk_pixels: eager chunks of EAGER_SAMPLES_PER_CHUNK samples (cache-sized), compiled ones of the
    plan default, the Triton kernel's of GPU_CHUNK_PIXELS pixels; a caller's budget wins except for Triton."""
    import dataclasses

    from nanobragg_torch import engine
    from nanobragg_torch.compiled import KernelRunner
    from nanobragg_torch.plan import DEFAULT_SAMPLES_PER_CHUNK

    plan = build_plan(config(), torch.float32, compile=False)
    spp = plan.samples_per_pixel
    assert plan.kernel.mode == "eager" and spp > 1
    assert engine.chunk_pixels(plan) == engine.EAGER_SAMPLES_PER_CHUNK // spp
    assert engine.chunk_pixels(plan, 1000 * spp) == 1000
    spec, inputs = plan.kernel.spec, plan.kernel.inputs
    aot = dataclasses.replace(plan, kernel=KernelRunner(spec, inputs, "aot", "eager"))
    assert engine.chunk_pixels(aot) == DEFAULT_SAMPLES_PER_CHUNK // spp
    gpu = dataclasses.replace(plan, kernel=KernelRunner(spec, inputs, "triton", "eager"))
    assert engine.chunk_pixels(gpu) == engine.chunk_pixels(gpu, 7) == engine.GPU_CHUNK_PIXELS


def test_eager_kernel_runs_on_one_thread(monkeypatch):
    """The eager kernel's ops run on the calling thread (compiled.one_thread), and the caller's thread count
    is back afterwards, also when the kernel raises."""
    seen = []
    real = compiled.pixel_kernel

    def spy(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(compiled, "pixel_kernel", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            render(build_plan(config(), torch.float32, compile=False))
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
        monkeypatch.setattr(compiled, "pixel_kernel", lambda *a: 1 / 0)
        with pytest.raises(ZeroDivisionError), torch.no_grad():
            render(build_plan(config(), torch.float32, compile=False))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
