"""The C's Poisson-noise image (``-noisefile``), byte for byte.

nanoBragg.c draws one ``poidev`` per pixel of its float image, row by row (slow index outer, fast index
inner), skipping pixels outside the ROI, adds the ADC offset, clips at 65535 (counting overloads) and
truncates to ``unsigned short``. The generator is seeded from ``-seed N`` as ``idum = -N`` (the C's default
seed is minus the clock time). See :mod:`nanobragg_torch.rng` for the generator itself.

A multi-panel detector (`noise_stack`) has no C order; ours: one stream, seeded once, drawn panel by panel,
each panel in the C's order over its own pixels (inside -roi, which selects the same window on every panel).
Panel 0 is thus the C's noise image of panel 0 rendered alone, and without -roi the stack is the C's noise
image of the panels stacked along slow (-floatfile's layout) where the panels are of one size.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .images import c_cast_unsigned
from .rng import CRandom, CStatics, poidev


@njit(cache=True)
def _noise_loop(img, idum, tab, fs, adc, xmin, xmax, ymin, ymax, out):
    photons = 0.0
    overloads = 0
    for s in range(img.shape[0]):
        for f in range(img.shape[1]):
            if f < xmin or f > xmax or s < ymin or s > ymax:
                continue
            value = np.float64(poidev(img[s, f], idum, tab, fs))
            photons += value
            value += adc
            if value > 65535.0:
                value = 65535.0
                overloads += 1
            out[s, f] = value
    return photons, overloads


def noise_image(
    float_image: np.ndarray,
    seed: int,
    adc_offset: float = 40.0,
    roi: tuple[int, int, int, int] | None = None,
    statics: CStatics | None = None,
) -> tuple[np.ndarray, float, int]:
    """Poisson-noise image of the C, as (uint16 image, photons_sum, overloads).

    ``float_image``: (S, F) photons per pixel; converted to float32 (the C's ``floatimage``) if needed.
    ``seed``: the user's ``-seed`` value; the stream starts at ``idum = -seed``.
    ``roi``: ``(xmin, xmax, ymin, ymax)``, inclusive fast/slow pixel bounds as the C's ``-roi``; pixels
    outside stay 0 and draw no random number. ``None`` means the whole image.
    ``statics``: the shared C generator statics, only needed to emulate a seed <= 0 continuing the shuffle
    table of an earlier stream (see :mod:`nanobragg_torch.rng`); a fresh state otherwise.
    ``photons_sum`` is the sum of the deviates before the ADC offset (the C prints it with ``%.0f``).
    """
    img = np.ascontiguousarray(float_image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"noise_image expects a 2-D (slow, fast) image, got shape {img.shape}")
    xmin, xmax, ymin, ymax = roi if roi is not None else (0, img.shape[1] - 1, 0, img.shape[0] - 1)
    rng = CRandom.from_user_seed(seed, statics)
    values = np.zeros(img.shape, dtype=np.float64)  # clipped counts, cast to unsigned short below
    photons, overloads = _noise_loop(
        img,
        rng._idum,
        rng.statics.table,
        rng.statics.floats,
        float(adc_offset),
        int(xmin),
        int(xmax),
        int(ymin),
        int(ymax),
        values,
    )
    return c_cast_unsigned(values, 0xFFFF).astype(np.uint16), float(photons), int(overloads)


def noise_stack(
    stack: np.ndarray,
    spixels: tuple[int, ...],
    fpixels: tuple[int, ...],
    seed: int,
    adc_offset: float = 40.0,
    roi: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, float, int]:
    """Poisson-noise image of a multi-panel detector, as (uint16 (P, S_max, F_max) stack, photons_sum,
    overloads): panel p's (spixels[p], fpixels[p]) pixels of the padded stack, one generator stream through
    the panels in order (module docstring); padding stays 0 and draws nothing."""
    img = np.ascontiguousarray(stack, dtype=np.float32)
    if img.ndim != 3 or img.shape[0] != len(spixels):
        raise ValueError(f"noise_stack expects a (panel, slow, fast) stack of {len(spixels)} panels, got {img.shape}")
    rng = CRandom.from_user_seed(seed)
    values = np.zeros(img.shape, dtype=np.float64)
    photons, overloads = 0.0, 0
    for p, (S, F) in enumerate(zip(spixels, fpixels, strict=True)):
        xmin, xmax, ymin, ymax = roi if roi is not None else (0, F - 1, 0, S - 1)
        out = np.zeros((S, F), dtype=np.float64)
        ph, ov = _noise_loop(np.ascontiguousarray(img[p, :S, :F]), rng._idum, rng.statics.table, rng.statics.floats,
                             float(adc_offset), int(xmin), int(xmax), int(ymin), int(ymax), out)
        values[p, :S, :F] = out
        photons += ph
        overloads += ov
    return c_cast_unsigned(values, 0xFFFF).astype(np.uint16), float(photons), int(overloads)
