"""The C's rule for a sampled range: (count, range, step), any of them unset, the missing ones filled in.

nanoBragg.c writes the same rule for the beam divergence and dispersion (hdivsteps/hdivrange/hdivstep, ...),
the phi sweep (phisteps/osc/phistep) and the detector layers (detector_thicksteps/thick/thickstep), with
three differences that `StepRule` names. Unset is None (or, as the C's -1 initial values, negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepRule:
    default_range: float  # count alone: range = this, step = range/count
    range_only_divisor: float  # range alone: count = 2, step = range/this
    count_minus_one: bool  # count and range: step = range/(count-1) (count at least 2), else range/count
    zero_count_is_one: bool = False  # phi: a count of 0 is given, and means 1
    keep_zero_step: bool = False  # phi: with count and range, a step of 0 is kept (the C tests step < 0)


@dataclass(frozen=True)
class Steps:
    count: int
    range: float
    step: float
    divisor: float | None  # step = range/divisor when derived from the range (gradients follow a range tensor)


def auto_steps(count: int | None, rng: float | None, step: float | None, rule: StepRule) -> Steps:
    n = -1 if count is None else count
    r = -1.0 if rng is None else rng
    s = -1.0 if step is None else step
    if rule.zero_count_is_one:
        given_n, n = n >= 0, max(n, 1)
    else:
        given_n = n > 0
    if not given_n:
        if r < 0.0:
            return Steps(1, 0.0, 0.0, None) if s <= 0.0 else Steps(2, s, s, None)
        if s <= 0.0:
            return Steps(2, r, r / rule.range_only_divisor, rule.range_only_divisor)
        return Steps(math.ceil(r / s), r, s, None)
    if r < 0.0:
        if s <= 0.0:
            return Steps(n, rule.default_range, rule.default_range / n, None)
        return Steps(2, s, s, None)
    if s < 0.0 or (s == 0.0 and not rule.keep_zero_step):
        if rule.count_minus_one:
            n = max(n, 2)
            return Steps(n, r, r / (n - 1), n - 1)
        return Steps(n, r, r / n, n)
    return Steps(n, r, s, None)


# beyond this the recommended oversampling is only an estimate that refuses the render (validation)
MAX_RECOMMENDED_OVERSAMPLE = 10**9


def recommended_oversample(xtal_max: float, reciprocal_pixel: float) -> int:
    """The C's recommended_oversample = ceil(3 xtalsize_max / reciprocal_pixel_size), where
    reciprocal_pixel_size = lambda0 * distance / pixel_size (metres): at least 1 (the C's `<= 0` rule), and
    MAX_RECOMMENDED_OVERSAMPLE where the ratio is not finite or larger."""
    ratio = 3.0 * xtal_max / reciprocal_pixel if reciprocal_pixel else math.inf
    if not math.isfinite(ratio) or ratio > MAX_RECOMMENDED_OVERSAMPLE:
        return MAX_RECOMMENDED_OVERSAMPLE
    return max(1, math.ceil(ratio))
