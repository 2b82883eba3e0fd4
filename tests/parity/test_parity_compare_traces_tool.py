"""tools/compare_traces.py: Markdown output and exit codes for C-printout and TRACE_PY logs."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import sys

import pytest

from nanobragg_torch.parity.goldens import golden_dir, repo_root
from nanobragg_torch.parity.printout import parse_printout_one

TOOL = repo_root() / "tools" / "compare_traces.py"
C_BLOCK = golden_dir() / "pinned" / "mosflm_default" / "printout_s93_f18.txt"
C_STDOUT = golden_dir() / "pinned" / "mosflm_default" / "stdout.txt"


def _py_log(values: dict, pixel=(93, 18)) -> str:
    lines = [f"TRACE_PY: pixel {pixel[0]} {pixel[1]}"]
    for name, v in values.items():
        comps = v if isinstance(v, tuple) else (v,)
        lines.append(f"TRACE_PY: {name} " + " ".join(repr(float(x)) for x in comps))
    return "\n".join(lines) + "\n"


def _load_tool():
    spec = importlib.util.spec_from_file_location("compare_traces_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_TOOL = _load_tool()


def _run(*args):
    """Run the tool's main() in-process (a subprocess per call would re-import torch each time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _TOOL.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_script_entry_point(tmp_path):
    r = subprocess.run(
        [sys.executable, str(TOOL), "--c-log", str(C_BLOCK), "--py-log", str(C_BLOCK)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "All 16 compared factors" in r.stdout


@pytest.fixture
def c_values():
    return dict(parse_printout_one(C_BLOCK.read_text()).values)


def test_matching_trace_exits_0(tmp_path, c_values):
    py = tmp_path / "py.log"
    py.write_text(_py_log(c_values))
    out = tmp_path / "summary.md"
    r = _run("--c-log", C_BLOCK, "--py-log", py, "--out", out)
    assert r.returncode == 0, r.stderr
    md = out.read_text()
    assert "All 16 compared factors within tolerance" in md
    assert "| factor | group | C | PyTorch |" in md
    assert md.count("| pass |") == 16


@pytest.mark.parametrize("name", ["hkl_frac", "F_latt", "omega_pixel"])
def test_drift_exits_1_and_names_first_divergent(tmp_path, c_values, name):
    v = c_values[name]
    c_values[name] = tuple(x * 1.01 + 0.01 for x in v) if isinstance(v, tuple) else v * 1.01
    c_values["I_pixel_final"] *= 1.01  # a later factor drifts too
    py = tmp_path / "py.log"
    py.write_text(_py_log(c_values))
    r = _run("--c-log", C_BLOCK, "--py-log", py, "--out", tmp_path / "s.md")
    assert r.returncode == 1
    head = (tmp_path / "s.md").read_text().splitlines()[:4]
    assert any(f"First divergent factor: `{name}`" in line for line in head)
    assert f"first divergent factor: {name}" in r.stderr


def test_reversed_kinds_and_c_stdout_geometry(tmp_path, c_values):
    py = tmp_path / "py.log"
    geometry = {"pix0_vector": (0.1, 0.013, -0.013), "distance": 0.1, "Fbeam": 0.013}
    py.write_text(_py_log({**geometry, **c_values}))
    # our log as the reference, the C block as the candidate, plus the C stdout geometry
    r = _run("--c-log", py, "--py-log", C_BLOCK, "--c-stdout", C_STDOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| PyTorch | C |" in r.stdout
    py.write_text(_py_log({**geometry, "distance": 0.1001, **c_values}))
    r = _run("--c-log", C_BLOCK, "--c-stdout", C_STDOUT, "--py-log", py)
    assert r.returncode == 1 and "First divergent factor: `distance`" in r.stdout


def test_same_kind_both_sides(tmp_path, c_values):
    r = _run("--c-log", C_BLOCK, "--py-log", C_BLOCK)
    assert r.returncode == 0 and "C (ref)" in r.stdout
    py = tmp_path / "py.log"
    py.write_text(_py_log(c_values))
    assert _run("--c-log", py, "--py-log", py).returncode == 0


def test_pixel_selection_and_bad_input(tmp_path, c_values):
    two = tmp_path / "two.log"
    other = C_BLOCK.read_text().replace("  18   93 :", "   1    2 :")
    two.write_text(other + C_BLOCK.read_text())
    py = tmp_path / "py.log"
    py.write_text(_py_log(c_values))
    assert _run("--c-log", two, "--py-log", py, "--pixel", 93, 18).returncode == 0
    assert _run("--c-log", two, "--py-log", py, "--pixel", 5, 5).returncode == 2
    empty = tmp_path / "empty.log"
    empty.write_text("nothing to see\n")
    assert _run("--c-log", empty, "--py-log", py).returncode == 2
    assert _run("--c-log", tmp_path / "missing.log", "--py-log", py).returncode == 2
