"""Derivative images (nanobragg_torch.derivatives): against the fixed C's central differences (committed
derivative goldens, and the live C on a case that is not a golden), against finite differences of our own
renders (the step-size law), second derivatives against differences of first derivatives, the two evaluation
paths against each other, and the parameter-path errors."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch import simulate
from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.derivatives import derivative_images, resolve_param, with_params
from nanobragg_torch.parity import derivgold as G

GOLDENS = G.load_derivative_goldens()

# triclinic, mosaic, three phi steps: not one of the goldens
DONE_WHEN = ("-cell 45 55 65 80 95 105 -misset 10 -20 30 -N 4 -default_F 100 -lambda 1.1 -distance 75 -detpixels 64 "
             "-pixel 0.4 -oversample 2 -mosaic 0.3 -mosaic_dom 4 -phisteps 3 -osc 0.6 -phi 0 -Xbeam 12.5 -Ybeam 13")
DONE_WHEN_STEPS = {"detector.distance": 0.004, "beam.wavelength": 0.00004, "crystal.cell.1": 0.004,
                   "crystal.misset.1": 0.004}


def _cfg(flags: str | tuple[str, ...]):
    return config_from_flags(list(flags.split() if isinstance(flags, str) else flags))[0]


@pytest.mark.parametrize("golden", GOLDENS, ids=[f"{g.case}-{g.path}" for g in GOLDENS])
def test_derivative_matches_c_golden(golden, drift, one_thread):
    """Our derivative image (float64) against the fixed C's central difference, pixel by pixel within the
    tolerance derived from the step (truncation) and the C's float32 images (storage)."""
    drift.case(f"derivatives/{golden.case}", "image", "float64")
    ours = derivative_images(_cfg(golden.flags), [golden.path], dtype=torch.float64)[golden.path].numpy()
    ref, tol = golden.derivative, golden.tolerance
    excess = np.abs(ours - ref) / tol
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    scale = np.abs(ref).max()
    corr = float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1])
    drift.image({"corr": corr, "sum_ratio": float(np.abs(ours).sum() / np.abs(ref).sum()),
                 "max_err_rel": float(np.abs(ours - ref).max() / scale), "worst_over_tol": float(excess.max())},
                ref, ours)
    drift.verdict(f"d/d {golden.path}", (int(worst[0]), int(worst[1])), float(np.abs(ours - ref)[worst] / scale))
    assert excess.max() <= 1.0, (f"d/d {golden.path}: pixel {worst} off by {excess.max():.2f}x the tolerance "
                                 f"(ours {ours[worst]:.6g}, C {ref[worst]:.6g})")
    assert corr > 0.99999


def test_goldens_cover_the_parameter_kinds():
    paths = {g.path for g in GOLDENS}
    assert {"detector.distance", "beam.wavelength", "crystal.cell.0", "crystal.misset.2", "detector.rotx"} <= paths
    for g in GOLDENS:  # the recorded step keeps both error estimates small
        assert g.entry["truncation_rel"] < 1e-4 and g.entry["storage_rel"] < 1e-4, g.entry


def _c_image(binary: str, argv: list[str]) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([binary, *argv, "-noprogress", "-nonoise", "-nopgm", "-floatfile", "f.bin"], cwd=tmp,
                       check=True, capture_output=True)
        return np.fromfile(Path(tmp) / "f.bin", dtype="<f4").reshape(64, 64).astype(np.float64)


@pytest.mark.needs_c("NB_C_FIXED_BIN")
def test_done_when_case_against_fixed_c(one_thread):
    """Triclinic, mosaic, multi-phi (not a golden): the first derivatives of distance, wavelength, a cell
    length and a misset angle correlate >= 0.999 with the fixed C's central differences and their summed
    magnitudes agree within 2 %; the second derivatives likewise with the C's second differences; and the
    C's difference quotients approach ours as theory says: the central one's error quarters and the
    one-sided one's halves with the step (until float32 round-off)."""
    import os

    binary = os.environ["NB_C_FIXED_BIN"]
    flags = tuple(DONE_WHEN.split())
    ours = derivative_images(_cfg(flags), list(DONE_WHEN_STEPS), order=2, dtype=torch.float64)

    def c_at(path, step, m):
        return _c_image(binary, G.moved_flags(flags, path, m * step))

    def agree(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), float(np.abs(a).sum() / np.abs(b).sum())

    for path, step in DONE_WHEN_STEPS.items():
        d1, d2 = (t.numpy() for t in ours[path])
        h = G.step_si(path, step)
        corr, ratio = agree(d1, (c_at(path, step, 1) - c_at(path, step, -1)) / (2 * h))
        assert corr >= 0.999 and abs(ratio - 1) <= 0.02, (path, corr, ratio)
        big, H = 8 * step, 8 * h  # second differences need a larger step (float32 images)
        corr, ratio = agree(d2, (c_at(path, big, 1) - 2 * c_at(path, big, 0) + c_at(path, big, -1)) / H**2)
        assert corr >= 0.999 and abs(ratio - 1) <= 0.02, (path, "second", corr, ratio)
    d = ours["detector.distance"][0].numpy()
    central, one = [], []
    for step in (0.32, 0.16, 0.08):  # mm: truncation-dominated
        h = G.step_si("detector.distance", step)
        plus, minus, base = (c_at("detector.distance", step, m) for m in (1, -1, 0))
        central.append(np.abs((plus - minus) / (2 * h) - d).sum())
        one.append(np.abs((plus - base) / h - d).sum())
    for a, b in zip(central, central[1:], strict=False):
        assert 3.0 < a / b < 5.0, central
    for a, b in zip(one, one[1:], strict=False):
        assert 1.6 < a / b < 2.4, one


def _fd_errors(cfg, path: str, steps, analytic: np.ndarray) -> tuple[list[float], list[float]]:
    """Summed |one-sided - analytic| and |central - analytic| of our own float64 renders."""
    q = resolve_param(cfg, path)
    base = simulate(cfg, torch.float64).numpy()

    def img(v):
        return simulate(with_params(cfg, [q], torch.tensor([v], dtype=torch.float64)), torch.float64).numpy()

    one, central = [], []
    for h in steps:
        plus, minus = img(q.value + h), img(q.value - h)
        one.append(np.abs((plus - base) / h - analytic).sum())
        central.append(np.abs((plus - minus) / (2 * h) - analytic).sum())
    return one, central


SMALL = ("-cell 45 55 65 80 95 105 -misset 10 -20 30 -N 4 -default_F 100 -lambda 1.1 -distance 75 -detpixels 24 "
         "-pixel 0.8 -oversample 1 -mosaic 0.3 -mosaic_dom 3 -phisteps 2 -osc 0.6 -Xbeam 9.5 -Ybeam 10")


@pytest.mark.parametrize("path,h0", [("detector.distance", 4e-5), ("beam.wavelength", 2e-13),
                                     ("crystal.cell.1", 1e-12), ("crystal.misset.1", 2e-4)])
def test_finite_difference_error_follows_the_step_law(path, h0, one_thread):
    """As diffBragg's tests: the one-sided difference's error halves with the step, the central one's
    quarters (truncation-dominated steps), and at a tiny step both reach the analytic value to round-off."""
    cfg = _cfg(SMALL)
    analytic = derivative_images(cfg, [path], dtype=torch.float64)[path].numpy()
    steps = [h0, h0 / 2, h0 / 4]
    one, central = _fd_errors(cfg, path, steps, analytic)
    for a, b in zip(one, one[1:], strict=False):
        assert 1.7 < a / b < 2.3, (path, one)
    for a, b in zip(central, central[1:], strict=False):
        assert 3.4 < a / b < 4.6, (path, central)
    tiny = h0 / 256
    _, c_tiny = _fd_errors(cfg, path, [tiny], analytic)
    assert c_tiny[0] < 1e-5 * np.abs(analytic).sum(), (path, c_tiny)


def test_second_derivatives_are_differences_of_first(one_thread):
    """order=2: the second derivative equals the central difference of first derivatives at p +- h, and the
    first derivatives of both orders and both evaluation paths agree."""
    cfg = _cfg(SMALL)
    paths = ["detector.distance", "beam.wavelength", "crystal.cell.1", "crystal.misset.1", "rotation.2",
             "detector.Xbeam"]
    steps = {"detector.distance": 1e-6, "beam.wavelength": 1e-15, "crystal.cell.1": 1e-14, "crystal.misset.1": 1e-6,
             "rotation.2": 1e-6, "detector.Xbeam": 1e-7}
    both = derivative_images(cfg, paths, order=2, dtype=torch.float64)
    first = derivative_images(cfg, paths, dtype=torch.float64)
    for path in paths:
        d1, d2 = both[path]
        torch.testing.assert_close(first[path], d1, rtol=1e-10, atol=1e-10 * float(d1.abs().max()))
        q = resolve_param(cfg, path)
        h = steps[path]
        at = [derivative_images(with_params(cfg, [q], torch.tensor([q.value + s * h], dtype=torch.float64))
                                if not path.startswith("rotation") else cfg, [path], dtype=torch.float64)
              for s in (1, -1)] if not path.startswith("rotation") else None
        if at is None:
            continue  # a rotation vector is evaluated at zero only (its second derivative is checked below)
        fd = (at[0][path] - at[1][path]) / (2 * h)
        err = float((fd - d2).abs().sum() / d2.abs().sum())
        assert err < 1e-4, (path, err)
    # rotation about z at zero equals the misset's rotation about z when the other missets are zero
    cfg0 = _cfg(SMALL.replace("-misset 10 -20 30", "-misset 0 0 30"))
    a = derivative_images(cfg0, ["rotation.2", "crystal.misset.2"], order=2, dtype=torch.float64)
    torch.testing.assert_close(a["rotation.2"][0], a["crystal.misset.2"][0], rtol=1e-8,
                               atol=1e-8 * float(a["crystal.misset.2"][0].abs().max()))
    torch.testing.assert_close(a["rotation.2"][1], a["crystal.misset.2"][1], rtol=1e-7,
                               atol=1e-7 * float(a["crystal.misset.2"][1].abs().max()))


def test_global_parameters_and_scale(one_thread):
    """Parameters that reach the kernel's global inputs (N, fluence, default_F) take the forward-mode path;
    scale is the image itself; the image is the render's."""
    cfg = _cfg(SMALL)
    d = derivative_images(cfg, ["crystal.Na", "beam.fluence", "crystal.default_F", "scale", "detector.distance"],
                          dtype=torch.float64)
    image = simulate(cfg, torch.float64)
    torch.testing.assert_close(d.image, image, rtol=1e-12, atol=0)
    torch.testing.assert_close(d["scale"], image)
    torch.testing.assert_close(d["beam.fluence"] * float(cfg.beam.fluence), image, rtol=1e-10, atol=0)
    torch.testing.assert_close(d["crystal.default_F"] * float(cfg.crystal.default_F), 2 * image, rtol=1e-10, atol=0)
    one, central = _fd_errors(cfg, "crystal.Na", [1e-5], d["crystal.Na"].numpy())
    assert central[0] < 1e-6 * float(d["crystal.Na"].abs().sum())


def test_float32_derivatives_close_to_float64(one_thread):
    cfg = _cfg(SMALL)
    paths = ["detector.distance", "crystal.cell.0", "crystal.misset.0"]
    a = derivative_images(cfg, paths, dtype=torch.float64)
    b = derivative_images(cfg, paths, dtype=torch.float32)
    for p in paths:
        assert b[p].dtype == torch.float32
        err = float((b[p].double() - a[p]).abs().max() / a[p].abs().max())
        assert err < 1e-3, (p, err)


def test_chunking_does_not_change_derivatives(one_thread):
    cfg = _cfg(SMALL)
    paths = ["detector.distance", "crystal.misset.1", "crystal.Nb"]
    a = derivative_images(cfg, paths, dtype=torch.float64)
    calls = []
    b = derivative_images(cfg, paths, dtype=torch.float64, samples_per_chunk=97,
                          progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 10 and calls[-1] == (24 * 24, 24 * 24)
    for p in paths:
        torch.testing.assert_close(a[p], b[p], rtol=1e-12, atol=1e-12 * float(a[p].abs().max()))


def test_device(device, one_thread):
    cfg = _cfg(SMALL)
    d = derivative_images(cfg, ["detector.distance", "crystal.Na"], device=device)
    assert d["detector.distance"].device.type == device.type and d.image.device.type == device.type
    ref = derivative_images(cfg, ["detector.distance"], dtype=torch.float64)["detector.distance"]
    err = float((d["detector.distance"].cpu().double() - ref).abs().max() / ref.abs().max())
    assert err < 1e-3


@pytest.mark.parametrize("path,message", [
    ("detector.nothing", "DetectorConfig has no field 'nothing'"),
    ("crystal.misset", "a vector of 3; name one component"),
    ("crystal.misset.3", "has 3 components"),
    ("detector.fpixels", "not a continuous numeric field"),
    ("detector.curved", "not a continuous numeric field"),
    ("detector.convention", "not a continuous numeric field"),
    ("detector.ORGX", "is not given (None)"),
    ("detector.distance.0", "is a number; nothing below it"),
    ("rotation.3", "SimulationConfig has no field 'rotation'"),
])
def test_bad_paths_are_named(path, message):
    with pytest.raises(ValueError) as err:
        derivative_images(_cfg(SMALL), [path])
    text = str(err.value)
    assert path in text and message in text and "\n" not in text


def test_refused_for_interpolated_structure_factors():
    cfg = _cfg(SMALL)
    import dataclasses

    from nanobragg_torch.config import StructureFactors

    grid = np.full((11, 11, 11), 50.0)
    sf = StructureFactors(grid, -5, -5, -5, grid.size)
    cfg = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, structure_factors=sf, interpolate=True))
    with pytest.raises(ValueError, match="per-image state"):
        derivative_images(cfg, ["detector.distance"])


@pytest.mark.slow
def test_compiled_fast_path_matches_eager(one_thread):
    """compile=True (torch.compile of the fast path, polynomial lattice sines): the eager derivatives to
    float32 precision (a one-off compile of ~30 s)."""
    cfg = _cfg(SMALL)
    paths = ["detector.distance", "beam.wavelength", "crystal.cell.1", "crystal.misset.1"]
    a = derivative_images(cfg, paths, compile=False)
    b = derivative_images(cfg, paths, compile=True)
    torch.testing.assert_close(a.image, b.image, rtol=1e-5, atol=1e-6 * float(a.image.abs().max()))
    for p in paths:
        err = float((a[p] - b[p]).abs().max() / a[p].abs().max())
        assert err < 1e-4, (p, err)


def test_panel_offsets_of_a_multi_panel_detector(one_thread):
    """detector.panels.P.origin.i: the (P, S, F) stack's derivative, zero on the other panels, equal to a
    central difference of our renders."""
    from nanobragg_torch.config import BeamConfig, CrystalConfig, DetectorConfig, PanelConfig, SimulationConfig

    deg, mm = np.pi / 180, 1e-3
    crystal = CrystalConfig(cell=(40e-10, 50e-10, 60e-10, 88 * deg, 100 * deg, 92 * deg),
                            misset=(10 * deg, 20 * deg, 30 * deg), Na=4, Nb=4, Nc=4, default_F=100.0)
    beam = BeamConfig(wavelength=1e-10, beam_vector=(0.0, 0.0, -1.0), polar_vector=(1.0, 0.0, 0.0))
    fast, slow = (1.0, 0.0, 0.0), (0.0, -1.0, 0.0)
    panels = (PanelConfig(origin=(-6.2 * mm, 6.1 * mm, -40 * mm), fast_axis=fast, slow_axis=slow, pixel_size=0.4 * mm,
                          fpixels=16, spixels=16),
              PanelConfig(origin=(0.3 * mm, 6.3 * mm, -40.5 * mm), fast_axis=fast, slow_axis=slow,
                          pixel_size=0.4 * mm, fpixels=16, spixels=16))
    cfg = SimulationConfig(detector=DetectorConfig(panels=panels, oversample=1), beam=beam, crystal=crystal)
    paths = ["detector.panels.1.origin.0", "detector.panels.0.origin.2"]
    d = derivative_images(cfg, paths, dtype=torch.float64)
    assert d.image.shape == (2, 16, 16)
    assert float(d[paths[0]][0].abs().max()) == 0.0 and float(d[paths[0]][1].abs().max()) > 0
    for path in paths:
        q = resolve_param(cfg, path)
        h = 1e-8
        plus, minus = (simulate(with_params(cfg, [q], torch.tensor([q.value + s * h], dtype=torch.float64)),
                                torch.float64) for s in (1, -1))
        fd = (plus - minus) / (2 * h)
        err = float((fd - d[path]).abs().sum() / d[path].abs().sum())
        assert err < 1e-5, (path, err)
