"""Recovering perturbed cell, orientation, distance and beam centre by L-BFGS through the differentiable
render (trajectories are printed: run with -s to see them).

Start offsets (refine.DEFAULT_OFFSETS): cell lengths +0.4/-0.3/+0.5 %, cell angles +0.3/-0.2/+0.25 deg, misset
+0.3/-0.25/+0.2 deg, distance +1 %, beam centre +0.6/-0.4 pixel. Tolerances (refine.TOLERANCES): beam centre
0.05 pixel, distance 0.1 %, cell lengths 0.1 %, cell angles 0.05 deg, orientation 0.05 deg (geodesic angle
between recovered and true orientation, and each misset angle).
"""

from __future__ import annotations

import math

import pytest
import torch

from nanobragg_torch.config import CrystalConfig, DetectorConfig, SimulationConfig
from nanobragg_torch.refine import (
    TOLERANCES,
    misset_from_rotation,
    misset_rotation,
    orientation_of,
    perturb,
    recovery_errors,
    refine,
    rotation_from_quaternion,
    rotation_from_rotvec,
    rotvec_from_rotation,
    standard_model,
)
from nanobragg_torch.simulate import simulate

DEG = math.pi / 180.0
DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """These renders are tiny: see the `one_thread` fixture."""


def check(result, truth: SimulationConfig, misset0) -> None:
    errors = recovery_errors(result.params, truth, misset0)
    print(errors)
    for key, tol in TOLERANCES.items():
        assert errors[key] < tol, (key, errors)
    misset = misset_from_rotation(orientation_of(result.params, misset0))
    torch.testing.assert_close(misset, torch.tensor([float(m) for m in truth.crystal.misset], dtype=DT),
                               rtol=0, atol=TOLERANCES["orientation_deg"] * DEG)


def small_truth() -> SimulationConfig:
    det = DetectorConfig(fpixels=48, spixels=48, pixel_size=0.4e-3, distance=60e-3, oversample=1,
                         Xbeam=9.7e-3, Ybeam=9.5e-3)
    xtal = CrystalConfig(cell=(40e-10, 50e-10, 60e-10, 88 * DEG, 100 * DEG, 92 * DEG),
                         misset=(10 * DEG, 20 * DEG, 30 * DEG), Na=5, Nb=5, Nc=5, default_F=100.0,
                         interpolate=False, phisteps=3, osc=1.0 * DEG)
    return SimulationConfig(detector=det, crystal=xtal)


def test_refine_self_rendered_lbfgs():
    """48 x 48 image rendered by our engine at known parameters; all 12 parameters perturbed."""
    truth = small_truth()
    target = simulate(truth, DT)
    start_cfg, misset0 = perturb(truth)
    build, start, scales = standard_model(start_cfg, misset0)
    lines = []
    result = refine(target, build, start, scales, method="lbfgs", iterations=25, stop_loss=1e-12,
                    callback=lambda s: lines.append(f"{s.iteration} {s.loss:.3e} {s.params}"))
    print("\n".join(lines))
    assert result.history[-1].loss < 1e-3 * result.history[0].loss
    check(result, truth, misset0)


def test_refine_c_golden_lbfgs():
    """The C's own image (golden cell_triclinic, 128 x 128, pinned C): our model recovers the C's flags."""
    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.parity.goldens import has_golden, load_golden
    if not has_golden("cell_triclinic"):
        pytest.skip("golden cell_triclinic not present")
    g = load_golden("cell_triclinic")
    truth, _ = config_from_flags(g.case.argv())
    start_cfg, misset0 = perturb(truth)
    build, start, scales = standard_model(start_cfg, misset0)
    result = refine(torch.as_tensor(g.image, dtype=DT), build, start, scales, method="lbfgs", iterations=12,
                    stop_loss=1e-10)
    check(result, truth, misset0)


def test_adam_decreases_loss():
    truth = small_truth()
    target = simulate(truth, DT)
    start_cfg, misset0 = perturb(truth)
    build, start, scales = standard_model(start_cfg, misset0)
    start = {k: start[k] for k in ("distance", "beam")}
    result = refine(target, build, start, scales, method="adam", iterations=15, lr=0.5)
    assert result.history[-1].loss < 0.5 * result.history[0].loss
    assert len(result.history) == 16


def test_orientation_helpers_round_trip():
    m = torch.tensor([10.0, -35.0, 120.0], dtype=DT) * DEG
    R = misset_rotation(m)
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=DT))
    torch.testing.assert_close(misset_from_rotation(R), m)
    torch.testing.assert_close(rotation_from_rotvec(rotvec_from_rotation(R)), R)
    q = torch.tensor([0.2, -0.5, 0.4, 0.7], dtype=DT)
    Rq = rotation_from_quaternion(q)
    torch.testing.assert_close(Rq @ Rq.T, torch.eye(3, dtype=DT))
    assert abs(float(torch.linalg.det(Rq)) - 1) < 1e-12
    # gimbal lock of the x-y-z angles at roty = 90 deg: the rotation vector stays regular there
    from torch.autograd.functional import jacobian
    angles = torch.tensor([0.3, math.pi / 2, 0.2], dtype=DT)
    assert torch.linalg.matrix_rank(jacobian(lambda x: misset_rotation(x).reshape(-1), angles)) == 2
    v = rotvec_from_rotation(misset_rotation(angles))
    assert torch.linalg.matrix_rank(jacobian(lambda x: rotation_from_rotvec(x).reshape(-1), v)) == 3
