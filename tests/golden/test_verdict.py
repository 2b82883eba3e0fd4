"""The verdict's blind spots (tests/golden/verdict.py): a kernel-only drift is named by the kernel's own
factors, a change in the kept divergence sources is named `sources`, a worst pixel outside -roi is reported
instead of raising."""

from __future__ import annotations

import os

import pytest
import torch
from perturb import perturbed, traced
from verdict import verdict

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.goldens import golden_dir, load_golden, shared_data_dir
from nanobragg_torch.plan import build_plan
from nanobragg_torch.trace import LOCATION_KEYS, is_rendered, kernel_trace, pixel_trace


class _Note:
    """A stand-in for the drift fixture that keeps what the verdict recorded."""

    def __init__(self):
        self.factor = None

    def trace(self, report, pixel):
        if self.factor is None and not report.ok:
            self.factor = report.first_divergent

    def verdict(self, factor, pixel=None, rel=None, change=""):
        self.factor = factor


def _rendered(name: str, variant: str = "pinned"):
    golden = load_golden(name, variant)
    argv = golden.case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
    cfg, _ = config_from_flags(argv + (["--c-compat"] if variant == "pinned" else []), cwd=os.devnull)
    plan = build_plan(cfg, torch.float64, compile=False)
    with torch.no_grad():
        return golden, plan, render(plan, trace_pixels=golden.traced_pixels)


def test_kernel_debug_entry_is_the_kernel():
    """Unperturbed, the fused kernel's factors of a pixel equal the general path's, and its value the image's."""
    golden, plan, result = _rendered("mosflm_default")
    p = golden.traced_pixels[0]
    general, kernel = pixel_trace(result, p), kernel_trace(plan, p)
    report = compare_traces(general, kernel, factors=[k for k in general if k not in LOCATION_KEYS])
    assert report.ok, report.summary()
    assert kernel["I_pixel_final"] == pytest.approx(float(result.image[p]), rel=1e-12)


def test_kernel_only_drift_is_named_by_the_kernel():
    """A polarization bug in the fused kernel only: the traces agree with the C but the image does not; the
    verdict names polar and the fused kernel, not I_pixel_final."""
    golden, plan, _ = _rendered("mosflm_default")
    with perturbed({"polar": 1.0 + 1e-5}, "kernel"), torch.no_grad():
        result = render(plan, trace_pixels=golden.traced_pixels)
        note = _Note()
        text = verdict(golden, plan, result, note)
    assert "fused kernel" in text and "gets polar wrong" in text, text
    assert note.factor == "polar (fused kernel)"


def test_kept_sources_change_is_named_sources():
    """Which divergence sources are kept (-square_div instead of the round trim of div_round) is named
    `sources`, not a later factor such as stol."""
    golden, pixel, ours = traced("div_round", "pinned", {}, extra=("-square_div",))
    report = compare_traces(golden.c_trace(pixel), ours)
    assert report.first_divergent == "sources", report.summary()
    _, _, same = traced("div_round", "pinned", {})
    assert compare_traces(golden.c_trace(pixel), same).ok


def test_worst_pixel_outside_the_roi_is_reported_not_traced():
    golden, plan, result = _rendered("roi")
    outside = (0, 0)
    assert not is_rendered(plan, outside) and is_rendered(plan, golden.traced_pixels[0])
    note = _Note()
    text = verdict(golden, plan, result, note, worst_pixel=outside)
    assert "outside -roi or masked" in text and "(0, 0)" in text, text
    assert note.factor == "pixel not rendered"
    with pytest.raises(ValueError, match="not rendered"):
        kernel_trace(plan, outside)
