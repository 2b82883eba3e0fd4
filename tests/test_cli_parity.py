"""The CLI against the pinned C binary: same flags, same files, same statistics lines.

Each case runs the C program (NB_C_BIN) and `nanobragg ... -dtype float64 --c-compat` in their own empty
directories. Both write the C's default files (floatimage.bin, intimage.img, image.pgm unless -nopgm,
noiseimage.img unless -nonoise, Fdump.bin after -hkl). Asserted: the same set of files; the SMV int image,
PGM, seeded noise SMV and Fdump.bin byte-identical; the float image within 1e-6 relative on significant
pixels (the C's float image is float32; ours is rendered in float64 and rounded to float32, so a pixel may
differ by one float32 ulp); the stdout statistics lines identical as text.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.cli import main

pytestmark = pytest.mark.needs_c

BASE = ("-cell 50 50 50 90 90 90 -N 5 -default_F 100 -detpixels 64 -pixel 0.3 -distance 60 -lambda 1 "
        "-misset 10 20 30 -seed 1").split()
HKL = "small.hkl"

CASES: dict[str, list[str]] = {
    "mosflm_default": [],
    "xds": ["-xds", "-cell", "60", "70", "80", "90", "95", "100", "-ORGX", "30", "-ORGY", "35", "-seed", "3"],
    "roi": ["-roi", "10", "40", "5", "30"],
    "scale": ["-scale", "0.5"],
    "adc": ["-adc", "10"],
    "pgmscale": ["-pgmscale", "3"],
    "noise_low": ["-seed", "123", "-fluence", "1e26"],  # all means < 12 photons
    "noise_mid": ["-seed", "321", "-fluence", "1e32"],  # rejection branch, a few > 1e6
    "noise_high": ["-seed", "456", "-fluence", "1e35"],  # Gaussian branch, overloads
    "oversample2": ["-oversample", "2"],
    "hkl_fdump": ["-hkl", HKL],
    "hkl_interpolate": ["-hkl", HKL, "-N", "2", "-interpolate"],
    "nonoise_nopgm": ["-nonoise", "-nopgm"],
    "named_files": ["-floatfile", "f.bin", "-intfile", "i.img", "-noisefile", "n.img", "-pgmfile", "p.pgm"],
    "phi_sweep_from_0": ["-phi", "0", "-osc", "2", "-phisteps", "3"],
    "mosaic": ["-mosaic", "0.5", "-mosaic_domains", "3"],
}
STAT_PREFIXES = ("max_I = ", "mean= ", "intfile_scale = ", "pgm_scale = ")
SIGNIFICANT = 1e-4  # of the image maximum
FLOAT_RTOL = 1e-6


@dataclass
class Outcome:
    c_dir: Path
    py_dir: Path
    c_stdout: str
    py_stdout: str
    py_rc: int

    def files(self, folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir()} - {HKL}

    def pair(self, name: str) -> tuple[bytes, bytes]:
        return (self.c_dir / name).read_bytes(), (self.py_dir / name).read_bytes()


def _hkl_text() -> str:
    rows = []
    for h in range(-3, 4):
        for k in range(-3, 4):
            for l in range(-3, 4):
                rows.append(f"{h} {k} {l} {10 + abs(3 * h + 5 * k + 7 * l) % 17 + 0.25 * h}\n")
    return "".join(rows)


def stat_lines(stdout: str) -> list[str]:
    noise = " photons on noise image ("
    return [ln for ln in stdout.splitlines() if ln.startswith(STAT_PREFIXES) or noise in ln]



@pytest.fixture(scope="module")
def outcomes(c_bin: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    cache: dict[str, Outcome] = {}

    def get(name: str) -> Outcome:
        if name in cache:
            return cache[name]
        root = tmp_path_factory.mktemp(name)
        c_dir, py_dir = root / "c", root / "py"
        argv = [*BASE, *CASES[name]]
        for folder in (c_dir, py_dir):
            folder.mkdir()
            if HKL in argv:
                (folder / HKL).write_text(_hkl_text())
        c_run = subprocess.run([c_bin, *argv], cwd=c_dir, capture_output=True, text=True, timeout=300)
        assert c_run.returncode == 0, c_run.stderr
        out = io.StringIO()
        here = os.getcwd()
        os.chdir(py_dir)
        try:
            with contextlib.redirect_stdout(out):
                rc = main([*argv, "-dtype", "float64", "--c-compat"])
        finally:
            os.chdir(here)
        cache[name] = Outcome(c_dir, py_dir, c_run.stdout, out.getvalue(), rc)
        return cache[name]

    return get  # type: ignore[return-value]


def _smv_and_pgm_names(o: Outcome) -> list[str]:
    return sorted(n for n in o.files(o.c_dir) if n.endswith((".img", ".pgm")))


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_files(outcomes, case: str) -> None:
    o = outcomes(case)
    assert o.py_rc == 0
    assert o.files(o.py_dir) == o.files(o.c_dir)


@pytest.mark.parametrize("case", sorted(CASES))
def test_int_noise_pgm_byte_identical(outcomes, case: str) -> None:
    o = outcomes(case)
    names = _smv_and_pgm_names(o)
    assert names, "the C wrote no SMV/PGM file"
    for name in names:
        c_bytes, py_bytes = o.pair(name)
        if c_bytes != py_bytes:
            head = 512 if name.endswith(".img") else 0
            dtype = "<u2" if name.endswith(".img") else np.uint8
            c_px = np.frombuffer(c_bytes[head:], dtype) if len(c_bytes) == len(py_bytes) else None
            detail = "sizes differ" if c_px is None else (
                f"header {'same' if c_bytes[:head] == py_bytes[:head] else 'differs'}, "
                f"{int(np.sum(c_px != np.frombuffer(py_bytes[head:], dtype)))} pixels differ")
            pytest.fail(f"{name}: {detail}")


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if "-hkl" in CASES[c]])
def test_fdump_byte_identical(outcomes, case: str) -> None:
    c_bytes, py_bytes = outcomes(case).pair("Fdump.bin")
    assert c_bytes == py_bytes


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_image_close(outcomes, case: str) -> None:
    o = outcomes(case)
    name = "f.bin" if "-floatfile" in CASES[case] else "floatimage.bin"
    c_bytes, py_bytes = o.pair(name)
    c_img = np.frombuffer(c_bytes, "<f4").astype(np.float64)
    py_img = np.frombuffer(py_bytes, "<f4").astype(np.float64)
    assert c_img.shape == py_img.shape == (64 * 64,)
    peak = np.abs(c_img).max()
    assert peak > 0
    significant = np.abs(c_img) >= SIGNIFICANT * peak
    rel = np.abs(py_img - c_img)[significant] / np.abs(c_img)[significant]
    assert rel.max() <= FLOAT_RTOL, f"max relative error {rel.max():.3g} on {int(significant.sum())} pixels"
    assert np.abs(py_img - c_img).max() <= FLOAT_RTOL * peak


@pytest.mark.parametrize("case", sorted(CASES))
def test_statistics_lines_identical(outcomes, case: str) -> None:
    o = outcomes(case)
    c_lines = stat_lines(o.c_stdout)
    assert len(c_lines) >= 3
    assert stat_lines(o.py_stdout) == c_lines
