"""tools/trace_pixel.py, tools/diff_picture.py and tools/bench.py: fast end-to-end checks (no C binary)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys

import numpy as np
import pytest
import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.parity.goldens import get_case, golden_dir, load_golden, repo_root, shared_data_dir
from nanobragg_torch.parity.printout import parse_trace_py
from nanobragg_torch.plan import build_plan

TOOLS = repo_root() / "tools"
CASE = "mosflm_default"  # small (128 x 128), no shared inputs, pinned and fixed goldens


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _run(tool, *args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """trace_pixel.py on the case's first golden pixel (pinned -> --c-compat), float64."""
    out = tmp_path_factory.mktemp("trace") / "trace.txt"
    code, _, err = _run(_load("trace_pixel"), "--case", CASE, "--out", out)
    assert code == 0, err
    return out, load_golden(CASE, "pinned")


def test_trace_pixel_is_the_rendered_pixel(traced):
    out, golden = traced
    pixel = golden.traced_pixels[0]
    trace = parse_trace_py(out.read_text())
    assert trace.pixel == tuple(pixel)
    argv = get_case(CASE).argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()) + ["--c-compat"]
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    with torch.no_grad():
        image = render(build_plan(cfg, torch.float64, "cpu")).image
    assert trace.values["I_pixel_final"] == pytest.approx(float(image[pixel]), rel=1e-12, abs=0)
    env = json.loads((out.parent / "trace.txt.env.json").read_text())
    for key in ("python", "torch", "numpy", "git_sha", "device", "dtype", "threads", "date"):
        assert key in env
    assert env["dtype"] == "float64" and env["pixel"] == list(pixel) and env["variant"] == "pinned"


def test_trace_agrees_with_the_c_printout(traced, tmp_path):
    out, golden = traced
    s, f = golden.traced_pixels[0]
    code, md, err = _run(_load("compare_traces"), "--c-log", golden.directory / f"printout_s{s}_f{f}.txt",
                         "--c-stdout", golden.directory / "stdout.txt", "--py-log", out)
    assert code == 0, md + err


def test_trace_pixel_raw_flags_to_stdout():
    flags = ["-cell", "100", "100", "100", "90", "90", "90", "-N", "3", "-default_F", "10", "-detpixels", "16",
             "-pixel", "0.5", "-distance", "100"]
    code, text, _ = _run(_load("trace_pixel"), "--pixel", 3, 5, "--dtype", "float32", "--", *flags)
    assert code == 0
    assert text.startswith("# pixel (slow 3, fast 5): ") and "-printout_pixel 5 3" in text.splitlines()[0]
    assert "\nTRACE_PY: pixel 3 5\n" in text and "TRACE_PY: I_pixel_final " in text


def _png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG, read back by matplotlib (the file decodes)."""
    import matplotlib.image

    img = matplotlib.image.imread(path)
    return img.shape[1], img.shape[0]


def test_diff_picture_writes_a_valid_png(tmp_path):
    tool = _load("diff_picture")
    rng = np.random.default_rng(1)
    ref = rng.gamma(0.5, 10.0, size=(24, 40)).astype(np.float32)
    ours = ref * (1 + 1e-3 * rng.standard_normal(ref.shape)).astype(np.float32)
    ours[5, 7] = ref[5, 7] * 1.5 + 1.0  # the worst pixel
    np.save(tmp_path / "ours.npy", ours)
    ref.tofile(tmp_path / "ref.bin")  # raw float32, like the C's -floatfile
    png = tmp_path / "diff.png"
    code, text, _ = _run(tool, "--ours", tmp_path / "ours.npy", "--ref", tmp_path / "ref.bin", "--shape", 24, 40,
                         "--out", png, "--worst", 3)
    assert code == 0
    width, height = _png_size(png)
    assert width > 3 * height  # three panels side by side
    worst = text.splitlines()[3].split()
    assert (int(worst[0]), int(worst[1])) == (5, 7)


def test_diff_picture_against_a_golden_case(tmp_path):
    png = tmp_path / "case.png"
    code, text, _ = _run(_load("diff_picture"), "--case", CASE, "--out", png)
    assert code == 0
    assert min(_png_size(png)) > 100
    corr = float(text.splitlines()[1].split()[1])
    assert corr > 0.9999999


def test_bench_quick_without_c(tmp_path, monkeypatch):
    monkeypatch.delenv("NB_C_BIN", raising=False)
    monkeypatch.delenv("NB_C_OMP_BIN", raising=False)
    bench = _load("bench")
    code, md, _ = _run(bench, "--case", "tiny", "--quick", "--reps", "1", "--dtype", "float32", "--compile", "off",
                       "--json", tmp_path / "b.json", "--md", tmp_path / "b.md")
    assert code == 0
    assert "| case | samples | impl |" in md and md == (tmp_path / "b.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| tiny ")]
    assert {r.split("|")[3].strip() for r in rows} == {"api", "api render", "api loop", "api loop, new orientation",
                                                       "cli"}
    report = json.loads((tmp_path / "b.json").read_text())
    (case,) = report["cases"]
    assert case["samples"] == 64 * 64 * 2 * 2
    assert all(r["times"] and r["peak_rss_mb"] > 0 for r in case["results"])
    assert any("NB_C_BIN" in n for n in case["notes"])
    # the machine's limit: sin throughput over the case's transcendental calls (SQUARE, 3 axes: 6)
    assert case["transcendentals_per_sample"] == 6 and report["machine"]["sin_per_s"]["float32"] > 0
    assert all(0 < r["limit_fraction"] for r in case["results"])


def test_bench_helpers():
    bench = _load("bench")
    assert bench.strip_outputs(["-N", "5", "-floatfile", "x", "-nonoise", "-printout_pixel", "1", "2", "-v"]) == [
        "-N", "5", "-v"]
    a = np.arange(10.0)
    assert bench.correlation(a, 2 * a + 1) == pytest.approx(1.0)
    names = {c.name for c in bench.select_cases(None)}
    assert names == {"cubic_1024", "triclinic_512", "tilted_256", "oversample_256", "sampling_47m", "mosaic_1g",
                     "pilatus6m"}


def test_bench_startup_breakdown(tmp_path):
    """--startup: the phases of a small CLI run, each measured, the part above `import torch` derived."""
    bench = _load("bench")
    code, md, _ = _run(bench, "--startup", "--reps", "1", "--dtype", "float32", "--compile", "off",
                       "--json", tmp_path / "s.json")
    assert code == 0 and "| float32 |" in md
    (row,) = json.loads((tmp_path / "s.json").read_text())["startup"]
    assert all(row[k] >= 0 for k in bench.STARTUP_PHASES)
    assert row["torch"] > 0 and row["render"] > 0
    assert row["above_torch"] == pytest.approx(row["wall"] - row["interpreter"] - row["torch"])


def test_float32_trace_records_its_dtype_and_compares_honestly(tmp_path):
    """A float32 trace says so (TRACE_PY: dtype / device); compare_traces takes the float32 tolerances from it,
    so a correct float32 render passes against the C printout, and the report header says float32."""
    golden = load_golden(CASE, "pinned")
    s, f = golden.traced_pixels[0]
    out = tmp_path / "trace32.txt"
    code, _, err = _run(_load("trace_pixel"), "--case", CASE, "--dtype", "float32", "--out", out)
    assert code == 0, err
    trace = parse_trace_py(out.read_text())
    assert (trace.dtype, trace.device) == ("float32", "cpu")
    md_out = tmp_path / "cmp.md"
    code, _, err = _run(_load("compare_traces"), "--c-log", golden.directory / f"printout_s{s}_f{f}.txt",
                        "--c-stdout", golden.directory / "stdout.txt", "--py-log", out, "--out", md_out)
    md = md_out.read_text()
    assert code == 0, md + err
    assert "trace-py float32 on cpu" in md and "c-printout float64" in md


def _drift_json(folder, records) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "drift.json").write_text(json.dumps({"failures": records, "changes": []}))


def test_review_reads_the_runs_own_results(tmp_path, monkeypatch):
    """review.py lists what the run's drift.json holds and runs no test suite to find it."""
    review = _load("review")
    rec = {"nodeid": "tests/golden/test_golden_parity.py::test_fingerprint_snapshot[pinned-mosflm_default]",
           "kind": "snapshot", "case": "pinned/mosflm_default", "factor": "polar", "rel": 1e-5, "change": "+1.0e-05"}
    _drift_json(tmp_path / "run", [rec, {**rec, "kind": "image", "nodeid": "x"}])

    def no_run(*args, **kwargs):
        raise AssertionError(f"review ran a command: {args}")

    monkeypatch.setattr(review.subprocess, "run", no_run)
    code, out, _ = _run(review, "--from", tmp_path / "run", "--accept", "none")
    assert code == 1, out
    assert "1 pending snapshot changes" in out and "polar: pinned/mosflm_default" in out


def test_review_without_a_run_says_so(tmp_path):
    review = _load("review")
    with pytest.raises(SystemExit, match="no drift report of a test run"):
        review.pending_snapshots(tmp_path / "nowhere")
    assert review.latest_report(tmp_path) is None
    _drift_json(tmp_path / ".tox" / "drift" / "quick", [])
    assert review.latest_report(tmp_path) == tmp_path / ".tox" / "drift" / "quick"
