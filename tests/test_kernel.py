"""The fused pixel kernel (kernel.py) against the engine's stateful path, and its compiled forms (compiled.py).

The stateful path (engine.evaluate_chunk: the same stages with the C's per-image state, in the C's sample
order) is the one traces take; the fused kernel must give the same pixels in every switch of KernelSpec:
float64 to 1e-12 eager, and compiled (AOTInductor package, torch.compile) to the rounding of vectorized
transcendental functions.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from nanobragg_torch import compiled, engine
from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.compiled import KernelRunner, choose_mode, package_path
from nanobragg_torch.engine import render
from nanobragg_torch.kernel import INDEX_FIELDS
from nanobragg_torch.parity.goldens import golden_dir, load_cases, shared_data_dir
from nanobragg_torch.plan import build_plan

BASE = "-cell 70 80 90 75 85 95 -misset 10 20 30 -N 4 -default_F 100 -lambda 1 -distance 60 -detpixels 24 -pixel 0.4"
# every switch of KernelSpec, and every sample axis longer than one
SWITCHES = {
    "square": "",
    "round": "-round_xtal",
    "gauss": "-gauss_xtal",
    "tophat": "-tophat_spots -fudge 2",
    "n_inactive": "-Na 1 -Nb 3 -Nc 5",
    "curved": "-curved_det",
    "point_pixel": "-point_pixel",
    "thick": "-detector_thick 200 -detector_thicksteps 3 -detector_abs 300",
    "dmin": "-dmin 4 -divergence 0.3 -divsteps 3",
    "nopolar": "-nopolar",
    "kahn": "-polar 0.9",
    "oversample_polar": "-oversample_polar -oversample 2 -dispersion 5 -dispsteps 3",
    "oversample_thick_omega": "-oversample_thick -oversample_omega -oversample 2 -detector_thick 100 "
    "-detector_thicksteps 2",
    "mosaic_phi": "-mosaic 1 -mosaic_domains 4 -phi 5 -osc 2 -phisteps 3",
    "oversample_sources": "-oversample 3 -hdivrange 0.2 -vdivrange 0.2 -hdivsteps 2 -vdivsteps 2 -dispersion 2 "
    "-dispsteps 2",
}


def plan_for(flags: str, dtype=torch.float64, compile=False, extra: list[str] | None = None):
    cfg, _ = config_from_flags(flags.split() + (extra or []), cwd=os.devnull)
    return build_plan(cfg, dtype, "cpu", compile=compile)


def general_image(plan, monkeypatch) -> torch.Tensor:
    """The image by the engine's stateful path (engine.evaluate_chunk for every chunk)."""
    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(engine, "needs_state", lambda plan, state: True)
        return render(plan).image


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Small renders: see the `one_thread` fixture."""


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_kernel_equals_general_path(name, monkeypatch):
    plan = plan_for(f"{BASE} {SWITCHES[name]}")
    assert plan.kernel.mode == "eager" and not plan.interpolate
    with torch.no_grad():
        image = render(plan).image
    ref = general_image(plan, monkeypatch)
    assert ref.max() > 0
    torch.testing.assert_close(image, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_switches_cover_every_spec_field():
    specs = [plan_for(f"{BASE} {flags}").kernel.spec for flags in SWITCHES.values()]
    assert {s.shape for s in specs} == {"SQUARE", "ROUND", "GAUSS", "TOPHAT"}
    assert {s.polar for s in specs} == {"off", "pixel", "sample"}
    for field in ("curved", "point_pixel", "thick_on", "dmin_on", "oversample_thick", "oversample_omega"):
        assert {getattr(s, field) for s in specs} == {False, True}, field
    assert any(not all(s.N_active) for s in specs)


def _small_golden_cases():
    out = []
    for case in load_cases():
        if case.full or any(not (shared_data_dir() / rel).exists() for rel in case.shared_files()):
            continue
        out.append(pytest.param(case, id=case.name))
    return out


@pytest.mark.parametrize("case", _small_golden_cases())
def test_kernel_equals_general_path_on_golden_cases(case, monkeypatch):
    """Every small golden case whose pixels the kernel renders (no interpolation or c_compat state)."""
    cfg, _ = config_from_flags(case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()), cwd=os.devnull)
    plan = build_plan(cfg, torch.float64, "cpu", compile=False)
    if plan.interpolate:
        pytest.skip("interpolated F: only the stateful path renders it (the fused kernel has no tricubic)")
    with torch.no_grad():
        image = render(plan).image
    ref = general_image(plan, monkeypatch)
    torch.testing.assert_close(image, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()) + 1e-300)


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory):
    old = os.environ.get("NB_KERNEL_CACHE")
    os.environ["NB_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernels"))
    yield
    if old is None:
        os.environ.pop("NB_KERNEL_CACHE")
    else:
        os.environ["NB_KERNEL_CACHE"] = old


AOT_CASES = {
    # HKL grid, several sources, phi steps and domains: every dynamic axis
    "grid_sources_mosaic": ("-hkl {inputs}/p1_h4.hkl -mosaic 1 -mosaic_domains 3 -phisteps 2 -osc 1 -dispersion 2 "
                            "-dispsteps 2"),
    # the rare switches together
    "curved_thick_dmin_polar": ("-curved_det -detector_thick 100 -detector_thicksteps 2 -dmin 3 -oversample 2 "
                                "-oversample_polar -round_xtal"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(AOT_CASES))
def test_aot_package_equals_eager(name, kernel_cache):
    """Built once into the cache, loaded by a fresh runner, equal to the eager kernel; chunks of 1 pixel too."""
    flags = f"{BASE} {AOT_CASES[name]}".replace("{inputs}", str(golden_dir() / "inputs"))
    truth = render(plan_for(flags)).image  # float64 eager
    scale = float(truth.abs().max())
    for dtype in (torch.float64, torch.float32):
        plan = plan_for(flags, dtype, compile=True)
        assert plan.kernel.mode == "aot"
        path = package_path(plan.kernel.spec, plan.kernel.inputs)
        with torch.no_grad():
            image = render(plan, samples_per_chunk=7 * plan.samples_per_pixel).image  # a short last chunk
            one = plan.kernel(plan.pixel_order[5:6])[0][0]
        assert path.exists()
        built = path.stat().st_mtime_ns
        eager = render(plan_for(flags, dtype)).image
        if dtype == torch.float64:
            torch.testing.assert_close(image, eager, rtol=1e-12, atol=1e-12 * scale)
            torch.testing.assert_close(one, eager.reshape(-1)[5], rtol=1e-12, atol=1e-12 * scale)
        else:  # vectorized sin/exp round differently: no less accurate than eager float32
            err_eager = float((eager.double() - truth).abs().max())
            err_aot = float((image.double() - truth).abs().max())
            assert err_aot <= 2.0 * err_eager + 1e-7 * scale, (err_aot, err_eager, scale)
            assert abs(float(one) - float(truth.reshape(-1)[5])) <= 2.0 * err_eager + 1e-7 * scale
        # a later plan (or process) of the same variant loads the package instead of building it
        again = plan_for(flags, dtype, compile=None)
        assert again.kernel.mode == "aot"
        t0 = time.perf_counter()
        with torch.no_grad():
            render(again)
        assert path.stat().st_mtime_ns == built
        assert time.perf_counter() - t0 < 5.0


@pytest.mark.slow
def test_jit_gradients_equal_eager(kernel_cache):
    """With gradients a compiled plan runs torch.compile: same image and gradient as eager. (torch.compile has
    no double backward: second derivatives need compile=False, which small renders get by default.)"""
    cfg, _ = config_from_flags(f"{BASE} -mosaic 1 -mosaic_domains 2".split(), cwd=os.devnull)
    distance = torch.tensor(cfg.detector.distance, dtype=torch.float64, requires_grad=True)

    def grad(compile):
        from dataclasses import replace

        c = replace(cfg, detector=replace(cfg.detector, distance=distance))
        plan = build_plan(c, torch.float64, "cpu", compile=compile)
        image = render(plan).image
        (g,) = torch.autograd.grad(image.sum(), distance)
        return image.detach(), g, (plan.kernel.mode, plan.kernel.grad_mode)

    img_e, g_e, mode_e = grad(False)
    img_c, g_c, mode_c = grad(True)
    assert (mode_e, mode_c) == (("eager", "eager"), ("aot", "jit"))
    torch.testing.assert_close(img_c, img_e, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_c, g_e, rtol=1e-10, atol=0)
    assert float(g_e) != 0.0


def test_cached_package_keeps_small_gradient_renders_eager(monkeypatch, tmp_path):
    """A package in the cache speeds up renders without gradients only: with gradients a small plan stays
    eager (no torch.compile, and double backward works)."""
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("NB_COMPILE", raising=False)
    plain = plan_for(BASE)
    path = package_path(plain.kernel.spec, plain.kernel.inputs)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # "cached": never loaded below, since every call needs gradients
    cfg, _ = config_from_flags(BASE.split(), cwd=os.devnull)
    from dataclasses import replace

    distance = torch.tensor(cfg.detector.distance, dtype=torch.float64, requires_grad=True)
    plan = build_plan(replace(cfg, detector=replace(cfg.detector, distance=distance)), torch.float64, "cpu")
    assert (plan.kernel.mode, plan.kernel.grad_mode) == ("aot", "eager")
    (g,) = torch.autograd.grad(render(plan).image.sum(), distance, create_graph=True)
    (h,) = torch.autograd.grad(g, distance)
    assert torch.isfinite(h) and float(g.detach()) != 0.0


def test_choose_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.delenv("NB_COMPILE", raising=False)
    plan = plan_for(BASE)
    spec, inputs = plan.kernel.spec, plan.kernel.inputs
    assert choose_mode(spec, inputs, None, 10, 100) == ("eager", "eager")
    assert choose_mode(spec, inputs, None, 1000, 100) == ("aot", "jit")
    assert choose_mode(spec, inputs, False, 1000, 100) == ("eager", "eager")
    assert choose_mode(spec, inputs, True, 10, 100) == ("aot", "jit")
    path = package_path(spec, inputs)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    # a cached package is loaded whatever the size; with gradients a small render stays eager (no torch.compile)
    assert choose_mode(spec, inputs, None, 10, 100) == ("aot", "eager")
    monkeypatch.setenv("NB_COMPILE", "0")
    assert choose_mode(spec, inputs, None, 1000, 100) == ("eager", "eager")
    monkeypatch.setenv("NB_COMPILE", "1")
    assert choose_mode(spec, inputs, False, 10, 100) == ("aot", "jit")


def test_package_names_follow_variant(monkeypatch, tmp_path):
    """One package per (spec, unit axes, dtype, device); a different kernel source is a different folder."""
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    a = plan_for(BASE)
    b = plan_for(f"{BASE} -mosaic 1 -mosaic_domains 3")
    c = plan_for(BASE, torch.float32)
    d = plan_for(f"{BASE} -detpixels 40 -distance 80")  # same variant: image size and geometry are inputs
    paths = [package_path(p.kernel.spec, p.kernel.inputs) for p in (a, b, c, d)]
    assert len({paths[0], paths[1], paths[2]}) == 3 and paths[0] == paths[3]
    assert paths[0].parent.parent == tmp_path
    monkeypatch.setattr(compiled, "_DIGEST", lambda: "edited")
    assert package_path(a.kernel.spec, a.kernel.inputs).parent != paths[0].parent


def test_kernel_inputs_follow_plan_dtype_and_device():
    """Render dtype everywhere except the index geometry of a precise_hkl float32 plan, which stays float64."""
    cfg, _ = config_from_flags(BASE.split(), cwd=os.devnull)
    for dtype, precise in ((torch.float32, False), (torch.float32, True), (torch.float64, True)):
        plan = build_plan(cfg, dtype, "cpu", compile=False, precise_hkl=precise)
        inputs = plan.kernel.inputs
        assert plan.kernel.spec.precise_hkl == (precise and dtype == torch.float32)
        for name, t in zip(inputs._fields, inputs, strict=True):
            assert t.device == plan.device, name
            if t.is_floating_point():
                want = torch.float64 if name in INDEX_FIELDS and plan.kernel.spec.precise_hkl else dtype
                assert t.dtype == want, name
        assert isinstance(plan.kernel, KernelRunner)


def test_failed_build_falls_back_to_eager(monkeypatch, tmp_path):
    """Without a working compiler the render still succeeds (eager), with one warning."""
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(compiled, "build_package", broken)
    plan = plan_for(BASE, compile=True)
    with pytest.warns(RuntimeWarning, match="no compiler"), torch.no_grad():
        image = render(plan).image
    assert plan.kernel.mode == "eager"
    torch.testing.assert_close(image, render(plan_for(BASE)).image, rtol=0, atol=0)


def test_failed_jit_falls_back_to_eager(monkeypatch):
    """torch.compile failing (e.g. no triton on a GPU) leaves an eager render and one warning."""

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no backend")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    plan = plan_for(BASE)
    plan.kernel.mode = plan.kernel.grad_mode = "jit"
    with pytest.warns(RuntimeWarning, match="no backend"), torch.no_grad():
        image = render(plan).image
    assert plan.kernel.mode == "eager"
    torch.testing.assert_close(image, render(plan_for(BASE)).image, rtol=0, atol=0)


@pytest.mark.slow
def test_aot_package_serves_other_plans_of_its_variant(kernel_cache):
    """A package built for one plan renders another plan of the same variant correctly: other sample counts,
    and inputs that the set-up produced with other strides (mosaic cells come out transposed)."""
    phi_only = plan_for(f"{BASE} -phi 0 -osc 3 -phisteps 3")
    mosaic_only = plan_for(f"{BASE} -mosaic 1 -mosaic_domains 5 -detpixels 20")
    assert package_path(phi_only.kernel.spec, phi_only.kernel.inputs) == package_path(
        mosaic_only.kernel.spec, mosaic_only.kernel.inputs
    )
    compiled_plans = [plan_for(f"{BASE} -phi 0 -osc 3 -phisteps 3", compile=True),
                      plan_for(f"{BASE} -mosaic 1 -mosaic_domains 5 -detpixels 20", compile=True)]
    for eager, plan in zip((phi_only, mosaic_only), compiled_plans, strict=True):
        with torch.no_grad():
            image = render(plan).image
            ref = render(eager).image
        assert plan.kernel.mode == "aot"
        torch.testing.assert_close(image, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


PRECISION_STRESS = "prec_n100_flat"  # golden: N = 100 at 0.31 A, 350 A cell, -oversample 4 (64 x 64 ROI)


def test_precise_indices_are_chosen_where_the_transform_is_sharp():
    """kernel.index_phase_error picks float64 indices for the precision-stress goldens, not for a small N."""
    case = {c.name: c for c in load_cases()}[PRECISION_STRESS]
    cfg, _ = config_from_flags(case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()), cwd=os.devnull)
    assert build_plan(cfg, torch.float32, compile=False).kernel.spec.precise_hkl
    assert not plan_for(BASE, torch.float32).kernel.spec.precise_hkl
    assert not build_plan(cfg, torch.float64, compile=False).kernel.spec.precise_hkl  # already float64


def test_float32_indices_fail_the_precision_goldens_and_precise_ones_pass():
    """The precision-stress golden does stress float32: plain float32 indices miss the upstream gate (image sum
    1.7 % low), the automatic float64 indices meet it."""
    from nanobragg_torch.parity.goldens import load_golden

    case = {c.name: c for c in load_cases()}[PRECISION_STRESS]
    golden = load_golden(case, "fixed")
    cfg, _ = config_from_flags(case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()), cwd=os.devnull)
    results = {}
    for precise in (False, None):
        with torch.no_grad():
            image = render(build_plan(cfg, torch.float32, compile=False, precise_hkl=precise)).image
        results[precise] = golden.check_image(image.double(), "float32")
    assert results[False][0], f"plain float32 unexpectedly passes: {results[False][1]}"
    assert not results[None][0], results[None]
