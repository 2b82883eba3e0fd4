"""The drift comparer: perturbed traces name the perturbed factor first; image metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nanobragg_torch.parity.compare import (
    ImageTolerance,
    block_sums,
    check_image,
    compare_traces,
    image_metrics,
)
from nanobragg_torch.parity.goldens import load_golden
from nanobragg_torch.parity.printout import Trace
from nanobragg_torch.parity.schema import SCHEMA, order_index


@pytest.fixture(scope="module")
def c_trace() -> Trace:
    g = load_golden("mosflm_default")
    return g.c_trace(g.traced_pixels[0])


def _as_ours(t: Trace) -> dict:
    """A full-precision trace holding exactly the printed values (what a perfect engine would round to)."""
    return dict(t.values)


def _perturb(values: dict, name: str, rel: float) -> dict:
    out = dict(values)
    v = out[name]
    out[name] = (
        tuple(x * (1 + rel) + (rel if x == 0 else 0.0) for x in v) if isinstance(v, tuple) else v * (1 + rel)
    )
    return out


def test_identical_trace_passes(c_trace):
    rep = compare_traces(c_trace, _as_ours(c_trace))
    assert rep.ok and rep.first_divergent is None and not rep.drifts
    assert len(rep.rows) == len(c_trace.values)
    assert [r.name for r in rep.rows] == sorted((r.name for r in rep.rows), key=order_index)
    assert "agree" in rep.summary()


@pytest.mark.parametrize(
    "name",
    [
        "pix0_vector",
        "fdet_vector",
        "distance",
        "Fbeam",
        "pixel_pos",
        "stol",
        "hkl_frac",
        "F_latt",
        "F_cell",
        "a_vec",
        "I_before_scaling",
        "I_over_steps",
        "polar",
        "omega_pixel",
        "I_pixel_final",
    ],
)
def test_perturbed_factor_is_first_divergent(c_trace, name):
    ours = _perturb(_as_ours(c_trace), name, 1e-3)
    rep = compare_traces(c_trace, ours)
    assert not rep.ok
    assert rep.first_divergent == name
    assert [d.name for d in rep.drifts] == [name]
    # worst component (by diff/tolerance); for vectors its diff is relative to the norm
    assert 0 < rep.drifts[0].rel_diff <= 1.05e-3
    md = rep.to_markdown()
    assert f"First divergent factor: `{name}`" in md.splitlines()[2]
    assert md.count("**FAIL**") == 1


def test_earliest_in_pipeline_wins(c_trace):
    ours = _perturb(_perturb(_as_ours(c_trace), "F_latt", 1e-2), "hkl_frac", 1e-3)
    rep = compare_traces(c_trace, ours)
    assert rep.first_divergent == "hkl_frac"
    assert [d.name for d in rep.drifts] == ["hkl_frac", "F_latt"]
    # the solid angle is computed with the pixel position, before the Miller indices and the sum
    rep = compare_traces(c_trace, _perturb(_perturb(_as_ours(c_trace), "omega_pixel", 1e-2), "a_vec", 1e-3))
    assert [d.name for d in rep.drifts] == ["omega_pixel", "a_vec"]


def test_printed_precision_is_respected(c_trace):
    ours = _as_ours(c_trace)
    assert c_trace["F_cell"] == 100.0  # printed "%g": half unit = 5e-4
    assert compare_traces(c_trace, {**ours, "F_cell": 100.0004}).ok
    assert not compare_traces(c_trace, {**ours, "F_cell": 100.002}).ok
    h = c_trace["hkl_frac"]  # printed "%f": half unit 5e-7 absolute
    assert compare_traces(c_trace, {**ours, "hkl_frac": (h[0] + 4e-7, h[1], h[2])}).ok
    assert not compare_traces(c_trace, {**ours, "hkl_frac": (h[0] + 3e-6, h[1], h[2])}).ok


def test_full_precision_traces_are_strict():
    ref = {f.name: (1.234567890123, -0.5, 2.0) if f.arity == 3 else 0.987654321 for f in SCHEMA}
    assert compare_traces(ref, {**ref, "F_cell": 0.987654321 * (1 + 1e-10)}).ok
    rep = compare_traces(ref, {**ref, "F_cell": 0.987654321 * (1 + 1e-7)})
    assert rep.first_divergent == "F_cell"
    # rtol_scale and overrides loosen it
    assert compare_traces(ref, {**ref, "F_cell": 0.987654321 * (1 + 1e-7)}, rtol_scale=1e3).ok
    assert compare_traces(
        ref, {**ref, "F_cell": 0.987654321 * (1 + 1e-7)}, overrides={"F_cell": (1e-6, 0)}
    ).ok
    # vector tolerance scales with the norm: a near-zero component may move by rtol * |v|
    v = {"fdet_vector": (1.0, 1e-17, 0.0)}
    assert compare_traces(v, {"fdet_vector": (1.0, 3e-16, -1e-16)}).ok


def test_missing_nan_and_array_inputs():
    ref = {"F_cell": 1.0, "polar": math.nan, "stol": 2.0, "unknown_extra": 5.0}
    ours = {
        "F_cell": np.float64(1.0),
        "polar": math.nan,
        "omega_pixel": 1e-6,
        "hkl_frac": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
    }
    rep = compare_traces(ref, ours)
    assert rep.ok
    assert rep.only_ref == ["stol"] and rep.only_ours == ["omega_pixel", "hkl_frac"]
    rep = compare_traces({"polar": 0.5}, {"polar": math.nan})
    assert rep.first_divergent == "polar" and math.isinf(rep.drifts[0].abs_diff)
    assert not compare_traces({"hkl_frac": (1.0, 2.0, 3.0)}, {"hkl_frac": (1.0, 2.0)}).ok


def test_factors_filter(c_trace):
    ours = _perturb(_as_ours(c_trace), "polar", 1e-2)
    assert compare_traces(c_trace, ours, factors=["F_cell", "F_latt"]).ok
    assert not compare_traces(c_trace, ours, factors=["polar"]).ok


# ------------------------------------------------------------------------------------------------ images


def test_image_metrics_identity_and_scale():
    rng = np.random.default_rng(0)
    ref = rng.gamma(0.3, 10.0, size=(64, 48)).astype(np.float32)
    m = image_metrics(ref, ref)
    assert m["corr"] == pytest.approx(1.0) and m["sum_ratio"] == 1.0 and m["max_rel_err"] == 0.0
    assert m["shape"] == (64, 48) and m["argmax_ours"] == m["argmax_ref"]
    assert check_image(m, ImageTolerance()) == []
    m = image_metrics(torch.from_numpy(ref).double() * (1 + 2e-6), ref)
    assert m["sum_ratio"] == pytest.approx(1 + 2e-6, rel=1e-9)
    assert m["max_rel_err"] == pytest.approx(2e-6, rel=1e-3)
    fails = check_image(m, ImageTolerance())
    assert len(fails) == 2 and fails[0].startswith("sum ratio") and fails[1].startswith("max rel err")
    assert check_image(m, ImageTolerance(corr_min=0.9999, sum_ratio_tol=1e-3, max_rel_err=None)) == []


def test_image_metrics_significance_and_shift():
    ref = np.zeros((32, 32))
    ref[10, 10], ref[20, 5], ref[0, 0] = 1000.0, 10.0, 1e-4
    ours = ref.copy()
    ours[0, 0] = 1.0  # huge relative change on an insignificant pixel
    m = image_metrics(ours, ref, significant=1e-3)
    assert m["n_significant"] == 2 and m["max_rel_err"] == 0.0
    shifted = np.roll(ref, 1, axis=1)
    m = image_metrics(shifted, ref)
    assert m["corr"] < 0.1 and m["argmax_ours"] == (10, 11)
    assert any(f.startswith("corr") for f in check_image(m, ImageTolerance()))
    with pytest.raises(ValueError, match="shapes differ"):
        image_metrics(ref[:5], ref)
    z = image_metrics(np.zeros((4, 4)), np.zeros((4, 4)))
    assert z["corr"] == 1.0 and z["sum_ratio"] == 1.0 and z["n_significant"] == 0


def test_block_sums():
    a = np.arange(70 * 45, dtype=np.float32).reshape(70, 45)
    g = block_sums(a, 32)
    assert g.shape == (3, 2) and g.dtype == np.float64
    assert g.sum() == pytest.approx(a.astype(np.float64).sum())
    assert g[0, 0] == a[:32, :32].astype(np.float64).sum()
    assert g[2, 1] == a[64:, 32:].astype(np.float64).sum()


def test_tolerance_from_dict():
    t = ImageTolerance.from_dict({"corr_min": 0.99, "max_rel_err": -1})
    assert t.corr_min == 0.99 and t.max_rel_err is None and t.sum_ratio_tol == 1e-7
    with pytest.raises(ValueError, match="unknown tolerance keys"):
        ImageTolerance.from_dict({"corr": 0.9})
