"""Property-based fuzzing (hypothesis): drawn flag values and file contents obey the corpus contract.

Either the run succeeds (exit 0, the image written, every pixel finite) or it is refused (exit 2, one stderr
line naming the flag or the file, nothing left in the folder). Never a traceback, never a NaN image."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanobragg_torch.cli import main

BASE = "-cell 100 100 100 90 90 90 -default_F 100 -N 2 -lambda 1 -distance 100 -detpixels 4 -pixel 0.1".split()
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
                    derandomize=True)  # the same draws on every run: CI cannot flake on an unlucky one

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 1e300, 1.0, -1.0, 90.0, 180.0]),
)
integers = st.one_of(st.integers(-10, 10), st.sampled_from([0, -1, 10**9, 2**31, -(2**31)]))
FLOAT_FLAGS = ["-lambda", "-energy", "-distance", "-close_distance", "-pixel", "-twotheta", "-detector_rotx",
               "-phi", "-osc", "-mosaic", "-fluence", "-polar", "-Xbeam", "-Ybeam", "-default_F", "-dmin", "-water",
               "-hdivrange", "-dispersion", "-detector_thick", "-xtalsize", "-beamsize", "-flux", "-exposure"]
INT_FLAGS = ["-N", "-Na", "-oversample", "-phisteps", "-mosaic_domains", "-hdivsteps", "-dispsteps"]
VECTOR_FLAGS = ["-misset", "-beam_vector", "-spindle_axis", "-fdet_vector", "-polar_vector"]


# the last guard: a value that passes validation but overflows the render dtype (counted, see the report)
OVERFLOW = ("non-finite pixels (a value overflows",)


def _text(x: float) -> str:
    return repr(float(x)) if not isinstance(x, int) else str(x)


@contextlib.contextmanager
def _folder():
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def _contract(argv: list[str], names: tuple[str, ...], files: dict[str, bytes] | None = None) -> None:
    """Run argv in a fresh folder holding `files`; check the success-or-clean-refusal contract."""
    with _folder() as folder:
        for name, content in (files or {}).items():
            (folder / name).write_bytes(content)
        before = set(os.listdir(folder))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv + ["-floatfile", "f.bin"])  # an escaping exception is a traceback: the test fails
        lines = err.getvalue().splitlines()
        if rc == 0:
            image = np.fromfile(folder / "f.bin", dtype=np.float32)
            assert image.size == 16 and np.isfinite(image).all(), argv
        else:
            assert rc == 2, (rc, err.getvalue())
            assert len(lines) == 1 and lines[0].startswith("nanobragg: error: "), err.getvalue()
            assert any(n in lines[0] for n in names + OVERFLOW), (names, lines[0])
            assert set(os.listdir(folder)) == before


@pytest.fixture(autouse=True)
def _small_budget(monkeypatch):
    monkeypatch.setenv("NB_MEMORY_LIMIT", "5e7")  # keeps every accepted draw a quick render
    monkeypatch.setenv("NB_COMPILE", "0")


@SETTINGS
@given(flag=st.sampled_from(FLOAT_FLAGS), value=numbers)
def test_float_flag_values(flag, value):
    # -flux without -beamsize, -energy alone...: a refusal may name the flag that completes the pair
    names = (flag, "-fluence/-flux/-exposure/-beamsize", "-lambda/-energy", "-oversample", "-detpixels",
             "-hdivsteps", "-dispsteps", "-divsteps")
    _contract(BASE + [flag, _text(value)], names)


@SETTINGS
@given(flag=st.sampled_from(INT_FLAGS), value=integers)
def test_integer_flag_values(flag, value):
    _contract(BASE + [flag, str(value)], (flag, "-oversample", "-N/", "-divsteps", "-phisteps", "-mosaic_domains"))


@SETTINGS
@given(flag=st.sampled_from(VECTOR_FLAGS), values=st.lists(numbers, min_size=3, max_size=3))
def test_vector_flag_values(flag, values):
    _contract(BASE + [flag, *map(_text, values)], (flag, "-oversample"))


@SETTINGS
@given(values=st.lists(st.one_of(numbers, st.integers(-400, 400)), min_size=6, max_size=6))
def test_cell_values(values):
    _contract(BASE + ["-cell", *map(_text, values)], ("-cell", "-oversample"))


hkl_token = st.one_of(st.integers(-20, 20).map(str), numbers.map(_text), st.text(max_size=4))
hkl_line = st.lists(hkl_token, min_size=0, max_size=6).map(" ".join)


@SETTINGS
@given(lines=st.lists(hkl_line, max_size=8), raw=st.binary(max_size=64), use_raw=st.booleans(), bom=st.booleans())
def test_hkl_file_contents(lines, raw, use_raw, bom):
    content = raw if use_raw else "\n".join(lines).encode("utf-8", "surrogatepass")
    content = (b"\xef\xbb\xbf" if bom else b"") + content
    argv = BASE[:7] + BASE[9:] + ["-hkl", "h.hkl"]
    _contract(argv, ("h.hkl",), {"h.hkl": content})


@SETTINGS
@given(values=st.lists(numbers, min_size=9, max_size=9), extra=st.text(max_size=8))
def test_matrix_file_contents(values, extra):
    text = "\n".join(" ".join(_text(v) for v in values[i : i + 3]) for i in (0, 3, 6)) + "\n" + extra
    _contract(["-mat", "A.mat"] + BASE[7:], ("A.mat", "-oversample"), {"A.mat": text.encode("utf-8", "surrogatepass")})


@SETTINGS
@given(rows=st.lists(st.lists(numbers, min_size=0, max_size=6), max_size=5), raw=st.binary(max_size=64),
       use_raw=st.booleans())
def test_source_file_contents(rows, raw, use_raw):
    content = raw if use_raw else "".join(" ".join(map(_text, r)) + "\n" for r in rows).encode()
    _contract(BASE + ["-sourcefile", "s.txt"], ("s.txt", "-sourcefile", "-oversample"), {"s.txt": content})
