"""Multi-panel detectors (DetectorConfig.panels): one render of every panel, against independent expectations.

* A single CUSTOM detector cut into panels renders the same pixels (the single-detector path is the one the
  goldens check).
* The four CSPAD panel goldens (golden/cases.toml, `cspad` tag: each panel rendered by the C as a CUSTOM
  detector) rendered as ONE four-panel detector in one pass: every panel against its C golden at the
  golden tests' tolerances, both C variants.
* Refusals name the field; gradients reach per-panel origins and axes (finite differences, float64).
* Both 64-panel CSPAD models (shared data, read by io.dxtbx_models.read_detector) render cheaply.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np
import pytest
import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.config import BeamConfig, CrystalConfig, DetectorConfig, PanelConfig, SimulationConfig
from nanobragg_torch.engine import render
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.goldens import golden_dir, has_golden, load_cases, load_golden, shared_data_dir
from nanobragg_torch.plan import build_plan
from nanobragg_torch.simulate import simulate
from nanobragg_torch.trace import pixel_trace
from nanobragg_torch.validation import ConfigError

DEG = math.pi / 180.0
MM = 1e-3
CSPAD_CASES = ("cspad_p02_inner", "cspad_p10_outer", "cspad_p18_q1_rot90", "cspad_distorted_p42_tilted")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Small renders: see the `one_thread` fixture."""


def _crystal(N: float = 5.0) -> CrystalConfig:
    return CrystalConfig(cell=(80e-10, 90e-10, 100e-10, 90 * DEG, 90 * DEG, 90 * DEG),
                         misset=(10 * DEG, 20 * DEG, 30 * DEG), Na=N, Nb=N, Nc=N, default_F=100.0,
                         interpolate=False)


BEAM = BeamConfig(wavelength=1.3e-10, beam_vector=(0.0, 0.0, -1.0), polar_vector=(1.0, 0.0, 0.0))
FAST, SLOW = (1.0, 0.0, 0.0), (0.0, -1.0, 0.0)  # normal (0, 0, -1): away from the sample at z < 0


def _single(F: int, S: int, pixel: float, xclose: float, yclose: float, close: float) -> SimulationConfig:
    """A CUSTOM detector pivoting about the sample (the C's form of a panel)."""
    det = DetectorConfig(fpixels=F, spixels=S, pixel_size=pixel, convention="CUSTOM", pivot="SAMPLE",
                         fdet_vector=FAST, sdet_vector=SLOW, odet_vector=(0.0, 0.0, -1.0), Xclose=xclose,
                         Yclose=yclose, close_distance=close, oversample=2)
    return SimulationConfig(detector=det, beam=BEAM, crystal=_crystal())


def _panel(F: int, S: int, pixel: float, xclose: float, yclose: float, close: float, **kw) -> PanelConfig:
    origin = tuple(-xclose * f - yclose * s + close * o for f, s, o in zip(FAST, SLOW, (0.0, 0.0, -1.0),
                                                                             strict=True))
    return PanelConfig(origin=origin, fast_axis=FAST, slow_axis=SLOW, pixel_size=pixel, fpixels=F, spixels=S, **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_detector_cut_into_panels_renders_the_same_pixels(dtype):
    """64x64 CUSTOM detector = two 64x32 panels stacked along slow, rendered in one pass; and two panels of
    unequal size (64x40 on top of a 40x24 piece) equal the same pixels, zero where the smaller has none."""
    px, X, Y, D = 0.1 * MM, 3.0 * MM, 3.0 * MM, 50.0 * MM
    # one path for both sides (eager): a float32 compiled kernel orders its arithmetic otherwise, and whether a
    # render runs compiled depends on which packages the test cache holds
    whole = simulate(_single(64, 64, px, X, Y, D), dtype=dtype, compile=False)
    two = dataclasses.replace(_single(64, 64, px, X, Y, D),
                              detector=DetectorConfig(panels=(_panel(64, 32, px, X, Y, D),
                                                              _panel(64, 32, px, X, Y - 32 * px, D)),
                                                      oversample=2))
    stack = simulate(two, dtype=dtype, compile=False)
    assert stack.shape == (2, 32, 64)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert float((stack.reshape(64, 64) - whole).abs().max() / whole.max()) < tol
    uneven = dataclasses.replace(two, detector=DetectorConfig(panels=(
        _panel(64, 40, px, X, Y, D, name="top"), _panel(40, 24, px, X - 10 * px, Y - 40 * px, D, name="bottom"),
    ), oversample=2))
    result = render(build_plan(uneven, dtype, compile=False))
    assert result.image.shape == (2, 40, 64)
    top, bottom = result.panel_images()
    assert top.shape == (40, 64) and bottom.shape == (24, 40)
    assert float((top - whole[:40]).abs().max() / whole.max()) < tol
    assert float((bottom - whole[40:, 10:50]).abs().max() / whole.max()) < tol
    assert not bool(result.image[1, 24:].any()) and not bool(result.image[1, :, 40:].any())  # padding


def test_chunks_cross_panel_boundaries():
    """A chunk smaller than a panel row and one spanning panels give the same stack."""
    px, X, Y, D = 0.1 * MM, 1.0 * MM, 1.0 * MM, 50.0 * MM
    cfg = dataclasses.replace(_single(8, 8, px, X, Y, D), detector=DetectorConfig(
        panels=(_panel(12, 5, px, X, Y, D), _panel(7, 9, px, X + 2 * MM, Y, D)), oversample=2))
    plan = build_plan(cfg, torch.float64)
    a = render(plan, samples_per_chunk=4 * 3).image  # 3 pixels a chunk
    b = render(plan, samples_per_chunk=4 * 1000).image
    assert torch.equal(a, b)
    assert int(plan.pixel_order.numel()) == 12 * 5 + 7 * 9


# ---- the CSPAD goldens in one pass -----------------------------------------------------------------------------


def _case_config(name: str, variant: str) -> SimulationConfig:
    case = {c.name: c for c in load_cases()}[name]
    argv = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
    cfg, _ = config_from_flags(argv + (["--c-compat"] if variant == "pinned" else []), cwd=os.devnull)
    return cfg


def panel_of_case(cfg: SimulationConfig) -> PanelConfig:
    """The PanelConfig of a single CUSTOM-detector case, from the numbers of its flags: origin =
    -Xclose fdet - Yclose sdet + close_distance odet (the C's pix0 pivoting about the sample)."""
    d = cfg.detector
    f, s, o = (np.asarray(v, dtype=np.float64) for v in (d.fdet_vector, d.sdet_vector, d.odet_vector))
    f, s = f / np.linalg.norm(f), s / np.linalg.norm(s)
    o = np.cross(f, s)
    o /= np.linalg.norm(o)
    origin = -float(d.Xclose) * f - float(d.Yclose) * s + float(d.close_distance) * o
    return PanelConfig(origin=tuple(origin), fast_axis=tuple(f), slow_axis=tuple(s), pixel_size=float(d.pixel_size),
                       fpixels=d.fpixels, spixels=d.spixels)


def _dials_origin(stdout: str) -> np.ndarray:
    """The C's pix0 from its printed `dials origin= (1000 pix0_z, 1000 pix0_y, -1000 pix0_x)` (mm)."""
    z, y, mx = (float(v) for v in re.search(r"dials origin=\s*(\S+) (\S+) (\S+)", stdout).groups())
    return np.array([-mx, y, z]) * MM


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", ["pinned", "fixed"])
def test_cspad_panels_in_one_pass_match_their_c_goldens(variant, dtype, record_property):
    if not all(has_golden(n, variant) for n in CSPAD_CASES):
        pytest.skip("CSPAD goldens not present")
    cfgs = [_case_config(n, variant) for n in CSPAD_CASES]
    panels = tuple(panel_of_case(c) for c in cfgs)
    base = cfgs[0]
    for c in cfgs[1:]:  # the four cases differ only in the detector (and the clock-seeded, unused misset seed)
        crystal = dataclasses.replace(c.crystal, misset_seed=base.crystal.misset_seed)
        assert dataclasses.replace(c, detector=base.detector, crystal=crystal) == base
    multi = dataclasses.replace(base, detector=dataclasses.replace(base.detector, panels=panels, convention="MOSFLM",
                                                                   fdet_vector=None, sdet_vector=None,
                                                                   odet_vector=None, Xclose=None, Yclose=None,
                                                                   close_distance=None, pivot="BEAM"))
    goldens = [load_golden(n, variant) for n in CSPAD_CASES]
    # float64: every C-traced pixel of every panel traced in the multi-panel render, factor by factor
    traced = [(p, *px) for p, g in enumerate(goldens) for px in g.traced_pixels] if dtype == "float64" else None
    with torch.no_grad():
        result = render(build_plan(multi, torch.float64 if dtype == "float64" else torch.float32),
                        trace_pixels=traced)
    assert result.image.shape == (4, 185, 194)
    for p, s, f in traced or []:
        report = compare_traces(goldens[p].c_trace((s, f)), pixel_trace(result, (p, s, f)))
        assert report.ok, f"{CSPAD_CASES[p]} pixel {(s, f)}: {report.summary()}"
    lines = []
    for name, panel, image, golden in zip(CSPAD_CASES, panels, result.panel_images(), goldens, strict=True):
        # the panel is where the C put it: its printed pix0 (6 significant digits)
        np.testing.assert_allclose(_dials_origin(golden.stdout_text), panel.origin, rtol=0, atol=2e-6 * 0.13)
        fails, m = golden.check_image(image, dtype)
        lines.append(f"{variant}/{name} {dtype}: corr {m.get('corr', float('nan')):.10f} "
                     f"sum ratio {m.get('sum_ratio', float('nan')):.10f} max rel err {m.get('max_rel_err', -1):.3g}")
        assert not fails, f"{variant}/{name} ({dtype}): {fails}"
    record_property("panel_parity", "; ".join(lines))
    print("\n".join(lines))


# ---- refusals ---------------------------------------------------------------------------------------------------


def _two_panels(**change) -> SimulationConfig:
    px, X, Y, D = 0.1 * MM, 1.0 * MM, 1.0 * MM, 50.0 * MM
    p = _panel(8, 8, px, X, Y, D)
    bad = dataclasses.replace(p, **change)
    return dataclasses.replace(_single(8, 8, px, X, Y, D), detector=DetectorConfig(panels=(p, bad), oversample=1))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(fast_axis=(1.0, 0.1, 0.0)), "detector.panels[1].fast_axis"),
        (dict(slow_axis=(0.1, -1.0, 0.0)), "detector.panels[1].slow_axis"),
        (dict(fast_axis=(0.6, -0.8, 0.0)), "detector.panels[1].slow_axis"),  # unit, not orthogonal
        (dict(origin=(0.0, 0.0, 0.05)), "detector.panels[1].origin"),  # faces away from the sample
        (dict(pixel_size=0.0), "detector.panels[1].pixel_size"),
        (dict(fpixels=0), "detector.panels[1].fpixels"),
        (dict(origin=(0.0, float("nan"), -0.05)), "detector.panels[1].origin"),
        (dict(thickness=1e-4), "detector.panels[1].thickness"),
    ],
)
def test_bad_panels_are_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError) as err:
        build_plan(_two_panels(**change))
    assert err.value.field == field and "\n" not in str(err.value) and field in str(err.value)


@pytest.mark.parametrize(
    ("det", "field"),
    [
        (dict(curved=True), "detector.curved"),
        (dict(twotheta=0.1), "detector.twotheta"),
        (dict(rotx=0.1), "detector.rotx"),
        (dict(roi=(900, 903, 0, 3)), "detector.roi"),  # outside every panel (a window on each is accepted)
        (dict(pix0_vector=(0.0, 0.0, -0.1)), "detector.pix0_vector"),
        (dict(panels=()), "detector.panels"),
    ],
)
def test_unsupported_combinations_are_refused(det, field):
    cfg = _two_panels()
    cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, **det))
    with pytest.raises(ConfigError) as err:
        build_plan(cfg)
    assert err.value.field == field


def test_edge_on_panel_is_refused():
    cfg = _two_panels()
    cfg = dataclasses.replace(cfg, beam=dataclasses.replace(BEAM, beam_vector=(1.0, 0.0, 0.0)))
    with pytest.raises(ConfigError, match="edge-on"):
        build_plan(cfg)


def test_oversample_auto_uses_the_most_demanding_panel():
    """The C's recommended oversample ceil(3 xtal / (lambda distance / pixel)) of the largest pixel/distance."""
    px, X, Y = 0.1 * MM, 1.0 * MM, 1.0 * MM
    near, far = _panel(8, 8, px, X, Y, 20 * MM), _panel(8, 8, 2 * px, X, Y, 400 * MM)
    cfg = dataclasses.replace(_single(8, 8, px, X, Y, 20 * MM), detector=DetectorConfig(panels=(far, near)),
                              crystal=_crystal(10.0))
    plan = build_plan(cfg, torch.float64)
    xtal = 100e-10 * 10
    assert plan.oversample == math.ceil(3 * xtal / (1.3e-10 * 20 * MM / px))
    assert plan.recommended_oversample == plan.oversample


# ---- gradients to the metrology -----------------------------------------------------------------------------------


def _metrology_loss(origin: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    px = 0.2 * MM
    slow = torch.tensor(SLOW, dtype=torch.float64)
    fixed = _panel(6, 6, px, 0.2 * MM, 0.4 * MM, 40 * MM)
    moving = PanelConfig(origin=origin, fast_axis=fast, slow_axis=slow, pixel_size=px, fpixels=5, spixels=7)
    cfg = SimulationConfig(detector=DetectorConfig(panels=(fixed, moving), oversample=2), beam=BEAM,
                           crystal=dataclasses.replace(_crystal(3.0), cell=(30e-10, 40e-10, 50e-10,
                                                                            86 * DEG, 92 * DEG, 97 * DEG)))
    image = simulate(cfg, dtype=torch.float64, compile=False)
    weights = torch.rand(image.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.5
    return (image * weights).sum()


def test_gradients_reach_panel_origin_and_fast_axis():
    origin = torch.tensor([-1.1 * MM, 1.3 * MM, -40 * MM], dtype=torch.float64, requires_grad=True)
    fast = torch.tensor(FAST, dtype=torch.float64, requires_grad=True)
    loss = _metrology_loss(origin, fast)
    g_origin, g_fast = torch.autograd.grad(loss, (origin, fast))
    assert bool(torch.isfinite(g_origin).all()) and bool(torch.isfinite(g_fast).all())
    scale = float(loss.detach())
    with torch.no_grad():
        for vec, grad, h, comps in ((origin, g_origin, 1e-7, (0, 1, 2)), (fast, g_fast, 1e-7, (2,))):
            for i in comps:
                up, down = vec.detach().clone(), vec.detach().clone()
                up[i] += h
                down[i] -= h
                args_up = (up, fast.detach()) if vec is origin else (origin.detach(), up)
                args_down = (down, fast.detach()) if vec is origin else (origin.detach(), down)
                fd = float(_metrology_loss(*args_up) - _metrology_loss(*args_down)) / (2 * h)
                assert abs(float(grad[i])) * 1e-3 > scale * 1e-12, f"gradient {i} is ~0"
                assert float(grad[i]) == pytest.approx(fd, rel=1e-5), (i, float(grad[i]), fd)


# ---- the two 64-panel CSPAD models ------------------------------------------------------------------------------


@pytest.mark.needs_shared("cspad/cspad_detector.json", "cspad/distorted_cspad_detector.json")
@pytest.mark.parametrize("name", ["cspad_detector.json", "distorted_cspad_detector.json"])
def test_whole_cspad_renders_in_one_pass(name):
    from nanobragg_torch.io.dxtbx_models import read_detector

    panels, _ = read_detector(shared_data_dir() / "cspad" / name)
    assert len(panels) == 64
    cfg = SimulationConfig(detector=DetectorConfig(panels=panels, oversample=1),
                           beam=BEAM, crystal=_crystal(3.0))
    with torch.no_grad():
        image = simulate(cfg, dtype=torch.float32)
    assert image.shape == (64, 185, 194)
    assert bool(torch.isfinite(image).all()) and float(image.min()) > 0.0
    # Bragg spots on most panels: pixels far above the panel's median
    spotty = sum(int((img > 20 * img.median()).sum()) > 0 for img in image)
    assert spotty >= 48, spotty


@pytest.mark.parametrize("state", ["interpolation", "pinned_first_evaluation"])
def test_per_image_state_restarts_at_each_panel(state):
    """The C's per-image state (the one-way switch from tricubic to nearest F at the first out-of-range sample;
    the pinned C's unrotated first evaluation at phi = 0) starts anew on every panel, as in a C run of that
    panel alone: each panel of the stack equals its single-detector render (panels.panel_detector)."""
    from nanobragg_torch.config import StructureFactors
    from nanobragg_torch.panels import panel_detector

    px = 0.2 * MM
    # panel 0 at high angle (its samples leave a small HKL grid), panel 1 around the direct beam
    panels = (_panel(10, 9, px, -30.0 * MM, 0.5 * MM, 40 * MM), _panel(8, 11, px, 0.8 * MM, 1.1 * MM, 30 * MM))
    crystal = _crystal(5.0)
    c_compat = False
    if state == "interpolation":  # N = 2: the C interpolates; a small grid makes samples leave its range
        grid = np.random.default_rng(3).uniform(50, 150, size=(17, 17, 17))
        crystal = dataclasses.replace(crystal, Na=2.0, Nb=2.0, Nc=2.0, interpolate=None,
                                      structure_factors=StructureFactors(grid, -8, -8, -8, 17**3))
    else:
        crystal = dataclasses.replace(crystal, phi0=0.0, osc=0.2 * DEG, phisteps=2)
        c_compat = True
    cfg = SimulationConfig(detector=DetectorConfig(panels=panels, oversample=1), beam=BEAM, crystal=crystal,
                           c_compat=c_compat)
    plan = build_plan(cfg, torch.float64)
    assert plan.interpolate if state == "interpolation" else plan.first_eval_phi_step == 0
    stack = render(plan, samples_per_chunk=7).panel_images()
    for p, image in enumerate(stack):
        alone = simulate(dataclasses.replace(cfg, detector=panel_detector(cfg, p)), dtype=torch.float64)
        torch.testing.assert_close(image, alone, rtol=1e-12, atol=0)


def test_batch_of_orientations_over_panels():
    """simulate_batch stacks cell sets over a multi-panel detector: (B, P, S_max, F_max), each element its own
    render."""
    from nanobragg_torch.batch import simulate_batch

    px = 0.2 * MM
    cfg = SimulationConfig(detector=DetectorConfig(panels=(_panel(6, 5, px, 0.5 * MM, 0.5 * MM, 40 * MM),
                                                           _panel(4, 7, px, -1.0 * MM, 0.8 * MM, 35 * MM)),
                                                   oversample=1), beam=BEAM, crystal=_crystal(5.0))
    missets = torch.tensor([[10.0, 20.0, 30.0], [12.0, 18.0, 33.0]], dtype=torch.float64) * DEG
    images = simulate_batch(cfg, {"crystal.misset": missets}, dtype=torch.float64, vectorize=True)
    assert images.shape == (2, 2, 7, 6)
    for i in range(2):
        one = simulate(dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, misset=tuple(missets[i]))),
                       dtype=torch.float64)
        torch.testing.assert_close(images[i], one, rtol=1e-12, atol=0)


@pytest.mark.parametrize("extra", [{}, dict(oversample_omega=True, oversample_thick=True), dict(point_pixel=True)])
def test_panel_kernel_equals_general_path(extra, monkeypatch):
    """kernel == trace == image on a multi-panel plan: the fused kernel and the stateful path (evaluate_chunk)
    give the same pixels, with thick tilted panels (capture fraction per panel normal)."""
    from nanobragg_torch import engine

    px = 0.2 * MM
    tilt = (0.0, math.sin(0.2), -math.cos(0.2))  # the normal of panel 1: tilted 0.2 rad about fast
    panels = (
        _panel(6, 5, px, 0.5 * MM, 0.5 * MM, 40 * MM, thickness=100e-6, mu=2000.0),
        PanelConfig(origin=(2 * MM, 1 * MM, -38 * MM), fast_axis=FAST, slow_axis=(0.0, -math.cos(0.2), -math.sin(0.2)),
                    pixel_size=1.5 * px, fpixels=4, spixels=7, thickness=100e-6, mu=2000.0),
    )
    assert abs(float(np.dot(np.cross(FAST, panels[1].slow_axis), tilt))) > 0.99
    cfg = SimulationConfig(detector=DetectorConfig(panels=panels, oversample=2, thicksteps=2, **extra), beam=BEAM,
                           crystal=_crystal(4.0))
    plan = build_plan(cfg, torch.float64, compile=False)
    with torch.no_grad():
        image = render(plan).image
        with monkeypatch.context() as m:
            m.setattr(engine, "needs_state", lambda plan, state: True)
            ref = render(plan).image
    assert float(ref.max()) > 0
    torch.testing.assert_close(image, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_a_stack_too_large_for_memory_is_refused(monkeypatch):
    """Each panel fits the memory budget (validation sees one), the (P, S_max, F_max) stack does not."""
    monkeypatch.setenv("NB_MEMORY_LIMIT", "1000000")
    p = _panel(100, 100, 1e-4, 1e-3, 1e-3, 0.05)
    cfg = dataclasses.replace(_two_panels(), detector=DetectorConfig(panels=(p, p, p), oversample=1))
    with pytest.raises(ConfigError) as err:
        build_plan(cfg)
    assert err.value.field == "detector.panels" and "3x100x100 panel stack" in str(err.value)
