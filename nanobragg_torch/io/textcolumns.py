"""Multi-column text files (``-sourcefile``, ``-stol``/``-4stol``/``-Q``), read like the C's read_text_file.

Also holds ``c_strtod``/``c_atof``: the number-prefix parsing of C's ``strtod``/``atof`` that the C uses for
these files and for SMV header values.

Rules of read_text_file, mirrored here (see docs/formats.md):

- The file is read in ``fgets`` pieces: up to a newline, at most 10239 bytes; a longer line becomes several
  rows. A NUL byte ends the text of its piece.
- Leading delimiters (space, tab, ``,;:!``) are skipped; a piece that is then exactly ``"\\n"`` is blank and
  skipped. Every other piece is one row (a comment line such as ``# x`` becomes a row of zeros, see below).
- In a row, each field is converted with ``atof`` (longest numeric prefix, 0.0 when there is none, so a junk
  token gives 0.0 and ``inf``/``nan`` are accepted). The scan then skips characters of ``0123456789-+.EGeg``,
  then everything up to the next delimiter, then the delimiters; it stops at ``"\\n"`` or after ``ncols``
  fields. Fields beyond the ncols-th are ignored.
- Values missing at the end of a row stay NaN, but only when the scan lands exactly on the ``"\\n"``: that
  is, the last field is all number characters or is followed by delimiters. Otherwise the newline is swallowed
  with the field (a last token ``abc``, ``1x``, a ``\\r`` of a CRLF line, a last line with no newline, a long
  line cut by fgets) and the C converts the empty rest: the missing columns become 0.0, not NaN.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import read_input

_C_SPACE = " \t\n\v\f\r"
_DELIMITERS = " \t,;:!"
_NUMBER_CHARS = "0123456789-+.EGeg"
_FGETS_MAX = 10239  # read_text_file's buffer is 10240 chars, fgets keeps one for the NUL

_FLOAT_PREFIX = re.compile(
    r"""[+-]?(?:
        0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?
      | (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?
      | [iI][nN][fF](?:[iI][nN][iI][tT][yY])?
      | [nN][aA][nN](?:\([0-9A-Za-z_]*\))?
    )""",
    re.VERBOSE,
)


def c_strtod(text: str, pos: int = 0) -> tuple[float, int]:
    """Parse the longest numeric prefix of ``text[pos:]`` as C's strtod does.

    Leading C white space is skipped. Returns ``(value, end)``; when nothing converts, ``(0.0, pos)``.
    Accepts decimal and hexadecimal floats, ``inf``/``infinity`` and ``nan``/``nan(...)`` in any case.
    """
    start = pos
    n = len(text)
    while start < n and text[start] in _C_SPACE:
        start += 1
    match = _FLOAT_PREFIX.match(text, start)
    if match is None:
        return 0.0, pos
    token = match.group(0)
    body = token.lstrip("+-")
    negative = token.startswith("-")
    if body[:2] in ("0x", "0X"):
        value = float.fromhex(body)
    elif body[:1] in "nN":
        value = math.nan
    else:
        value = float(body)  # decimal digits and inf/infinity: Python agrees with strtod here
    return (-value if negative else value), match.end()


def c_atof(text: str) -> float:
    """C's ``atof``: the value of the longest numeric prefix, 0.0 when there is none."""
    return c_strtod(text)[0]


def _skip(text: str, pos: int, chars: str) -> int:
    """strspn: advance past characters in ``chars``."""
    n = len(text)
    while pos < n and text[pos] in chars:
        pos += 1
    return pos


def _skip_not(text: str, pos: int, chars: str) -> int:
    """strcspn: advance past characters not in ``chars``."""
    n = len(text)
    while pos < n and text[pos] not in chars:
        pos += 1
    return pos


def _fgets_pieces(data: bytes) -> list[str]:
    """Split ``data`` as successive fgets calls with a 10240-byte buffer would, each cut at a NUL."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    pieces: list[str] = []
    for line in lines:
        for start in range(0, len(line), _FGETS_MAX):
            chunk = line[start : start + _FGETS_MAX]
            pieces.append(chunk.split(b"\0", 1)[0].decode("latin-1"))
    return pieces


def _parse_row(text: str, pos: int, ncols: int, row: np.ndarray, where: str | None = None) -> None:
    """Fill ``row`` from one non-blank piece, following read_text_file's token loop; with ``where`` (file:line)
    a non-finite value is an InputError."""
    col = 0
    while True:
        row[col] = c_atof(text[pos:])
        if where is not None and not math.isfinite(row[col]):
            token = text[pos:_skip_not(text, pos, _DELIMITERS + "\n")].strip()
            raise InputError(f"{where}: column {col + 1} value {token!r} is not a finite number")
        pos = _skip(text, pos, _NUMBER_CHARS)
        if text[pos:] == "\n":
            return
        pos = _skip_not(text, pos, _DELIMITERS)
        pos = _skip(text, pos, _DELIMITERS)
        if text[pos:] == "\n":
            return
        col += 1
        if col >= ncols:
            return


def parse_text_columns(data: bytes, ncols: int, name: str | None = None) -> np.ndarray:
    """read_text_file on in-memory bytes: a float64 array of shape (rows, ncols), NaN where missing.

    With ``name`` (the file's name), a value written as inf/nan is an InputError naming ``name:LINE``."""
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    rows: list[tuple[str, int, int]] = []
    line = 1
    for piece in _fgets_pieces(data):
        start = _skip(piece, 0, _DELIMITERS)
        if piece[start:] != "\n":
            rows.append((piece, start, line))
        line += piece.endswith("\n")
    out = np.full((len(rows), ncols), np.nan, dtype=np.float64)
    for i, (piece, start, lineno) in enumerate(rows):
        _parse_row(piece, start, ncols, out[i], None if name is None else f"{name}:{lineno}")
    return out


def read_text_columns(path: str | os.PathLike[str], ncols: int, finite: bool = False) -> np.ndarray:
    """Read a delimited text file the way nanoBragg.c's read_text_file does (rules in the module docstring).

    Returns float64 of shape (rows, ncols). An empty file (or one with only blank lines) gives 0 rows; the
    caller decides whether that is an error. A file that cannot be read raises InputError; with ``finite``, so
    does a value written as inf or nan (the C renders NaN from it). A leading UTF-8 byte-order mark is skipped.
    """
    data = read_input(path, text=True)
    return parse_text_columns(data, ncols, os.fspath(path) if finite else None)
