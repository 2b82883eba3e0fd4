"""Text fingerprints for syrupy snapshots: fixed formatting, stable across array types and round-off."""

from __future__ import annotations

import difflib

import numpy as np
import pytest
import torch

from nanobragg_torch.parity.fingerprint import FingerprintExtension, fingerprint, format_number, grid_sums
from nanobragg_torch.parity.goldens import load_golden


@pytest.fixture
def snapshot_fp(snapshot):
    return snapshot.use_extension(FingerprintExtension)


def test_format_number():
    assert format_number(1234.5678901, 8) == "1.2345679e+03"
    assert format_number(-0.0) == "0" and format_number(0.0) == "0"
    assert format_number(3e-17, 8, floor=1e-12) == "0"
    assert format_number(float("nan")) == "nan" and format_number(float("-inf")) == "-inf"


def test_exact_format_of_a_tiny_case():
    img = np.zeros((4, 4), dtype=np.float32)
    img[1, 2] = 2.5
    img[3, 3] = 0.5
    fp = fingerprint("tiny", {"F_cell": 100.0, "fdet_vector": (0.0, -0.0, 1.0)}, img, grid=2)
    assert fp == (
        "fingerprint v2: tiny\n"
        "[trace]\n"
        "  fdet_vector        0 0 1.0000000e+00\n"
        "  F_cell             1.0000000e+02\n"
        "[image]\n"
        "  shape (slow fast)  4 4\n"
        "  sum                3.0000000e+00\n"
        "  max                2.5000000e+00\n"
        "  argmax (slow fast) 1 2\n"
        "  min                0\n"
        "  mean               1.8750000e-01\n"
        "  nonzero            2\n"
        "  percentiles 50 90 99 99.9  0 2.5000000e-01 2.2000000e+00 2.4700000e+00\n"
        "[grid 2x2 block sums, rows = slow]\n"
        "            0  2.5000e+00\n"
        "            0  5.0000e-01\n"
    )


def test_stable_across_array_types_and_roundoff():
    rng = np.random.default_rng(1)
    img = rng.gamma(0.5, 3.0, size=(64, 48)).astype(np.float32)
    trace = {"pix0_vector": (0.1, 0.0128, -0.0128), "fdet_vector": (0.0, 0.0, 1.0), "polar": 0.9941209489}
    base = fingerprint("x", trace, img)
    jitter = {**trace, "fdet_vector": (3e-17, -1e-18, 1.0), "polar": 0.9941209489 * (1 + 1e-15)}
    assert fingerprint("x", jitter, torch.from_numpy(img)) == base
    assert fingerprint("x", trace, torch.from_numpy(img).double()) == base
    assert fingerprint("x", trace, img.astype(np.float64)) == base
    assert "tensor" not in base and "array" not in base and "cpu" not in base


def test_local_drift_shows_as_a_short_diff():
    rng = np.random.default_rng(2)
    img = rng.gamma(0.5, 3.0, size=(64, 64))
    moved = img.copy()
    moved[60, 3] += 50.0  # one pixel in the bottom-left block
    a, b = fingerprint("x", None, img).splitlines(), fingerprint("x", None, moved).splitlines()
    changed = [line for line in difflib.unified_diff(a, b, lineterm="", n=0) if line.startswith("+  ")]
    grid_lines = [line for line in changed if line.count("e") >= 8]
    assert len(grid_lines) == 1  # only the last grid row changes
    assert grid_sums(moved, 8)[7, 0] - grid_sums(img, 8)[7, 0] == pytest.approx(50.0)


def test_stats_section_and_no_image():
    fp = fingerprint("s", stats={"max_I": 598.74, "mean": 4.94097})
    assert fp.splitlines()[1:] == [
        "[stats]",
        "  max_I              5.9874000e+02",
        "  mean               4.9409700e+00",
    ]


def test_golden_fingerprint_snapshot(snapshot_fp):
    """The C's own trace and image of a golden, as a syrupy snapshot (update: pytest --snapshot-update)."""
    g = load_golden("mosflm_default")
    pixel = g.traced_pixels[0]
    fp = fingerprint(
        f"mosflm_default pinned C, trace {pixel}",
        g.c_trace(pixel),
        g.image,
        stats={k: g.stdout[k] for k in ("max_I", "mean", "rms", "rmsd")},
    )
    assert fp == snapshot_fp


def test_extension_rejects_non_text(snapshot_fp):
    with pytest.raises(TypeError, match="fingerprint"):
        FingerprintExtension().serialize(b"bytes")
