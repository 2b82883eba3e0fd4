"""Fdump.bin: exact layout (pad row), round trips, errors, and the C's white-space quirk."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.errors import InputError
from nanobragg_torch.io import fdump_bytes, read_fdump, read_hkl_file, write_fdump


def test_exact_bytes_with_pad_row(tmp_path):
    hkl = tmp_path / "a.hkl"
    hkl.write_text("-1 0 2 3.5\n1 0 2 4.5\n")
    F, meta = read_hkl_file(hkl, default_F=9.0)
    data = fdump_bytes(F, meta)
    header = b"-1 1 0 0 2 2\n\f"
    assert data.startswith(header)
    values = np.frombuffer(data[len(header) :], dtype="<f8").reshape(4, 2, 2)
    # real cells (the gap at h=0 holds default_F), then a zero pad in every dimension, never default_F
    expect = np.zeros((4, 2, 2))
    expect[:3, 0, 0] = [3.5, 9.0, 4.5]
    np.testing.assert_array_equal(values, expect)
    assert len(data) == len(header) + 8 * 4 * 2 * 2


def test_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    F = rng.normal(size=(3, 4, 5))
    meta = {"h_min": -1, "h_max": 1, "k_min": 2, "k_max": 5, "l_min": -10, "l_max": -6,
            "h_range": 3, "k_range": 4, "l_range": 5, "hkls": 7}  # fmt: skip
    write_fdump(tmp_path / "Fdump.bin", F, meta)
    F2, meta2 = read_fdump(tmp_path / "Fdump.bin")
    np.testing.assert_array_equal(F2, F)
    assert meta2 == {**meta, "hkls": 60}  # the C sets hkls = h_range*k_range*l_range


def test_shape_mismatch_refused(tmp_path):
    meta = {"h_min": 0, "h_max": 1, "k_min": 0, "k_max": 0, "l_min": 0, "l_max": 0,
            "h_range": 2, "k_range": 1, "l_range": 1, "hkls": 2}  # fmt: skip
    with pytest.raises(ValueError, match="shape"):
        write_fdump(tmp_path / "x.bin", np.zeros((1, 1, 1)), meta)
    assert not (tmp_path / "x.bin").exists()


def test_truncated_and_bad_header(tmp_path):
    path = tmp_path / "Fdump.bin"
    path.write_bytes(b"0 1 0 0 0 0\n\f" + b"\0" * 20)
    with pytest.raises(InputError, match="truncated"):
        read_fdump(path)
    path.write_bytes(b"hello\n\f")
    with pytest.raises(InputError, match=rf"^{path}:1: not an Fdump"):
        read_fdump(path)
    path.write_bytes(b"0 -1 0 0 0 0\n\f")
    with pytest.raises(InputError, match="positive"):
        read_fdump(path)


def test_whitespace_quirk(tmp_path):
    # first double's low bytes are ' ' and '\f': the C's fscanf("...\n\f") swallows them
    value = struct.unpack("<d", b"\x20\x0c" + struct.pack("<d", 10.0)[2:])[0]
    F = np.array([[[value, 5.0]]])
    meta = {"h_min": 0, "h_max": 0, "k_min": 0, "k_max": 0, "l_min": 0, "l_max": 1,
            "h_range": 1, "k_range": 1, "l_range": 2, "hkls": 2}  # fmt: skip
    path = tmp_path / "Fdump.bin"
    write_fdump(path, F, meta)
    np.testing.assert_array_equal(read_fdump(path)[0], F)
    quirky, _ = read_fdump(path, c_whitespace_quirk=True)
    body = path.read_bytes()[len(b"0 0 0 0 0 1\n\f") + 2 :]
    expect = np.frombuffer(body + b"\0" * 2, dtype="<f8").reshape(2, 2, 3)[:-1, :-1, :-1]
    np.testing.assert_array_equal(quirky, expect)
    assert quirky[0, 0, 0] != value


# ---- parity with the C binary (NB_C_BIN) ----

NB_C_BIN = os.environ.get("NB_C_BIN")
SHARED = Path(os.environ.get("NB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SCALED_HKL = SHARED / "pilatus_6m" / "scaled.hkl"


def _c_fdump(tmp_path: Path, hkl: Path, default_F: float) -> bytes:
    """Run the C with -hkl on a tiny detector and return the Fdump.bin it leaves in its working folder."""
    flags = (
        "-cell 50 50 50 -N 1 -detpixels 4 -pixel 0.1 -distance 50 -nonoise -nopgm -noprogress -intfile i.img"
    )
    args = [NB_C_BIN, "-hkl", str(hkl), *flags.split()]
    if default_F:
        args += ["-default_F", repr(default_F)]
    run = tmp_path / "c_run"
    run.mkdir()
    subprocess.run(args, cwd=run, check=True, capture_output=True, timeout=120)
    return (run / "Fdump.bin").read_bytes()


def read_fdump_bytes(tmp_path: Path, data: bytes):
    path = tmp_path / "copy.bin"
    path.write_bytes(data)
    return read_fdump(path)


@pytest.mark.parametrize("default_F", [0.0, 2.5])
@pytest.mark.needs_c
def test_fdump_identical_to_c(tmp_path, default_F):
    hkl = tmp_path / "gaps.hkl"
    hkl.write_text("1 2 3 10.5\n-2 0 5 3.25\n0 -1 -4 1e3\n1 2 3 99.0\n\n3 3 3 0.125\n-2 -1 -4 7\n")
    F, meta = read_hkl_file(hkl, default_F=default_F)
    c_bytes = _c_fdump(tmp_path, hkl, default_F)
    assert fdump_bytes(F, meta) == c_bytes
    F_c, meta_c = read_fdump_bytes(tmp_path, c_bytes)
    np.testing.assert_array_equal(F_c, F)
    assert {k: meta_c[k] for k in meta if k != "hkls"} == {k: meta[k] for k in meta if k != "hkls"}


@pytest.mark.needs_c
@pytest.mark.needs_shared("pilatus_6m/scaled.hkl")
def test_fdump_identical_to_c_scaled_hkl(tmp_path):
    F, meta = read_hkl_file(SCALED_HKL)
    assert fdump_bytes(F, meta) == _c_fdump(tmp_path, SCALED_HKL, 0.0)
