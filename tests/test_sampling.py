"""The C's (count, range, step) fill-in rule (sampling.auto_steps), for its three users, read off nanoBragg.c's
divergence/dispersion, phi and detector-thickness blocks."""

from __future__ import annotations

import math

import pytest

from nanobragg_torch.beam import BEAM_STEPS
from nanobragg_torch.constants import RTD
from nanobragg_torch.crystal import PHI_STEPS
from nanobragg_torch.detector import LAYER_STEPS
from nanobragg_torch.sampling import MAX_RECOMMENDED_OVERSAMPLE, auto_steps, recommended_oversample

CASES = [
    # rule, (count, range, step) given, (count, range, step) expected
    (BEAM_STEPS, (None, None, None), (1, 0.0, 0.0)),
    (BEAM_STEPS, (None, None, 0.3), (2, 0.3, 0.3)),
    (BEAM_STEPS, (None, 2.0, None), (2, 2.0, 2.0)),  # range alone: step = range
    (BEAM_STEPS, (None, 2.0, 0.5), (4, 2.0, 0.5)),
    (BEAM_STEPS, (5, None, None), (5, 1.0, 0.2)),  # count alone: range 1
    (BEAM_STEPS, (5, 2.0, None), (5, 2.0, 0.5)),  # step = range/(count-1)
    (BEAM_STEPS, (1, 2.0, None), (2, 2.0, 2.0)),  # at least two points
    (BEAM_STEPS, (0, 2.0, None), (2, 2.0, 2.0)),  # a count of 0 is unset
    (PHI_STEPS, (None, 1.0, None), (2, 1.0, 0.5)),  # range alone: two steps of range/2
    (PHI_STEPS, (0, None, None), (1, 1.0 / RTD, 1.0 / RTD)),  # a count of 0 is 1; range 1 degree
    (PHI_STEPS, (4, 2.0, None), (4, 2.0, 0.5)),  # step = range/count
    (PHI_STEPS, (4, 2.0, 0.0), (4, 2.0, 0.0)),  # the C tests phistep < 0 here
    (LAYER_STEPS, (None, 100e-6, None), (2, 100e-6, 50e-6)),
    (LAYER_STEPS, (3, 300e-6, None), (3, 300e-6, 150e-6)),
    (LAYER_STEPS, (2, None, None), (2, 0.5e-6, 0.25e-6)),
    (LAYER_STEPS, (None, 100e-6, 30e-6), (4, 100e-6, 30e-6)),
]


@pytest.mark.parametrize("rule,given,expected", CASES)
def test_auto_steps(rule, given, expected):
    st = auto_steps(*given, rule)
    assert st.count == expected[0]
    assert math.isclose(st.range, expected[1], rel_tol=1e-15) and math.isclose(st.step, expected[2], rel_tol=1e-15)
    if st.divisor is not None:  # a derived step is range/divisor
        assert math.isclose(st.range / st.divisor, st.step, rel_tol=1e-15)


def test_recommended_oversample_rule():
    """The C's ceil(3 xtalsize_max / reciprocal_pixel_size), at least 1 (a negative distance gives <= 0: 1),
    capped where the ratio is not finite (the estimate validation refuses with)."""
    assert recommended_oversample(2.5e-7, 1e-10 * 0.1 / 1e-4) == 8  # 3 * 0.25 um / 0.1 um = 7.5
    assert recommended_oversample(1e-9, 1e-7) == 1
    assert recommended_oversample(2.5e-7, -1e-7) == 1
    assert recommended_oversample(1e-6, 0.0) == MAX_RECOMMENDED_OVERSAMPLE
    assert recommended_oversample(1.0, 1e-20) == MAX_RECOMMENDED_OVERSAMPLE
