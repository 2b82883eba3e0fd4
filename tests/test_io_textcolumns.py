"""read_text_columns mirrors the C's read_text_file; c_atof mirrors atof/strtod.

The expected rows below were checked against the pinned C binary's printout of the same file used as
``-sourcefile`` (see test_io_c_parity.py for the live check).
"""

from __future__ import annotations

import math
import os
import subprocess

import numpy as np
import pytest

from nanobragg_torch.errors import InputError
from nanobragg_torch.io import c_atof, c_strtod, parse_text_columns, read_text_columns
from nanobragg_torch.io.smv import c_g

N = np.nan

QUIRKY = (
    b"1 2 3 4 5\n"
    b"1 2\n"
    b"1,2;3:4!5\n"
    b"  ,,1 2 3\n"
    b"abc 2 xyz 4 5\n"
    b"1e5x 2 3\n"
    b"1.5-3 2\n"
    b"# comment\n"
    b"\n"
    b"   \n"
    b",,,\n"
    b"1 2\r\n"
    b"nan 2 3 inf 5e-11\n"
    b"1 2 3 4 5 6 7\n"
    b"1 2  \n"
    b"0x10 2\n"
    b"+.5e-3 -2.E+1\n"
    b"1e 2\n"
    b"\t3\t4\t\n"
    b"1 2 3 4 5\r\n"
    b"-.e5 .\n"
    b"4 5 6 7 8 \t \n"
    b"infinity -nan(0) 2\n"
    b"7 8"
)
QUIRKY_ROWS = [
    [1, 2, 3, 4, 5],
    [1, 2, N, N, N],
    [1, 2, 3, 4, 5],
    [1, 2, 3, N, N],
    [0, 2, 0, 4, 5],  # junk tokens are atof 0
    [1e5, 2, 3, N, N],
    [1.5, 2, N, N, N],  # "1.5-3" is one field
    [0, 0, 0, 0, 0],  # a comment line: the newline is swallowed with "comment", so zeros not NaN
    [1, 2, 0, 0, 0],  # CRLF: same swallowing
    [N, 2, 3, math.inf, 5e-11],
    [1, 2, 3, 4, 5],
    [1, 2, N, N, N],
    [16, 2, N, N, N],
    [5e-4, -20, N, N, N],
    [1, 2, N, N, N],
    [3, 4, N, N, N],
    [1, 2, 3, 4, 5],
    [0, 0, N, N, N],
    [4, 5, 6, 7, 8],
    [math.inf, N, 2, N, N],
    [7, 8, 0, 0, 0],  # last line without newline
]


def test_quirky_file_matches_c(tmp_path):
    path = tmp_path / "sources.txt"
    path.write_bytes(QUIRKY)
    rows = read_text_columns(path, 5)
    assert rows.shape == (len(QUIRKY_ROWS), 5) and rows.dtype == np.float64
    np.testing.assert_array_equal(rows, np.array(QUIRKY_ROWS, dtype=np.float64))


def test_two_columns_and_extra_fields():
    rows = parse_text_columns(b"0.1 10 99\n0.2,20\n0.3\n", 2)
    np.testing.assert_array_equal(rows, [[0.1, 10], [0.2, 20], [0.3, N]])


def test_long_line_split_like_fgets():
    line = b"1 " + b" " * 10300 + b"2 3\n"  # longer than fgets' 10239 bytes: two rows
    rows = parse_text_columns(line, 3)
    assert rows.shape == (2, 3)
    np.testing.assert_array_equal(rows[0], [1, 0, 0])
    np.testing.assert_array_equal(rows[1], [2, 3, N])


def test_nul_ends_line_text():
    np.testing.assert_array_equal(parse_text_columns(b"1 2\x003 4\n5\n", 2), [[1, 2], [5, N]])


def test_empty_and_missing(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"\n  \n")
    assert read_text_columns(tmp_path / "e.txt", 2).shape == (0, 2)
    with pytest.raises(InputError, match="cannot read"):
        read_text_columns(tmp_path / "nope.txt", 2)
    with pytest.raises(ValueError):
        parse_text_columns(b"1\n", 0)


@pytest.mark.parametrize(
    ("text", "value", "end"),
    [
        ("  12.5e1x", 125.0, 8),
        ("-.5", -0.5, 3),
        ("1e", 1.0, 1),
        ("1e+", 1.0, 1),
        ("0x1p4", 16.0, 5),
        ("0xg", 0.0, 1),
        ("-InFiNiTy", -math.inf, 9),
        ("infinit", math.inf, 3),
        ("\f\v\r\n 7", 7.0, 6),
        ("abc", 0.0, 0),
        ("", 0.0, 0),
        ("+", 0.0, 0),
        ("1e999", math.inf, 5),
    ],
)
def test_c_strtod(text, value, end):
    got, got_end = c_strtod(text)
    assert got == value and got_end == end


def test_c_atof_nan():
    assert math.isnan(c_atof("nan(123)"))
    assert math.copysign(1.0, c_atof("-0")) == -1.0


# ---- parity with the C binary (NB_C_BIN) ----

NB_C_BIN = os.environ.get("NB_C_BIN")


@pytest.mark.needs_c
def test_sourcefile_parsed_like_c(tmp_path):
    # the C prints each source as "X Y Z   I lambda" (%g) after filling NaN with defaults; in the MOSFLM
    # convention those are -source_distance*beam = (-10, -0, -0) m, I = 1 and lambda0 = 1e-10 m
    content = QUIRKY.replace(b"7 8", b"1 " + b" " * 10300 + b"2 3\n7 8")
    (tmp_path / "s.txt").write_bytes(content)
    flags = "-sourcefile s.txt -cell 50 50 50 -N 1 -default_F 1 -detpixels 2 -pixel 0.1 -distance 50 -nonoise"
    run = [NB_C_BIN, *flags.split(), "-nopgm", "-noprogress", "-intfile", "i.img"]
    out = subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "created a total of" in line and "sources" in line)
    count = int(lines[start].split()[4])
    c_rows = [lines[start + 1 + i].split() for i in range(count)]

    rows = read_text_columns(tmp_path / "s.txt", 5)
    defaults = [-10.0, -0.0, -0.0, 1.0, 1e-10]
    ours = [[c_g(d if math.isnan(v) else v) for v, d in zip(row, defaults, strict=True)] for row in rows]
    assert ours == c_rows
