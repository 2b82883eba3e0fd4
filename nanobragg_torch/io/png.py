"""8-bit greyscale PNG preview (our addition; the C writes PGM), encoded by Pillow."""

from __future__ import annotations

import io
import os

import numpy as np

from .atomic import atomic_write


def png_bytes(image_uint8: np.ndarray) -> bytes:
    """PNG bytes (mode "L") of an (H, W) uint8 array, pixel for pixel."""
    from PIL import Image  # imported here: ~30 ms of CLI start-up for runs that write no PNG

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_uint8, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], image_uint8: np.ndarray) -> None:
    with atomic_write(path) as handle:
        handle.write(png_bytes(image_uint8))
