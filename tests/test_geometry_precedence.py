"""Precedence of beam-centre, near-point, pivot and pix0 flags (docs/geometry.md), checked on the geometry."""

from __future__ import annotations

import pytest
import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.plan import build_plan

BASE = "-cell 50 50 50 90 90 90 -default_F 1 -detpixels 20 -pixel 0.5 -distance 80".split()


def geom(*flags: str):
    cfg, _ = config_from_flags(BASE + list(flags))
    return build_plan(cfg, torch.float64).geom


def close(a, b):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=1e-12)


def test_pix0_override_ignores_beam_centre_and_pivot_flags():
    v = ["-pix0_vector_mm", "81", "6", "-4", "-pix0_override"]
    ref = geom(*v).pix0
    for extra in (
        ["-Xbeam", "3", "-Ybeam", "7"],
        ["-ORGX", "5", "-ORGY", "9"],
        ["-Xclose", "2"],
        ["-pivot", "sample"],
        ["-close_distance", "70"],
    ):
        assert close(geom(*v, *extra).pix0, ref), extra
    assert close(ref, [0.081, 0.006, -0.004])


def test_pix0_without_override_follows_the_beam_centre():
    a = geom("-pix0_vector_mm", "81", "6", "-4", "-Xbeam", "3", "-Ybeam", "7").pix0
    b = geom("-pix0_vector_mm", "1", "2", "3", "-Xbeam", "3", "-Ybeam", "7").pix0
    assert close(a, b)  # the vector's value does not matter: only its switch to CUSTOM does
    c = geom("-pix0_vector_mm", "81", "6", "-4", "-Xbeam", "4", "-Ybeam", "7").pix0
    assert not close(a, c)


def test_named_convention_forces_its_pivot():
    assert geom("-mosflm", "-pivot", "sample").pivot == "BEAM"
    assert geom("-xds", "-pivot", "beam").pivot == "SAMPLE"
    assert geom("-fdet_vector", "0", "0", "1", "-pivot", "sample").pivot == "SAMPLE"
    # the last flag of the pivot family wins for CUSTOM
    assert geom("-fdet_vector", "0", "0", "1", "-Xclose", "3", "-Xbeam", "4").pivot == "BEAM"
    assert geom("-fdet_vector", "0", "0", "1", "-Xbeam", "4", "-ORGX", "3").pivot == "SAMPLE"


def test_last_convention_flag_wins():
    assert geom("-xds", "-mosflm").convention == "MOSFLM"
    assert geom("-mosflm", "-spindle_axis", "0", "0", "1").convention == "CUSTOM"
    assert geom("-spindle_axis", "0", "0", "1", "-dials").convention == "DIALS"


@pytest.mark.parametrize("conv", ["-xds", "-dials"])
def test_xds_beam_centre_is_header_only(conv):
    """XDS/DIALS place the detector by ORGX/ORGY (near point); -Xbeam only reaches the reported value."""
    a, b = geom(conv), geom(conv, "-Xbeam", "3")
    assert close(a.pix0, b.pix0)
    assert float(b.Xbeam) == pytest.approx(0.003)
    assert not close(geom(conv, "-ORGX", "4").pix0, a.pix0)


def test_mosflm_half_pixel_and_axis_swap():
    g = geom("-mosflm", "-Xbeam", "3", "-Ybeam", "7")
    assert float(g.Fbeam) == pytest.approx(0.007 + 0.00025)
    assert float(g.Sbeam) == pytest.approx(0.003 + 0.00025)
    g = geom("-denzo", "-Xbeam", "3", "-Ybeam", "7")
    assert float(g.Fbeam) == pytest.approx(0.007)


def test_close_distance_uses_unrotated_two_theta():
    g = geom("-xds", "-close_distance", "70", "-twotheta", "20")
    assert float(g.close_distance) == pytest.approx(0.070)
