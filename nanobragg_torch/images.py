"""The C's post-render products: end-of-run statistics, the integer (SMV) image and the 8-bit PGM image.

Everything here mirrors what nanoBragg.c does after its pixel loop, in the same order and arithmetic:
statistics are accumulated pixel by pixel (slow index outer) in double from the float32 image, the
integer image rounds with ``floorf(test + 0.5)``, the PGM truncates. File headers are not written here
(see ``nanobragg_torch.io``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .io.smv import c_g

Roi = tuple[int, int, int, int]

_INT32_MIN = -2147483648


def _roi_or_full(roi: Roi | None, shape: tuple[int, ...]) -> Roi:
    """``(xmin, xmax, ymin, ymax)`` inclusive; ``None`` covers the image. Pixels outside are skipped."""
    if roi is None:
        return (0, shape[1] - 1, 0, shape[0] - 1)
    return tuple(int(v) for v in roi)  # type: ignore[return-value]


def c_cast_unsigned(values: np.ndarray, mask: int) -> np.ndarray:
    """C cast of doubles to unsigned char/short on x86-64: truncate to int32, keep the low bits.

    NaN and values outside int32 become int32's minimum (x86's 'integer indefinite'), hence 0."""
    v = np.asarray(values, dtype=np.float64)
    ok = (v > -2147483649.0) & (v < 2147483648.0)  # False for NaN
    as_int = np.trunc(np.where(ok, v, 0.0)).astype(np.int64)
    return np.where(ok, as_int, _INT32_MIN) & mask


def _roi_view(img: np.ndarray, roi: Roi) -> tuple[slice, slice]:
    xmin, xmax, ymin, ymax = roi
    return slice(max(ymin, 0), max(ymax + 1, 0)), slice(max(xmin, 0), max(xmax + 1, 0))


def _sequential_sum(values: np.ndarray) -> float:
    """sum += v in order, in double (the C's loop; np.sum would add pairwise and round differently).
    torch's CPU cumsum accumulates serially, like numpy's, at a third of its time."""
    if not values.size:
        return 0.0
    return float(torch.cumsum(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).ravel(), 0)[-1])


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
    rows, cols = _roi_view(img, _roi_or_full(roi, img.shape))
    inside = img[rows, cols]  # the ROI in raster order (slow outer)
    keep = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != img.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {img.shape}")
        keep = mask[rows, cols] != 0
    # the C's in-loop statistics over rendered pixels: max (strict >, from 0), sum, sum of float32 squares
    used = inside.ravel() if keep is None else inside[keep]
    max_i, max_f, max_s = 0.0, -1, -1
    if used.size and float(used.max()) > 0.0:
        k = int(np.argmax(used))  # the first occurrence, as the C's strict >
        if keep is not None:
            k = int(np.flatnonzero(keep)[k])
        s_k, f_k = divmod(k, inside.shape[1])
        max_i, max_s, max_f = float(inside.flat[k]), s_k + rows.start, f_k + cols.start
    n = used.size
    n_mean = n
    avg = _sequential_sum(used) / max(n, 1)
    rms = math.sqrt(_sequential_sum(used * used) / (max(n, 2) - 1))
    # the second pass: squared deviations from the mean over every ROI pixel (the mask is ignored)
    dev = inside.astype(np.float64).ravel() - avg
    rmsd = math.sqrt(_sequential_sum(dev * dev) / (max(inside.size, 2) - 1))
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
    rows, cols = _roi_view(img, (xmin, xmax, ymin, ymax))
    test = np.clip(img[rows, cols].astype(np.float64) * used + float(adc_offset), 0.0, 65535.0)
    # floorf() takes a float: the sum is rounded to float32 before the floor
    out[rows, cols] = c_cast_unsigned(np.floor((test + 0.5).astype(np.float32)).astype(np.float64), 0xFFFF)
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
    rows, cols = _roi_view(img, _roi_or_full(roi, img.shape))
    test = np.minimum(img[rows, cols].astype(np.float64) * used, 255.0)
    out[rows, cols] = c_cast_unsigned(test, 0xFF)
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
