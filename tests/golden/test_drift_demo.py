"""Drift demonstrations: perturb one factor inside the engine and check that the trace comparison names
exactly that factor as the first divergent one.

Each demo compares the perturbed trace with our own unperturbed trace of the same case, dtype and pixel (a
reference that only the perturbation changes), so a genuine drift elsewhere does not make a demo fail: the
golden tests report that. Every perturbation goes through :func:`perturbed` (the one place that knows how
the engine is perturbed). The float32 tests check the dtype-aware tolerances against the C printout.
"""

from __future__ import annotations

import os

import pytest
import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import Plan, build_plan, render
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.goldens import golden_dir, load_golden, shared_data_dir
from nanobragg_torch.trace import pixel_trace

FACTORS = ("polar", "omega_pixel", "capture_fraction", "F_cell", "F_latt", "I_before_scaling", "fluence")


def perturbed(plan: Plan, factors: dict[str, float]) -> Plan:
    """``plan`` with each named factor multiplied by its value (the engine's test-only perturbation hooks;
    "fluence" scales the plan's fluence)."""
    for name, scale in factors.items():
        if name == "fluence":
            plan.fluence = plan.fluence * scale
        else:
            plan.hooks[name] = plan.hooks.get(name, 1.0) * scale
    return plan


def _trace(case: str, variant: str, factors: dict[str, float], extra: tuple[str, ...] = (), dtype=torch.float64):
    golden = load_golden(case, variant)
    argv = golden.case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()) + list(extra)
    if variant == "pinned":
        argv.append("--c-compat")
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    plan = perturbed(build_plan(cfg, dtype), factors)
    pixel = golden.traced_pixels[0]
    with torch.no_grad():
        result = render(plan, trace_pixels=[pixel])
    return golden, pixel, pixel_trace(result, pixel)


CASES = {
    "polar": "mosflm_default",
    "omega_pixel": "mosflm_default",
    "capture_fraction": "detector_thick",
    "F_cell": "mat_triclinic_hkl",
    "F_latt": "mosflm_default",
    "I_before_scaling": "mosflm_default",
    "fluence": "mosflm_default",
}


@pytest.mark.parametrize("factor", FACTORS)
def test_perturbed_factor_is_first_divergent(factor, drift):
    case = CASES[factor]
    drift.case(f"pinned/{case}", "demo")
    _, pixel, reference = _trace(case, "pinned", {})
    _, _, ours = _trace(case, "pinned", {factor: 1.0 + 1e-5})
    report = compare_traces(reference, ours)
    drift.trace(report, pixel)
    assert report.first_divergent == factor, (
        f"drift demo pinned/{case} pixel {pixel}: a 1e-5 change of {factor} was named "
        f"{report.first_divergent or 'nothing'}:\n{report.summary()}"
    )


def test_beam_centre_shift_is_a_geometry_drift(drift):
    """-Xbeam moved by 0.01 pixel (2 micron): the first divergent factor is in the geometry group."""
    drift.case("pinned/mosflm_beam_center_rect", "demo")
    _, pixel, reference = _trace("mosflm_beam_center_rect", "pinned", {})
    _, _, ours = _trace("mosflm_beam_center_rect", "pinned", {}, ("-Xbeam", "11.302"))
    report = compare_traces(reference, ours)
    drift.trace(report, pixel)
    first = report.first
    assert first is not None and first.group == "geometry" and first.name in ("pix0_vector", "Fbeam", "Sbeam"), (
        f"drift demo pinned/mosflm_beam_center_rect pixel {pixel}: a 2 micron beam-centre shift was named "
        f"{report.first_divergent or 'nothing'}:\n{report.summary()}"
    )


@pytest.mark.parametrize("factor", ["polar", "omega_pixel", "capture_fraction", "F_cell", "fluence"])
def test_float32_trace_names_a_1e5_drift(factor, drift):
    """Against the C printout a correct float32 trace shows no divergence (the tolerances follow the two
    traces' precisions) and a 1e-5 drift of a well-conditioned factor is still named."""
    case = CASES[factor]
    drift.case(f"pinned/{case}", "trace", "float32")
    golden, pixel, clean = _trace(case, "pinned", {}, dtype=torch.float32)
    report = compare_traces(golden.c_trace(pixel), clean, ours_dtype=torch.float32)
    drift.trace(report, pixel)
    assert report.ok, f"pinned/{case} pixel {pixel}: a correct float32 trace diverges from the C: {report.summary()}"
    assert "float32" in report.precision
    _, _, ours = _trace(case, "pinned", {factor: 1.0 + 1e-5}, dtype=torch.float32)
    report = compare_traces(golden.c_trace(pixel), ours, ours_dtype=torch.float32)
    drift.trace(report, pixel)
    assert report.first_divergent == factor, (
        f"pinned/{case} pixel {pixel} float32: a 1e-5 change of {factor} was named "
        f"{report.first_divergent or 'nothing'}:\n{report.summary()}"
    )
