"""read_hkl_file: grid layout, default_F, repeats, and errors naming file:line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.errors import InputError
from nanobragg_torch.io import read_hkl_file

SHARED = Path(os.environ.get("NB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCALED_HKL = SHARED / "pilatus_6m" / "scaled.hkl"


def _write(tmp_path: Path, text: str, name: str = "f.hkl") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_grid_layout_and_meta(tmp_path):
    path = _write(tmp_path, "1 2 3 10.5\n-2 0 5 3.25\n\n0 -1 -4 1e3\n")
    F, meta = read_hkl_file(path)
    assert meta == {
        "h_min": -2, "h_max": 1, "k_min": -1, "k_max": 2, "l_min": -4, "l_max": 5,
        "h_range": 4, "k_range": 4, "l_range": 10, "hkls": 3,
    }  # fmt: skip
    assert F.shape == (4, 4, 10) and F.dtype == np.float64
    assert F[1 + 2, 2 + 1, 3 + 4] == 10.5
    assert F[-2 + 2, 0 + 1, 5 + 4] == 3.25
    assert F[0 + 2, -1 + 1, -4 + 4] == 1000.0
    assert np.count_nonzero(F) == 3


def test_default_F_fills_gaps_only(tmp_path):
    path = _write(tmp_path, "0 0 0 1\n2 0 0 0\n")
    F, _ = read_hkl_file(path, default_F=7.5)
    assert F.shape == (3, 1, 1)
    np.testing.assert_array_equal(F[:, 0, 0], [1.0, 7.5, 0.0])  # an explicit 0 stays 0


def test_repeat_keeps_last_value(tmp_path):
    path = _write(tmp_path, "1 1 1 5\n0 0 0 2\n1 1 1 6\n1 1 1 9\n")
    F, meta = read_hkl_file(path)
    assert F[1, 1, 1] == 9.0
    assert meta["hkls"] == 4


def test_integral_float_indices_and_crlf(tmp_path):
    path = _write(tmp_path, "1.0 -2.0 3e0 4\r\n0 0 0 1\r\n")
    F, meta = read_hkl_file(path)
    assert (meta["h_min"], meta["k_min"], meta["l_max"]) == (0, -2, 3)
    assert F[1, 0, 3] == 4.0


def test_single_entry(tmp_path):
    F, meta = read_hkl_file(_write(tmp_path, "  5 -6 7 42\n"))
    assert F.shape == (1, 1, 1) and F[0, 0, 0] == 42.0
    assert meta["h_min"] == meta["h_max"] == 5


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("1 2 3 4\n1 2 3\n", 2, "expected 4 numbers"),
        ("1 2 3 4\n\n1 2 3 4 5\n", 3, "expected 4 numbers"),
        ("1 2 3 4\n1 2 x 4\n", 2, "not a number"),
        ("1 2 3 4\n# comment\n", 2, "expected 4 numbers"),
        ("1 2 3 4\n0 0 0 1\n1.5 2 3 4\n", 3, "must be integers"),
        ("1 2 3 4\n0 0 0 nan\n", 2, "not finite"),
        ("\n\n1 2 3 inf\n", 3, "not finite"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, text, line, what):
    path = _write(tmp_path, text)
    with pytest.raises(InputError, match=what) as info:
        read_hkl_file(path)
    assert str(info.value).startswith(f"{path}:{line}:")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(InputError, match="empty"):
        read_hkl_file(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_hkl_file(tmp_path / "nope.hkl")


def test_huge_range_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NB_MEMORY_LIMIT", "100000")  # a dense grid (31^3 cells, 238 KB) over the budget
    with pytest.raises(InputError, match=r"f.hkl:\d: .*the F grid would take 233 KiB .*NB_MEMORY_LIMIT"):
        read_hkl_file(_write(tmp_path, "0 0 0 1\n30 30 30 1\n"))
    with pytest.raises(InputError, match="64-bit keys"):  # 2^96 cells: not even a sparse store
        read_hkl_file(_write(tmp_path, "-2147483647 -2147483647 -2147483647 1\n2147483647 2147483647 2147483647 1\n"))


def test_almost_empty_grid_is_sparse(tmp_path):
    F, meta = read_hkl_file(_write(tmp_path, "0 0 0 1\n5000 5000 5000 2\n"))
    assert F.shape == (5001, 5001, 5001) and list(F.keys) == [0, 5001**3 - 1] and list(F.values) == [1.0, 2.0]
    assert meta["hkls"] == 2 and meta["h_max"] == 5000


@pytest.mark.needs_shared("pilatus_6m/scaled.hkl")
def test_scaled_hkl_fast_and_right():
    start = time.perf_counter()
    F, meta = read_hkl_file(SCALED_HKL)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"read_hkl_file took {elapsed:.3f} s on 64k lines"
    assert meta["hkls"] == 64333
    assert (meta["h_min"], meta["h_max"], meta["k_min"], meta["k_max"]) == (-24, 24, -28, 28)
    assert (meta["l_min"], meta["l_max"]) == (-31, 30)
    assert F.shape == (49, 57, 62)
    assert F[23 + 24, 15 + 28, -1 + 31] == 23.00  # first line of the file
