"""golden/sensitivity.json: which golden sees which factor (tests/golden/sensitivity.py). Every factor must be
visible in at least MIN_IMAGES goldens' images; the map covers exactly the committed goldens (regenerated with
them); a recomputed entry equals the stored one."""

from __future__ import annotations

import pytest
import sensitivity as S

from nanobragg_torch.parity.goldens import load_cases, load_manifest


@pytest.fixture(scope="module")
def sens() -> dict:
    if not S.path().is_file():
        pytest.fail("golden/sensitivity.json is missing: python tests/golden/sensitivity.py", pytrace=False)
    return S.load()


def test_every_factor_is_seen_by_enough_goldens(sens):
    few = {f: s["image"] for f, s in sens["summary"].items() if s["image"] < S.MIN_IMAGES}
    assert set(sens["summary"]) == set(S.FACTORS), "the map's factors are not perturb.PERTURBABLE + fluence"
    assert not few, f"factors visible in fewer than {S.MIN_IMAGES} goldens' images (add goldens): {few}"


def test_map_covers_the_committed_goldens(sens):
    """Regenerated with the goldens: one entry per golden, the full-size ones listed as skipped."""
    full = {c.name for c in load_cases() if c.full}
    entries = set(load_manifest()["entries"])
    assert set(sens["goldens"]) | set(sens["skipped"]) == entries, (
        "golden/sensitivity.json does not cover the manifest's goldens: regenerate it (tools/regen_goldens.py "
        "writes it; or python tests/golden/sensitivity.py)"
    )
    assert {k for k in sens["skipped"]} == {k for k in entries if k.split("/", 1)[1] in full}
    assert sens["summary"] == S.summarize(sens["goldens"])


@pytest.mark.parametrize("factor", S.FACTORS)
def test_best_case_is_recomputed_alike(sens, factor):
    """The entry of each factor's best case, computed again, equals the stored one (the map is ours, now)."""
    key = sens["summary"][factor]["best"]
    assert key is not None, f"no golden sees {factor} in both image and trace"
    variant, name = key.split("/", 1)
    assert S.golden_sensitivity(variant, name) == sens["goldens"][key]


def test_invisible_factor_is_reported_as_such():
    """A factor a case cannot see is not listed: -nopolar has no polarization factor at all."""
    cases = {c.name: c for c in load_cases()}
    nopolar = sorted(k for k in load_manifest()["entries"]
                     if "-nopolar" in cases[k.split("/", 1)[1]].flags and not cases[k.split("/", 1)[1]].full)
    if not nopolar:
        pytest.skip("no -nopolar golden")
    variant, name = nopolar[0].split("/", 1)
    seen = S.golden_sensitivity(variant, name)
    assert "polar" not in seen["image"] and "polar" not in seen["trace"]
    assert "omega_pixel" in seen["image"]
