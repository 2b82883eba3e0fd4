"""Pixel traces read as a user reads them: the seed's Pilatus 6M pixel, its order (slow, fast) against the
C's (fast, slow), and the scaling factors as live numbers whose product is the image's pixel.

TestScalingTrace renders the seed's Pilatus 6M command (golden case full_pilatus6m: -nonoise,
-pix0_vector_mm, A.mat and scaled.hkl from ../shared/data; skipped without them), float64, once per module,
in the 355 x 355 window that holds both pixels (-roi: the full 6M render takes minutes on two shared cores).
"""

from __future__ import annotations

import math

import pytest
import torch

from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.constants import R_E_SQR
from nanobragg_torch.engine import render
from nanobragg_torch.parity.goldens import get_case, has_golden, load_golden, shared_data_dir
from nanobragg_torch.plan import build_plan
from nanobragg_torch.trace import DARK_FRACTION, dark_note, order_note, pixel_trace

SEED_PIXEL = (685, 1039)  # the seed's pixel as (slow, fast): nearly dark; the C's -printout_pixel 1039 685
SPOT = (1039, 685)  # the same numbers in the C's (fast, slow) order, as (slow, fast): the image's brightest
SCALING = ("I_before_scaling", "polar", "capture_fraction", "omega_pixel", "I_pixel_final")
PILATUS_FILES = ("pilatus_6m/A.mat", "pilatus_6m/scaled.hkl")


@pytest.fixture(scope="module")
def pilatus():
    """(cfg, float64 render of the window -roi 685 1039 685 1039 (fast, slow: it holds both pixels), tracing
    the seed pixel and the spot). Eager: no minute-long kernel build in a clean checkout."""
    argv = get_case("full_pilatus6m").argv(shared=shared_data_dir())
    assert "-nonoise" in argv and "-pix0_vector_mm" in argv
    lo, hi = sorted(SEED_PIXEL)
    cfg, _ = config_from_flags([*argv, "-roi", str(lo), str(hi), str(lo), str(hi)])
    with torch.no_grad():
        result = render(build_plan(cfg, torch.float64, "cpu", compile=False), trace_pixels=[SEED_PIXEL, SPOT])
    return cfg, result


@pytest.mark.needs_shared(*PILATUS_FILES)
class TestScalingTrace:
    def test_scaling_trace_matches_physics(self, pilatus):
        cfg, result = pilatus
        image = result.image
        flat = int(torch.argmax(image))
        assert (flat // image.shape[1], flat % image.shape[1]) == SPOT, "the spot is the brightest rendered pixel"
        case = get_case("full_pilatus6m")
        if has_golden(case, "pinned"):  # and the whole image's brightest, by the C's own "max" trace
            assert list(SPOT) in [list(p) for p in load_golden(case, "pinned").traced_pixels]
        for pixel in (SEED_PIXEL, SPOT):
            trace = pixel_trace(result, pixel)
            for name in SCALING:
                assert math.isfinite(trace[name]), f"{pixel} {name} = {trace[name]}"
            assert trace["I_before_scaling"] > 0 and trace["omega_pixel"] > 0 and trace["I_pixel_final"] > 0
            assert 0 < trace["polar"] < 1 and trace["capture_fraction"] == 1.0  # no -detector_thick
            # the factors from the geometry, independently: solid angle of a flat pixel, Kahn factor with K = 0
            R = math.dist(trace["pixel_pos"], (0, 0, 0))
            pixel_size = cfg.detector.pixel_size
            assert trace["omega_pixel"] == pytest.approx(pixel_size**2 / R**2 * trace["close_distance"] / R,
                                                         rel=1e-12)
            diffracted = [c / R for c in trace["pixel_pos"]]
            cos2t = sum(i * d for i, d in zip(trace["incident"], diffracted, strict=True))
            assert cfg.beam.polarization == 0.0
            assert trace["polar"] == pytest.approx(0.5 * (1 + cos2t**2), rel=1e-12)
            # I_pixel_final: the product of the scaling factors (oversample 1: one sub-pixel), and the image's
            product = (trace["I_before_scaling"] * R_E_SQR * trace["fluence"] / trace["steps"] * trace["polar"]
                       * trace["capture_fraction"] * trace["omega_pixel"])
            assert trace["I_pixel_final"] == pytest.approx(product, rel=1e-12)
            assert trace["I_pixel_final"] == float(image[pixel])
        # the seed's numbers read as (slow, fast) land between spots: the trace says so
        peak = float(image.max())
        assert dark_note(float(image[SEED_PIXEL]), peak) is not None
        assert dark_note(float(image[SPOT]), peak) is None


def test_order_note_gives_the_c_command():
    assert order_note(685, 1039).endswith("-printout_pixel 1039 685")
    assert "(slow, fast)" in order_note(1, 2) and "(fast, slow)" in order_note(1, 2)


def test_dark_note_threshold():
    assert dark_note(0.0, 10.0) is not None and dark_note(0.0, 0.0) is not None
    assert dark_note(DARK_FRACTION * 10.0, 10.0) is None


BASE = ["-cell", "100", "100", "100", "90", "90", "90", "-N", "5", "-default_F", "100", "-lambda", "1",
        "-distance", "100", "-detpixels", "40", "-pixel", "0.5", "-misset", "10", "20", "30"]


def test_cli_trace_states_order_and_flags_a_dark_pixel(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*BASE, "-trace_pixel", "0", "0"]) == 0
    out = capsys.readouterr().out
    assert order_note(0, 0) in out
    assert "nearly dark" in out


def test_trace_tool_c_order(tmp_path):
    """tools/trace_pixel.py --c-order takes the C's (fast, slow) and prints the C command for the pixel."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "trace_pixel.py"
    run = subprocess.run([sys.executable, str(tool), "--c-order", "--pixel", "5", "3", "--", *BASE],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\nTRACE_PY: pixel 3 5\n" in run.stdout
    assert "-printout_pixel 5 3" in run.stderr.splitlines()[-1]
