"""The C's Poisson-noise image (``-noisefile``), byte for byte.

nanoBragg.c draws one ``poidev`` per pixel of its float image, row by row (slow index outer, fast index
inner), skipping pixels outside the ROI, adds the ADC offset, clips at 65535 (counting overloads) and
truncates to ``unsigned short``. The generator is seeded from ``-seed N`` as ``idum = -N`` (the C's default
seed is minus the clock time). See :mod:`nanobragg_torch.rng` for the generator itself.
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
