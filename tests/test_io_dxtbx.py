"""dxtbx/DIALS experiment models in and out (nanobragg_torch.io.dxtbx_models) and the CLI's -expt/-write_expt.

The expected values are computed here from dxtbx's documented rules, written independently of the reader:
hierarchies as products of 4x4 homogeneous frame matrices, goniometers as the physical stack of rotations,
DIALS' own polarization formula, and a single dxtbx panel written by hand from a MOSFLM -distance/-Xbeam/-Ybeam
set-up. When dxtbx is importable one test loads our output with it (dxtbx is not installable here: skipped).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.config import BeamConfig, CrystalConfig, DetectorConfig, PanelConfig, SimulationConfig
from nanobragg_torch.crystal import build_crystal, resolve_phi
from nanobragg_torch.detector import resolve_geometry
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.dxtbx_models import (
    Experiment,
    Group,
    read_detector,
    read_experiments,
    write_experiments,
)
from nanobragg_torch.parity.goldens import shared_data_dir
from nanobragg_torch.polarization import kahn_factor
from nanobragg_torch.vectors import axis_rotation_matrix

SHARED = shared_data_dir()
CSPADS = ("cspad/cspad_detector.json", "cspad/distorted_cspad_detector.json")
F64, CPU = torch.float64, torch.device("cpu")


def rot(axis, deg: float) -> np.ndarray:
    """Right-handed rotation matrix (Euler-Rodrigues, written out), independent of the module's helper."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(deg)
    w, (x, y, z) = math.cos(t / 2), a * math.sin(t / 2)
    return np.array([
        [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
    ])


def frame4(node: dict) -> np.ndarray:
    """A node's local frame as a 4x4 homogeneous matrix: columns fast, slow, fast x slow, origin (mm)."""
    f = np.asarray(node["fast_axis"], float)
    s = np.asarray(node["slow_axis"], float)
    f, s = f / np.linalg.norm(f), s / np.linalg.norm(s)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = f, s, np.cross(f, s), node["origin"]
    return m


def expected_lab_frames(d: dict) -> dict[int, np.ndarray]:
    """panel index -> 4x4 lab frame (mm): the product of the frames from the root down to the panel."""
    out: dict[int, np.ndarray] = {}

    def walk(node: dict, above: np.ndarray) -> None:
        here = above @ frame4(node)
        for child in node.get("children", []):
            if "panel" in child:
                out[child["panel"]] = here @ frame4(d["panels"][child["panel"]])
            else:
                walk(child, here)

    if "hierarchy" in d:
        walk(d["hierarchy"], np.eye(4))
    else:
        out = {i: frame4(p) for i, p in enumerate(d["panels"])}
    return out


def pixel_centres(origin, fast, slow, pixel: float, nf: int, ns: int) -> np.ndarray:
    """(ns, nf, 3) lab positions of pixel centres: origin + (f + 1/2) px fast + (s + 1/2) px slow."""
    f = (np.arange(nf) + 0.5) * pixel
    s = (np.arange(ns) + 0.5) * pixel
    return (np.asarray(origin, float) + s[:, None, None] * np.asarray(slow, float)
            + f[None, :, None] * np.asarray(fast, float))


def assert_panels_close(a, b, tol: float = 1e-12) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert (p.fpixels, p.spixels, p.name) == (q.fpixels, q.spixels, q.name)
        assert p.pixel_size == pytest.approx(q.pixel_size, rel=1e-14)
        np.testing.assert_allclose(p.origin, q.origin, rtol=0, atol=tol)
        np.testing.assert_allclose(p.fast_axis, q.fast_axis, rtol=0, atol=tol)
        np.testing.assert_allclose(p.slow_axis, q.slow_axis, rtol=0, atol=tol)


def groups_close(g: Group | int, h: Group | int) -> bool:
    if isinstance(g, int) or isinstance(h, int):
        return g == h
    return (g.name == h.name and len(g.children) == len(h.children)
            and np.allclose(g.origin, h.origin, atol=1e-15) and np.allclose(g.fast_axis, h.fast_axis, atol=1e-14)
            and np.allclose(g.slow_axis, h.slow_axis, atol=1e-14)
            and all(groups_close(x, y) for x, y in zip(g.children, h.children, strict=True)))


# ---------------------------------------------------------------------------------------------------------------
# detectors


@pytest.mark.needs_shared(*CSPADS)
@pytest.mark.parametrize("name", CSPADS)
def test_cspad_panels_match_the_composed_hierarchy(name):
    raw = json.loads((SHARED / name).read_text())
    panels, hierarchy = read_detector(SHARED / name)
    assert len(panels) == 64 and hierarchy is not None
    frames = expected_lab_frames(raw)
    for i, p in enumerate(panels):
        assert (p.fpixels, p.spixels) == (194, 185)
        assert p.pixel_size == pytest.approx(0.10992e-3, rel=1e-15)
        assert p.name == raw["panels"][i]["name"]
        m = frames[i]
        np.testing.assert_allclose(p.fast_axis, m[:3, 0], atol=1e-14)
        np.testing.assert_allclose(p.slow_axis, m[:3, 1], atol=1e-14)
        np.testing.assert_allclose(np.asarray(p.origin) * 1e3, m[:3, 3], rtol=0, atol=1e-11)
        normal = np.cross(p.fast_axis, p.slow_axis)
        assert float(np.dot(p.origin, normal)) > 0.12  # about 124 mm from the sample, facing away from it
    # a pixel's centre by the 4x4 frames: d-matrix @ (f + 1/2, s + 1/2, 1) pixels
    p, m = panels[37], frames[37]
    centre = m[:3, :] @ np.array([100.5 * 0.10992, 50.5 * 0.10992, 0.0, 1.0])
    ours = pixel_centres(p.origin, p.fast_axis, p.slow_axis, p.pixel_size, p.fpixels, p.spixels)[50, 100]
    np.testing.assert_allclose(ours * 1e3, centre, atol=1e-11)


@pytest.mark.needs_shared(*CSPADS)
@pytest.mark.parametrize("name", CSPADS)
def test_cspad_round_trip(name, tmp_path):
    raw = json.loads((SHARED / name).read_text())
    exp = read_experiments(SHARED / name)
    assert exp.panels is not None and len(exp.panels) == 64
    written = write_experiments(exp, tmp_path / "det.expt")
    d = written["detector"][0]
    # the written dict is the input again: local frames, same hierarchy, same panel order and names
    for i in range(64):
        for key in ("origin", "fast_axis", "slow_axis"):
            np.testing.assert_allclose(d["panels"][i][key], raw["panels"][i][key], rtol=0, atol=1e-10)
        assert d["panels"][i]["image_size"] == raw["panels"][i]["image_size"]
        assert d["panels"][i]["pixel_size"] == pytest.approx(raw["panels"][i]["pixel_size"], rel=1e-15)

    def names(n):
        return [n["name"], [names(c) if "panel" not in c else c["panel"] for c in n["children"]]]

    assert names(d["hierarchy"]) == names(raw["hierarchy"])
    back = read_experiments(tmp_path / "det.expt")
    assert_panels_close(back.panels, exp.panels, tol=1e-15)
    assert groups_close(back.hierarchy, exp.hierarchy)


@pytest.mark.needs_shared(*CSPADS)
def test_cspad_config_is_a_panel_detector():
    exp = read_experiments(SHARED / CSPADS[0])
    cfg = exp.config(SimulationConfig(beam=BeamConfig(beam_vector=(0.0, 0.0, -1.0), polar_vector=(1.0, 0.0, 0.0))))
    assert cfg.detector.panels == exp.panels
    assert cfg.detector.convention == "CUSTOM"
    # a SimulationConfig with panels, written with the hierarchy it was read with, reads back the same
    back = read_experiments(write_experiments(cfg, hierarchy=exp.hierarchy))
    assert_panels_close(back.panels, exp.panels, tol=1e-15)
    assert groups_close(back.hierarchy, exp.hierarchy)
    np.testing.assert_allclose(back.beam_vector, (0.0, 0.0, -1.0), atol=1e-15)


def synthetic_detector() -> dict:
    """Two levels of groups with rotations, four 8x6 panels, written in dxtbx's to_dict layout."""
    tilt = rot((1, 1, 0), 7.0)

    def node(name, fast, slow, origin, **extra):
        return {"name": name, "type": "", "fast_axis": list(fast), "slow_axis": list(slow), "origin": list(origin),
                **extra}

    def panel(name, angle, origin):
        r = rot((0, 0, 1), angle)
        return node(name, r @ (1, 0, 0), r @ (0, -1, 0), origin, image_size=[8, 6], pixel_size=[0.2, 0.2],
                    thickness=0.45, mu=3.5, px_mm_strategy={"type": "SimplePxMmStrategy"})

    panels = [panel("p0", 0.0, (-2, 1.5, 0)), panel("p1", 3.0, (0.5, 1.5, 0.1)),
              panel("p2", -2.0, (-2, -0.5, 0)), panel("p3", 90.0, (1, -1, 0.2))]
    quad_a = node("qa", tilt @ (1, 0, 0), tilt @ (0, 1, 0), (-3, 2, 0.5),
                  children=[{"panel": 0}, {"panel": 1}])
    quad_b = node("qb", rot((0, 1, 0), -4.0) @ (0, 1, 0), rot((0, 1, 0), -4.0) @ (-1, 0, 0), (3, -2, -0.5),
                  children=[{"panel": 3}, {"panel": 2}])
    root = node("root", (1, 0, 0), (0, 1, 0), (0.3, -0.2, -80.0), children=[quad_a, quad_b])
    return {"panels": panels, "hierarchy": root}


def test_synthetic_hierarchy_composes_and_round_trips(tmp_path):
    d = synthetic_detector()
    panels, hierarchy = read_detector(d)
    frames = expected_lab_frames(d)
    for i, p in enumerate(panels):
        m = frames[i]
        np.testing.assert_allclose(p.fast_axis, m[:3, 0], atol=1e-15)
        np.testing.assert_allclose(p.slow_axis, m[:3, 1], atol=1e-15)
        np.testing.assert_allclose(np.asarray(p.origin) * 1e3, m[:3, 3], atol=1e-12)
        assert p.thickness == pytest.approx(0.45e-3) and p.mu == pytest.approx(3500.0)
        assert p.pixel_size == pytest.approx(0.2e-3)
    assert [c.name for c in hierarchy.children] == ["qa", "qb"] and hierarchy.children[1].children == (3, 2)
    exp = Experiment(panels=panels, hierarchy=hierarchy)
    written = write_experiments(exp, tmp_path / "h.expt")
    for i, p in enumerate(written["detector"][0]["panels"]):
        for key in ("origin", "fast_axis", "slow_axis"):
            np.testing.assert_allclose(p[key], d["panels"][i][key], atol=1e-12)
        assert p["thickness"] == pytest.approx(0.45) and p["mu"] == pytest.approx(3.5)
    back = read_experiments(tmp_path / "h.expt")
    assert_panels_close(back.panels, panels, tol=1e-15)
    assert groups_close(back.hierarchy, hierarchy)
    # a flat detector (no hierarchy): written under dxtbx's identity root, read back the same
    flat = read_experiments(write_experiments(Experiment(panels=panels)))
    assert_panels_close(flat.panels, panels, tol=1e-15)


def mosflm_config(**crystal) -> SimulationConfig:
    return SimulationConfig(
        detector=DetectorConfig(fpixels=40, spixels=30, pixel_size=0.172e-3, distance=0.1234, Xbeam=2.9e-3,
                                Ybeam=3.7e-3),
        beam=BeamConfig(wavelength=1.3e-10, polarization=0.7),
        crystal=CrystalConfig(cell=(60e-10, 70e-10, 80e-10, math.radians(88), math.radians(95), math.radians(101)),
                              misset=(0.1, 0.2, -0.3), phi0=math.radians(12.0), osc=math.radians(0.5), **crystal),
    )


def test_single_dxtbx_panel_equals_the_mosflm_detector():
    """A dxtbx panel written by hand from -distance/-Xbeam/-Ybeam (MOSFLM) gives the same pixels as our
    single-panel geometry, in dxtbx's frame: MOSFLM x (beam) -> -z, y -> y, z -> x (the C's DIALS_ORIGIN)."""
    cfg = mosflm_config()
    d = cfg.detector
    px = 0.172
    Fbeam, Sbeam = 3.7 + px / 2, 2.9 + px / 2  # MOSFLM: Fbeam = Ybeam + px/2, Sbeam = Xbeam + px/2 (mm)
    panel = {"name": "", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, -1.0, 0.0],
             "origin": [-Fbeam, Sbeam, -123.4], "image_size": [40, 30], "pixel_size": [px, px]}
    expt = {"__id__": "ExperimentList", "experiment": [{"__id__": "Experiment", "beam": 0, "detector": 0}],
            "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.3}], "detector": [{"panels": [panel]}]}
    exp = read_experiments(expt)
    to_dxtbx = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    g = resolve_geometry(cfg, F64, CPU)
    ours = pixel_centres(g.pix0.numpy(), g.fdet.numpy(), g.sdet.numpy(), 0.172e-3, d.fpixels, d.spixels)
    want = ours @ to_dxtbx.T
    p = exp.panels[0]
    np.testing.assert_allclose(pixel_centres(p.origin, p.fast_axis, p.slow_axis, p.pixel_size, 40, 30), want,
                               rtol=0, atol=1e-15)
    # the config from the file (the C's CUSTOM detector, pivot SAMPLE) resolves to the same pixels and beam
    cfg2 = exp.config(SimulationConfig(crystal=cfg.crystal))
    g2 = resolve_geometry(cfg2, F64, CPU)
    got = pixel_centres(g2.pix0.numpy(), g2.fdet.numpy(), g2.sdet.numpy(), 0.172e-3, 40, 30)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(g2.beam.numpy(), to_dxtbx @ g.beam.numpy(), atol=1e-15)
    assert float(g2.distance) == pytest.approx(float(g.distance), rel=1e-14)
    assert cfg2.beam.wavelength == pytest.approx(1.3e-10, rel=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# beam, goniometer, scan, crystal


def test_polarization_matches_dials_correction():
    """Kahn factor 2f - 1 about polar_vector = normal x beam equals DIALS' polarization correction
    P = (1 - 2f)(1 - (n.s1)^2) + f (1 + (s0.s1)^2) (dials/algorithms/integration/corrections.h)."""
    normal = np.array([0.3, 0.9, 0.1])
    direction = np.array([0.05, -0.1, 1.0])
    for fraction in (0.999, 0.5, 0.8, 0.0):
        b = read_experiments({"__id__": "ExperimentList", "experiment": [{"beam": 0}],
                              "beam": [{"direction": list(direction), "wavelength": 0.9,
                                        "polarization_normal": list(normal), "polarization_fraction": fraction}]})
        assert b.polarization == pytest.approx(2 * fraction - 1, abs=1e-15)
        s0 = -direction / np.linalg.norm(direction)
        np.testing.assert_allclose(b.beam_vector, s0, atol=1e-15)
        # the DIALS normal is perpendicular to the beam; project the given one as the reader does
        n = normal - (normal @ s0) * s0
        n /= np.linalg.norm(n)
        rng = np.random.default_rng(1)
        for _ in range(20):
            s1 = s0 + rng.normal(scale=0.6, size=3)
            s1 /= np.linalg.norm(s1)
            dials = (1 - 2 * fraction) * (1 - (n @ s1) ** 2) + fraction * (1 + (s0 @ s1) ** 2)
            t = [torch.tensor(x, dtype=F64) for x in (s0, s1, b.polar_vector)]
            ours = kahn_factor(torch.tensor(b.polarization, dtype=F64), t[0], t[1], t[2])
            assert float(ours) == pytest.approx(dials, rel=1e-12, abs=1e-15)
        assert b.wavelength == pytest.approx(0.9e-10)


def test_dxtbx_beam_defaults():
    b = read_experiments({"__id__": "ExperimentList", "experiment": [{"beam": 0}],
                          "beam": [{"direction": [0, 0, 1], "wavelength": 1.0}]})
    assert b.polarization == pytest.approx(0.998)  # dxtbx's default fraction 0.999
    np.testing.assert_allclose(np.abs(b.polar_vector), (1.0, 0.0, 0.0), atol=1e-15)  # E along x: normal (0, 1, 0)


def goniometer_expt(gonio: dict, crystal_rows: np.ndarray) -> dict:
    return {
        "__id__": "ExperimentList",
        "experiment": [{"__id__": "Experiment", "beam": 0, "goniometer": 0, "crystal": 0, "scan": 0}],
        "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.1}],
        "goniometer": [gonio],
        "scan": [{"image_range": [3, 12], "batch_offset": 0,
                  "properties": {"oscillation": [10.0 + 0.25 * i for i in range(10)],
                                 "oscillation_width": [0.25] * 10}}],
        "crystal": [{"__id__": "crystal", "real_space_a": list(crystal_rows[0]), "real_space_b": list(crystal_rows[1]),
                     "real_space_c": list(crystal_rows[2]), "space_group_hall_symbol": " P 1"}],
    }


CELL_ROWS = np.array([[40.0, 3.0, -2.0], [-5.0, 55.0, 4.0], [7.0, -6.0, 66.0]])


def crystal_at(cfg: SimulationConfig, phi: float) -> np.ndarray:
    """Rows a, b, c (Angstrom) of our crystal rotated about our spindle by phi (rad): the engine's pieces."""
    a0 = build_crystal(cfg, F64, CPU).a0
    spindle = resolve_geometry(cfg, F64, CPU).spindle
    r = axis_rotation_matrix(spindle, torch.tensor(phi, dtype=F64))
    return (a0 @ r.T).numpy() * 1e10


def test_goniometer_fixed_and_setting_rotations():
    """The lab crystal at scan angle phi, S R(axis, phi) F (a, b, c), equals our crystal at phi."""
    S, F = rot((0.2, 1, 0.3), 25.0), rot((1, -0.4, 0.2), -33.0)
    axis = np.array([1.0, 0.02, -0.01])
    gonio = {"rotation_axis": list(axis), "fixed_rotation": list(F.reshape(-1)),
             "setting_rotation": list(S.reshape(-1))}
    exp = read_experiments(goniometer_expt(gonio, CELL_ROWS), image=5)
    assert exp.image == 5 and exp.image_range == (3, 12)
    assert exp.phi0 == pytest.approx(math.radians(10.5)) and exp.osc == pytest.approx(math.radians(0.25))
    cfg = exp.config(SimulationConfig(detector=DetectorConfig(convention="CUSTOM")))
    for phi_deg in (0.0, 10.5, 47.0):
        want = (S @ rot(axis, phi_deg) @ F @ CELL_ROWS.T).T
        np.testing.assert_allclose(crystal_at(cfg, math.radians(phi_deg)), want, atol=1e-11)
    sweep = resolve_phi(cfg, F64, CPU)
    assert sweep.phi0 == pytest.approx(math.radians(10.5)) and sweep.osc == pytest.approx(math.radians(0.25))


def test_multi_axis_goniometer_is_the_stack_of_rotations():
    """A kappa-like stack (phi innermost, kappa, omega outermost) scanning kappa: lab = R_omega R_kappa(k) R_phi."""
    axes = [[1.0, 0.0, 0.0], [0.914, 0.279, -0.297], [1.0, 0.0, 0.0]]
    angles = [30.0, 50.0, -20.0]
    gonio = {"axes": axes, "angles": angles, "names": ["PHI", "KAPPA", "OMEGA"], "scan_axis": 1}
    exp = read_experiments(goniometer_expt(gonio, CELL_ROWS))
    cfg = exp.config(SimulationConfig(detector=DetectorConfig(convention="CUSTOM")))
    for kappa in (0.0, 50.0, 71.0):
        lab = rot(axes[2], angles[2]) @ rot(axes[1], kappa) @ rot(axes[0], angles[0])
        np.testing.assert_allclose(crystal_at(cfg, math.radians(kappa)), (lab @ CELL_ROWS.T).T, atol=1e-11)


def test_scan_legacy_and_first_image():
    scan = {"image_range": [1, 90], "oscillation": [-5.0, 0.1]}
    base = {"__id__": "ExperimentList", "experiment": [{"scan": 0}], "scan": [scan]}
    first = read_experiments(base)
    assert first.image == 1 and first.phi0 == pytest.approx(math.radians(-5.0))
    later = read_experiments(base, image=11)
    assert later.phi0 == pytest.approx(math.radians(-4.0)) and later.osc == pytest.approx(math.radians(0.1))


def test_crystal_reciprocal_matrix_is_the_cell():
    exp = read_experiments(goniometer_expt({"rotation_axis": [1, 0, 0]}, CELL_ROWS))
    cfg = exp.config(SimulationConfig(detector=DetectorConfig(convention="CUSTOM")))
    A = cfg.crystal.reciprocal_matrix / 1.1  # MOSFLM A / lambda (Angstrom): rows a*, b*, c*
    np.testing.assert_allclose(A @ CELL_ROWS.T, np.eye(3), atol=1e-14)
    np.testing.assert_allclose(build_crystal(cfg, F64, CPU).a0.numpy() * 1e10, CELL_ROWS, atol=1e-11)


# ---------------------------------------------------------------------------------------------------------------
# round trips of whole configurations


def test_config_round_trip_through_an_experiment_list(tmp_path):
    """write(config) then read: same pixels, beam, polarization, spindle, phi sweep and crystal at phi = 0."""
    cfg = mosflm_config()
    written = write_experiments(cfg, tmp_path / "x.expt")
    assert written["__id__"] == "ExperimentList" and written["experiment"][0]["crystal"] == 0
    exp = read_experiments(tmp_path / "x.expt")
    back = exp.config(SimulationConfig(crystal=CrystalConfig(phisteps=None)))
    g, h = resolve_geometry(cfg, F64, CPU), resolve_geometry(back, F64, CPU)
    np.testing.assert_allclose(h.pix0.numpy(), g.pix0.numpy(), atol=1e-16)
    for name in ("fdet", "sdet", "beam", "spindle"):
        np.testing.assert_allclose(getattr(h, name).numpy(), getattr(g, name).numpy(), atol=1e-15)
    # the polarization axis may flip sign (the factor depends on it only through cos 2 psi)
    assert abs(float(h.polar_vector @ g.polar_vector)) == pytest.approx(1.0, abs=1e-15)
    assert back.beam.polarization == pytest.approx(0.7, abs=1e-15)
    assert back.beam.wavelength == pytest.approx(1.3e-10, rel=1e-15)
    np.testing.assert_allclose(build_crystal(back, F64, CPU).a0.numpy(), build_crystal(cfg, F64, CPU).a0.numpy(),
                               rtol=0, atol=1e-24)
    p, q = resolve_phi(cfg, F64, CPU), resolve_phi(back, F64, CPU)
    assert (q.phi0, q.osc) == pytest.approx((p.phi0, p.osc), rel=1e-14)
    # and the experiment list is a fixed point: write(read(write(x))) == write(x)
    again = write_experiments(exp)
    assert json.dumps(again, sort_keys=True) == json.dumps(written, sort_keys=True) or _close_dicts(again, written)


def test_a_still_is_written_without_goniometer_and_scan():
    """osc = 0 (the C's default): dxtbx's still, the crystal as it stands at phi0 about the spindle."""
    cfg = mosflm_config()
    still = SimulationConfig(detector=cfg.detector, beam=cfg.beam,
                             crystal=CrystalConfig(cell=cfg.crystal.cell, misset=cfg.crystal.misset, phi0=0.3))
    written = write_experiments(still)
    assert written["scan"] == [] and written["goniometer"] == [] and "scan" not in written["experiment"][0]
    exp = read_experiments(written)
    assert exp.phi0 is None and exp.spindle_axis is None
    back = exp.config(SimulationConfig(detector=DetectorConfig(convention="CUSTOM")))
    want = crystal_at(still, 0.3)  # our crystal rotated about our (MOSFLM) spindle by phi0
    np.testing.assert_allclose(crystal_at(back, 0.0), want, atol=1e-11)


def _close_dicts(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close_dicts(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close_dicts(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == pytest.approx(b, rel=1e-13, abs=1e-15)
    return a == b


def test_experiment_round_trip_is_exact_enough():
    exp = read_experiments(goniometer_expt({"rotation_axis": [0.0, 1.0, 0.0]}, CELL_ROWS), image=7)
    back = read_experiments(write_experiments(exp))
    for name in ("wavelength", "polarization", "phi0", "osc"):
        assert getattr(back, name) == pytest.approx(getattr(exp, name), rel=1e-14, abs=1e-15)
    for name in ("beam_vector", "polar_vector", "spindle_axis"):
        np.testing.assert_allclose(getattr(back, name), getattr(exp, name), atol=1e-15)
    assert (back.image, back.image_range) == (7, (7, 7))  # the written scan is the simulated image
    np.testing.assert_allclose(back.real_space, exp.real_space, rtol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# dxtbx itself, when importable


def test_dxtbx_loads_what_we_write(tmp_path):
    dxtbx_model = pytest.importorskip("dxtbx.model")
    cfg = mosflm_config()
    written = write_experiments(cfg, tmp_path / "x.expt")
    el = dxtbx_model.experiment_list.ExperimentListFactory.from_json_file(str(tmp_path / "x.expt"),
                                                                         check_format=False)
    exp = read_experiments(written)
    panel = el[0].detector[0]
    np.testing.assert_allclose(np.asarray(panel.get_origin()) * 1e-3, exp.panels[0].origin, atol=1e-12)
    np.testing.assert_allclose(panel.get_fast_axis(), exp.panels[0].fast_axis, atol=1e-12)
    np.testing.assert_allclose(-np.asarray(el[0].beam.get_sample_to_source_direction()), exp.beam_vector, atol=1e-12)
    assert el[0].beam.get_polarization_fraction() == pytest.approx((1 + 0.7) / 2)
    np.testing.assert_allclose(np.asarray(el[0].crystal.get_real_space_vectors()) * 1e-10, exp.real_space,
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line naming file:json.path


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["detector"][0]["panels"][0].__setitem__("pixel_size", [0.1, 0.2]),
         "detector[0].panels[0].pixel_size"),
        (lambda d: d["detector"][0]["panels"][0].pop("origin"), "detector[0].panels[0].origin"),
        (lambda d: d["detector"][0]["panels"][0].__setitem__("slow_axis", [0, 0.1, 1]),
         "detector[0].panels[0].slow_axis"),
        (lambda d: d["detector"][0]["hierarchy"]["children"].append({"panel": 0}),
         "detector[0].hierarchy.children[1].panel"),
        (lambda d: d["beam"][0].__setitem__("wavelength", -1), "beam[0].wavelength"),
        (lambda d: d["beam"][0].__setitem__("__id__", "unknown"), "beam[0].__id__"),
        (lambda d: d["beam"][0].__setitem__("__id__", "polychromatic"), "beam[0].wavelength_range"),
        (lambda d: d["crystal"][0].__setitem__("A_at_scan_points", [[1] * 9]), "crystal[0].A_at_scan_points"),
        (lambda d: d["goniometer"][0].__setitem__("fixed_rotation", [1, 0, 0, 0, 1, 0, 0, 0, 2]),
         "goniometer[0].fixed_rotation"),
        (lambda d: d["experiment"][0].__setitem__("scan", 4), "experiment[0].scan"),
        (lambda d: d["scan"][0].__setitem__("image_range", [1, 3]), "scan[0].properties.oscillation"),
    ],
)
def test_bad_input_names_the_json_path(tmp_path, mutate, where):
    d = copy.deepcopy(write_experiments(mosflm_config()))
    mutate(d)
    path = tmp_path / "bad.expt"
    path.write_text(json.dumps(d))
    with pytest.raises(InputError) as err:
        read_experiments(path)
    assert str(err.value).startswith(f"{path}:{where}:"), str(err.value)
    assert "\n" not in str(err.value)


def test_bad_json_and_image_out_of_range(tmp_path):
    path = tmp_path / "broken.expt"
    path.write_text('{"__id__": "ExperimentList",\n "experiment": [}\n')
    with pytest.raises(InputError, match=r"broken.expt:2: not JSON"):
        read_experiments(path)
    good = tmp_path / "good.expt"
    write_experiments(mosflm_config(), good)
    with pytest.raises(InputError, match=r"good.expt:scan\[0\].image_range: image 5 is outside"):
        read_experiments(good, image=5)


# ---------------------------------------------------------------------------------------------------------------
# the command line


SMALL = ["-N", "2", "-default_F", "100", "-phisteps", "2", "-dtype", "float64"]
MOSFLM_FLAGS = ["-cell", "60", "70", "80", "88", "95", "101", "-misset", "5", "-10", "20", "-detpixels", "24",
                "-pixel", "0.2", "-distance", "60", "-Xbeam", "2.1", "-Ybeam", "2.6", "-lambda", "1.2", "-phi", "3",
                "-osc", "1", "-polar", "0.6"]


def test_cli_single_panel_expt_renders_the_same_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*MOSFLM_FLAGS, *SMALL, "-floatfile", "a.bin", "-write_expt", "a.expt"]) == 0
    assert main(["-expt", "a.expt", *SMALL, "-floatfile", "b.bin", "-write_expt", "b.expt"]) == 0
    a, b = np.fromfile("a.bin", "<f4"), np.fromfile("b.bin", "<f4")
    assert a.max() > 0
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * a.max())
    assert _close_dicts(json.loads(Path("b.expt").read_text()), json.loads(Path("a.expt").read_text()))


def test_cli_flags_override_the_expt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_experiments(mosflm_config(), "x.expt")
    cfg, _ = config_from_flags(["-expt", "x.expt", "-default_F", "1", "-lambda", "2", "-phi", "7", "-polar", "0.1"])
    assert cfg.beam.wavelength == pytest.approx(2e-10)
    assert cfg.crystal.phi0 == pytest.approx(math.radians(7))
    assert cfg.beam.polarization == pytest.approx(0.1)
    assert cfg.crystal.osc == pytest.approx(math.radians(0.5))
    # the orientation matrix is the file's crystal at the final wavelength
    np.testing.assert_allclose(build_crystal(cfg, F64, CPU).a0.numpy(),
                               build_crystal(mosflm_config(), F64, CPU).a0.numpy(), atol=1e-22)
    cfg, _ = config_from_flags(["-expt", "x.expt", "-expt_image", "1", "-default_F", "1", "-cell", "50"])
    assert cfg.crystal.reciprocal_matrix is None and cfg.crystal.cell[0] == pytest.approx(50e-10)


@pytest.mark.parametrize("argv", [
    ["-expt", "x.expt", "-default_F", "1", "-distance", "90"],
    ["-expt", "x.expt", "-default_F", "1", "-mosflm"],
    ["-expt", "x.expt", "-default_F", "1", "-expt_image", "3"],
    ["-expt", "missing.expt", "-default_F", "1"],
    ["-expt", "det.json", "-cell", "50", "-default_F", "1"],
])
def test_cli_expt_errors(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    written = write_experiments(mosflm_config(), "x.expt")
    Path("det.json").write_text(json.dumps(written["detector"][0]))  # a bare detector: no beam
    assert main([*argv, "-floatfile", "f.bin"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nanobragg: error:") and "\n" not in err
    assert not Path("f.bin").exists()


def test_cli_refuses_a_panel_facing_the_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    panel = {"name": "p", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, 1.0, 0.0], "origin": [-5.0, -5.0, -100.0],
             "image_size": [10, 10], "pixel_size": [1.0, 1.0]}
    expt = {"__id__": "ExperimentList", "experiment": [{"__id__": "Experiment", "beam": 0, "detector": 0}],
            "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.0}], "detector": [{"panels": [panel]}]}
    Path("f.expt").write_text(json.dumps(expt))
    assert main(["-expt", "f.expt", "-cell", "50", "-default_F", "1", "-floatfile", "f.bin"]) == 2
    assert "f.expt: panel 0 (p) faces the sample" in capsys.readouterr().err
    assert not Path("f.bin").exists()


@pytest.mark.needs_shared(*CSPADS)
def test_cli_bare_detector_json_takes_the_beam_from_flags():
    cfg, _ = config_from_flags(["-expt", str(SHARED / CSPADS[1]), "-beam_vector", "0", "0", "-1", "-lambda", "1.1",
                                "-cell", "50", "-default_F", "1"])
    assert len(cfg.detector.panels) == 64 and cfg.detector.convention == "CUSTOM"
    np.testing.assert_allclose(cfg.beam.beam_vector, (0.0, 0.0, -1.0))
    assert cfg.beam.wavelength == pytest.approx(1.1e-10)


def test_cli_write_expt_with_the_e_vector_along_the_beam(tmp_path, monkeypatch, capsys):
    """A bare one-panel detector JSON, beam along -z by flag, the CUSTOM polar_vector (0, 0, 1) along it: the
    unpolarized case (Kahn 0) is written with some normal; a polarized one has no dxtbx form: refused before
    anything is rendered or written."""
    monkeypatch.chdir(tmp_path)
    panel = {"name": "p", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, -1.0, 0.0], "origin": [-2.0, 2.0, -80.0],
             "image_size": [16, 16], "pixel_size": [0.25, 0.25]}
    Path("det.json").write_text(json.dumps({"panels": [panel]}))
    flags = ["-expt", "det.json", "-beam_vector", "0", "0", "-1", "-cell", "50", "-default_F", "1", "-N", "1",
             "-floatfile", "f.bin", "-write_expt", "out.expt"]
    assert main(flags) == 0
    back = read_experiments("out.expt")
    assert back.polarization == 0.0 and abs(float(np.dot(back.polar_vector, (0, 0, 1)))) < 1e-15
    for name in ("f.bin", "out.expt"):
        Path(name).unlink()
    assert main([*flags, "-polar", "0.5"]) == 2
    assert "flag -write_expt: the polarization vector is parallel to the beam" in capsys.readouterr().err
    assert not Path("f.bin").exists() and not Path("out.expt").exists()


def test_cli_multi_panel_expt_builds_a_panel_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = synthetic_detector()
    expt = {"__id__": "ExperimentList", "experiment": [{"__id__": "Experiment", "beam": 0, "detector": 0}],
            "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.0}], "detector": [d]}
    Path("m.expt").write_text(json.dumps(expt))
    cfg, _ = config_from_flags(["-expt", "m.expt", "-cell", "50", "-default_F", "1", "-detector_thick", "100"])
    assert cfg.detector.panels is not None and len(cfg.detector.panels) == 4
    assert all(p.thickness == pytest.approx(1e-4) for p in cfg.detector.panels)
    np.testing.assert_allclose(cfg.beam.beam_vector, (0.0, 0.0, -1.0))
    assert isinstance(cfg.detector.panels[0], PanelConfig)


# ---------------------------------------------------------------------------------------------------------------
# per-panel parity with the C: a CSPAD panel read from the file, rendered through -expt, against the fixed C given
# that panel's lab frame (composed here with 4x4 frames) as its CUSTOM detector flags


PANEL_PARITY = [(CSPADS[0], 0), (CSPADS[0], 21), (CSPADS[0], 46), (CSPADS[1], 5), (CSPADS[1], 30), (CSPADS[1], 63)]
CRYSTAL_FLAGS = ["-cell", "80", "90", "100", "90", "95", "90", "-misset", "10", "-20", "30", "-N", "3",
                 "-default_F", "100", "-lambda", "1.3", "-polar", "0.998"]


@pytest.mark.needs_c("NB_C_FIXED_BIN")
@pytest.mark.needs_shared(*CSPADS)
@pytest.mark.parametrize(("name", "index"), PANEL_PARITY)
def test_cspad_panel_matches_the_c(tmp_path, monkeypatch, name, index):
    raw = json.loads((SHARED / name).read_text())
    m = expected_lab_frames(raw)[index]
    f, s, o = m[:3, 0], m[:3, 1], m[:3, 3]  # mm
    n = np.cross(f, s)
    pixel = raw["panels"][index]["pixel_size"][0]
    nf, ns = raw["panels"][index]["image_size"]
    beam, polar = np.array([0.0, 0.0, -1.0]), np.array([-1.0, 0.0, 0.0])  # dxtbx defaults: n = (0, 1, 0)

    def vec(flag, v):
        return [flag, *(repr(float(x)) for x in v)]

    c_argv = [*vec("-fdet_vector", f), *vec("-sdet_vector", s), *vec("-odet_vector", n / np.linalg.norm(n)),
              *vec("-beam_vector", beam), *vec("-polar_vector", polar), "-pivot", "sample",
              "-Xclose", repr(float(-o @ f)), "-Yclose", repr(float(-o @ s)),
              "-close_distance", repr(float(o @ n / np.linalg.norm(n))), "-pixel", repr(pixel),
              "-detpixels_f", str(nf), "-detpixels_s", str(ns), *CRYSTAL_FLAGS, "-floatfile", "c.bin"]
    monkeypatch.chdir(tmp_path)
    run = subprocess.run([os.environ["NB_C_FIXED_BIN"], *c_argv], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    panels, _ = read_detector(SHARED / name)
    exp = Experiment(panels=(panels[index],), wavelength=1.3e-10, beam_vector=(0.0, 0.0, -1.0),
                     polar_vector=(-1.0, 0.0, 0.0), polarization=0.998)
    write_experiments(exp, "panel.expt")
    assert main(["-expt", "panel.expt", *CRYSTAL_FLAGS, "-dtype", "float64", "-floatfile", "py.bin"]) == 0
    c_img, py_img = np.fromfile("c.bin", "<f4"), np.fromfile("py.bin", "<f4")
    assert c_img.size == nf * ns and c_img.max() > 0
    significant = c_img > 1e-4 * c_img.max()
    assert significant.sum() > 100
    np.testing.assert_allclose(py_img[significant], c_img[significant], rtol=1e-6)
    np.testing.assert_allclose(py_img, c_img, rtol=0, atol=1e-6 * c_img.max())


@pytest.mark.slow
@pytest.mark.needs_shared(*CSPADS)
@pytest.mark.parametrize("name", CSPADS)
def test_cspad_renders_whole_and_each_panel_as_alone(name):
    """Both CSPAD models render as 64 panels in one pass (the multi-panel engine); a handful of them equal the
    same panel rendered alone as the C's CUSTOM detector (which the test above compares with the C)."""
    pytest.importorskip("nanobragg_torch.panels", reason="needs the multi-panel engine")
    from nanobragg_torch.simulate import simulate

    exp = read_experiments(SHARED / name)
    base = SimulationConfig(
        beam=BeamConfig(wavelength=1.3e-10, beam_vector=(0.0, 0.0, -1.0), polar_vector=(-1.0, 0.0, 0.0),
                        polarization=0.998),
        crystal=CrystalConfig(cell=(80e-10, 90e-10, 100e-10, math.pi / 2, math.radians(95), math.pi / 2),
                              misset=(math.radians(10), math.radians(-20), math.radians(30)), Na=3, Nb=3, Nc=3,
                              default_F=100.0),
    )
    cfg = exp.config(base)
    assert cfg.detector.panels is not None and len(cfg.detector.panels) == 64
    whole = simulate(cfg, dtype=F64)
    assert tuple(whole.shape) == (64, 185, 194)
    for k in (0, 21, 46, 63):
        alone = simulate(Experiment(panels=(exp.panels[k],)).config(base), dtype=F64)
        assert float(alone.max()) > 0
        # the panel path places pixels from the origin itself, the single detector from -Xclose/-Yclose/
        # -close_distance: float64 roundings (1e-17 m) that the lattice factor amplifies near its zeros
        w, a = whole[k].numpy(), alone.numpy()
        significant = a > 1e-4 * a.max()
        np.testing.assert_allclose(w[significant], a[significant], rtol=1e-8)
        np.testing.assert_allclose(w, a, rtol=0, atol=1e-10 * a.max())


def _two_panel_expt() -> dict:
    """Two 12x10 panels of 0.5 mm side by side (and a little tilted), 80 mm down a beam along -z."""
    panels = [
        {"name": "left", "fast_axis": [1.0, 0.0, 0.0], "slow_axis": [0.0, -1.0, 0.0], "origin": [-6.5, 2.5, -80.0],
         "image_size": [12, 10], "pixel_size": [0.5, 0.5]},
        {"name": "right", "fast_axis": [0.0, -1.0, 0.0], "slow_axis": [-0.99, 0.0, -0.141067],
         "origin": [7.0, 2.5, -79.0], "image_size": [12, 10], "pixel_size": [0.5, 0.5]},
    ]
    norm = np.linalg.norm(panels[1]["slow_axis"])
    panels[1]["slow_axis"] = [c / norm for c in panels[1]["slow_axis"]]
    return {"__id__": "ExperimentList", "experiment": [{"__id__": "Experiment", "beam": 0, "detector": 0}],
            "beam": [{"direction": [0.0, 0.0, 1.0], "wavelength": 1.0}], "detector": [{"panels": panels}]}


def test_cli_multi_panel_outputs_and_trace(tmp_path, monkeypatch, capsys):
    """A two-panel -expt: -floatfile holds the (panel, slow, fast) stack, equal to the API's render; -trace_pixel
    with -trace_panel traces that panel's pixel (its I_pixel_final is the stack's value); single-image outputs,
    -printout_pixel and a bad -trace_panel are one-line errors that write nothing."""
    from nanobragg_torch import simulate

    monkeypatch.chdir(tmp_path)
    Path("two.expt").write_text(json.dumps(_two_panel_expt()))
    flags = ["-expt", "two.expt", "-cell", "40", "45", "50", "90", "90", "90", "-misset", "5", "10", "15", "-N", "3",
             "-default_F", "10", "-oversample", "1", "-dtype", "float64"]
    assert main([*flags, "-floatfile", "f.bin", "-trace_pixel", "4", "7", "-trace_panel", "1"]) == 0
    out = capsys.readouterr().out
    stack = np.fromfile("f.bin", "<f4").reshape(2, 10, 12)
    cfg, _ = config_from_flags(flags)
    with torch.no_grad():
        image = simulate(cfg, dtype=torch.float64)
    np.testing.assert_array_equal(stack, image.numpy().astype(np.float32))
    assert "# panel 1 of 2 (-trace_panel)" in out
    final = [line for line in out.splitlines() if line.startswith("TRACE_PY: I_pixel_final")]
    assert float(final[0].split()[-1]) == pytest.approx(float(image[1, 4, 7]), rel=1e-12)
    for extra, needle in ((["-intfile", "i.img"], "-intfile holds one panel"),
                          (["-cbffile", "c.cbf"], "-cbffile holds one panel"),
                          (["-printout_pixel", "1", "1"], "-printout_pixel"),
                          (["-trace_pixel", "1", "1", "-trace_panel", "2"], "panel 2 is not one of the 2 panels"),
                          (["-trace_panel", "1"], "-trace_panel: needs -trace_pixel")):
        assert main([*flags, "-floatfile", "g.bin", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
        assert not Path("g.bin").exists() and not Path(extra[1]).exists()
