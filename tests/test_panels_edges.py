"""Multi-panel detectors at the edges (issue 30, point 3): -roi and masks, the noise image and -trace_pixel.

Each panel must render as the C's run of that panel alone as a CUSTOM detector with the same -roi and its
slice of the mask (panels.panel_detector): checked against our single-panel path per panel, and against the
C goldens of the four CSPAD panels (golden/cases.toml, tag cspad) on the pixels the ROI and mask keep. The
noise stream is the documented order (noise.noise_stack): panel by panel, each in the C's raster order.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch.cli import main
from nanobragg_torch.config import DetectorConfig, SimulationConfig
from nanobragg_torch.engine import render
from nanobragg_torch.errors import ConfigError
from nanobragg_torch.io.dxtbx_models import write_experiments
from nanobragg_torch.noise import noise_image, noise_stack
from nanobragg_torch.panels import panel_detector, rendered_stack
from nanobragg_torch.parity.compare import check_image, image_metrics
from nanobragg_torch.parity.goldens import has_golden, load_golden
from nanobragg_torch.plan import build_plan
from nanobragg_torch.simulate import simulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_panels import BEAM, CSPAD_CASES, MM, _case_config, _crystal, _panel, panel_of_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PX = 0.1 * MM


def _three(equal: bool = False, **det) -> SimulationConfig:
    """Three panels, the last smaller (padding in the stack) unless `equal` (NeXus files hold equal panels)."""
    panels = (_panel(12, 10, PX, 1 * MM, 1 * MM, 50 * MM), _panel(12, 10, PX, 1 * MM, -0.2 * MM, 50 * MM),
              _panel(12, 10, PX, -0.5 * MM, 1 * MM, 45 * MM) if equal else _panel(9, 7, PX, -0.5 * MM, 1 * MM,
                                                                                   45 * MM))
    return SimulationConfig(detector=DetectorConfig(panels=panels, oversample=2, **det), beam=BEAM,
                            crystal=_crystal())


def _mask(shape, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(size=shape) > 0.3).astype(np.float32)


@pytest.mark.parametrize("select", ["roi", "mask", "both"])
def test_each_panel_is_its_single_panel_run_with_roi_and_mask(select):
    det = {}
    if select in ("roi", "both"):
        det["roi"] = (2, 9, 1, 8)
    if select in ("mask", "both"):
        det["mask"] = _mask((3, 10, 12))
    cfg = _three(**det)
    result = render(build_plan(cfg, torch.float64, compile=False))
    rendered = rendered_stack(cfg.detector)
    assert int(result.plan.pixel_order.numel()) == int(rendered.sum()) < 12 * 10 * 2 + 9 * 7
    for p, image in enumerate(result.panel_images()):
        alone = simulate(dataclasses.replace(cfg, detector=panel_detector(cfg, p)), dtype=torch.float64,
                         compile=False)
        assert torch.equal(image, alone), f"panel {p}"
        S, F = alone.shape
        assert not bool(image[torch.as_tensor(~rendered[p, :S, :F])].any())
        assert bool(image[torch.as_tensor(rendered[p, :S, :F])].all())
    full = simulate(_three(), dtype=torch.float64, compile=False)
    assert torch.equal(result.image, torch.where(torch.as_tensor(rendered), full, 0.0))


@pytest.mark.parametrize("det, field, words", [
    (dict(roi=(50, 60, 0, 3)), "detector.roi", "selects no pixel of any panel"),
    (dict(mask=np.ones((10, 12))), "detector.mask", r"is not the panel stack.s \(3, 10, 12\)"),
    (dict(mask=np.full((3, 10, 12), np.nan)), "detector.mask", "not finite"),
])  # fmt: skip
def test_bad_roi_and_mask_of_panels_are_refused(det, field, words):
    with pytest.raises(ConfigError, match=words) as err:
        build_plan(_three(**det))
    assert err.value.field == field


def test_cspad_roi_and_mask_pixels_match_the_c_goldens():
    """The four CSPAD panel goldens as one detector with -roi and a mask: the kept pixels of every panel agree
    with the C's image of that panel at the golden tolerance, the others are 0, and the kept pixels are those
    of the stack rendered whole, bit for bit."""
    variant = "fixed"
    if not all(has_golden(n, variant) for n in CSPAD_CASES):
        pytest.skip("CSPAD goldens not present")
    cfgs = [_case_config(n, variant) for n in CSPAD_CASES]
    base = cfgs[0]
    panels = tuple(panel_of_case(c) for c in cfgs)
    P, S, F = 4, max(p.spixels for p in panels), max(p.fpixels for p in panels)
    mask = _mask((P, S, F), seed=4)
    det = dataclasses.replace(base.detector, panels=panels, convention="MOSFLM", fdet_vector=None, sdet_vector=None,
                              odet_vector=None, Xclose=None, Yclose=None, close_distance=None, pivot="BEAM",
                              roi=(20, 150, 10, 170), mask=mask)
    multi = dataclasses.replace(base, detector=det)
    with torch.no_grad():
        result = render(build_plan(multi, torch.float64, compile=False))
    kept = rendered_stack(det)
    for p, (name, image) in enumerate(zip(CSPAD_CASES, result.panel_images(), strict=True)):
        golden = load_golden(name, variant)
        ours = image.numpy()
        sel = kept[p, : ours.shape[0], : ours.shape[1]]
        assert sel.sum() > 10000 and not ours[~sel].any()
        tol = golden.case.tolerance_for("float64")
        metrics = image_metrics(ours[sel], golden.image[sel], tol.significant)
        assert not check_image(metrics, tol), f"{name}: {metrics}"
    # -roi and the mask only select: the kept pixels are the whole stack's, bit for bit
    whole = dataclasses.replace(multi, detector=dataclasses.replace(det, roi=None, mask=None))
    with torch.no_grad():
        full = render(build_plan(whole, torch.float64, compile=False)).image
    assert torch.equal(result.image, torch.where(torch.as_tensor(kept), full, 0.0))


# ---- noise: one stream through the panels --------------------------------------------------------------------


def test_noise_stack_order():
    rng = np.random.default_rng(2)
    stack = rng.uniform(0, 300, size=(3, 6, 8)).astype(np.float32)
    noisy, photons, overloads = noise_stack(stack, (6, 6, 6), (8, 8, 8), seed=11)
    flat, photons_flat, _ = noise_image(stack.reshape(18, 8), seed=11)  # the panels stacked along slow
    assert np.array_equal(noisy.reshape(18, 8), flat) and photons == photons_flat
    first, _, _ = noise_image(stack[0], seed=11)  # panel 0: the C's noise image of panel 0 alone
    assert np.array_equal(noisy[0], first)
    # unequal panels: the padding draws nothing and stays 0; an ROI is each panel's window
    noisy, _, _ = noise_stack(stack, (6, 4, 6), (8, 8, 5), seed=11, roi=(1, 6, 0, 3))
    assert not noisy[1, 4:].any() and not noisy[2, :, 5:].any() and not noisy[:, 4:].any()
    assert np.array_equal(noisy[0], noise_image(stack[0], seed=11, roi=(1, 6, 0, 3))[0])


def _expt(tmp_path: Path) -> Path:
    write_experiments(_three(equal=True), tmp_path / "three.expt")
    return tmp_path / "three.expt"


CLI = ["-beam_vector", "0", "0", "-1", "-cell", "80", "90", "100", "90", "90", "90", "-N", "5", "-default_F", "100",
       "-lambda", "1.3", "-misset", "10", "20", "30", "-oversample", "2", "-noprogress"]


def test_noise_roi_and_mask_from_the_command_line(tmp_path, monkeypatch, capsys):
    import h5py

    monkeypatch.chdir(tmp_path)
    expt = _expt(tmp_path)
    mask = _mask((3, 10, 12), seed=5)
    header = {"HEADER_BYTES": 512, "DIM": 2, "BYTE_ORDER": "little_endian", "TYPE": "unsigned_short",
              "SIZE1": 12, "SIZE2": 30, "PIXEL_SIZE": 0.1, "DISTANCE": 100, "WAVELENGTH": 1.3}
    text = "{\n" + "".join(f"{k}={v};\n" for k, v in header.items()) + "}\n"
    (tmp_path / "mask.img").write_bytes(text.encode().ljust(512, b" ") + mask.astype("<u2").tobytes())
    argv = ["-expt", str(expt), *CLI, "-roi", "1", "10", "0", "8", "-mask", "mask.img", "-floatfile", "f.bin",
            "-noisefile", "n.nxs", "-seed", "9", "-nxsfile", "i.nxs"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    image = np.fromfile(tmp_path / "f.bin", dtype="<f4").reshape(3, 10, 12)
    cfg = _three(equal=True, roi=(1, 10, 0, 8), mask=mask.reshape(3, 10, 12))
    kept = rendered_stack(cfg.detector)
    assert not image[~kept].any() and image[kept].all()
    want, photons, _ = noise_stack(image, (10, 10, 10), (12, 12, 12), seed=9, roi=(1, 10, 0, 8))
    with h5py.File(tmp_path / "n.nxs") as f:
        got = f["entry/instrument/detector/data"][0]
        pixel_mask = f["entry/instrument/detector/pixel_mask"][()]
    assert np.array_equal(got, want) and f"{photons:.0f} photons on noise image" in out
    assert (got[kept] >= 40).all() and not got[~kept & ~_roi_window((3, 10, 12), (1, 10, 0, 8))].any()
    assert np.array_equal(pixel_mask != 0, ~kept)


def _roi_window(shape, roi) -> np.ndarray:
    xmin, xmax, ymin, ymax = roi
    s, f = np.arange(shape[1])[:, None], np.arange(shape[2])[None, :]
    return np.broadcast_to((f >= xmin) & (f <= xmax) & (s >= ymin) & (s <= ymax), shape)


def test_single_image_noise_of_panels_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-expt", str(_expt(tmp_path)), *CLI, "-noisefile", "n.img"]) == 2
    err = capsys.readouterr().err
    assert "-noisefile holds one panel" in err and "-noisefile NAME.nxs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["three.expt"]


# ---- -trace_pixel: the panel's trace is the single-panel run's trace ---------------------------------------------


def _trace_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("TRACE_PY")]


def test_trace_of_a_panel_is_the_single_panel_trace(tmp_path):
    """-trace_pixel S F -trace_panel 1 on the three-panel expt prints the trace of `-expt panel1.expt` (that
    panel alone, the C's CUSTOM detector) -trace_pixel S F, value for value, with -roi and -mask."""
    cfg = _three(equal=True)
    write_experiments(cfg, tmp_path / "three.expt")
    write_experiments(dataclasses.replace(cfg, detector=panel_detector(cfg, 1)), tmp_path / "panel1.expt")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NB_COMPILE": "0", "OMP_NUM_THREADS": "1"}
    outs = []
    for expt, extra in (("three.expt", ["-trace_panel", "1"]), ("panel1.expt", [])):
        run = subprocess.run([sys.executable, "-m", "nanobragg_torch", "-expt", expt, *CLI, "-roi", "2", "9", "1",
                              "8", "-trace_pixel", "4", "5", *extra, "-dtype", "float64", "-floatfile", expt + ".bin"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        outs.append(_trace_lines(run.stdout))
    assert len(outs[0]) > 20 and outs[0] == outs[1]
    stack = np.fromfile(tmp_path / "three.expt.bin", dtype="<f4").reshape(3, 10, 12)
    alone = np.fromfile(tmp_path / "panel1.expt.bin", dtype="<f4").reshape(10, 12)
    assert np.array_equal(stack[1], alone)


def test_trace_of_a_pixel_the_panels_do_not_render_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    expt = str(_expt(tmp_path))
    assert main(["-expt", expt, *CLI, "-roi", "2", "9", "1", "8", "-trace_pixel", "0", "0", "-trace_panel", "2"]) == 2
    assert "is outside -roi" in capsys.readouterr().err


# ---- a dxtbx experiment's spectrum, and what it holds that is not simulated -------------------------------------


def _rich_expt(tmp_path: Path) -> Path:
    """The three-panel list with a polychromatic beam (1.25-1.35 A), beam divergence, a gaussian_rs profile
    and a crystal with ML mosaicity."""
    import json

    path = _expt(tmp_path)
    obj = json.loads(path.read_text())
    beam = obj["beam"][0]
    beam.update({"__id__": "polychromatic", "wavelength_range": [1.25, 1.35], "divergence": 0.01,
                 "sigma_divergence": 0.002})
    beam.pop("wavelength", None)
    obj["profile"] = [{"__id__": "gaussian_rs", "n_sigma": 3.0, "sigma_b": 0.04, "sigma_m": 0.06}]
    obj["experiment"][0]["profile"] = 0
    obj["crystal"] = [{"__id__": "crystal", "real_space_a": [80, 0, 0], "real_space_b": [0, 90, 0],
                       "real_space_c": [0, 0, 100], "space_group_hall_symbol": " P 1",
                       "ML_half_mosaicity_deg": 0.05, "ML_domain_size_ang": 1000.0}]
    obj["experiment"][0]["crystal"] = 0
    path.write_text(json.dumps(obj))
    return path


def test_expt_spectrum_is_the_c_band_and_the_rest_is_named(tmp_path, monkeypatch, capsys):
    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.io.dxtbx_models import read_experiments

    _rich_expt(tmp_path)
    monkeypatch.chdir(tmp_path)
    exp = read_experiments("three.expt")
    assert exp.wavelength == pytest.approx(1.3e-10, rel=1e-15) and exp.dispersion == pytest.approx(0.1 / 1.3)
    ignored = "\n".join(exp.ignored)
    for words in ("profile model gaussian_rs (sigma_m 0.06, sigma_b 0.04)", "ML_half_mosaicity_deg 0.05",
                  "ML_domain_size_ang 1000", "divergence 0.01, sigma_divergence 0.002", "-mosaic DEG"):
        assert words in ignored
    assert len(exp.ignored) == 3 and all(line.startswith("three.expt: ") for line in exp.ignored)
    flags = ["-beam_vector", "0", "0", "-1", "-N", "5", "-default_F", "100", "-oversample", "1", "-noprogress"]
    cfg, options = config_from_flags(["-expt", "three.expt", *flags])
    assert scalar(cfg.beam.dispersion) == pytest.approx(0.1 / 1.3) and scalar(cfg.beam.wavelength) == pytest.approx(
        1.3e-10)
    assert all(line in options.notes for line in exp.ignored)
    plan = build_plan(cfg, torch.float64, compile=False)
    lam = plan.sources.wavelength
    assert float(lam.min()) == pytest.approx(1.25e-10) and float(lam.max()) == pytest.approx(1.35e-10)
    # a flag wins over the file, as for every beam quantity
    cfg, _ = config_from_flags(["-expt", "three.expt", *flags, "-dispersion", "2"])
    assert scalar(cfg.beam.dispersion) == pytest.approx(0.02)
    assert main(["-expt", "three.expt", *flags, "-floatfile", "f.bin"]) == 0
    out = capsys.readouterr().out
    assert all(out.count(line) == 1 for line in exp.ignored)


def scalar(x) -> float:
    return float(x)
