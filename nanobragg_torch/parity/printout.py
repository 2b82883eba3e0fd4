"""Traces: the C's ``-printout_pixel F S`` blocks and our ``TRACE_PY:`` lines, as one :class:`Trace` type.

The C block (end of the pixel loop in nanoBragg.c main) prints, for the selected pixel::

    FFFF SSSS : stol = %g or %g          stol (m^-1) and stol_lab (A^-1, assumes beam along +x)
    at %g %g %g                          pixel_pos (m)
    hkl= %f %f %f  hkl0= %d %d %d        hkl_frac, hkl_rounded
     F_cell=%g  F_latt=%g   I = %g       F_cell, F_latt, I_before_scaling
    I/steps %15.10g  (then polar, omega, capfrac, pixel with the same format)
    real-space cell vectors (Angstrom):  three rows X:, Y:, Z: of a b c at %11.8f

Each parsed C value keeps its printed precision (:class:`Precision`), so that a comparison can allow
for the rounding of the printout while staying strict for full-precision traces.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .schema import FACTORS, ordered_names

__all__ = [
    "Precision",
    "Trace",
    "Value",
    "parse_printout",
    "parse_printout_one",
    "parse_trace_py",
    "parse_trace_py_all",
    "parse_any",
    "as_trace",
]

Value = float | tuple[float, ...]


@dataclass(frozen=True)
class Precision:
    """How a number was printed: ``sig`` significant digits (``%g``: 6, ``%15.10g``: 10) or ``dec``
    digits after the point (``%f``: 6, ``%11.8f``: 8); ``exact`` for integers."""

    kind: str  # "sig" | "dec" | "exact"
    digits: int = 0

    def half_unit(self, value: float) -> float:
        """Largest rounding error of ``value`` as printed: half a unit in the last printed digit."""
        if self.kind == "exact" or not math.isfinite(value):
            return 0.0
        if self.kind == "dec":
            return 0.5 * 10.0 ** (-self.digits)
        if value == 0.0:
            return 0.0  # %g prints 0 only for an exact zero
        exponent = math.floor(math.log10(abs(value)))
        return 0.5 * 10.0 ** (exponent - self.digits + 1)

    def __str__(self) -> str:
        return {"sig": f"%.{self.digits}g", "dec": f"%.{self.digits}f", "exact": "%d"}[self.kind]


G6 = Precision("sig", 6)
G10 = Precision("sig", 10)
F6 = Precision("dec", 6)
F8 = Precision("dec", 8)
EXACT = Precision("exact")


@dataclass
class Trace:
    """Factor values of one pixel.

    values: factor name -> float (scalars) or tuple of floats (vectors).
    precision: factor name -> :class:`Precision` for values read from printed text at limited precision;
        absent for full-precision values (our float64 traces).
    pixel: (slow, fast) when known.
    origin: "c-printout", "c-stdout", "trace-py" or "dict".
    extras: values whose names are not in the schema (kept, not compared).
    dtype, device: what the trace was computed in, when it says so (``TRACE_PY: dtype float32``); the C
        computes in double (:attr:`computed_in`).
    """

    values: dict[str, Value] = field(default_factory=dict)
    precision: dict[str, Precision] = field(default_factory=dict)
    pixel: tuple[int, int] | None = None
    origin: str = "dict"
    extras: dict[str, Value] = field(default_factory=dict)
    dtype: str | None = None
    device: str | None = None

    @property
    def computed_in(self) -> str:
        """The precision the values were computed in: the recorded dtype, else float64 (the C's double)."""
        return self.dtype or "float64"

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def names(self) -> list[str]:
        """Factor names in pipeline order."""
        return ordered_names(self.values)

    def uncertainty(self, name: str) -> tuple[float, ...]:
        """Per-component printed rounding error of ``name`` (zeros for full-precision values)."""
        comps = _components(self.values[name])
        prec = self.precision.get(name)
        if prec is None:
            return tuple(0.0 for _ in comps)
        return tuple(prec.half_unit(v) for v in comps)

    def merged(self, other: Trace) -> Trace:
        """A new trace with ``other``'s factors added where this one lacks them."""
        out = Trace(
            dict(self.values), dict(self.precision), self.pixel or other.pixel, self.origin, dict(self.extras),
            self.dtype or other.dtype, self.device or other.device
        )
        for name, value in other.values.items():
            if name not in out.values:
                out.values[name] = value
                if name in other.precision:
                    out.precision[name] = other.precision[name]
        for name, value in other.extras.items():
            out.extras.setdefault(name, value)
        return out


def _components(value: Value) -> tuple[float, ...]:
    if isinstance(value, tuple | list):
        return tuple(float(v) for v in value)
    return (float(value),)


def as_trace(obj: Trace | Mapping[str, object]) -> Trace:
    """Wrap a plain mapping (factor -> number or sequence) as a full-precision :class:`Trace`."""
    if isinstance(obj, Trace):
        return obj
    trace = Trace(origin="dict")
    for name, value in obj.items():
        if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
            value = value.tolist()
        val: Value = tuple(float(v) for v in value) if isinstance(value, list | tuple) else float(value)
        (trace.values if name in FACTORS else trace.extras)[name] = val
    return trace


# ---------------------------------------------------------------------------------------------------
# C printout blocks

_NUM = r"[-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
# search, not match: the C's "further warnings will not be printed! " has no newline and may precede it
_HEAD = re.compile(rf"(?:^|\s)(-?\d+)\s+(-?\d+)\s*:\s*stol\s*=\s*({_NUM})\s+or\s+({_NUM})\s*$")
_AT = re.compile(rf"^at\s+({_NUM})\s+({_NUM})\s+({_NUM})\s*$")
_HKL = re.compile(rf"^hkl=\s*({_NUM})\s+({_NUM})\s+({_NUM})\s+hkl0=\s*(-?\d+)\s+(-?\d+)\s+(-?\d+)\s*$")
_FI = re.compile(rf"^\s*F_cell=\s*({_NUM})\s+F_latt=\s*({_NUM})\s+I\s*=\s*({_NUM})\s*$")
_TEN = re.compile(rf"^(I/steps|polar|omega|capfrac|pixel)\s+({_NUM})\s*$")
_ROW = re.compile(rf"^([XYZ]):\s*({_NUM})\s+({_NUM})\s+({_NUM})\s*$")
_TEN_NAMES = {
    "I/steps": "I_over_steps",
    "polar": "polar",
    "omega": "omega_pixel",
    "capfrac": "capture_fraction",
    "pixel": "I_pixel_final",
}


def _num(text: str) -> float:
    return float(text)


def parse_printout(text: str) -> list[Trace]:
    """All ``-printout_pixel`` blocks in ``text`` (C stdout or an extracted block), in order.

    Each block becomes a Trace with origin "c-printout", pixel (slow, fast) and printed precisions.
    Lines that are not part of a block are ignored; an incomplete block keeps what it has.
    """
    traces: list[Trace] = []
    cur: Trace | None = None
    rows: dict[str, tuple[float, float, float]] = {}

    def close() -> None:
        if cur is not None and len(rows) == 3:
            for col, name in enumerate(("a_vec", "b_vec", "c_vec")):
                cur.values[name] = tuple(rows[axis][col] for axis in "XYZ")
                cur.precision[name] = F8

    for raw in text.splitlines():
        line = raw.rstrip()
        if m := _HEAD.search(line):
            close()
            rows = {}
            fpix, spix = int(m.group(1)), int(m.group(2))
            cur = Trace(origin="c-printout", pixel=(spix, fpix))
            cur.values["stol"], cur.values["stol_lab"] = _num(m.group(3)), _num(m.group(4))
            cur.precision["stol"] = cur.precision["stol_lab"] = G6
            traces.append(cur)
            continue
        if cur is None:
            continue
        if m := _AT.match(line):
            cur.values["pixel_pos"] = tuple(_num(g) for g in m.groups())
            cur.precision["pixel_pos"] = G6
        elif m := _HKL.match(line):
            cur.values["hkl_frac"] = tuple(_num(g) for g in m.groups()[:3])
            cur.values["hkl_rounded"] = tuple(float(int(g)) for g in m.groups()[3:])
            cur.precision["hkl_frac"], cur.precision["hkl_rounded"] = F6, EXACT
        elif m := _FI.match(line):
            for name, g in zip(("F_cell", "F_latt", "I_before_scaling"), m.groups(), strict=True):
                cur.values[name] = _num(g)
                cur.precision[name] = G6
        elif m := _TEN.match(line):
            name = _TEN_NAMES[m.group(1)]
            cur.values[name] = _num(m.group(2))
            cur.precision[name] = G10
        elif (m := _ROW.match(line)) and m.group(1) not in rows:
            rows[m.group(1)] = (_num(m.group(2)), _num(m.group(3)), _num(m.group(4)))
            if len(rows) == 3:
                close()
                cur = None
    close()
    return traces


def parse_printout_one(text: str, pixel: tuple[int, int] | None = None) -> Trace:
    """The block for ``pixel`` (slow, fast), or the only/first block when ``pixel`` is None."""
    blocks = parse_printout(text)
    if pixel is not None:
        blocks = [b for b in blocks if b.pixel == tuple(pixel)]
    if not blocks:
        where = f" for pixel (slow, fast) = {pixel}" if pixel is not None else ""
        raise ValueError(f"no C printout block{where} found")
    return blocks[0]


# ---------------------------------------------------------------------------------------------------
# our TRACE_PY lines

_PY = re.compile(r"^\s*TRACE_PY:\s+(\S+)((?:\s+\S+)*)\s*$")
_META = ("dtype", "device")  # text lines: what the trace was computed in


def parse_trace_py_all(text: str) -> list[Trace]:
    """All traces in a log of ``TRACE_PY: <name> <v1> [<v2> <v3>]`` lines.

    A new trace starts when a factor name repeats. A ``pixel`` line with two integers (slow fast) sets
    ``Trace.pixel``; ``dtype`` and ``device`` lines set ``Trace.dtype`` / ``Trace.device``; other non-schema
    names land in ``Trace.extras``. Values are full precision.
    """
    traces: list[Trace] = []
    cur: Trace | None = None
    for raw in text.splitlines():
        m = _PY.match(raw)
        if not m:
            continue
        name = m.group(1)
        tokens = m.group(2).split()
        if cur is None or name in cur.values or name in cur.extras or (name in _META and getattr(cur, name)):
            cur = Trace(origin="trace-py")
            traces.append(cur)
        if name in _META:
            setattr(cur, name, " ".join(tokens))
            continue
        nums = tuple(float(t) for t in tokens)
        value: Value = nums[0] if len(nums) == 1 else nums
        if name == "pixel" and len(nums) == 2:
            cur.pixel = (int(nums[0]), int(nums[1]))
            cur.extras[name] = value
        elif name in FACTORS:
            cur.values[name] = value
        else:
            cur.extras[name] = value
    return traces


def parse_trace_py(text: str) -> Trace:
    """The first (usually only) TRACE_PY trace in ``text``."""
    traces = parse_trace_py_all(text)
    if not traces:
        raise ValueError("no TRACE_PY lines found")
    return traces[0]


def parse_any(text: str, pixel: tuple[int, int] | None = None) -> Trace:
    """A trace from either kind of log: TRACE_PY lines win, else a C printout block."""
    if _PY.search(text) or "TRACE_PY:" in text:
        traces = parse_trace_py_all(text)
        if pixel is not None:
            sel = [t for t in traces if t.pixel == tuple(pixel)]
            traces = sel or traces
        if traces:
            return traces[0]
    return parse_printout_one(text, pixel)
