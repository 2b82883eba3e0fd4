"""Parsing the C -printout_pixel blocks (committed goldens) and our TRACE_PY lines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nanobragg_torch.parity.goldens import load_cases, load_golden
from nanobragg_torch.parity.printout import (
    Precision,
    Trace,
    parse_any,
    parse_printout,
    parse_printout_one,
    parse_trace_py,
    parse_trace_py_all,
)

BLOCK = """  18   93 : stol = 5.42975e+08 or 0.0542975
at 0.1 -0.0057 -0.0093
hkl= 0.013894 -4.999621 -7.992878  hkl0= 0 -5 -8
 F_cell=100  F_latt=123.8   I = 1.53266e+08
I/steps       153265508
polar      0.9941209489
omega   3.929659175e-06
capfrac               1
pixel       598.7403564
real-space cell vectors (Angstrom):
     a           b           c
X: 56.96583769 -35.27756884 34.06700757
Y: 32.88924173 70.60512954  1.62254801
Z: -23.94141003 13.05407289 83.28749206
"""


def test_block_fields_and_precision():
    (t,) = parse_printout(BLOCK)
    assert t.origin == "c-printout"
    assert t.pixel == (93, 18)  # (slow, fast): the C prints fast first
    assert t["stol"] == 5.42975e08 and t["stol_lab"] == 0.0542975
    assert t["pixel_pos"] == (0.1, -0.0057, -0.0093)
    assert t["hkl_frac"] == (0.013894, -4.999621, -7.992878)
    assert t["hkl_rounded"] == (0.0, -5.0, -8.0)
    assert (t["F_cell"], t["F_latt"], t["I_before_scaling"]) == (100.0, 123.8, 1.53266e08)
    assert t["I_over_steps"] == 153265508.0
    assert t["omega_pixel"] == 3.929659175e-06
    assert t["capture_fraction"] == 1.0 and t["I_pixel_final"] == 598.7403564
    # columns of the X/Y/Z rows are the a, b, c vectors
    assert t["a_vec"] == (56.96583769, 32.88924173, -23.94141003)
    assert t["c_vec"] == (34.06700757, 1.62254801, 83.28749206)
    assert t.precision["F_cell"] == Precision("sig", 6)
    assert t.precision["polar"] == Precision("sig", 10)
    assert t.precision["hkl_frac"] == Precision("dec", 6)
    assert t.precision["a_vec"] == Precision("dec", 8)
    assert t.precision["hkl_rounded"].kind == "exact"


def test_precision_half_unit():
    g6, f6 = Precision("sig", 6), Precision("dec", 6)
    assert g6.half_unit(1.53266e08) == pytest.approx(500.0)
    assert g6.half_unit(-0.0057) == pytest.approx(5e-9)
    assert g6.half_unit(0.0) == 0.0
    assert f6.half_unit(-4.999621) == pytest.approx(5e-7)
    t = parse_printout_one(BLOCK)
    assert t.uncertainty("pixel_pos") == pytest.approx((5e-7, 5e-9, 5e-9))
    assert Trace({"F_cell": 1.0}).uncertainty("F_cell") == (0.0,)


def test_warning_without_newline_before_block():
    glued = "WARNING: further warnings will not be printed! " + BLOCK
    (t,) = parse_printout(glued)
    assert t.pixel == (93, 18) and len(t.values) == 16


def test_select_block_by_pixel_and_errors():
    other = BLOCK.replace("  18   93 :", "   7    3 :")
    blocks = parse_printout(BLOCK + "noise line\n" + other)
    assert [b.pixel for b in blocks] == [(93, 18), (3, 7)]
    assert parse_printout_one(BLOCK + other, (3, 7)).pixel == (3, 7)
    with pytest.raises(ValueError, match="no C printout block"):
        parse_printout_one(BLOCK, (1, 1))


def test_trace_py_lines():
    text = "\n".join(
        [
            "some log line",
            "TRACE_PY: pixel 93 18",
            "TRACE_PY: pix0_vector 0.1 0.013 -0.013",
            "TRACE_PY: F_cell 100.0",
            "TRACE_PY: my_debug_value 3.5",
            "TRACE_PY: I_pixel_final nan",
            "TRACE_PY: pixel 1 2",
            "TRACE_PY: F_cell 7.0",
        ]
    )
    first, second = parse_trace_py_all(text)
    assert first.origin == "trace-py" and first.pixel == (93, 18)
    assert first["pix0_vector"] == (0.1, 0.013, -0.013)
    assert first["F_cell"] == 100.0 and math.isnan(first["I_pixel_final"])
    assert first.extras["my_debug_value"] == 3.5 and "my_debug_value" not in first
    assert first.precision == {}
    assert second.pixel == (1, 2) and second["F_cell"] == 7.0
    assert parse_trace_py(text).pixel == (93, 18)
    assert parse_any(text).origin == "trace-py"
    assert parse_any(BLOCK).origin == "c-printout"
    with pytest.raises(ValueError):
        parse_trace_py("nothing here")


def test_full_precision_roundtrip():
    vals = {"stol": 0.1 + 0.2, "hkl_frac": (1 / 3, -2 / 7, 5e-300)}
    text = "\n".join(
        f"TRACE_PY: {k} " + " ".join(repr(v) for v in (x if isinstance(x, tuple) else (x,)))
        for k, x in vals.items()
    )
    t = parse_trace_py(text)
    assert t["stol"] == vals["stol"] and t["hkl_frac"] == vals["hkl_frac"]


@pytest.mark.parametrize("case", [c.name for c in load_cases()])
def test_golden_printouts_are_complete_and_consistent(case):
    """Every committed printout parses into all 16 C factors and agrees with its golden image."""
    c = next(x for x in load_cases() if x.name == case)
    g = load_golden(c, c.variants[0])
    assert sorted(g.printouts) == sorted(g.traced_pixels)
    for (s, f), t in g.printouts.items():
        assert len(t.values) == 16, sorted(t.values)
        if g.image is not None:  # the printed pixel value is the float32 image value, at 10 digits
            assert t["I_pixel_final"] == pytest.approx(float(g.image[s, f]), rel=6e-10, abs=1e-300)
        steps = g.stdout["steps"]
        assert t["I_over_steps"] * steps == pytest.approx(t["I_before_scaling"], rel=6e-6, abs=1e-300)


def test_pixel_position_matches_geometry():
    """F/S order: 'at' = pix0 + (f+1/2) px fdet + (s+1/2) px sdet for an unrotated 1x oversampled case."""
    g = load_golden("mosflm_default")
    pix0 = np.array(
        [-g.stdout["dials_origin_mm"][2], g.stdout["dials_origin_mm"][1], g.stdout["dials_origin_mm"][0]]
    )
    px = g.stdout["pixel_size"]
    f_ax, s_ax = np.array(g.stdout["fdet_vector"]), np.array(g.stdout["sdet_vector"])
    for (s, f), t in g.printouts.items():
        expect = pix0 / 1000 + (f + 0.5) * px * f_ax + (s + 0.5) * px * s_ax
        np.testing.assert_allclose(t["pixel_pos"], expect, atol=1e-6)
