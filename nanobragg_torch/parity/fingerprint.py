"""Readable text fingerprints of a rendered case, for syrupy snapshots.

A fingerprint is plain text with fixed formatting (never a numpy/torch repr, never a device name):

* the trace factors in pipeline order at ``digits`` significant digits (values below the factor's
  schema ``atol`` print as 0, so float64 round-off around zero does not flicker);
* image statistics: shape, sum, max, argmax (the first pixel, in raster order, equal to the max at the
  printed precision), nonzero count, mean, percentiles;
* a coarse ``grid`` x ``grid`` map of block sums, so a spatial drift shows as a short, local diff.

Use with syrupy::

    from nanobragg_torch.parity.fingerprint import FingerprintExtension, fingerprint

    @pytest.fixture
    def snapshot_fp(snapshot):
        return snapshot.use_extension(FingerprintExtension)

    def test_case(snapshot_fp):
        assert fingerprint(title="cubic_default_F float64", trace=trace, image=image) == snapshot_fp

Snapshots then live one file per test in ``__snapshots__/<test file>/<test name>.txt`` and change only
with ``pytest --snapshot-update``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import import_extra
from .printout import Trace, as_trace
from .schema import FACTORS, order_index

__all__ = ["fingerprint", "fingerprint_changes", "format_number", "grid_sums"]  # and FingerprintExtension (lazy)

FORMAT_VERSION = 2


def format_number(x: float, digits: int = 8, floor: float = 0.0) -> str:
    """``x`` in scientific notation with ``digits`` significant digits; |x| <= floor (and -0) print "0"."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0.0 or abs(x) <= floor:
        return "0"
    return f"{x:.{digits - 1}e}"


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def grid_sums(image: Any, n: int = 8) -> np.ndarray:
    """float64 sums over an ``n`` x ``n`` grid of near-equal blocks (np.array_split boundaries)."""
    a = _array(image)
    rows = [blk.sum(axis=0) for blk in np.array_split(a, min(n, a.shape[0]), axis=0)]
    r = np.stack(rows)
    return np.stack([c.sum(axis=1) for c in np.array_split(r, min(n, a.shape[1]), axis=1)], axis=1)


def _trace_lines(trace: Trace | Mapping[str, Any], digits: int) -> list[str]:
    t = as_trace(trace)
    lines = []
    for name in sorted(t.values, key=order_index):
        f = FACTORS.get(name)
        floor = f.atol if f is not None else 0.0
        val = t.values[name]
        comps = val if isinstance(val, tuple) else (val,)
        lines.append(f"  {name:<18s} " + " ".join(format_number(v, digits, floor) for v in comps))
    return lines


def _image_lines(image: Any, digits: int, grid: int, grid_digits: int) -> list[str]:
    a = _array(image)
    flat = a.ravel()
    s, f = a.shape
    am = (0, 0)
    if flat.size:  # the first pixel equal to the max at the printed precision: symmetric ties do not flicker
        top = float(flat.max())
        am = np.unravel_index(int(np.argmax(flat >= top - abs(top) * 10.0 ** (1 - digits))), a.shape)
    pct = np.percentile(flat, [50, 90, 99, 99.9]) if flat.size else [0.0] * 4
    peak = float(np.abs(flat).max()) if flat.size else 0.0
    # pixels below 1e-9 of the peak sit in the zeros of the lattice transform, where rounding dominates
    n = lambda v: format_number(v, digits, floor=1e-9 * peak)  # noqa: E731
    lines = [
        f"  shape (slow fast)  {s} {f}",
        f"  sum                {n(flat.sum())}",
        f"  max                {n(flat.max() if flat.size else 0.0)}",
        f"  argmax (slow fast) {int(am[0])} {int(am[1])}",
        f"  min                {n(flat.min() if flat.size else 0.0)}",
        f"  mean               {n(flat.mean() if flat.size else 0.0)}",
        f"  nonzero            {int(np.count_nonzero(flat))}",
        "  percentiles 50 90 99 99.9  " + " ".join(n(p) for p in pct),
    ]
    g = grid_sums(a, grid)
    lines.append(f"[grid {g.shape[0]}x{g.shape[1]} block sums, rows = slow]")
    width = grid_digits + 6
    for row in g:
        lines.append("  " + " ".join(f"{format_number(v, grid_digits):>{width}}" for v in row))
    return lines


def fingerprint(
    title: str = "",
    trace: Trace | Mapping[str, Any] | None = None,
    image: Any = None,
    *,
    stats: Mapping[str, float] | None = None,
    digits: int = 8,
    grid: int = 8,
    grid_digits: int = 5,
) -> str:
    """The text fingerprint of a case: header, optional [trace], [image] + [grid], optional [stats].

    trace: a Trace or mapping factor -> value (or None). image: 2-D numpy array or tensor (or None).
    stats: extra named scalars (e.g. C stdout values), printed at ``digits`` digits in key order.
    """
    out = [f"fingerprint v{FORMAT_VERSION}" + (f": {title}" if title else "")]
    if trace is not None:
        out.append("[trace]")
        out += _trace_lines(trace, digits)
    if image is not None:
        out.append("[image]")
        out += _image_lines(image, digits, grid, grid_digits)
    if stats:
        out.append("[stats]")
        for key in sorted(stats):
            out.append(f"  {key:<18s} {format_number(stats[key], digits)}")
    return "\n".join(out) + "\n"


def _sections(text: str) -> dict[str, dict[str, list[float]]]:
    """section -> key -> numbers of a fingerprint text (grid rows keyed by their index)."""
    out: dict[str, dict[str, list[float]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]").split()[0]
            out[section] = {}
            continue
        if not line.startswith("  ") or not section:
            continue
        words = line.split()
        nums, key = [], []
        for w in words:
            try:
                nums.append(float(w))
            except ValueError:
                if nums:  # a word after numbers: not a number row
                    break
                key.append(w)
        name = " ".join(key) if key else f"row {len(out[section])}"
        out[section][name] = nums
    return out


def fingerprint_changes(old: str, new: str) -> list[tuple[str, float]]:
    """What changed between two fingerprint texts: (name, signed relative change), trace factors first in
    pipeline order (so the first entry is the first changed factor), then image statistics and grid rows.
    A relative change is that of the component that changed most (inf when from or to 0)."""
    a, b = _sections(old), _sections(new)
    out: list[tuple[str, float]] = []
    for section in ("trace", "image", "grid", "stats"):
        sa, sb = a.get(section, {}), b.get(section, {})
        names = sorted(set(sa) | set(sb), key=order_index) if section == "trace" else list(dict.fromkeys([*sa, *sb]))
        for name in names:
            va, vb = sa.get(name), sb.get(name)
            if va == vb:
                continue
            label = name if section == "trace" else f"{section}: {name}"
            if va is None or vb is None or len(va) != len(vb):
                out.append((label, math.inf))
                continue
            worst = 0.0
            for x, y in zip(va, vb, strict=True):
                if x != y:
                    rel = (y - x) / abs(x) if x != 0 else math.inf
                    worst = rel if abs(rel) > abs(worst) else worst
            out.append((label, worst))
    return out


@functools.cache
def _extension() -> type:
    """The syrupy extension class (syrupy is imported here, where it is used)."""
    single_file = import_extra("syrupy.extensions.single_file")
    SingleFileSnapshotExtension, WriteMode = single_file.SingleFileSnapshotExtension, single_file.WriteMode

    class FingerprintExtension(SingleFileSnapshotExtension):
        """One text file per snapshot (``.txt``), holding a :func:`fingerprint` string verbatim."""

        _write_mode = WriteMode.TEXT
        file_extension = "txt"

        def serialize(self, data, *, exclude=None, include=None, matcher=None):
            if not isinstance(data, str):
                raise TypeError(
                    f"FingerprintExtension stores fingerprint() strings; got {type(data).__name__}"
                )
            return data

    return FingerprintExtension


def __getattr__(name: str):
    if name == "FingerprintExtension":  # built on first use: importing this module needs no syrupy
        return _extension()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
