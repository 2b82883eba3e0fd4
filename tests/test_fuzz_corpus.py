"""Fuzz corpus: malformed inputs and faults, tried as a hostile user would (issue 13).

Contract for every refused row: exit status 2, exactly one line on stderr ("nanobragg: error: ...") that
names the flag or the file, no traceback, nothing left behind in the working folder (no output, no
temporary, no folder made for an output). Rows accepted by a documented C rule (quirks
"invalid-values-c-rules") must render exactly the image of the value the C substitutes. API rows: a
`ConfigError` (ValueError) naming the config field. CLI rows run in-process; only the signal rows start a
process. The row ids start with their category: flags-, physics-, memory-, hkl-, mat-, smv-, source-,
fdump-, outputs-, panels-, signals-, api-, crule-; accepted edges (issue 30: sparse HKL grids, MTZ rows that
their Friedel mates contradict, multi-panel -roi/-mask/noise) edge-.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch import outputs
from nanobragg_torch.cflags import C_FLAGS, OWN_FLAGS
from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.config import BeamConfig, CrystalConfig, DetectorConfig, SimulationConfig, StructureFactors
from nanobragg_torch.engine import render
from nanobragg_torch.plan import build_plan
from nanobragg_torch.simulate import simulate
from nanobragg_torch.validation import ConfigError

BASE = "-cell 100 100 100 90 90 90 -default_F 100 -N 2 -lambda 1 -distance 100 -detpixels 8 -pixel 0.1".split()
OUT = ["-floatfile", "f.bin"]
NO_F = BASE[:7] + BASE[9:]  # BASE without -default_F
MEMORY_LIMIT = "2e9"  # bytes (NB_MEMORY_LIMIT): the memory rows do not depend on the machine


@pytest.fixture(autouse=True)
def _memory_limit(monkeypatch):
    monkeypatch.setenv("NB_MEMORY_LIMIT", MEMORY_LIMIT)
    monkeypatch.setenv("NB_COMPILE", "0")


def _smv(size1=8, size2=8, pixels: int | None = None, **keys) -> bytes:
    header = {"HEADER_BYTES": "512", "DIM": "2", "BYTE_ORDER": "little_endian", "TYPE": "unsigned_short",
              "SIZE1": str(size1), "SIZE2": str(size2), "PIXEL_SIZE": "0.1", "DISTANCE": "100",
              "WAVELENGTH": "1", **keys}
    text = "{\n" + "".join(f"{k}={v};\n" for k, v in header.items()) + "}\n"
    n = 2 * size1 * size2 if pixels is None else pixels
    return text.encode().ljust(512, b" ") + b"\1\0" * (n // 2)


def _fdump(bounds=(0, 1, 0, 1, 0, 1), values: np.ndarray | None = None, cut: int = 0) -> bytes:
    shape = tuple(bounds[2 * i + 1] - bounds[2 * i] + 2 for i in range(3))
    grid = np.full(shape, 10.0) if values is None else values
    data = (" ".join(map(str, bounds)) + "\n\f").encode() + grid.astype("<f8").tobytes()
    return data[: len(data) - cut]


def _nan_grid(value: float) -> np.ndarray:
    grid = np.full((3, 3, 3), 10.0)
    grid[1, 0, 1] = value
    return grid


HKL_OK = b"0 0 1 100\n1 0 0 50\n0 1 0 70\n"
MAT_OK = b"0.0100 0 0\n0 0.0100 0\n0 0 0.0100\n"  # cubic 100 A at lambda 1 A (rows a*, b*, c* components)


# ---------------------------------------------------------------------------------------------------------
# CLI rows: (id, argv, files {name: bytes}, what the error line must name)

def _flag_rows():
    rows = []
    for flag, kind in sorted({**C_FLAGS, **OWN_FLAGS}.items()):
        if kind in ("", "cell", "misset"):
            continue
        rows.append((f"flags-missing-value{flag}", BASE + OUT + [flag], {}, flag))
        if kind in ("f", "F3"):
            rows.append((f"flags-not-a-number{flag}", BASE + OUT + [flag] + ["abc"] * (3 if kind == "F3" else 1),
                         {}, flag))
        if kind == "f":
            rows.append((f"flags-nan{flag}", BASE + OUT + [flag, "nan"], {}, flag))
            rows.append((f"flags-inf{flag}", BASE + OUT + [flag, "-inf"], {}, flag))
        if kind in ("i", "I2", "I4"):
            count = {"i": 1, "I2": 2, "I4": 4}[kind]
            rows.append((f"flags-not-an-integer{flag}", BASE + OUT + [flag] + ["1.5"] * count, {}, flag))
        if kind == "s":
            rows.append((f"flags-empty-value{flag}", BASE + OUT + [flag, ""], {}, flag))
    rows += [
        ("flags-unknown", BASE + OUT + ["-lamda", "1"], {}, "-lamda"),
        ("flags-unknown-double-dash", BASE + OUT + ["--lambda", "1"], {}, "--lambda"),
        ("flags-stray-value", BASE + OUT + ["17"], {}, "17"),
        ("flags-cell-no-numbers", BASE + OUT + ["-cell", "x"], {}, "-cell"),
        ("flags-cell-nan", BASE + OUT + ["-cell", "100", "nan", "100", "90", "90", "90"], {}, "-cell"),
        ("flags-misset-two", BASE + OUT + ["-misset", "1", "2"], {}, "-misset"),
        ("flags-misset-nan", BASE + OUT + ["-misset", "nan", "0", "0"], {}, "-misset"),
        ("flags-pivot-word", BASE + OUT + ["-pivot", "middle"], {}, "-pivot"),
        ("flags-dtype-half", BASE + OUT + ["-dtype", "float16"], {}, "-dtype"),
        ("flags-abs-word", BASE + OUT + ["-detector_abs", "thick"], {}, "-detector_abs"),
        ("flags-own-flag-eats-value", BASE + OUT + ["-chunk", "-c_compat"], {}, "-chunk"),
    ]
    return rows


PHYSICS_ROWS = [
    ("physics-lambda-0", ["-lambda", "0"], "-lambda"),
    ("physics-energy-0", ["-energy", "0"], "-energy"),
    ("physics-distance-0", ["-distance", "0"], "-distance"),
    ("physics-close-distance-0", ["-close_distance", "0"], "-close_distance"),
    ("physics-pixel-0", ["-pixel", "0"], "-pixel"),
    ("physics-pixel-negative", ["-pixel", "-0.1"], "-pixel"),
    ("physics-cell-gamma-180", ["-cell", "100", "100", "100", "90", "90", "180"], "-cell"),
    ("physics-cell-flat-120", ["-cell", "100", "100", "100", "120", "120", "120"], "-cell"),
    ("physics-cell-angle-200", ["-cell", "100", "100", "100", "90", "90", "200"], "-cell"),
    ("physics-cell-a-0", ["-cell", "0", "100", "100", "90", "90", "90"], "-cell"),
    ("physics-cell-a-negative", ["-cell", "-100", "100", "100", "90", "90", "90"], "-cell"),
    ("physics-flux-beamsize-0", ["-flux", "1e12", "-beamsize", "0"], "-beamsize"),
    ("physics-fluence-0", ["-fluence", "0"], "-fluence"),
    ("physics-fluence-negative", ["-fluence", "-1e24"], "-fluence"),
    ("physics-flux-negative", ["-flux", "-1e12", "-beamsize", "0.1"], "-flux"),
    ("physics-beam-vector-0", ["-beam_vector", "0", "0", "0"], "-beam_vector"),
    ("physics-fdet-vector-0", ["-fdet_vector", "0", "0", "0"], "-fdet_vector"),
    ("physics-sdet-vector-0", ["-sdet_vector", "0", "0", "0"], "-sdet_vector"),
    ("physics-spindle-0", ["-spindle_axis", "0", "0", "0"], "-spindle_axis"),
    ("physics-polar-vector-0", ["-polar_vector", "0", "0", "0"], "-polar_vector"),
    ("physics-twotheta-axis-0", ["-twotheta_axis", "0", "0", "0"], "-twotheta_axis"),
    ("physics-water-negative", ["-water", "-1"], "-water"),
    ("physics-chunk-0", ["-chunk", "0"], "-chunk"),
    ("physics-chunk-negative", ["-chunk", "-5"], "-chunk"),
    ("physics-device-unknown", ["-device", "abacus"], "-device"),
    ("physics-roi-off-detector", ["-roi", "100", "200", "100", "200"], "-roi"),
    ("physics-roi-reversed", ["-roi", "5", "1", "0", "3"], "-roi"),
    ("physics-trace-off-detector", ["-trace_pixel", "100", "100"], "-trace_pixel"),
    ("physics-printout-off-detector", ["-printout_pixel", "100", "100"], "-printout_pixel"),
    ("physics-size-conflict", ["-detsize", "10", "-detpixels", "8"], "-detsize"),
    ("physics-no-structure-factors", ["-default_F", "0"], "-hkl"),
]
if not torch.cuda.is_available():
    PHYSICS_ROWS.append(("physics-device-cuda-absent", ["-device", "cuda"], "-device"))

MEMORY_ROWS = [
    ("memory-N-1e9", ["-N", "1000000000"], "-oversample"),
    ("memory-detpixels-1e7", ["-detpixels", "10000000"], "-detpixels"),
    ("memory-oversample-1e4", ["-oversample", "10000"], "-oversample"),
    ("memory-dispsteps-1e8", ["-dispersion", "0.1", "-dispsteps", "100000000"], "-dispsteps"),
    ("memory-mosaic-domains-1e8", ["-mosaic", "1", "-mosaic_domains", "100000000"], "-mosaic_domains"),
    ("memory-phisteps-1e9", ["-osc", "1", "-phisteps", "1000000000"], "-phisteps"),
    ("memory-divsteps", ["-divergence", "1", "-divsteps", "100000"], "-divsteps"),
    ("memory-chunk-huge", ["-chunk", "100000000000"], "-chunk"),
]


def _file_rows():
    rows = []

    def hkl(name, content, names="h.hkl:"):
        rows.append((f"hkl-{name}", NO_F + OUT + ["-hkl", "h.hkl"], {"h.hkl": content}, names))

    hkl("words", b"one two three four\n")
    hkl("three-fields", b"1 2 3\n")
    hkl("five-fields", b"1 2 3 4 5\n")
    hkl("fractional-index", b"1.5 0 0 10\n")
    hkl("nan-F", HKL_OK + b"1 1 1 nan\n")
    hkl("inf-F", HKL_OK + b"1 1 1 inf\n")
    hkl("nan-index", b"nan 0 0 10\n")
    hkl("int-overflow", b"3000000000 0 0 1\n")
    hkl("box-over-2^62", b"-2147483647 -2147483647 -2147483647 1\n2147483647 2147483647 2147483647 1\n")
    rows.append(("memory-sparse-hkl-dense-fdump", NO_F + OUT + ["-hkl", "h.hkl", "-dump", "F.bin"],
                 {"h.hkl": b"0 0 0 1\n1000000000 0 0 1\n"}, "-dump"))
    hkl("empty", b"")
    hkl("blank-lines", b"\n\n  \n")
    hkl("binary", bytes(range(256)) * 4)
    hkl("line-7-bad", HKL_OK * 2 + b"1 2 x 4\n", "h.hkl:7")
    rows.append(("hkl-missing", BASE + OUT + ["-hkl", "nope.hkl"], {}, "nope.hkl"))
    rows.append(("hkl-is-a-folder", BASE + OUT + ["-hkl", "d"], {"d/": b""}, "d"))

    def mat(name, content):
        rows.append((f"mat-{name}", ["-mat", "A.mat"] + BASE[7:] + OUT, {"A.mat": content}, "A.mat"))

    mat("empty", b"")
    mat("eight-numbers", b"0.01 0 0\n0 0.01 0\n0 0\n")
    mat("words", b"a b c\nd e f\ng h i\n")
    mat("nan", b"nan 0 0\n0 0.01 0\n0 0 0.01\n")
    mat("inf", b"inf 0 0\n0 0.01 0\n0 0 0.01\n")
    mat("zero", b"0 0 0\n0 0 0\n0 0 0\n")
    mat("rank-2", b"0.01 0.01 0\n0.01 0.01 0\n0 0 0.01\n")
    mat("1e300", b"1e300 0 0\n0 1e300 0\n0 0 1e300\n")
    mat("1e-300", b"1e-300 0 0\n0 1e-300 0\n0 0 1e-300\n")
    rows.append(("mat-missing", ["-mat", "nope.mat"] + BASE[7:] + OUT, {}, "nope.mat"))

    def smv(name, content, flag="-img", names="i.img"):
        rows.append((f"smv-{name}", BASE + OUT + [flag, "i.img"], {"i.img": content}, names))

    smv("wavelength-0", _smv(WAVELENGTH="0"))
    smv("wavelength-inf", _smv(WAVELENGTH="inf"))
    smv("pixel-size-0", _smv(PIXEL_SIZE="0"))
    smv("distance-0", _smv(DISTANCE="0"))
    smv("truncated-pixels", _smv(pixels=20))
    smv("size-0", _smv(size1=0, size2=0))
    smv("not-smv", b"hello world" * 100)
    smv("short", b"{\nHEADER_BYTES=512;\n")
    smv("header-bytes-huge", _smv(HEADER_BYTES="99999999"))
    smv("mask-truncated", _smv(pixels=10), flag="-mask")
    smv("mask-not-smv", b"\0" * 600, flag="-mask")
    rows.append(("smv-missing", BASE + OUT + ["-img", "nope.img"], {}, "nope.img"))

    def source(name, content, names="s.txt"):
        rows.append((f"source-{name}", BASE + OUT + ["-sourcefile", "s.txt"], {"s.txt": content}, names))

    source("words", b"alpha beta gamma delta epsilon\n", "-sourcefile")
    source("random-bytes", bytes((i * 97 + 13) % 256 for i in range(400)), "-sourcefile")
    source("nan", b"-10 0 0 1 1e-10\n-10 0 nan 1 1e-10\n", "s.txt:2")
    source("inf", b"-10 0 0 1 inf\n", "s.txt:1")
    source("wavelength-0", b"-10 0 0 1 0\n", "-sourcefile")
    source("at-sample", b"0 0 0 1 1e-10\n", "-sourcefile")
    source("empty", b"")
    source("blank", b"\n\n")
    rows.append(("source-missing", BASE + OUT + ["-sourcefile", "nope.txt"], {}, "nope.txt"))

    def fdump(name, content, extra=(), names="F.bin"):
        argv = NO_F + OUT + ["-dump", "F.bin", *extra]
        rows.append((f"fdump-{name}", argv, {"F.bin": content}, names))

    fdump("nan-F", _fdump(values=_nan_grid(math.nan)))
    fdump("inf-F", _fdump(values=_nan_grid(math.inf)))
    fdump("nan-F-c-compat", _fdump(values=_nan_grid(math.nan)), ["--c-compat", "-nonoise", "-nopgm"])
    fdump("truncated", _fdump(cut=40))
    fdump("bad-header", b"not a header\n\f" + b"\0" * 64)
    fdump("no-form-feed", b"0 1 0 1 0 1\n" + b"\0" * 300)
    fdump("reversed-range", b"1 0 0 1 0 1\n\f" + b"\0" * 300)
    fdump("huge-range", b"-100000 100000 -100000 100000 0 10\n\f" + b"\0" * 64)
    fdump("empty", b"")
    return rows


def _output_rows():
    hkl = NO_F + ["-hkl", "h.hkl"]
    return [
        ("outputs-same-path-twice", BASE + ["-floatfile", "X", "-intfile", "X"], {}, "X"),
        ("outputs-same-file-other-spelling", BASE + ["-floatfile", "X", "-intfile", "./X"], {}, "X"),
        ("outputs-overwrites-hkl", hkl + ["-floatfile", "h.hkl"], {"h.hkl": HKL_OK}, "h.hkl"),
        ("outputs-overwrites-mat", ["-mat", "A.mat"] + BASE[7:] + ["-intfile", "A.mat"], {"A.mat": MAT_OK}, "A.mat"),
        ("outputs-overwrites-source", BASE + ["-sourcefile", "s.txt", "-floatfile", "s.txt"],
         {"s.txt": b"-10 0 0 1 1e-10\n"}, "s.txt"),
        ("outputs-trailing-slash", BASE + ["-floatfile", "newdir/"], {}, "newdir/"),
        ("outputs-is-a-folder", BASE + ["-floatfile", "d"], {"d/": b""}, "d"),
        ("outputs-parent-is-a-file", BASE + ["-floatfile", "p/f.bin"], {"p": b"x"}, "p/f.bin"),
        ("outputs-outdir-is-a-file", BASE + ["-outdir", "p", "-floatfile", "f.bin"], {"p": b"x"}, "p/f.bin"),
        ("outputs-name-too-long", BASE + ["-floatfile", "a" * 300], {}, "aaaa"),
        ("outputs-name-near-limit", BASE + ["-floatfile", "b" * 240], {}, "bbbb"),
        ("outputs-in-proc", BASE + ["-floatfile", "/proc/nonexistent/f.bin"], {}, "/proc/nonexistent/f.bin"),
        ("outputs-pgm-equals-float", BASE + ["-floatfile", "x.bin", "-pgmfile", "x.bin"], {}, "x.bin"),
        ("outputs-png-equals-int", BASE + ["-intfile", "x.img", "-pngfile", "x.img"], {}, "x.img"),
        ("outputs-empty-outdir", BASE + ["-outdir", "", "-floatfile", "f.bin"], {}, "-outdir"),
    ]


def _panels_expt(**beam) -> bytes:
    """A two-panel experiment list (8x8 panels at 50 mm), its beam dict updated with `beam`."""
    import json

    from nanobragg_torch.config import PanelConfig
    from nanobragg_torch.io.dxtbx_models import write_experiments

    panels = tuple(PanelConfig(origin=(-4e-4 + 1e-3 * i, 4e-4, -0.05), fast_axis=(1.0, 0.0, 0.0),
                               slow_axis=(0.0, -1.0, 0.0), pixel_size=1e-4, fpixels=8, spixels=8) for i in range(2))
    cfg = SimulationConfig(detector=DetectorConfig(panels=panels), beam=BeamConfig(
        wavelength=1e-10, beam_vector=(0.0, 0.0, -1.0), polar_vector=(1.0, 0.0, 0.0)))
    obj = write_experiments(cfg)
    obj["beam"][0].update(beam)
    return json.dumps(obj).encode()


PANEL_FLAGS = ["-expt", "x.expt", "-beam_vector", "0", "0", "-1", "-cell", "100", "100", "100", "90", "90", "90",
               "-default_F", "100", "-N", "2", "-oversample", "1"]


def _panel_rows():
    """Issue 30: -roi, -mask, the noise image of multi-panel detectors and a dxtbx polychromatic beam."""
    expt = {"x.expt": _panels_expt()}
    return [
        ("panels-roi-outside-every-panel", PANEL_FLAGS + OUT + ["-roi", "20", "30", "0", "3"], expt, "-roi"),
        ("panels-noise-smv", PANEL_FLAGS + OUT + ["-noisefile", "n.img"], expt, "n.img"),
        ("panels-mask-one-panel", PANEL_FLAGS + OUT + ["-mask", "m.img"], {**expt, "m.img": _smv()}, "m.img"),
        ("panels-trace-outside-roi", PANEL_FLAGS + OUT + ["-roi", "2", "5", "2", "5", "-trace_pixel", "0", "0",
                                                          "-trace_panel", "1"], expt, "-trace_pixel"),
        ("panels-expt-band-reversed", PANEL_FLAGS + OUT, {"x.expt": _panels_expt(
            __id__="polychromatic", wavelength_range=[1.3, 1.2])}, "x.expt"),
        ("panels-expt-band-missing", PANEL_FLAGS + OUT, {"x.expt": _panels_expt(__id__="polychromatic")}, "x.expt"),
    ]


CLI_ROWS = (
    _flag_rows()
    + [(i, BASE + OUT + extra, {}, name) for i, extra, name in PHYSICS_ROWS + MEMORY_ROWS]
    + _file_rows()
    + _output_rows()
    + _panel_rows()
)


def _make_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        if name.endswith("/"):
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(content)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _refused_cleanly(capsys, argv: list[str], folder: Path, names: str) -> None:
    before = _tree(folder)
    rc = main(argv)  # an escaping exception fails the row: that is a traceback
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == 2, f"exit {rc}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("nanobragg: error: "), err
    assert any(n in lines[0] for n in names.split("|")), f"{names!r} not named in {lines[0]!r}"
    assert _tree(folder) == before, f"left behind: {_tree(folder) - before}"


@pytest.mark.parametrize(("argv", "files", "names"), [pytest.param(a, f, n, id=i) for i, a, f, n in CLI_ROWS])
def test_cli_refuses_cleanly(argv, files, names, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _make_files(tmp_path, files)
    _refused_cleanly(capsys, argv, tmp_path, names)


# ---------------------------------------------------------------------------------------------------------
# accepted by a documented C rule (quirks INVALID_VALUES_C_RULES): the image equals that of the substitute

C_RULE_ROWS = [
    ("crule-phisteps-0", ["-phisteps", "0"], []),
    ("crule-mosaic-domains-0", ["-mosaic_domains", "0"], []),
    ("crule-oversample-negative", ["-oversample", "-5"], []),
    ("crule-oversample-0", ["-oversample", "0"], []),
    ("crule-N-0", ["-N", "0"], ["-N", "1"]),
    ("crule-N-negative", ["-N", "-1"], ["-N", "1"]),
    ("crule-lambda-negative", ["-lambda", "-1"], []),
    ("crule-distance-negative", ["-distance", "-100"], []),
    ("crule-cell-angles-0", ["-cell", "100", "100", "100", "0", "0", "0"], []),
    ("crule-exposure-0", ["-flux", "1e12", "-exposure", "0"], []),
    ("crule-hdivstep-0", ["-hdivrange", "1", "-hdivstep", "0"], ["-hdivrange", "1", "-hdivsteps", "2"]),
    ("crule-vdivstep-0", ["-vdivrange", "1", "-vdivstep", "0"], ["-vdivrange", "1", "-vdivsteps", "2"]),
    ("crule-osc-negative", ["-osc", "-1"], []),
    ("crule-mosaic-negative", ["-mosaic", "-1", "-mosaic_domains", "3"], []),
    ("crule-dispersion-negative", ["-dispersion", "-1"], []),
    ("crule-thick-negative", ["-detector_thick", "-1"], []),
    ("crule-xtalsize-negative", ["-xtalsize", "-1"], []),
    ("crule-divsteps-0", ["-hdivsteps", "0", "-vdivsteps", "0"], []),
]


def _image(argv: list[str]) -> np.ndarray:
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    with torch.no_grad():
        return render(build_plan(cfg, torch.float64)).image.numpy()


@pytest.mark.parametrize(("given", "substitute"), [pytest.param(g, s, id=i) for i, g, s in C_RULE_ROWS])
def test_c_rule_renders_the_substitute(given, substitute, tmp_path, monkeypatch, capsys):
    """The value is accepted (exit 0, finite image) and renders exactly the value the C substitutes."""
    monkeypatch.chdir(tmp_path)
    assert main(BASE + given + OUT) == 0, capsys.readouterr().err
    image = np.fromfile(tmp_path / "f.bin", dtype=np.float32)
    assert np.isfinite(image).all() and image.max() > 0
    np.testing.assert_array_equal(_image(BASE + given), _image(BASE + substitute))


# ---------------------------------------------------------------------------------------------------------
# edges that render (issue 30): exit 0, a finite image equal to that of an equivalent ordinary input, and the
# line the run owes the user on stdout

def _mtz_friedel_conflict() -> bytes:
    gemmi = pytest.importorskip("gemmi")
    import tempfile

    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 1")
    mtz.set_cell_for_all(gemmi.UnitCell(100, 100, 100, 90, 90, 90))
    mtz.add_dataset("x")
    mtz.add_column("FP", "F")
    mtz.set_data(np.array([[-1, 0, 0, 20.0], [1, 0, 0, 80.0], [0, 0, 0, 100.0]], dtype=np.float32))
    with tempfile.TemporaryDirectory() as folder:
        mtz.write_to_file(f"{folder}/x.mtz")
        return Path(f"{folder}/x.mtz").read_bytes()


EDGE_ROWS = [
    # (id, input file name, its content (or a maker), the equivalent ordinary text HKL, a line on stdout)
    ("edge-hkl-huge-index", "h.hkl", HKL_OK + b"0 0 0 90\n1000000000 0 0 100\n", HKL_OK + b"0 0 0 90\n",
     "stored sparsely"),
    ("edge-hkl-cube-0-1200", "h.hkl", b"0 0 0 100\n1200 1200 1200 1\n", b"0 0 0 100\n", "12.9 GiB"),
    ("edge-mtz-friedel-conflict", "x.mtz", _mtz_friedel_conflict,
     b"-1 0 0 20\n1 0 0 80\n0 0 0 100\n", "2 reflections of the file disagree"),
]


@pytest.mark.parametrize(("name", "content", "plain", "said"), [pytest.param(*r[1:], id=r[0]) for r in EDGE_ROWS])
def test_edge_renders_as_the_plain_input(name, content, plain, said, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(content() if callable(content) else content)
    (tmp_path / "plain.hkl").write_bytes(plain)
    assert main(NO_F + ["-hkl", name, "-floatfile", "a.bin"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count(said) == 1, out
    assert main(NO_F + ["-hkl", "plain.hkl", "-floatfile", "b.bin"]) == 0
    a, b = (np.fromfile(tmp_path / f, dtype=np.float32) for f in ("a.bin", "b.bin"))
    assert np.isfinite(a).all() and a.max() > 0 and np.array_equal(a, b)


def test_edge_panels_roi_mask_noise_render(tmp_path, monkeypatch, capsys):
    """Multi-panel -roi, -mask (the panels stacked along slow) and -noisefile NAME.nxs: exit 0, nothing
    rendered outside the selection."""
    monkeypatch.chdir(tmp_path)
    mask = _smv(size1=8, size2=16)  # every pixel 1: the mask keeps all, -roi selects
    _make_files(tmp_path, {"x.expt": _panels_expt(), "m.img": mask})
    argv = PANEL_FLAGS + ["-roi", "2", "5", "1", "6", "-mask", "m.img", "-floatfile", "f.bin", "-noisefile",
                          "n.nxs", "-seed", "5"]
    assert main(argv) == 0, capsys.readouterr().err
    image = np.fromfile(tmp_path / "f.bin", dtype=np.float32).reshape(2, 8, 8)
    assert np.isfinite(image).all() and image[:, 1:7, 2:6].all()
    image[:, 1:7, 2:6] = 0
    assert not image.any() and (tmp_path / "n.nxs").stat().st_size > 0


# ---------------------------------------------------------------------------------------------------------
# faults while writing, stale temporaries, own flags only at flag positions

def test_disk_full_leaves_nothing(tmp_path, monkeypatch, capsys):
    """ENOSPC on the second file: one line naming it, exit 2, the first file and the folder made are gone."""
    monkeypatch.chdir(tmp_path)

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs, "write_smv", full)
    _refused_cleanly(capsys, BASE + ["-floatfile", "new/sub/f.bin", "-intfile", "new/i.img"], tmp_path,
                     "new/i.img")


def test_error_after_rename_keeps_old_files(tmp_path, monkeypatch, capsys):
    """An existing output is kept unchanged when the run fails (the set is renamed only at the end)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.bin").write_bytes(b"old")

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(outputs, "write_pgm", broken)
    _refused_cleanly(capsys, BASE + ["-floatfile", "f.bin", "-pgmfile", "p.pgm"], tmp_path, "p.pgm")
    assert (tmp_path / "f.bin").read_bytes() == b"old"


def test_stale_temporaries_are_swept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = tmp_path / f".f.bin.{dead}.abcd1234.nbtmp"
    alive = tmp_path / f".f.bin.{os.getpid()}.abcd1234.nbtmp"  # a live run's temporary is not ours to take
    other = tmp_path / ".f.bin.notours.tmp"
    for p in (stale, alive, other):
        p.write_bytes(b"x")
    assert main(BASE + OUT) == 0
    assert not stale.exists() and alive.exists() and other.exists()
    assert (tmp_path / "f.bin").exists()


def test_own_flags_only_at_flag_positions(tmp_path, monkeypatch, capsys):
    """`-intfile -c_compat` names a file "-c_compat"; it does not switch on C-compat mode."""
    monkeypatch.chdir(tmp_path)
    cfg, options = config_from_flags(BASE + ["-intfile", "-c_compat"], cwd=str(tmp_path))
    assert not cfg.c_compat and options.intfile == "-c_compat"
    cfg, options = config_from_flags(BASE + ["-floatfile", "-chunk"], cwd=str(tmp_path))
    assert options.floatfile == "-chunk" and options.chunk is None
    cfg, options = config_from_flags(BASE + ["-floatfile", "x.bin", "-c_compat"], cwd=str(tmp_path))
    assert cfg.c_compat


def test_nan_image_never_exits_0(tmp_path, monkeypatch, capsys):
    """Whatever slips past validation: a non-finite image is refused, nothing written."""
    monkeypatch.chdir(tmp_path)
    real = outputs.render

    def nan_render(plan, *args, **kwargs):
        result = real(plan, *args, **kwargs)
        result.image[0, 0] = math.nan
        return result

    monkeypatch.setattr(outputs, "render", nan_render)
    _refused_cleanly(capsys, BASE + OUT, tmp_path, "non-finite")


# ---------------------------------------------------------------------------------------------------------
# signals (a real process): clean-up and one line

SLOW = BASE[:-4] + ["-detpixels", "128", "-pixel", "0.1", "-phisteps", "50", "-osc", "1", "-mosaic", "0.2",
                    "-mosaic_domains", "50"]


def _default_signals() -> None:
    """In the child: the three signals at their default action (a suite run under nohup, or from a shell's
    background job, would hand them down ignored, and the program keeps an ignored signal ignored)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _handler_installed(pid: int, sig: int) -> bool:
    """Linux: the process catches `sig` (its SigCgt mask has the bit)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to see the handler")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: f"signals-{s.name}")
def test_signal_cleans_up(sig, tmp_path):
    env = {**os.environ, "NB_COMPILE": "0", "OMP_NUM_THREADS": "1", "NB_MEMORY_LIMIT": MEMORY_LIMIT}
    argv = SLOW + ["-floatfile", "out/f.bin", "-intfile", "i.img", "-noisefile", "n.img", "-pgmfile", "p.pgm"]
    proc = subprocess.Popen([sys.executable, "-m", "nanobragg_torch", *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        while not _handler_installed(proc.pid, signal.SIGTERM):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the render
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    lines = err.splitlines()
    assert len(lines) == 1 and sig.name in lines[0], err
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Python API: a ConfigError (ValueError) naming the field

CFG = SimulationConfig(
    detector=DetectorConfig(fpixels=8, spixels=8),
    beam=BeamConfig(),
    crystal=CrystalConfig(cell=(1e-8, 1e-8, 1e-8, math.pi / 2, math.pi / 2, math.pi / 2), default_F=100.0, Na=2,
                          Nb=2, Nc=2),
)


def _with(part: str, **changes) -> SimulationConfig:
    return dataclasses.replace(CFG, **{part: dataclasses.replace(getattr(CFG, part), **changes)})


API_ROWS = [
    ("api-wavelength-0", _with("beam", wavelength=0.0), "beam.wavelength"),
    ("api-wavelength-nan", _with("beam", wavelength=math.nan), "beam.wavelength"),
    ("api-wavelength-inf-tensor", _with("beam", wavelength=torch.tensor(math.inf)), "beam.wavelength"),
    ("api-wavelength-string", _with("beam", wavelength="1e-10"), "beam.wavelength"),
    ("api-fluence-nan", _with("beam", fluence=math.nan), "beam.fluence"),
    ("api-fluence-0", _with("beam", fluence=0.0), "beam.fluence"),
    ("api-beam-vector-0", _with("beam", beam_vector=(0.0, 0.0, 0.0)), "beam.beam_vector"),
    ("api-beam-vector-2d", _with("beam", beam_vector=(1.0, 0.0)), "beam.beam_vector"),
    ("api-sources-inf", _with("beam", sources=np.array([[-10, 0, 0, 1, np.inf]])), "beam.sources"),
    ("api-sources-lambda-0", _with("beam", sources=np.array([[-10, 0, 0, 1, 0.0]])), "beam.sources"),
    ("api-sources-shape", _with("beam", sources=np.zeros((2, 3))), "beam.sources"),
    ("api-dispsteps-0", _with("beam", dispsteps=0), "beam.dispsteps"),
    ("api-fpixels-0", _with("detector", fpixels=0), "detector.fpixels"),
    ("api-spixels-float", _with("detector", spixels=8.0), "detector.spixels"),
    ("api-pixel-0", _with("detector", pixel_size=0.0), "detector.pixel_size"),
    ("api-distance-0", _with("detector", distance=0.0), "detector.distance"),
    ("api-distance-nan", _with("detector", distance=math.nan), "detector.distance"),
    ("api-convention", _with("detector", convention="FOO"), "detector.convention"),
    ("api-pivot", _with("detector", pivot="MIDDLE"), "detector.pivot"),
    ("api-roi-off", _with("detector", roi=(100, 200, 100, 200)), "detector.roi"),
    ("api-mask-shape", _with("detector", mask=np.ones((4, 4))), "detector.mask"),
    ("api-oversample-0", _with("detector", oversample=0), "detector.oversample"),
    ("api-fdet-0", _with("detector", fdet_vector=(0.0, 0.0, 0.0)), "detector.fdet_vector"),
    ("api-twotheta-nan", _with("detector", twotheta=math.nan), "detector.twotheta"),
    ("api-cell-flat", _with("crystal", cell=(1e-8, 1e-8, 1e-8, math.pi / 2, math.pi / 2, math.pi)), "crystal.cell"),
    ("api-cell-five", _with("crystal", cell=(1e-8, 1e-8, 1e-8, 1.0, 1.0)), "crystal.cell"),
    ("api-no-crystal", _with("crystal", cell=None), "crystal.cell"),
    ("api-matrix-zero", _with("crystal", cell=None, reciprocal_matrix=np.zeros((3, 3))), "crystal.reciprocal_matrix"),
    ("api-matrix-rank2", _with("crystal", cell=None, reciprocal_matrix=np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1.0]])),
     "crystal.reciprocal_matrix"),
    ("api-matrix-shape", _with("crystal", cell=None, reciprocal_matrix=np.eye(2)), "crystal.reciprocal_matrix"),
    ("api-N-nan", _with("crystal", Na=math.nan), "crystal.Na"),
    ("api-shape", _with("crystal", shape="CUBE"), "crystal.shape"),
    ("api-mosaic-domains-0", _with("crystal", mosaic_domains=0), "crystal.mosaic_domains"),
    ("api-phisteps-negative", _with("crystal", phisteps=-1), "crystal.phisteps"),
    ("api-spindle-0", _with("crystal", spindle_axis=(0.0, 0.0, 0.0)), "crystal.spindle_axis"),
    ("api-F-nan", _with("crystal", structure_factors=StructureFactors(_nan_grid(math.nan), 0, 0, 0, 27)),
     "crystal.structure_factors"),
    ("api-memory-N", _with("crystal", Na=1e9), "detector.oversample"),
]


@pytest.mark.parametrize(("cfg", "field"), [pytest.param(c, f, id=i) for i, c, f in API_ROWS])
def test_api_refuses_naming_the_field(cfg, field):
    with pytest.raises(ConfigError, match=f"config field {field.replace('.', '[.]')}") as info:
        simulate(cfg, torch.float64)
    assert isinstance(info.value, ValueError) and info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"samples_per_chunk": 0}, "samples_per_chunk", id="api-chunk-0"),
        pytest.param({"samples_per_chunk": -3}, "samples_per_chunk", id="api-chunk-negative"),
        pytest.param({"device": "abacus"}, "device", id="api-device"),
        pytest.param({"dtype": torch.float16}, "dtype", id="api-dtype"),
    ],
)
def test_api_refuses_bad_render_options(kwargs, field):
    with pytest.raises(ConfigError) as info:
        simulate(CFG, **{"dtype": torch.float64, **kwargs})
    assert info.value.field == field


def test_api_not_a_config():
    with pytest.raises(ConfigError, match="SimulationConfig"):
        simulate({"detector": None})  # type: ignore[arg-type]


def test_corpus_size():
    """The issue asks for at least 150 malformed inputs and faults in the table-driven corpus."""
    total = len(CLI_ROWS) + len(C_RULE_ROWS) + len(API_ROWS) + len(EDGE_ROWS) + 1 + 4 + 3 + 4
    assert total >= 150
    assert len({r[0] for r in CLI_ROWS}) == len(CLI_ROWS)
