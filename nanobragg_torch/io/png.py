"""8-bit greyscale PNG preview (our addition; the C writes PGM). Written with zlib, no imaging library."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from .atomic import atomic_write


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(image_uint8: np.ndarray) -> bytes:
    img = np.ascontiguousarray(image_uint8, dtype=np.uint8)
    height, width = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | os.PathLike[str], image_uint8: np.ndarray) -> None:
    with atomic_write(path) as handle:
        handle.write(png_bytes(image_uint8))
