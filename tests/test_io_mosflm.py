"""MOSFLM matrix: file columns are a*, b*, c*; stream parsing; errors naming file:line."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from nanobragg_torch.errors import InputError
from nanobragg_torch.io import mosflm_matrix_text, read_mosflm_matrix

UPSTREAM_STYLE = """  0.01214963  0.02546154 -0.00087968
 -0.01451536  0.00000807  0.02825911
  0.01705250  0.00089825  0.02468136
       0.000       0.000       0.000
   0.4768789   0.8786564  -0.0234393
    281.0000    281.0000    165.2000     90.0000     90.0000    120.0000
"""


def test_columns_are_vectors(tmp_path):
    path = tmp_path / "A.mat"
    path.write_text(UPSTREAM_STYLE)
    m = read_mosflm_matrix(path)
    assert m.shape == (3, 3) and m.dtype == np.float64
    np.testing.assert_array_equal(m[0], [0.01214963, -0.01451536, 0.01705250])  # a*
    np.testing.assert_array_equal(m[1], [0.02546154, 0.00000807, 0.00089825])  # b*
    np.testing.assert_array_equal(m[2], [-0.00087968, 0.02825911, 0.02468136])  # c*


def test_run_together_fixed_width_fields(tmp_path):
    path = tmp_path / "A.mat"
    path.write_text("-0.0100000-0.0200000 0.0300000\n0.04 0.05 0.06\n0.07\n0.08 0.09\n")
    m = read_mosflm_matrix(path)
    np.testing.assert_array_equal(m.T.ravel(), [-0.01, -0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09])


def test_text_round_trip(tmp_path):
    m = np.array([[1.5e-2, -3e-3, 2.5e-2], [-2.8e-2, 1.0e-2, -1.4e-2], [1.05e-2, -3.2e-2, -1.0e-2]])
    path = tmp_path / "B.mat"
    path.write_text(mosflm_matrix_text(m))
    np.testing.assert_array_equal(read_mosflm_matrix(path), m)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("1 2 3\n4 5 6\n", 3, "found only 6"),
        ("1 2 3\n4 five 6\n7 8 9\n", 2, "not a number"),
        ("1 2 3\n\n\n4 5 6\n7 8 x\n", 5, "not a number"),
        ("1 2 3\n4 5 6\n7 8 inf\n", 3, "not finite"),
        ("", 1, "found only 0"),
    ],
)
def test_errors_name_line(tmp_path, text, line, what):
    path = tmp_path / "bad.mat"
    path.write_text(text)
    with pytest.raises(InputError, match=what) as info:
        read_mosflm_matrix(path)
    assert str(info.value).startswith(f"{path}:{line}:")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_mosflm_matrix(tmp_path / "none.mat")


# ---- parity with the C binary (NB_C_BIN) ----

NB_C_BIN = os.environ.get("NB_C_BIN")


@pytest.mark.needs_c
def test_reciprocal_vectors_like_c(tmp_path):
    # the C prints a*, b*, c* as columns (rows X, Y, Z) with %11.8f after dividing by lambda
    (tmp_path / "A.mat").write_text(UPSTREAM_STYLE)
    flags = "-mat A.mat -lambda 1.3 -N 1 -default_F 1 -detpixels 2 -pixel 0.1 -distance 50 -nonoise -nopgm"
    run = [NB_C_BIN, *flags.split(), "-noprogress", "-intfile", "i.img"]
    out = subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    at = lines.index("reciprocal-space cell vectors (Angstrom^-1):")
    printed = np.array([[float(v) for v in lines[at + 2 + i].split()[1:]] for i in range(3)])
    ours = read_mosflm_matrix(tmp_path / "A.mat") / 1.3
    np.testing.assert_allclose(printed, ours.T, rtol=0, atol=5.1e-9)
