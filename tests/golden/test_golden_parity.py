"""Every committed C golden against our engine: image metrics, per-factor traces, statistics, files.

float64 with the foundation tolerances (corr >= 0.9999999, sum ratio within 1e-7, rel err <= 1e-6 on
pixels above 1e-3 of the max) and per-factor trace agreement with the C's -printout_pixel blocks; float32
with corr >= 0.9999 and sum ratio within 1e-3. The golden's variant picks the behaviour: "pinned" goldens
are rendered with c_compat=True, "fixed" ones with the default. Goldens are verified against manifest.json
before use. A syrupy fingerprint of each case (float64) catches drift of our own output.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from verdict import verdict

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.images import image_statistics, int_image, pgm_image
from nanobragg_torch.io.pgm import pgm_bytes
from nanobragg_torch.io.smv import read_smv
from nanobragg_torch.noise import noise_image
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.fingerprint import FingerprintExtension, fingerprint, fingerprint_changes
from nanobragg_torch.parity.goldens import (
    GoldenIntegrityError,
    golden_dir,
    load_cases,
    load_golden,
    load_manifest,
    shared_data_dir,
)
from nanobragg_torch.parity.printout import G6
from nanobragg_torch.plan import build_plan
from nanobragg_torch.trace import pixel_trace

CASES = {c.name: c for c in load_cases()}
try:
    ENTRIES = sorted(load_manifest().get("entries", {}))
    MANIFEST_ERROR = None
except GoldenIntegrityError as exc:  # reported by test_manifest_is_readable, not as a collection error
    ENTRIES, MANIFEST_ERROR = [], str(exc)


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


def _pictures(golden, image) -> tuple[np.ndarray, np.ndarray]:
    """(C golden, ours) as drawn in the drift report: the whole image, or the crops of a full-size golden."""
    ours = image.detach().cpu().float().double().numpy()
    if golden.summary is None:
        return golden.image.astype(np.float64), ours
    s = golden.summary
    return np.concatenate(list(s.crops), axis=1).astype(np.float64), np.concatenate(list(s.crops_of(ours)), axis=1)


def _verdict(name: str, variant: str, device, drift, worst_pixel=None) -> str:
    """The case's verdict (tests/golden/verdict.py): the first divergent factor, or the evaluation path."""
    golden, plan, result = _render(name, variant, "float64", str(device))
    return verdict(golden, plan, result, drift, worst_pixel)


def _worst(metrics) -> tuple[int, int] | None:
    return metrics.get("worst_pixel") if "corr" in metrics else None


@pytest.mark.parametrize("name,variant", PARAMS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_image_matches_golden(name, variant, dtype, device, drift):
    drift.case(f"{variant}/{name}", "image", dtype)
    golden, _, result = _render(name, variant, dtype, str(device))
    # the C stores a float32 image: compare the images as stored
    fails, metrics = golden.check_image(result.image.detach().cpu().float().double(), dtype)
    drift.image(metrics, *_pictures(golden, result.image))
    if fails:
        verdict = _verdict(name, variant, device, drift, _worst(metrics))
        pytest.fail(f"{variant}/{name} {dtype}: image differs from the C golden ({'; '.join(fails)}); {verdict}",
                    pytrace=False)


@pytest.mark.parametrize("name,variant", PARAMS)
def test_traces_match_c_printout(name, variant, device, drift):
    """Each traced pixel: every factor the C prints agrees; the first divergent factor is named."""
    drift.case(f"{variant}/{name}", "trace")
    golden, _, result = _render(name, variant, "float64", str(device))
    for pixel in golden.traced_pixels:
        report = compare_traces(golden.c_trace(pixel), pixel_trace(result, pixel))
        if not report.ok:
            drift.trace(report, pixel)
            drift.image({}, *_pictures(golden, result.image))
            first = report.first
            pytest.fail(
                f"{variant}/{name} pixel {pixel}: first divergent factor {first.name} (C {first.ref!r}, ours "
                f"{first.ours!r}, rel {first.rel_diff:.2g}, tol {first.tolerance:.2g}); "
                f"{len(report.drifts)} of {len(report.rows)} factors drifted: "
                + ", ".join(d.name for d in report.drifts),
                pytrace=False,
            )


@pytest.mark.parametrize("name,variant", PARAMS)
def test_trace_is_the_image(name, variant, device, drift):
    """The trace is the engine: I_pixel_final equals the image pixel and the product of the traced factors."""
    drift.case(f"{variant}/{name}", "path")
    golden, plan, result = _render(name, variant, "float64", str(device))
    d = plan.cfg.detector
    for pixel in golden.traced_pixels:
        t = pixel_trace(result, pixel)
        image_value = float(result.image[pixel].double())
        if t["I_pixel_final"] != pytest.approx(image_value, rel=1e-12, abs=0):
            drift.verdict("path: trace bookkeeping", pixel)
            pytest.fail(f"{variant}/{name} pixel {pixel}: I_pixel_final {t['I_pixel_final']!r} of the trace is not "
                        f"the image pixel {image_value!r} (trace.py reads another sample than the render stores)",
                        pytrace=False)
        product = t["r_e_sqr"] * t["fluence"] * t["I_before_scaling"] / t["steps"]
        used = ["r_e_sqr", "fluence", "I_before_scaling", "steps"]
        for factor, per_sample in (
            ("capture_fraction", d.oversample_thick),
            ("polar", d.oversample_polar),
            ("omega_pixel", d.oversample_omega),
        ):
            if not per_sample:
                product *= t[factor]
                used.append(factor)
        if t["I_pixel_final"] != pytest.approx(product, rel=1e-12, abs=1e-300):
            drift.verdict("path: trace factors", pixel)
            pytest.fail(f"{variant}/{name} pixel {pixel}: I_pixel_final {t['I_pixel_final']!r} is not the product "
                        f"{product!r} of the traced factors {', '.join(used)}: a factor is applied that the trace "
                        "does not show (or shown but not applied)", pytrace=False)


@pytest.mark.parametrize("name,variant", PARAMS)
def test_statistics_and_files_match(name, variant, device, drift):
    """max_I and its position, mean, rms, rmsd and the solid angle as the C prints them; int SMV, PGM and
    noise pixel bytes."""
    case = CASES[name]
    drift.case(f"{variant}/{name}", "statistics")
    golden, plan, result = _render(name, variant, "float64", str(device))
    image = result.image.detach().cpu().numpy().astype(np.float32)
    d = plan.cfg.detector
    stats = image_statistics(image, d.roi, d.mask, plan.oversample, float(plan.geom.pixel_size))
    c = golden.stdout
    problems = []
    for key in ("max_I", "mean", "rms", "rmsd"):
        if key in c and stats[key] != pytest.approx(c[key], rel=2e-5, abs=1e-30):
            problems.append(f"{key} {stats[key]!r} != C {c[key]!r}")
    if "max_I_x" in c:
        ours_at, c_at = "%g %g" % (stats["max_I_x"], stats["max_I_y"]), "%g %g" % (c["max_I_x"], c["max_I_y"])
        if ours_at != c_at:
            problems.append(f"max_I position {ours_at} != C {c_at}")
    if "solid_angle_sr" in c:  # the C prints omega_sum/steps with %g: half a unit in the 6th digit
        omega, c_omega = result.omega_sum / plan.steps, c["solid_angle_sr"]
        if abs(omega - c_omega) > G6.half_unit(c_omega) + 1e-9 * abs(c_omega):
            drift.verdict("omega_pixel", None, abs(omega - c_omega) / abs(c_omega))
            problems.append(f"solid angle omega_sum/steps {omega!r} sr != C {c_omega!r} (printed by the C)")
    if golden.image is not None:  # full-size goldens keep no int/noise files
        problems += _file_problems(case, golden, image, stats, d)
    if problems:
        verdict = _verdict(name, variant, device, drift)
        pytest.fail(f"{variant}/{name}: {'; '.join(problems)}; {verdict}", pytrace=False)


def _file_problems(case, golden, image, stats, d) -> list[str]:
    opts = _options(case)
    out = []
    ints, scale = int_image(image, opts["scale"], opts["adc"], d.roi, max_I=stats["max_I"])
    if golden.file("int") is not None:
        _, c_int, _ = read_smv(golden.file("int"))
        if n := _mismatches(ints, c_int):
            out.append(f"int SMV: {n} pixels differ")
    if golden.file("pgm") is not None:
        pgm, pgm_scale = pgm_image(image, opts["pgmscale"], stats["rmsd"], scale, d.roi)
        if pgm_bytes(pgm, pgm_scale) != golden.file("pgm").read_bytes():
            out.append("PGM bytes differ")
    if golden.file("noise") is not None and opts["seed"] is not None:
        noisy, photons, overloads = noise_image(image, opts["seed"], opts["adc"], d.roi)
        _, c_noise, _ = read_smv(golden.file("noise"))
        if n := _mismatches(noisy, c_noise):
            out.append(f"noise SMV: {n} pixels differ")
    return out


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
def test_fingerprint_snapshot(name, variant, snapshot_fp, device, drift, request):
    """Our own fingerprint (float64): trace factors, image statistics, block sums. Update on purpose with
    `pytest --snapshot-update` (tox -e update-snapshots): the run prints the grouped summary of the change."""
    key = f"{variant}/{name}"
    drift.case(key, "snapshot")
    golden, _, result = _render(name, variant, "float64", str(device))
    pixel = golden.traced_pixels[0]
    image = result.image.detach().cpu().double().numpy()
    text = fingerprint(f"{key} float64", trace=pixel_trace(result, pixel), image=image)
    here = Path(request.node.path)
    stored = here.parent / "__snapshots__" / here.stem / f"{request.node.name}.txt"
    changes = fingerprint_changes(stored.read_text(), text) if stored.is_file() else [("new snapshot", math.inf)]
    if request.config.getoption("update_snapshots", False):  # syrupy's --snapshot-update
        if changes:
            first, rel = changes[0]
            drift.change(key, first, rel, f"{rel:+.1e}" if math.isfinite(rel) else "new")
        elif stored.read_text() != text:
            drift.change(key, "(layout only)", 0.0, "reordered")
        assert text == snapshot_fp
        return
    if text != snapshot_fp:  # syrupy records the mismatch; the message names the first changed factor
        first, rel = changes[0] if changes else ("(format)", math.inf)
        drift.verdict(first, pixel, abs(rel), f"{rel:+.1e}" if math.isfinite(rel) else "")
        drift.image({}, *_pictures(golden, result.image))
        pytest.fail(
            f"{key}: fingerprint snapshot changed, first at {first} ({rel:+.2g}; pixel {pixel}); changed: "
            + ", ".join(n for n, _ in changes[:8])
            + ". If intended: tox -e update-snapshots (or tox -e review)",
            pytrace=False,
        )


def test_manifest_is_readable():
    if MANIFEST_ERROR is not None:
        pytest.fail(MANIFEST_ERROR, pytrace=False)


def test_every_case_has_a_golden():
    if MANIFEST_ERROR is not None:
        pytest.skip("manifest.json unreadable: see test_manifest_is_readable")
    names = {k.split("/", 1)[1] for k in ENTRIES}
    missing = sorted(set(CASES) - names)
    assert not missing, f"cases without goldens (run tools/regen_goldens.py): {missing}"
    assert len(CASES) >= 60
