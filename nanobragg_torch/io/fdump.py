"""``Fdump.bin``: nanoBragg.c's binary cache of the structure-factor grid.

Layout (written after every ``-hkl`` read, read back when ``-hkl`` is absent):
an ASCII line ``"h_min h_max k_min k_max l_min l_max\\n"``, a form feed ``\\f``, then
(h_range+1) x (k_range+1) x (l_range+1) native-endian (here little-endian) float64 in C order, l fastest.
The extra last index of each dimension is a pad row the C allocates and never fills: it is always 0.0, even
when ``default_F`` is not 0.
"""

from __future__ import annotations

import os
import re

import numpy as np

from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import atomic_write, read_input
from nanobragg_torch.io.hkl import HKLMeta, hkl_meta_from_bounds
from nanobragg_torch.memory import check_allocation

_HEADER = re.compile(rb"\s*([-+]?\d+)\s+([-+]?\d+)\s+([-+]?\d+)\s+([-+]?\d+)\s+([-+]?\d+)\s+([-+]?\d+)")
_C_SPACE = b" \t\n\v\f\r"


def fdump_bytes(F_grid: np.ndarray, meta: HKLMeta) -> bytes:
    """The bytes the C writes to Fdump.bin for this grid and these index bounds."""
    grid = np.asarray(F_grid, dtype=np.float64)
    shape = (meta["h_range"], meta["k_range"], meta["l_range"])
    if grid.shape != shape:
        raise ValueError(f"F grid shape {grid.shape} does not match the ranges in meta {shape}")
    padded = np.zeros((shape[0] + 1, shape[1] + 1, shape[2] + 1), dtype="<f8")
    padded[:-1, :-1, :-1] = grid
    header = "{} {} {} {} {} {}\n\f".format(
        meta["h_min"], meta["h_max"], meta["k_min"], meta["k_max"], meta["l_min"], meta["l_max"]
    )
    return header.encode("ascii") + padded.tobytes()


def write_fdump(path: str | os.PathLike[str], F_grid: np.ndarray, meta: HKLMeta) -> None:
    """Write ``F_grid`` (shape (h_range, k_range, l_range)) as the C's Fdump.bin, pad rows included."""
    data = fdump_bytes(F_grid, meta)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def read_fdump(
    path: str | os.PathLike[str], *, c_whitespace_quirk: bool = False
) -> tuple[np.ndarray, HKLMeta]:
    """Read an Fdump.bin; returns ``(F_grid, meta)`` like ``read_hkl_file`` (pad rows dropped).

    ``meta["hkls"]`` is h_range*k_range*l_range, as the C sets it. A header that does not parse, ranges that
    are not positive, or a file shorter than the grid is an InputError (the C would carry on with zeros).

    ``c_whitespace_quirk``: the C reads the header with ``fscanf("%d...%d\\n\\f")``, whose white-space
    directives swallow every white-space byte after the numbers, including leading bytes of the first double
    that happen to be 0x09-0x0d or 0x20; the data is then read shifted and its tail comes up short (zeros).
    True reproduces that misreading; False (default) reads the grid as written.
    """
    name = os.fspath(path)
    data = read_input(path)

    match = _HEADER.match(data)
    if match is None:
        raise InputError(f"{name}:1: not an Fdump.bin header (expected six integers 'h_min h_max ... l_max')")
    bounds = [int(g) for g in match.groups()]
    meta = hkl_meta_from_bounds(bounds, 0)
    shape = (meta["h_range"], meta["k_range"], meta["l_range"])
    if min(shape) < 1:
        raise InputError(f"{name}:1: index ranges must be positive, got {shape}")
    meta["hkls"] = shape[0] * shape[1] * shape[2]
    count = (shape[0] + 1) * (shape[1] + 1) * (shape[2] + 1)
    check_allocation(8.0 * count, f"the {'x'.join(map(str, shape))} F grid", f"{name}:1")

    pos = match.end()
    if c_whitespace_quirk:
        while pos < len(data) and data[pos] in _C_SPACE:
            pos += 1
    else:
        if data[pos : pos + 2] != b"\n\f":
            raise InputError(f"{name}:1: header line must end with a newline and a form feed")
        pos += 2

    body = data[pos:]
    if c_whitespace_quirk:
        body = _c_fread_rows(body, count)
    elif len(body) < 8 * count:
        raise InputError(f"{name}: truncated: {len(body)} bytes of grid data, expected {8 * count}")
    values = np.frombuffer(body, dtype="<f8", count=count).reshape(shape[0] + 1, shape[1] + 1, shape[2] + 1)
    grid = values[:-1, :-1, :-1].astype(np.float64)
    if not np.isfinite(grid).all():  # the C renders NaN pixels from such an F (quirks INVALID_VALUES_REFUSED)
        h, k, l_ = (int(x) for x in np.argwhere(~np.isfinite(grid))[0])
        raise InputError(
            f"{name}: F of h k l {h + meta['h_min']} {k + meta['k_min']} {l_ + meta['l_min']} is not finite "
            f"({grid[h, k, l_]:g})"
        )
    grid.flags.writeable = False  # read only: plans key it by identity (setup_cache.value_key), not by a hash
    return grid, meta


def _c_fread_rows(body: bytes, count: int) -> bytes:
    """What the C's ``fread`` calls leave in their zeroed buffer when ``body`` is short (glibc copies the
    bytes of a final partial item too; everything after stays zero)."""
    out = bytearray(8 * count)
    take = min(len(body), 8 * count)
    out[:take] = body[:take]
    return bytes(out)
