"""Raw float images (``-floatfile``): fpixels x spixels float32, native (little-endian) order, no header.

Pixels are written fast index first, slow rows one after another, so a (spixels, fpixels) C-order array is
the natural shape.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import atomic_write, read_input


def write_float_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write ``image`` (any shape, C order) as raw little-endian float32, as nanoBragg.c's floatfile."""
    data = np.ascontiguousarray(np.asarray(image), dtype="<f4").tobytes()
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def read_float_image(path: str | os.PathLike[str], shape: Sequence[int] | int) -> np.ndarray:
    """Read a raw float32 image; ``shape`` is usually (spixels, fpixels). The file size must match exactly."""
    name = os.fspath(path)
    dims = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(s) for s in shape)
    count = int(np.prod(dims, dtype=np.int64))
    data = read_input(path)
    if len(data) != 4 * count:
        raise InputError(f"{name}: {len(data)} bytes, expected {4 * count} for float32 image of shape {dims}")
    return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(dims)
