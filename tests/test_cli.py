"""The `nanobragg` command line: bad input, which files are written, -demo, -trace_pixel, -pix0_vector.

No C binary needed. The CLI runs in-process (`cli.main(argv)`) in a temporary working directory; one test
runs `python -m nanobragg_torch` as a subprocess. The contract under test (cli.py docstring): exit status 0
on success, 2 on bad input with ONE line on stderr naming the flag or file(:line), and no output file left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.parity.printout import parse_trace_py
from nanobragg_torch.plan import build_plan

CELL = ["-cell", "100", "100", "100", "90", "90", "90"]
SMALL = ["-N", "2", "-detpixels", "16", "-misset", "10", "20", "30"]
BASE = [*CELL, *SMALL, "-default_F", "100"]
# every output our CLI can write, so that "no file left behind" means something
ALL_OUTPUTS = ["-floatfile", "f.bin", "-intfile", "i.img", "-noisefile", "n.img", "-pgmfile", "p.pgm",
               "-pngfile", "p.png", "-seed", "1"]  # fmt: skip
C_DEFAULT_FILES = {"floatimage.bin", "intimage.img", "image.pgm", "noiseimage.img"}

INPUT_FILES = {
    "good.hkl": "".join(f"{h} {k} {l} {10 + (h * 7 + k * 3 + l) % 5}\n"
                        for h in range(-2, 3) for k in range(-2, 3) for l in range(-2, 3)),
    "bad.hkl": "0 0 1 10\n1 2 x 5\n0 0 2 7\n",
    "short.hkl": "1 2 3\n",
    "empty.hkl": "",
    "good.mat": "0.01 0 0\n0 0.01 0\n0 0 0.01\n",
    "bad.mat": "0.01 0 0\n0 x 0\n0 0 0.01\n",
    "notsmv.img": "hello\n",
}

CliRun = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding the input files above (and nothing else)."""
    monkeypatch.chdir(tmp_path)
    for name, text in INPUT_FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture
def cli(work: Path, capsys: pytest.CaptureFixture[str]) -> CliRun:
    def run(argv: list[str]) -> tuple[int, str, str]:
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def written(folder: Path) -> set[str]:
    """Every file under `folder` (relative paths, hidden ones too), minus the input files."""
    found = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    return found - set(INPUT_FILES)


def assert_one_line_error(rc: int, err: str, *names: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"exit status {rc}, stderr {err!r}"
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("nanobragg: error: ")
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"


def trace_values(stdout: str) -> dict[str, list[float]]:
    t = parse_trace_py(stdout)
    return {k: list(v) if isinstance(v, tuple) else [v] for k, v in {**t.extras, **t.values}.items()}


def float_image(path: Path, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    return np.fromfile(path, dtype="<f4").reshape(shape)


# ------------------------------------------------------------------------------------------------ bad input

BAD_INPUT = {
    # id: (argv without the outputs, names the one stderr line must contain)
    "unknown-flag": ([*BASE, "-bogus_flag"], ["-bogus_flag"]),
    "unknown-superstring-flag": ([*BASE, "-distance_mm", "100"], ["-distance_mm"]),  # the C's strstr takes it
    "stray-value": ([*BASE, "5"], ["'5'"]),
    "non-numeric-value": ([*BASE, "-distance", "abc"], ["-distance", "abc"]),
    "non-integer-value": ([*BASE, "-phisteps", "2.5"], ["-phisteps", "2.5"]),
    "missing-value": ([*BASE, "-distance"], ["-distance"]),
    "missing-values-roi": ([*BASE, "-roi", "1", "2"], ["-roi"]),
    "missing-values-misset": ([*BASE, "-misset", "1", "2"], ["-misset"]),
    "bad-pivot": ([*BASE, "-pivot", "detector"], ["-pivot", "detector"]),
    "bad-detector-abs": ([*BASE, "-detector_abs", "lots"], ["-detector_abs"]),
    "bad-dtype": ([*BASE, "-dtype", "float16"], ["-dtype", "float16"]),
    "malformed-hkl": ([*CELL, *SMALL, "-hkl", "bad.hkl"], ["bad.hkl:2"]),
    "short-hkl-line": ([*CELL, *SMALL, "-hkl", "short.hkl"], ["short.hkl:1"]),
    "empty-hkl": ([*CELL, *SMALL, "-hkl", "empty.hkl"], ["empty.hkl"]),
    "missing-hkl": ([*CELL, *SMALL, "-hkl", "missing.hkl"], ["missing.hkl"]),
    "missing-matrix": ([*SMALL, "-mat", "missing.mat", "-default_F", "100"], ["missing.mat"]),
    "malformed-matrix": ([*SMALL, "-mat", "bad.mat", "-default_F", "100"], ["bad.mat:2"]),
    "missing-sourcefile": ([*BASE, "-sourcefile", "missing.src"], ["missing.src"]),
    "missing-img": ([*BASE, "-img", "missing.img"], ["missing.img"]),
    "not-smv-mask": ([*BASE, "-mask", "notsmv.img"], ["notsmv.img"]),
    "detsize-detpixels-conflict": ([*BASE, "-detsize", "10", "-pixel", "0.1"], ["-detsize", "-detpixels"]),
    "roi-outside-detector": ([*BASE, "-roi", "100", "200", "100", "200"], ["-roi"]),
    "roi-inverted": ([*BASE, "-roi", "10", "5", "0", "15"], ["-roi"]),
    "zero-pixel": ([*BASE, "-pixel", "0"], ["-pixel"]),
    "zero-cell": ([*SMALL, "-default_F", "100", "-cell", "0", "0", "0", "90", "90", "90"], ["-cell"]),
    "no-cell-or-matrix": ([*SMALL, "-default_F", "100"], ["-cell", "-mat"]),
    "no-structure-factors": ([*CELL, *SMALL], ["-hkl", "-default_F"]),
}


@pytest.mark.parametrize("mode", [[], ["--c-compat"]], ids=["default", "c-compat"])
@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_no_files(cli: CliRun, work: Path, case: str,
                                                      mode: list[str]) -> None:  # fmt: skip
    argv, names = BAD_INPUT[case]
    rc, out, err = cli([*ALL_OUTPUTS, *mode, *argv])  # the faulty flag last: "missing value" means at the end
    assert_one_line_error(rc, err, *names)
    assert written(work) == set()
    assert "wrote" not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_device_is_refused_at_run_start(cli: CliRun, work: Path) -> None:
    # discovered in outputs.run (after parsing, where rendering starts), still before any file is opened
    rc, _, err = cli([*BASE, *ALL_OUTPUTS, "--c-compat", "-device", "cuda"])
    assert_one_line_error(rc, err, "-device")
    assert written(work) == set()


@pytest.mark.parametrize("argv, names", [
    pytest.param(["-trace_pixel", "a", "b"], ["-trace_pixel"], id="trace_pixel-non-int"),
    pytest.param(["-chunk", "x"], ["-chunk"], id="chunk-non-integer"),
    pytest.param(["-trace_pixel", "5"], ["-trace_pixel"], id="trace_pixel-missing-value"),
    pytest.param(["-dtype"], ["-dtype"], id="dtype-missing-value"),
    pytest.param(["-outdir"], ["-outdir"], id="outdir-missing-value"),
    pytest.param(["-device", "gpu0"], ["-device"], id="device-unknown"),
    pytest.param(["-trace_pixel", "0", "40"], ["-trace_pixel"], id="trace_pixel-fast-outside"),
    pytest.param(["-trace_pixel", "-1", "0"], ["-trace_pixel"], id="trace_pixel-negative"),
])  # fmt: skip
def test_bad_own_flag_values(cli: CliRun, work: Path, argv: list[str], names: list[str]) -> None:
    rc, _, err = cli([*BASE, "-floatfile", "f.bin", *argv])
    assert_one_line_error(rc, err, *names)
    assert written(work) == set()


def test_unwritable_output_found_after_render_leaves_nothing(cli: CliRun, work: Path) -> None:
    (work / "adir").mkdir()
    rc, _, err = cli([*BASE, "-floatfile", "f.bin", "-intfile", "adir"])
    assert_one_line_error(rc, err, "adir")
    assert written(work) == set()


def test_no_arguments_prints_usage(cli: CliRun, work: Path) -> None:
    rc, out, err = cli([])
    assert rc == 2 and "usage" in err and out == ""
    assert written(work) == set()


# --------------------------------------------------------------------------------------------- which files


def test_default_mode_writes_nothing_unasked(cli: CliRun, work: Path) -> None:
    rc, out, _ = cli([*BASE, "-hkl", "good.hkl"])  # the C would write Fdump.bin and its four images here
    assert rc == 0
    assert written(work) == set()
    assert any(line.startswith("max_I = ") for line in out.splitlines())


@pytest.mark.parametrize("flags, files", [
    (["-floatfile", "f.bin"], {"f.bin"}),
    (["-floatimage", "f.bin"], {"f.bin"}),
    (["-intfile", "i.img"], {"i.img"}),
    (["-noisefile", "n.img", "-seed", "3"], {"n.img"}),
    (["-pgmfile", "p.pgm"], {"p.pgm"}),
    (["-pgmscale", "2"], {"image.pgm"}),
    (["-pngfile", "p.png"], {"p.png"}),
    (["-hkl", "good.hkl", "-dump", "my.dump"], {"my.dump"}),
    (["-outdir", "o", "-floatfile", "f.bin", "-intfile", "i.img"], {"o/f.bin", "o/i.img"}),
    (ALL_OUTPUTS, {"f.bin", "i.img", "n.img", "p.pgm", "p.png"}),
])  # fmt: skip
def test_default_mode_writes_exactly_what_is_asked(cli: CliRun, work: Path, flags: list[str],
                                                   files: set[str]) -> None:  # fmt: skip
    rc, _, _ = cli([*BASE, *flags])
    assert rc == 0
    assert written(work) == files


@pytest.mark.parametrize("compat_flag", ["--c-compat", "-c_compat"])
@pytest.mark.parametrize("flags, files", [
    ([], C_DEFAULT_FILES),
    (["-nonoise"], C_DEFAULT_FILES - {"noiseimage.img"}),
    (["-nopgm"], C_DEFAULT_FILES - {"image.pgm"}),
    (["-hkl", "good.hkl"], C_DEFAULT_FILES | {"Fdump.bin"}),
    (["-floatfile", "f.bin", "-intfile", "i.img"], {"f.bin", "i.img", "image.pgm", "noiseimage.img"}),
    (["-outdir", "o"], {f"o/{name}" for name in C_DEFAULT_FILES}),
])  # fmt: skip
def test_c_compat_writes_the_c_default_files(cli: CliRun, work: Path, compat_flag: str, flags: list[str],
                                             files: set[str]) -> None:  # fmt: skip
    rc, _, _ = cli([*BASE, "-seed", "1", compat_flag, *flags])
    assert rc == 0
    assert written(work) == files


@pytest.mark.parametrize("mode, flags, files", [
    ([], ["-nonoise", "-noisefile", "x.img"], {"x.img"}),
    ([], ["-noisefile", "x.img", "-nonoise"], set()),
    ([], ["-nopgm", "-pgmfile", "x.pgm"], {"x.pgm"}),
    ([], ["-pgmfile", "x.pgm", "-nopgm"], set()),
    (["--c-compat"], ["-nonoise", "-noisefile", "x.img"], C_DEFAULT_FILES - {"noiseimage.img"} | {"x.img"}),
    (["--c-compat"], ["-noisefile", "x.img", "-nonoise"], C_DEFAULT_FILES - {"noiseimage.img"}),
])  # fmt: skip
def test_later_of_nonoise_and_noisefile_wins(cli: CliRun, work: Path, mode: list[str], flags: list[str],
                                             files: set[str]) -> None:  # fmt: skip
    rc, _, _ = cli([*BASE, "-seed", "1", *mode, *flags])
    assert rc == 0
    assert written(work) == files


def test_fdump_reused_only_in_c_compat(cli: CliRun, work: Path) -> None:
    rc, _, _ = cli([*BASE, "-hkl", "good.hkl", "-nonoise", "-nopgm", "--c-compat"])
    assert rc == 0 and (work / "Fdump.bin").exists()
    with_hkl = float_image(work / "floatimage.bin")
    # without -hkl the C reads ./Fdump.bin; --c-compat does the same and says so
    rc, out, _ = cli([*BASE, "-floatfile", "compat.bin", "--c-compat", "-nonoise", "-nopgm"])
    assert rc == 0 and "reading Fs from Fdump.bin" in out
    assert np.array_equal(float_image(work / "compat.bin"), with_hkl)
    # the default mode ignores the stale dump file: only -default_F counts
    rc, out, _ = cli([*BASE, "-floatfile", "default.bin"])
    assert rc == 0 and "Fdump" not in out
    assert not np.array_equal(float_image(work / "default.bin"), with_hkl)


# ---------------------------------------------------------------------------------------------------- demo


def test_demo_writes_float_smv_png_into_out(cli: CliRun, work: Path) -> None:
    rc, out, _ = cli(["-demo", "-detpixels", "48"])  # later flags override the built-in case: keep it quick
    assert rc == 0
    files = {"out/demo_float.bin", "out/demo_int.img", "out/demo.png"}
    assert written(work) == files | {"out/demo.mat", "out/demo.hkl"}  # its inputs, beside its outputs
    for name in files:
        assert name in out, f"stdout does not say where {name} is"
    first = out.splitlines()[0]  # where the demo put its inputs, and the outputs it writes there
    assert f"{work / 'out'}/" in first or f"{(work / 'out').resolve()}/" in first, first
    for name in ("demo.mat", "demo.hkl", "demo_float.bin", "demo_int.img", "demo.png"):
        assert name in first, first
    assert (work / "out/demo_float.bin").stat().st_size == 48 * 48 * 4
    smv = (work / "out/demo_int.img").read_bytes()
    assert smv.startswith(b"{\nHEADER_BYTES=512;") and len(smv) == 512 + 48 * 48 * 2
    assert (work / "out/demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert float_image(work / "out/demo_float.bin", (48, 48)).max() > 0


@pytest.mark.slow
def test_full_demo_case(cli: CliRun, work: Path) -> None:
    """The built-in case as the README runs it (256 x 256 pixels, 4 phi steps x 5 mosaic domains)."""
    rc, out, _ = cli(["-demo"])
    assert rc == 0
    assert written(work) == {"out/demo_float.bin", "out/demo_int.img", "out/demo.png", "out/demo.mat", "out/demo.hkl"}
    assert float_image(work / "out/demo_float.bin", (256, 256)).max() > 0
    assert "max_I = " in out


def test_module_entry_point(tmp_path: Path) -> None:
    """`python -m nanobragg_torch`: -demo into -outdir, then a bad flag (exit status through sys.exit)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = [sys.executable, "-m", "nanobragg_torch", "-demo", "-outdir", "demo_out", "-detpixels", "32"]
    demo = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    names = {"demo_float.bin", "demo_int.img", "demo.png"}
    assert {p.name for p in (tmp_path / "demo_out").iterdir()} == names | {"demo.mat", "demo.hkl"}
    assert {p.name for p in tmp_path.iterdir()} == {"demo_out"}
    assert all(os.path.join("demo_out", n) in demo.stdout for n in names)
    assert (tmp_path / "demo_out/demo_float.bin").stat().st_size == 32 * 32 * 4
    argv = [sys.executable, "-m", "nanobragg_torch", *BASE, "-bogus"]
    bad = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert_one_line_error(bad.returncode, bad.stderr, "-bogus")
    assert {p.name for p in tmp_path.iterdir()} == {"demo_out"}


# --------------------------------------------------------------------------------------------------- trace

S, F = 7, 1  # a pixel with signal whose transpose differs (catches a slow/fast swap)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trace_pixel_final_equals_float_image(cli: CliRun, work: Path, dtype: str) -> None:
    rc, out, _ = cli([*BASE, "-dtype", dtype, "-floatfile", "f.bin", "-trace_pixel", str(S), str(F)])
    assert rc == 0
    trace = trace_values(out)
    assert {"pix0_vector", "pixel_pos", "hkl_frac", "F_cell", "F_latt", "omega_pixel", "polar"} <= set(trace)
    assert (parse_trace_py(out).dtype, parse_trace_py(out).device) == (dtype, "cpu")  # the precision it was in
    image = float_image(work / "f.bin")
    assert image[S, F] > 0 and image[S, F] != image[F, S]
    (final,) = trace["I_pixel_final"]
    assert np.float32(final) == image[S, F]


def test_printout_pixel_takes_fast_first(cli: CliRun, work: Path) -> None:
    rc, out, _ = cli([*BASE, "-floatfile", "f.bin", "-printout_pixel", str(F), str(S)])
    assert rc == 0
    lines = out.splitlines()
    assert f"{F:4d} {S:4d} : stol" in out
    pixel_line = next(ln for ln in lines if ln.startswith("pixel   "))
    assert pixel_line == f"pixel   {float(float_image(work / 'f.bin')[S, F]):15.10g}"


# ---------------------------------------------------------------------------------------------------- pix0

PIX0_NOTE = "note: -pix0_vector is ignored by nanoBragg.c"


def pix0(argv: list[str]) -> np.ndarray:
    cfg, _ = config_from_flags(argv)
    return build_plan(cfg, torch.float64).geom.pix0.detach().cpu().numpy()


def test_pix0_vector_prints_note_and_does_not_move_detector(cli: CliRun, work: Path) -> None:
    rc, out, _ = cli([*BASE, "-pix0_vector", "0.1", "0.002", "-0.003"])
    assert rc == 0 and PIX0_NOTE in out
    # its only effect is the switch to CUSTOM (as any vector flag): same pix0 as -fdet_vector <MOSFLM's own>
    custom = pix0([*BASE, "-fdet_vector", "0", "0", "1"])
    for flags in (["-pix0_vector", "0.1", "0.002", "-0.003"], ["-pix0_vector", "0.2", "0.5", "0.5"],
                  ["-pix0_vector_mm", "100", "2", "-3"]):  # fmt: skip
        got = pix0([*BASE, *flags])
        assert np.array_equal(got, custom)
        assert not np.allclose(got, [0.1, 0.002, -0.003])


@pytest.mark.parametrize("flags", [["-pix0_vector", "0.1", "0.002", "-0.003"],
                                   ["-pix0_vector_mm", "100", "2", "-3"]])  # fmt: skip
def test_pix0_override_places_detector(cli: CliRun, work: Path, flags: list[str]) -> None:
    argv = [*BASE, *flags, "-pix0_override"]
    np.testing.assert_allclose(pix0(argv), [0.1, 0.002, -0.003], rtol=1e-15, atol=1e-18)
    rc, out, _ = cli([*argv, "-floatfile", "moved.bin"])
    assert rc == 0 and PIX0_NOTE not in out
    rc, _, _ = cli([*BASE, *flags, "-floatfile", "ignored.bin"])
    assert rc == 0
    assert not np.array_equal(float_image(work / "moved.bin"), float_image(work / "ignored.bin"))
