"""MOSFLM orientation matrix files (``-mat``).

nanoBragg.c reads the first nine numbers of the file with three ``fscanf("%lg%lg%lg")`` calls; the i-th
triple goes to (a_star[i], b_star[i], c_star[i]). So the *columns* of the 3x3 block at the top of the file
are the reciprocal vectors a*, b*, c*, in units of 1/Angstrom times the wavelength in Angstrom (MOSFLM's A
matrix). The rest of the file (U matrix, cell, missets) is ignored.
"""

from __future__ import annotations

import os

import numpy as np

from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import read_input
from nanobragg_torch.io.textcolumns import c_strtod


def parse_mosflm_matrix(text: str, name: str = "<matrix>") -> np.ndarray:
    """The matrix whose rows are a*, b*, c* (wavelength-scaled), from the text of a MOSFLM matrix file.

    Numbers are read as a stream like fscanf's ``%lg`` (so fixed-width fields that touch, as in
    ``-0.0123-0.0456``, still split); anything else before the ninth number is an InputError naming the line.
    """
    values: list[float] = []
    pos = 0
    n = len(text)
    while len(values) < 9:
        while pos < n and text[pos] in " \t\n\v\f\r":
            pos += 1
        lineno = text.count("\n", 0, pos) + 1
        if pos >= n:
            raise InputError(f"{name}:{lineno}: expected 9 numbers (3 lines of 3), found only {len(values)}")
        value, end = c_strtod(text, pos)
        if end == pos:
            bad = text[pos:].split(None, 1)[0] if text[pos:].strip() else text[pos]
            raise InputError(f"{name}:{lineno}: not a number: {bad[:40]!r}")
        if not np.isfinite(value):
            raise InputError(f"{name}:{lineno}: matrix element is not finite ({text[pos:end]})")
        values.append(value)
        pos = end
    rows = np.array(values, dtype=np.float64).reshape(3, 3)
    # file row i holds component i of a*, b*, c*: the vectors are the file's columns
    return rows.T.copy()


def read_mosflm_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a MOSFLM matrix file: a (3, 3) float64 array whose rows are a*, b*, c*.

    The vectors are still multiplied by the wavelength (MOSFLM convention): divide by lambda in Angstrom to
    get 1/Angstrom, as the C does with ``vector_scale(a_star, a_star, 1e-10/lambda0)``.
    """
    name = os.fspath(path)
    text = read_input(path, text=True).decode("latin-1")
    return parse_mosflm_matrix(text, name)


def mosflm_matrix_text(matrix: np.ndarray) -> str:
    """A minimal MOSFLM matrix file (the 3x3 block only) for rows a*, b*, c*: handy for tests and fixtures."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"matrix must be 3x3, got {m.shape}")
    return "".join(" ".join(f"{v:.17g}" for v in m[:, i]) + "\n" for i in range(3))
