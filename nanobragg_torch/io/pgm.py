"""PGM images (``-pgmfile``): nanoBragg.c's 8-bit preview.

Layout: ``"P5\\n<fpixels> <spixels>\\n# pixels scaled by <pgm_scale %g>\\n255\\n"`` then one byte per pixel,
fast index first. The C clips ``floatimage*pgm_scale`` at 255 and truncates to unsigned char; that conversion
belongs to the caller, this module only writes the bytes.
"""

from __future__ import annotations

import os

import numpy as np

from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import atomic_write, read_input
from nanobragg_torch.io.smv import c_g


def pgm_bytes(image_uint8: np.ndarray, pgm_scale: float) -> bytes:
    """The bytes of the C's PGM file for a (spixels, fpixels) uint8 image."""
    arr = np.asarray(image_uint8)
    if arr.ndim != 2:
        raise ValueError(f"PGM image must be 2-D (spixels, fpixels), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"PGM pixels must be uint8, got {arr.dtype}")
    spixels, fpixels = arr.shape
    header = f"P5\n{fpixels} {spixels}\n# pixels scaled by {c_g(pgm_scale)}\n255\n".encode("ascii")
    return header + np.ascontiguousarray(arr).tobytes()


def write_pgm(path: str | os.PathLike[str], image_uint8: np.ndarray, pgm_scale: float) -> None:
    """Write a binary PGM exactly as nanoBragg.c does (the scale is recorded in a comment line)."""
    data = pgm_bytes(image_uint8, pgm_scale)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def read_pgm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a binary (P5, maxval <= 255) PGM such as ours; returns uint8 of shape (height, width).

    Comment lines (``#``) in the header are skipped. A malformed or truncated file is an InputError.
    """
    name = os.fspath(path)
    data = read_input(path)
    if not data.startswith(b"P5"):
        raise InputError(f"{name}:1: not a binary PGM (must start with 'P5')")
    pos, values = 2, []
    while len(values) < 3:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            end = data.find(b"\n", pos)
            pos = len(data) if end < 0 else end + 1
            continue
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            lineno = data.count(b"\n", 0, pos) + 1
            raise InputError(f"{name}:{lineno}: bad PGM header")
        values.append(int(data[start:pos]))
    width, height, maxval = values
    if maxval < 1 or maxval > 255:
        raise InputError(f"{name}: only 8-bit PGM is supported (maxval {maxval})")
    pos += 1  # the single white-space byte before the pixels
    pixels = data[pos : pos + width * height]
    if len(pixels) < width * height:
        raise InputError(f"{name}: truncated: {len(pixels)} pixel bytes, expected {width * height}")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width).copy()
