"""Dtype-aware trace tolerances against the C printout: a correct float32 trace shows no divergence (the
tolerances follow the two traces' precisions) and a 1e-5 drift of a well-conditioned factor is still named.
Unlike the drift demos these compare with the C, so a genuine drift fails them too (naming its factor)."""

from __future__ import annotations

import pytest
import torch
from perturb import CASES, traced

from nanobragg_torch.parity.compare import compare_traces


@pytest.mark.parametrize("factor", ["polar", "omega_pixel", "capture_fraction", "F_cell", "fluence"])
def test_float32_trace_names_a_1e5_drift(factor, drift):
    """Against the C printout a correct float32 trace shows no divergence (the tolerances follow the two
    traces' precisions) and a 1e-5 drift of a well-conditioned factor is still named."""
    case = CASES[factor]
    drift.case(f"pinned/{case}", "trace", "float32")
    golden, pixel, clean = traced(case, "pinned", {}, dtype=torch.float32)
    report = compare_traces(golden.c_trace(pixel), clean, ours_dtype=torch.float32)
    drift.trace(report, pixel)
    if not report.ok:
        pytest.fail(f"pinned/{case} pixel {pixel}: a correct float32 trace diverges from the C: {report.summary()}",
                    pytrace=False)
    if "float32" not in report.precision:
        pytest.fail(f"report header does not state the float32 precision: {report.precision!r}", pytrace=False)
    _, _, ours = traced(case, "pinned", {factor: 1.0 + 1e-5}, dtype=torch.float32)
    report = compare_traces(golden.c_trace(pixel), ours, ours_dtype=torch.float32)
    drift.trace(report, pixel)
    if report.first_divergent != factor:
        pytest.fail(f"pinned/{case} pixel {pixel} float32: a 1e-5 change of {factor} was named "
                    f"{report.first_divergent or 'nothing'}:\n{report.summary()}", pytrace=False)
