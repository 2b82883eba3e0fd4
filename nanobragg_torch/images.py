"""The C's post-render products: end-of-run statistics, the integer (SMV) image and the 8-bit PGM image.

Everything here mirrors what nanoBragg.c does after its pixel loop, in the same order and arithmetic:
statistics are accumulated pixel by pixel (slow index outer) in double from the float32 image, the
integer image rounds with ``floorf(test + 0.5)``, the PGM truncates. File headers are not written here
(see ``nanobragg_torch.io``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .io.smv import c_g

Roi = tuple[int, int, int, int]

_INT32_MIN = -2147483648


def _roi_or_full(roi: Roi | None, shape: tuple[int, ...]) -> Roi:
    """``(xmin, xmax, ymin, ymax)`` inclusive; ``None`` covers the image. Pixels outside are skipped."""
    if roi is None:
        return (0, shape[1] - 1, 0, shape[0] - 1)
    return tuple(int(v) for v in roi)  # type: ignore[return-value]


@njit(cache=True)
def c_cast_unsigned(value: float, mask: int) -> int:
    """C cast of a double to unsigned char/short on x86-64: truncate to int32, keep the low bits.

    NaN and values outside int32 become int32's minimum (x86's 'integer indefinite'), hence 0.
    """
    if not (value > -2147483649.0 and value < 2147483648.0):
        return _INT32_MIN & mask
    return int(value) & mask


@njit(cache=True)
def _int_loop(img, scale, adc, xmin, xmax, ymin, ymax, out):
    for s in range(img.shape[0]):
        for f in range(img.shape[1]):
            if f < xmin or f > xmax or s < ymin or s > ymax:
                continue
            test = np.float64(img[s, f]) * scale + adc
            if test > 65535.0:
                test = 65535.0
            if test < 0.0:
                test = 0.0
            # floorf() takes a float: the sum is rounded to float32 before the floor
            out[s, f] = c_cast_unsigned(np.float64(np.floor(np.float32(test + 0.5))), 0xFFFF)


@njit(cache=True)
def _pgm_loop(img, scale, xmin, xmax, ymin, ymax, out):
    for s in range(img.shape[0]):
        for f in range(img.shape[1]):
            if f < xmin or f > xmax or s < ymin or s > ymax:
                continue
            test = np.float64(img[s, f]) * scale
            if test > 255.0:
                test = 255.0
            out[s, f] = c_cast_unsigned(test, 0xFF)


@njit(cache=True)
def _first_pass(img, xmin, xmax, ymin, ymax, mask, use_mask):
    """The C's in-loop statistics: max (strict >), sum and sum of float32 squares over rendered pixels."""
    max_i = 0.0
    max_f = -1
    max_s = -1
    total = 0.0
    sumsqr = 0.0
    n = 0
    for s in range(img.shape[0]):
        for f in range(img.shape[1]):
            if f < xmin or f > xmax or s < ymin or s > ymax:
                continue
            if use_mask and mask[s, f] == 0:
                continue
            v = img[s, f]
            if np.float64(v) > max_i:
                max_i = np.float64(v)
                max_f = f
                max_s = s
            total += np.float64(v)
            sumsqr += np.float64(v * v)  # float * float in the C
            n += 1
    return max_i, max_f, max_s, total, sumsqr, n


@njit(cache=True)
def _rmsd_pass(img, xmin, xmax, ymin, ymax, avg):
    """The C's second pass: squared deviations from the mean over every ROI pixel (mask ignored)."""
    sumsqr = 0.0
    n = 0
    for s in range(img.shape[0]):
        for f in range(img.shape[1]):
            if f < xmin or f > xmax or s < ymin or s > ymax:
                continue
            d = np.float64(img[s, f]) - avg
            sumsqr += d * d
            n += 1
    return sumsqr, n


def image_statistics(
    float_image: np.ndarray,
    roi: Roi | None = None,
    mask: np.ndarray | None = None,
    oversample: int = 1,
    pixel_size: float = 0.1e-3,
) -> dict:
    """End-of-run statistics exactly as the C prints them.

    Returns ``max_I`` (largest pixel, 0 if none is positive), ``max_I_x``/``max_I_y`` (metres: the C's
    ``Fdet``/``Sdet`` of the *last* sub-pixel of the max pixel, 0 if there is none), ``mean``, ``rms``
    (``sqrt(sum v^2 / (n - 1))``), ``rmsd`` (deviation from the mean), plus ``max_pixel`` (fast, slow) or
    None, and ``n`` (pixels in the mean). Masked pixels (``mask == 0``) are left out of max, mean and rms
    but, as in the C, still enter rmsd: pass an image holding 0 there, as the C's does. ``roi`` as in the
    C's ``-roi`` (inclusive bounds; None: whole image).
    """
    img = np.ascontiguousarray(float_image, dtype=np.float32)
    xmin, xmax, ymin, ymax = _roi_or_full(roi, img.shape)
    use_mask = mask is not None
    mask_arr = np.ascontiguousarray(mask) if use_mask else np.ones((1, 1), dtype=np.uint16)
    if use_mask and mask_arr.shape != img.shape:
        raise ValueError(f"mask shape {mask_arr.shape} differs from image shape {img.shape}")
    max_i, max_f, max_s, total, sumsqr, n = _first_pass(img, xmin, xmax, ymin, ymax, mask_arr, use_mask)
    n_mean = int(n)
    n = max(n, 1)
    avg = total / n
    n = max(n, 2)
    rms = math.sqrt(sumsqr / (n - 1))
    dev, m = _rmsd_pass(img, xmin, xmax, ymin, ymax, avg)
    m = max(m, 2)
    rmsd = math.sqrt(dev / (m - 1))
    max_x = max_y = 0.0
    if max_f >= 0:
        sub = pixel_size / oversample  # C: subpixel_size, then Fdet/Sdet of sub-pixel (last, last)
        max_x = sub * (max_f * oversample + oversample - 1) + sub / 2.0
        max_y = sub * (max_s * oversample + oversample - 1) + sub / 2.0
    return {
        "max_I": float(max_i),
        "max_I_x": max_x,
        "max_I_y": max_y,
        "mean": float(avg),
        "rms": rms,
        "rmsd": rmsd,
        "max_pixel": (int(max_f), int(max_s)) if max_f >= 0 else None,
        "n": n_mean,
    }


def intfile_scale_rule(scale: float | None, max_I: float) -> float:
    """The C's ``-scale`` rule: a positive user value wins, else 55000/max_I, else 1."""
    if scale is not None and scale > 0.0:
        return float(scale)
    return 55000.0 / max_I if max_I > 0.0 else 1.0


def int_image(
    float_image: np.ndarray,
    scale: float | None = None,
    adc_offset: float = 40.0,
    roi: Roi | None = None,
    max_I: float | None = None,
) -> tuple[np.ndarray, float]:
    """The C's integer image (``-intfile``) as (uint16 array, scale used).

    Each ROI pixel becomes ``floorf(clip(v*scale + adc, 0, 65535) + 0.5)`` (the sum rounded to float32
    before the floor, as ``floorf`` takes a float); pixels outside the ROI stay 0. With ``scale`` None or
    <= 0 the scale is 55000/max_I (1 if max_I <= 0). ``max_I`` defaults to the largest ROI pixel (or 0);
    pass the value from :func:`image_statistics` when a mask is in use.
    """
    img = np.ascontiguousarray(float_image, dtype=np.float32)
    xmin, xmax, ymin, ymax = _roi_or_full(roi, img.shape)
    if max_I is None:
        inside = img[max(ymin, 0) : ymax + 1, max(xmin, 0) : xmax + 1]
        max_I = max(0.0, float(inside.max())) if inside.size else 0.0
    used = intfile_scale_rule(scale, max_I)
    out = np.zeros(img.shape, dtype=np.uint16)
    _int_loop(img, used, float(adc_offset), xmin, xmax, ymin, ymax, out)
    return out, used


def pgm_scale_rule(pgm_scale: float | None, rmsd: float, intfile_scale: float) -> float:
    """The C's ``-pgmscale`` rule: a positive user value wins, else 250/(5*rmsd), else the int-file scale."""
    if pgm_scale is not None and pgm_scale > 0.0:
        return float(pgm_scale)
    return 250.0 / (5.0 * rmsd) if rmsd > 0.0 else float(intfile_scale)


def pgm_image(
    float_image: np.ndarray,
    pgm_scale: float | None,
    rmsd: float,
    intfile_scale: float,
    roi: Roi | None = None,
) -> tuple[np.ndarray, float]:
    """The C's 8-bit PGM pixels as (uint8 array, scale used).

    ``intfile_scale`` is the scale the integer image actually used (after its own auto rule). Each ROI
    pixel is ``min(v*scale, 255)`` truncated to unsigned char; pixels outside the ROI stay 0.
    """
    img = np.ascontiguousarray(float_image, dtype=np.float32)
    used = pgm_scale_rule(pgm_scale, rmsd, intfile_scale)
    out = np.zeros(img.shape, dtype=np.uint8)
    _pgm_loop(img, used, *_roi_or_full(roi, img.shape), out)
    return out, used


def format_statistics_lines(
    stats: dict,
    intfile_scale: float | None = None,
    pgm_scale: float | None = None,
    photons: float | None = None,
    overloads: int | None = None,
) -> list[str]:
    """The C's statistics lines, in its order (the 'writing ...' lines between them are not included).

    ``max_I = %g  at %g %g``, ``mean= %g rms= %g rmsd= %g``, then, for the values given,
    ``intfile_scale = %g``, ``pgm_scale = %g`` and ``%.0f photons on noise image (%d overloads)``.
    Scales are the values used (after the auto rules).
    """
    lines = [
        f"max_I = {c_g(stats['max_I'])}  at {c_g(stats['max_I_x'])} {c_g(stats['max_I_y'])}",
        f"mean= {c_g(stats['mean'])} rms= {c_g(stats['rms'])} rmsd= {c_g(stats['rmsd'])}",
    ]
    if intfile_scale is not None:
        lines.append(f"intfile_scale = {c_g(intfile_scale)}")
    if pgm_scale is not None:
        lines.append(f"pgm_scale = {c_g(pgm_scale)}")
    if photons is not None:
        lines.append(f"{photons:.0f} photons on noise image ({overloads or 0:d} overloads)")
    return lines
