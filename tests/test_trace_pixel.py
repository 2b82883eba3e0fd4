"""Pixel traces read as a user reads them: the seed's Pilatus 6M pixel, its order (slow, fast) against the
C's (fast, slow), and the scaling factors as live numbers whose product is the image's pixel.

TestScalingTrace renders the seed's Pilatus 6M command (golden case full_pilatus6m: -nonoise,
-pix0_vector_mm, A.mat and scaled.hkl from ../shared/data; skipped without them), float64, once per module.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.config import R_E_SQR
from nanobragg_torch.engine import build_plan, render
from nanobragg_torch.parity.goldens import get_case, shared_data_dir
from nanobragg_torch.trace import DARK_FRACTION, dark_note, order_note, pixel_trace

SEED_PIXEL = (685, 1039)  # (slow, fast); the C's -printout_pixel 1039 685
SCALING = ("I_before_scaling", "polar", "capture_fraction", "omega_pixel", "I_pixel_final")
PILATUS_FILES = ("pilatus_6m/A.mat", "pilatus_6m/scaled.hkl")


def _one_pixel(cfg, pixel: tuple[int, int]):
    """The pixel rendered alone (-roi on it) with its trace: the same per-pixel evaluation as the full image."""
    s, f = pixel
    alone = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, roi=(f, f, s, s)))
    with torch.no_grad():
        result = render(build_plan(alone, torch.float64, "cpu"), trace_pixel=pixel)
    return pixel_trace(result), float(result.image[pixel])


@pytest.fixture(scope="module")
def pilatus():
    """(cfg, full float64 image with the seed pixel's trace, brightest pixel (slow, fast))."""
    argv = get_case("full_pilatus6m").argv(shared=shared_data_dir())
    assert "-nonoise" in argv and "-pix0_vector_mm" in argv
    cfg, _ = config_from_flags(argv)
    with torch.no_grad():
        result = render(build_plan(cfg, torch.float64, "cpu"), trace_pixel=SEED_PIXEL)
    image = result.image
    flat = int(torch.argmax(image))
    brightest = (flat // image.shape[1], flat % image.shape[1])
    return cfg, result, brightest


@pytest.mark.needs_shared(*PILATUS_FILES)
class TestScalingTrace:
    def test_scaling_trace_matches_physics(self, pilatus):
        cfg, result, brightest = pilatus
        image = result.image
        seed = (pixel_trace(result), float(image[SEED_PIXEL]))
        traces = {SEED_PIXEL: seed, brightest: _one_pixel(cfg, brightest)}
        for pixel, (trace, value) in traces.items():
            for name in SCALING:
                assert math.isfinite(trace[name]), f"{pixel} {name} = {trace[name]}"
            assert trace["I_before_scaling"] > 0 and trace["omega_pixel"] > 0 and trace["I_pixel_final"] > 0
            assert 0 < trace["polar"] <= 1 and 0 < trace["capture_fraction"] <= 1
            # the factors from the geometry, independently: solid angle of a flat pixel, Kahn factor with K = 0
            R = math.dist(trace["pixel_pos"], (0, 0, 0))
            pixel_size = cfg.detector.pixel_size
            assert trace["omega_pixel"] == pytest.approx(pixel_size**2 / R**2 * trace["close_distance"] / R,
                                                         rel=1e-12)
            diffracted = [c / R for c in trace["pixel_pos"]]
            cos2t = sum(i * d for i, d in zip(trace["incident"], diffracted, strict=True))
            assert cfg.beam.polarization == 0.0
            assert trace["polar"] == pytest.approx(0.5 * (1 + cos2t**2), rel=1e-12)
            assert trace["capture_fraction"] == 1.0  # no -detector_thick: nothing to capture
            # I_pixel_final: the product of the scaling factors (oversample 1: one sub-pixel), and the image
            product = (trace["I_before_scaling"] * R_E_SQR * trace["fluence"] / trace["steps"] * trace["polar"]
                       * trace["capture_fraction"] * trace["omega_pixel"])
            assert trace["I_pixel_final"] == pytest.approx(product, rel=1e-12)
            assert trace["I_pixel_final"] == value == float(image[pixel])
        # the seed pixel is a spot; the same numbers in the C's order are (nearly) dark
        assert float(image[SEED_PIXEL]) >= DARK_FRACTION * float(image.max())
        swapped = float(image[SEED_PIXEL[1], SEED_PIXEL[0]])
        assert dark_note(swapped, float(image.max())) is not None
        assert float(image[brightest]) == float(image.max())


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
