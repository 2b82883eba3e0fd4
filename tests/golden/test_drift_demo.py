"""Drift demonstrations: perturb one factor inside the engine and check that the trace comparison names
exactly that factor as the first divergent one.

Each demo compares the perturbed trace with our own unperturbed trace of the same case, dtype and pixel (a
reference that only the perturbation changes), so a genuine drift elsewhere does not make a demo fail: the
golden tests report that. Every perturbation goes through ``perturb.traced`` (tests/golden/perturb.py,
the one place that knows how the engine is perturbed).
"""

from __future__ import annotations

import pytest
from perturb import CASES, traced

from nanobragg_torch.parity.compare import compare_traces

FACTORS = ("polar", "omega_pixel", "capture_fraction", "F_cell", "F_latt", "I_before_scaling", "fluence")


@pytest.mark.parametrize("factor", FACTORS)
def test_perturbed_factor_is_first_divergent(factor, drift):
    case = CASES[factor]
    drift.case(f"pinned/{case}", "demo")
    _, pixel, reference = traced(case, "pinned", {})
    _, _, ours = traced(case, "pinned", {factor: 1.0 + 1e-5})
    report = compare_traces(reference, ours)
    drift.trace(report, pixel)
    if report.first_divergent != factor:
        pytest.fail(f"drift demo pinned/{case} pixel {pixel}: a 1e-5 change of {factor} was named "
                    f"{report.first_divergent or 'nothing'}:\n{report.summary()}", pytrace=False)


def test_beam_centre_shift_is_a_geometry_drift(drift):
    """-Xbeam moved by 0.01 pixel (2 micron): the first divergent factor is in the geometry group."""
    drift.case("pinned/mosflm_beam_center_rect", "demo")
    _, pixel, reference = traced("mosflm_beam_center_rect", "pinned", {})
    _, _, ours = traced("mosflm_beam_center_rect", "pinned", {}, ("-Xbeam", "11.302"))
    report = compare_traces(reference, ours)
    drift.trace(report, pixel)
    first = report.first
    if first is None or first.group != "geometry" or first.name not in ("pix0_vector", "Fbeam", "Sbeam"):
        pytest.fail(f"drift demo pinned/mosflm_beam_center_rect pixel {pixel}: a 2 micron beam-centre shift was "
                    f"named {report.first_divergent or 'nothing'}:\n{report.summary()}", pytrace=False)
