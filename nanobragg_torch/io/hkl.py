"""Text HKL files (``-hkl``): ``h k l F`` per line, P1, as read by nanoBragg.c's two fscanf passes.

The C counts entries and the h/k/l extremes in a first pass, allocates a dense grid over
[h_min, h_max] x [k_min, k_max] x [l_min, l_max] filled with ``default_F`` (0 when not given), and writes each
F in a second pass (a repeated h,k,l: the last one wins). We build the same grid, with these differences:

- The C reads a stream of numbers and stops silently at the first thing that is not one; we read lines and a
  line that is not exactly four numbers is an InputError ``path:LINE: ...``. Blank lines are skipped.
- The C warns about non-integer indices and then misparses the rest of the file (its second pass reads
  indices with ``%d``, which stops at the decimal point). Here an index must be an integral value (``3`` or
  ``3.0``); anything else is an InputError. Non-finite F values are an InputError too.
- An empty file (the C's "not enough HKL indices") is an InputError.
- A grid larger than the memory budget (memory.memory_budget: NB_MEMORY_LIMIT, ulimit -v, the cgroup's limit,
  the free memory) is an InputError naming the line whose index lies farthest out, with the size. A grid that
  would be almost empty (over DENSE_ALWAYS_BYTES and under SPARSE_FILL filled: two reflections 0 0 0 and
  1000000000 0 0 would take 7.45 GiB) is stored sparsely (config.SparseGrid), with a note; the C allocates
  it dense. A UTF-8 byte-order mark at the start is skipped.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from nanobragg_torch.config import SparseGrid
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import read_input
from nanobragg_torch.memory import check_allocation, size_text

HKLMeta = dict[str, int]

# an F grid of more than DENSE_ALWAYS_BYTES (float64) that its entries would fill less than SPARSE_FILL of is
# stored by its filled cells (SPARSE_BYTES_PER_CELL each: key and value)
DENSE_ALWAYS_BYTES = 32 * 2**20
SPARSE_FILL = 1 / 64
SPARSE_BYTES_PER_CELL = 16
MAX_SPARSE_CELLS = 2**62  # the box a sparse store's int64 keys index


def store_grid(idx: np.ndarray, F: np.ndarray, default_F: float, where: str, notes: list[str] | None = None,
               name: str | None = None) -> tuple[np.ndarray | SparseGrid, np.ndarray, np.ndarray, int]:
    """The F grid of indices `idx` ((m, 3) int64) and values `F` (m,), in write order (the last of repeated
    indices wins), over the box of their extremes; cells not given hold `default_F`. Returns (grid, lo, hi,
    filled cells): a dense read-only float64 grid, or a SparseGrid when the dense one would be almost empty.
    Refusals (one line, `where` first): a store that does not fit the memory budget. `name`: the file, for
    the note on a sparse store (default `where`)."""
    lo = idx.min(axis=0)
    hi = idx.max(axis=0)
    ranges = hi - lo + 1
    cells = float(np.prod(ranges, dtype=np.float64))
    what = f"index ranges h {lo[0]}..{hi[0]}, k {lo[1]}..{hi[1]}, l {lo[2]}..{hi[2]}: the F grid"
    if cells >= MAX_SPARSE_CELLS:
        raise InputError(f"{where}: {what} spans {cells:.3g} cells, more than even a sparse store's 64-bit keys "
                         "index")
    shape = tuple(int(r) for r in ranges)
    flat = np.ravel_multi_index(tuple((idx - lo).T), shape)
    keys, first_rev = np.unique(flat[::-1], return_index=True)
    values = np.ascontiguousarray(F[::-1][first_rev], dtype=np.float64)
    if 8.0 * cells <= DENSE_ALWAYS_BYTES or len(keys) >= SPARSE_FILL * cells:
        check_allocation(8.0 * cells, what, where)
        grid = np.full(shape, float(default_F), dtype=np.float64)
        grid.flat[keys] = values
        grid.flags.writeable = False  # read only: plans key it by identity (setup_cache.value_key), not by a hash
        return grid, lo, hi, len(keys)
    check_allocation(SPARSE_BYTES_PER_CELL * len(keys), f"{what}, stored sparsely ({len(keys)} cells)", where)
    if notes is not None:
        notes.append(f"{name or where}: {what} would take {size_text(8.0 * cells)} for {len(keys)} filled cells: "
                     "stored sparsely")
    keys = keys.astype(np.int64)
    keys.flags.writeable = False
    values.flags.writeable = False
    return SparseGrid(keys, values, shape, float(default_F)), lo, hi, len(keys)


def _numbers_or_error(path: str, lineno: int, line: str) -> list[float]:
    tokens = line.split()
    if len(tokens) != 4:
        raise InputError(f"{path}:{lineno}: expected 4 numbers 'h k l F', found {len(tokens)} fields")
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise InputError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None


def _parse_slow(path: str, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Line-by-line parse; used to report the exact bad line when the fast parse fails."""
    rows: list[list[float]] = []
    linenos: list[int] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        rows.append(_numbers_or_error(path, lineno, line))
        linenos.append(lineno)
    return np.array(rows, dtype=np.float64).reshape(-1, 4), np.array(linenos, dtype=np.int64)


def _parse(path: str, text: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (n, 4) float64 rows and, when known, the file line number of each row."""
    if not text.strip():
        raise InputError(f"{path}: no HKL entries (empty file)")
    try:
        data = np.loadtxt(io.StringIO(text), dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        data = None
    if data is None or data.shape[1] != 4:
        # _parse_slow raises on the first bad line; if it somehow does not, its rows are the answer
        return _parse_slow(path, text)
    return data, None


def _line_of(path: str, text: str, row: int, linenos: np.ndarray | None) -> str:
    if linenos is not None:
        return f"{path}:{int(linenos[row])}"
    count = -1
    for lineno, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            count += 1
            if count == row:
                return f"{path}:{lineno}"
    return path


def read_hkl_file(path: str | os.PathLike[str], default_F: float = 0.0,
                  notes: list[str] | None = None) -> tuple[np.ndarray | SparseGrid, HKLMeta]:
    """Read an ``h k l F`` text file into a dense float64 grid, as nanoBragg.c's ``-hkl`` reader does.

    Returns ``(F, meta)``: ``F`` has shape (h_range, k_range, l_range) and ``F[h-h_min, k-k_min, l-l_min]``
    is the structure factor of (h, k, l); cells not in the file hold ``default_F``. A grid that would be
    almost empty is a SparseGrid instead (`store_grid`; a line in ``notes`` says so). ``meta`` has h_min,
    h_max, k_min, k_max, l_min, l_max, h_range, k_range, l_range (ranges are max - min + 1) and hkls (the
    number of entries read, repeats included, as the C counts them).
    """
    name = os.fspath(path)
    text = read_input(path, text=True).decode("latin-1")

    data, linenos = _parse(name, text)
    hkl = data[:, :3]
    F = data[:, 3]

    bad = ~np.isfinite(hkl).all(axis=1) | (hkl != np.round(hkl)).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(
            f"{_line_of(name, text, row, linenos)}: Miller indices must be integers, "
            f"got {' '.join(f'{v:g}' for v in hkl[row])}"
        )
    bad = ~np.isfinite(F)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{_line_of(name, text, row, linenos)}: structure factor is not finite ({F[row]:g})")
    if np.abs(hkl).max() > 2**31 - 1:
        row = int(np.argmax(np.abs(hkl).max(axis=1)))
        raise InputError(f"{_line_of(name, text, row, linenos)}: Miller index too large for a C int")

    idx = hkl.astype(np.int64)
    # memory guard: name the line holding the index farthest from the others' range
    spread = np.abs(idx - np.median(idx, axis=0)).max(axis=1)
    where = _line_of(name, text, int(np.argmax(spread)), linenos)
    grid, lo, hi, _ = store_grid(idx, F, default_F, where, notes, name)
    ranges = hi - lo + 1

    meta: HKLMeta = {
        "h_min": int(lo[0]), "h_max": int(hi[0]),
        "k_min": int(lo[1]), "k_max": int(hi[1]),
        "l_min": int(lo[2]), "l_max": int(hi[2]),
        "h_range": int(ranges[0]), "k_range": int(ranges[1]), "l_range": int(ranges[2]),
        "hkls": int(len(F)),
    }  # fmt: skip
    return grid, meta


def hkl_meta_from_bounds(bounds: Any, hkls: int) -> HKLMeta:
    """Metadata dict for index bounds (h_min, h_max, k_min, k_max, l_min, l_max)."""
    h_min, h_max, k_min, k_max, l_min, l_max = (int(b) for b in bounds)
    return {
        "h_min": h_min, "h_max": h_max, "k_min": k_min, "k_max": k_max, "l_min": l_min, "l_max": l_max,
        "h_range": h_max - h_min + 1, "k_range": k_max - k_min + 1, "l_range": l_max - l_min + 1,
        "hkls": int(hkls),
    }  # fmt: skip
