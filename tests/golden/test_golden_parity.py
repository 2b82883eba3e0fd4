"""Every committed C golden against our engine: image metrics, per-factor traces, statistics, files.

float64 with the foundation tolerances (corr >= 0.9999999, sum ratio within 1e-7, rel err <= 1e-6 on
pixels above 1e-3 of the max) and per-factor trace agreement with the C's -printout_pixel blocks; float32
with corr >= 0.9999 and sum ratio within 1e-3. The golden's variant picks the behaviour: "pinned" goldens
are rendered with c_compat=True, "fixed" ones with the default. Goldens are verified against manifest.json
before use. A syrupy fingerprint of each case (float64) catches drift of our own output.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import pytest
import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import build_plan, render
from nanobragg_torch.images import image_statistics, int_image, pgm_image
from nanobragg_torch.io.pgm import pgm_bytes
from nanobragg_torch.io.smv import read_smv
from nanobragg_torch.noise import noise_image
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.fingerprint import FingerprintExtension, fingerprint
from nanobragg_torch.parity.goldens import golden_dir, load_cases, load_golden, load_manifest, shared_data_dir
from nanobragg_torch.trace import pixel_trace

CASES = {c.name: c for c in load_cases()}
ENTRIES = sorted(load_manifest().get("entries", {}))


def _params():
    out = []
    for key in ENTRIES:
        variant, name = key.split("/", 1)
        case = CASES[name]
        marks = [pytest.mark.slow] if case.full else []
        if case.shared_files():
            marks.append(pytest.mark.needs_shared(*case.shared_files()))
        out.append(pytest.param(name, variant, id=f"{variant}-{name}", marks=marks))
    return out


PARAMS = _params()


@cache
def _render(name: str, variant: str, dtype_name: str, device_name: str):
    case = CASES[name]
    golden = load_golden(case, variant)
    argv = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
    if variant == "pinned":
        argv = argv + ["--c-compat"]
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    plan = build_plan(cfg, dtype, torch.device(device_name))
    with torch.no_grad():
        result = render(plan, trace_pixels=golden.traced_pixels if dtype_name == "float64" else None)
    return golden, plan, result


@pytest.mark.parametrize("name,variant", PARAMS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_image_matches_golden(name, variant, dtype, device):
    golden, _, result = _render(name, variant, dtype, str(device))
    # the C stores a float32 image: compare the images as stored
    fails, metrics = golden.check_image(result.image.detach().cpu().float().double(), dtype)
    assert not fails, f"{variant}/{name} {dtype}: {fails}; metrics {metrics}"


@pytest.mark.parametrize("name,variant", PARAMS)
def test_traces_match_c_printout(name, variant, device):
    """Each traced pixel: every factor the C prints agrees; the first divergent factor is named."""
    golden, _, result = _render(name, variant, "float64", str(device))
    for pixel in golden.traced_pixels:
        ours = pixel_trace(result, pixel)
        report = compare_traces(golden.c_trace(pixel), ours)
        assert report.ok, (
            f"{variant}/{name} pixel {pixel}: first divergent factor {report.first_divergent}\n"
            f"{report.summary()}"
        )


@pytest.mark.parametrize("name,variant", PARAMS)
def test_trace_is_the_image(name, variant, device):
    """The trace is the engine: I_pixel_final equals the image pixel and the product of the traced factors."""
    golden, plan, result = _render(name, variant, "float64", str(device))
    d = plan.cfg.detector
    for pixel in golden.traced_pixels:
        t = pixel_trace(result, pixel)
        assert t["I_pixel_final"] == pytest.approx(float(result.image[pixel].double()), rel=1e-12, abs=0)
        product = t["r_e_sqr"] * t["fluence"] * t["I_before_scaling"] / t["steps"]
        for factor, per_sample in (
            ("capture_fraction", d.oversample_thick),
            ("polar", d.oversample_polar),
            ("omega_pixel", d.oversample_omega),
        ):
            if not per_sample:
                product *= t[factor]
        assert t["I_pixel_final"] == pytest.approx(product, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("name,variant", PARAMS)
def test_statistics_and_files_match(name, variant, device):
    """max_I and its position, mean, rms, rmsd as the C prints them; int SMV, PGM and noise pixel bytes."""
    case = CASES[name]
    golden, plan, result = _render(name, variant, "float64", str(device))
    image = result.image.detach().cpu().numpy().astype(np.float32)
    d = plan.cfg.detector
    stats = image_statistics(image, d.roi, d.mask, plan.oversample, float(plan.geom.pixel_size))
    c = golden.stdout
    for key in ("max_I", "mean", "rms", "rmsd"):
        if key in c:
            assert stats[key] == pytest.approx(c[key], rel=2e-5, abs=1e-30), key
    if "max_I_x" in c:
        assert "%g %g" % (stats["max_I_x"], stats["max_I_y"]) == "%g %g" % (c["max_I_x"], c["max_I_y"])
    if golden.image is None:
        return  # full-size goldens keep no int/noise files
    opts = _options(case)
    ints, scale = int_image(image, opts["scale"], opts["adc"], d.roi, max_I=stats["max_I"])
    if golden.file("int") is not None:
        _, c_int, _ = read_smv(golden.file("int"))
        assert _mismatches(ints, c_int) == 0, "int SMV pixels differ"
    if golden.file("pgm") is not None:
        pgm, pgm_scale = pgm_image(image, opts["pgmscale"], stats["rmsd"], scale, d.roi)
        assert pgm_bytes(pgm, pgm_scale) == golden.file("pgm").read_bytes()
    if golden.file("noise") is not None and opts["seed"] is not None:
        noisy, photons, overloads = noise_image(image, opts["seed"], opts["adc"], d.roi)
        _, c_noise, _ = read_smv(golden.file("noise"))
        assert _mismatches(noisy, c_noise) == 0, "noise SMV pixels differ"


def _mismatches(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def _options(case) -> dict:
    argv = case.flags
    out = {"scale": None, "adc": 40.0, "pgmscale": None, "seed": None}
    for i, a in enumerate(argv[:-1]):
        if a == "-scale":
            out["scale"] = float(argv[i + 1])
        elif a == "-adc":
            out["adc"] = float(argv[i + 1])
        elif a == "-pgmscale":
            out["pgmscale"] = float(argv[i + 1])
        elif a == "-seed":
            out["seed"] = int(argv[i + 1])
    return out


@pytest.fixture
def snapshot_fp(snapshot):
    return snapshot.use_extension(FingerprintExtension)


@pytest.mark.parametrize("name,variant", PARAMS)
def test_fingerprint_snapshot(name, variant, snapshot_fp, device):
    """Our own fingerprint (float64): trace factors, image statistics, block sums. Update on purpose with
    `pytest --snapshot-update` (tox -e update-snapshots) and review the diff."""
    golden, _, result = _render(name, variant, "float64", str(device))
    pixel = golden.traced_pixels[0]
    image = result.image.detach().cpu().double().numpy()
    assert (
        fingerprint(f"{variant}/{name} float64", trace=pixel_trace(result, pixel), image=image) == snapshot_fp
    )


def test_every_case_has_a_golden():
    names = {k.split("/", 1)[1] for k in ENTRIES}
    missing = sorted(set(CASES) - names)
    assert not missing, f"cases without goldens (run tools/regen_goldens.py): {missing}"
    assert len(CASES) >= 60
