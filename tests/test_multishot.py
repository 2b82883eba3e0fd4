"""Many-shot refinement (nanobragg_torch.multishot): a reduced version of tools/multishot_example.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nanobragg_torch.multishot import Shots, cost_of, refine_shots

_spec = importlib.util.spec_from_file_location(
    "multishot_example", Path(__file__).resolve().parents[1] / "tools" / "multishot_example.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

SHARED = ["crystal.cell.0", "crystal.cell.2", "detector.distance", "detector.Xbeam", "detector.Ybeam"]


def test_levenberg_marquardt_recovers_noise_free_shots(one_thread):
    """3 stills without noise: shared cell lengths, distance, beam centre and per-shot orientation and scale
    come back to the truth (the cost to ~0), with the per-iteration table."""
    truth, start, images, pixel = example.make_problem(3, 40, seed=3, shared=SHARED, noise=False)
    lines: list[str] = []
    result = refine_shots(start, images, iterations=20, log=lines.append, progress=False)
    err = example.errors(result.shots, truth, pixel)
    assert result.history[-1].cost < 1e-6 * result.history[0].cost, result.table()
    assert err["length_rel"] < 1e-6 and err["distance_rel"] < 1e-6 and err["beam_px"] < 1e-4, err
    assert err["orientation_deg"] < 1e-4 and err["scale_rel"] < 1e-6, err
    assert lines[0].split()[:2] == ["iter", "cost"] and len(lines) == len(result.history) + 1
    table = result.table()
    assert table.count("\n") == len(result.history) + 1 and "| detector.distance |" in table


def test_lbfgs_recovers_beam_and_distance(one_thread):
    shared = ["detector.distance", "detector.Xbeam", "detector.Ybeam"]
    truth, start, images, pixel = example.make_problem(2, 32, seed=5, shared=shared, noise=False)
    result = refine_shots(start, images, method="lbfgs", iterations=15, progress=False)
    err = example.errors(result.shots, truth, pixel)
    assert err["distance_rel"] < 1e-5 and err["beam_px"] < 1e-3, err
    assert result.history[-1].cost < 1e-4 * result.history[0].cost


def test_noisy_example_reduced(one_thread):
    """With Poisson noise: the refined cost reaches the truth's (the noise level) and the parameters come
    back within the example's tolerances."""
    truth, start, images, pixel = example.make_problem(4, 48, seed=0, shared=SHARED)
    result = refine_shots(start, images, iterations=15, progress=False)
    assert result.history[-1].cost <= 1.01 * cost_of(truth, images, torch.float64, "cpu")
    err = example.errors(result.shots, truth, pixel)
    for k, v in err.items():
        assert v <= example.TOLERANCES[k], (k, v, result.table())


def test_bad_inputs():
    truth, start, images, _ = example.make_problem(2, 16, seed=0, shared=["detector.distance"], noise=False)
    with pytest.raises(ValueError, match="2 shots"):
        refine_shots(start, images[:1])
    with pytest.raises(ValueError, match="unknown method"):
        refine_shots(start, images, method="adam")
    import dataclasses

    cfg = truth.configs[0]
    bad = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, misset=None))
    with pytest.raises(ValueError, match="shot 0: give the crystal's orientation"):
        Shots.start([bad], ["detector.distance"])
