"""Drift demonstration: perturb one factor of the pipeline (the `perturb` fixture wraps kernel.py's factor
functions) and check that the comparer, run against the C golden's printout, names exactly that factor as the
first divergent one."""

from __future__ import annotations

import os

import pytest
import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import build_plan, render
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.goldens import golden_dir, load_golden, shared_data_dir
from nanobragg_torch.trace import pixel_trace


def _trace(case: str, variant: str, extra: tuple[str, ...] = ()):
    golden = load_golden(case, variant)
    argv = golden.case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()) + list(extra)
    if variant == "pinned":
        argv.append("--c-compat")
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    plan = build_plan(cfg, torch.float64)
    pixel = golden.traced_pixels[0]
    with torch.no_grad():
        result = render(plan, trace_pixels=[pixel])
    return compare_traces(golden.c_trace(pixel), pixel_trace(result, pixel))


@pytest.mark.parametrize(
    "case,hook,factor",
    [
        ("mosflm_default", "polar", "polar"),
        ("mosflm_default", "omega_pixel", "omega_pixel"),
        ("detector_thick", "capture_fraction", "capture_fraction"),
        ("mat_triclinic_hkl", "F_cell", "F_cell"),
        ("mosflm_default", "F_latt", "F_latt"),
        ("mosflm_default", "I_before_scaling", "I_before_scaling"),
    ],
)
def test_perturbed_factor_is_first_divergent(case, hook, factor, perturb):
    variant = "pinned"
    assert _trace(case, variant).ok  # unperturbed: no drift
    perturb(hook, 1.0 + 1e-5)
    report = _trace(case, variant)
    assert report.first_divergent == factor, report.summary()


def test_beam_centre_shift_is_a_geometry_drift():
    """-Xbeam moved by 0.01 pixel (2 micron): the first divergent factor is in the geometry group."""
    report = _trace("mosflm_beam_center_rect", "pinned", ("-Xbeam", "11.302"))
    assert report.first_divergent in ("pix0_vector", "Fbeam", "Sbeam"), report.summary()
    assert report.drifts[0].group == "geometry"
