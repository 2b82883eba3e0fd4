"""The case matrix and verified golden access (manifest sha256, tampering, summaries)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.parity.goldens import (
    PINNED_C_SHA256,
    GoldenIntegrityError,
    golden_dir,
    load_cases,
    load_golden,
    load_manifest,
    npz_bytes,
    sha256_file,
    summarize_full,
)

CASES = load_cases()


def test_case_matrix_shape():
    names = [c.name for c in CASES]
    assert len(names) >= 60 and len(set(names)) == len(names)
    sizes = {c.size for c in CASES}
    assert sizes == {"small", "full"}
    assert sum(c.full for c in CASES) >= 2
    for c in CASES:
        assert "-noprogress" in c.flags
        assert c.output_name("float") in c.flags  # explicit float output name
        assert c.variants and set(c.variants) <= {"pinned", "fixed"}
        if "quirk" in c.tags and ("phi0" in c.tags or "oversample" in c.tags or "curved" in c.tags):
            assert set(c.variants) == {"pinned", "fixed"}, c.name


def flag_families() -> dict[str, list[str]]:
    """docs/golden.md's table of flag families: tag -> the flags of the family (empty: a behaviour)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "golden.md").read_text()
    section = text[text.index("## Flag families"):]
    section = section[: section.index("\n## ", 4)]
    families = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            families[cells[0].strip("`")] = re.findall(r"`(-[\w-]+)`", cells[1])
    return families


def test_every_flag_family_has_a_case():
    """Each family of docs/golden.md is a tag of some case, and some case of that tag passes one of its flags."""
    families = flag_families()
    assert len(families) >= 30 and "quirk" in families
    for family, flags in families.items():
        tagged = [c for c in CASES if family in c.tags]
        assert tagged, f"flag family {family}: no case has the tag"
        if flags:
            assert any(set(flags) & set(c.flags) for c in tagged), f"flag family {family}: no case passes {flags}"


def test_small_cases_are_small():
    for c in CASES:
        if c.full:
            continue
        g = load_manifest()["entries"][f"{c.variants[0]}/{c.name}"]
        s, f = g["shape"]
        assert s * f <= 256 * 256, c.name


def test_case_helpers():
    c = next(c for c in CASES if c.name == "mat_triclinic_hkl")
    assert c.input_files() == ["tric.mat", "p1_h14.hkl"]
    argv = c.argv(inputs="/x/in", shared="/x/sh")
    assert "/x/in/tric.mat" in argv and not any("{" in a for a in argv)
    assert c.output_name("float") == "float.bin" and c.output_name("noise") == "noiseimage.img"
    p = next(c for c in CASES if c.name == "full_pilatus6m")
    assert p.shared_files() == ["pilatus_6m/A.mat", "pilatus_6m/scaled.hkl"]
    assert p.output_name("float") == "img.bin"
    assert (685, 1039) in p.trace and "max" in p.trace
    t32 = p.tolerance_for("float32")
    assert t32.corr_min == 0.9999 and t32.sum_ratio_tol == 1e-3 and t32.max_rel_err is None


def test_manifest_covers_every_case_and_records_provenance():
    entries = load_manifest()["entries"]
    expected = {f"{v}/{c.name}" for c in CASES for v in c.variants}
    assert set(entries) == expected
    for key, e in entries.items():
        if key.startswith("pinned/"):
            assert e["c_source_sha256"] == PINNED_C_SHA256
            assert e["c_binary_env"] == "NB_C_BIN"
        else:
            assert e["c_source_sha256"] != PINNED_C_SHA256 and e["c_binary_env"] == "NB_C_FIXED_BIN"
        assert e["cflags"] and e["date"] and len(e["traced_pixels"]) >= 1
        for name, digest in e["inputs"].items():
            assert sha256_file(golden_dir() / name) == digest, name


@pytest.mark.parametrize("key", sorted(load_manifest()["entries"]))
def test_every_golden_verifies(key):
    variant, case = key.split("/")
    g = load_golden(case, variant)
    assert g.shape == tuple(g.entry["shape"])
    if g.case.full:
        assert g.image is None and g.summary.grid.sum() == pytest.approx(
            g.entry["image_stats"]["sum"], rel=1e-9
        )
    else:
        assert g.image.dtype == np.float32 and g.image.shape == g.shape
        assert float(g.image.astype(np.float64).sum()) == pytest.approx(
            g.entry["image_stats"]["sum"], rel=1e-12
        )
    for kind in g.case.outputs:
        assert g.file(kind).is_file()


def _copy_golden(tmp_path: Path, case: str, variant: str = "pinned") -> Path:
    root = tmp_path / "golden"
    shutil.copytree(golden_dir() / variant / case, root / variant / case)
    shutil.copy(golden_dir() / "cases.toml", root / "cases.toml")
    manifest = load_manifest()
    key = f"{variant}/{case}"
    (root / "manifest.json").write_text(json.dumps({"format": 1, "entries": {key: manifest["entries"][key]}}))
    return root


def test_tampered_copy_is_rejected(tmp_path):
    root = _copy_golden(tmp_path, "mosflm_default")
    load_golden("mosflm_default", root=root)  # the untouched copy verifies
    stdout = root / "pinned" / "mosflm_default" / "stdout.txt"
    stdout.write_text(stdout.read_text().replace("max_I = 598.74", "max_I = 598.75"))
    with pytest.raises(GoldenIntegrityError, match="does not match manifest"):
        load_golden("mosflm_default", root=root)


def test_tampered_image_and_missing_file_are_rejected(tmp_path):
    root = _copy_golden(tmp_path, "noise_low")
    d = root / "pinned" / "noise_low"
    img = np.load(d / "image.npz")["image"].copy()
    img[5, 5] += 1.0
    (d / "image.npz").write_bytes(npz_bytes({"image": img}))
    with pytest.raises(GoldenIntegrityError, match="image.npz"):
        load_golden("noise_low", root=root)
    shutil.rmtree(d)
    root = _copy_golden(tmp_path / "b", "noise_low")
    (root / "pinned" / "noise_low" / "noise.img").unlink()
    with pytest.raises(GoldenIntegrityError, match="missing"):
        load_golden("noise_low", root=root)
    with pytest.raises(KeyError):
        load_golden("noise_low", "fixed", root=root)


def test_check_image_against_golden():
    g = load_golden("mosflm_default")
    fails, m = g.check_image(g.image.astype(np.float64), "float64")
    assert fails == [] and m["corr"] == pytest.approx(1.0)
    fails, _ = g.check_image(g.image * 1.001, "float64")
    assert any("sum ratio" in f for f in fails)
    assert g.check_image(g.image * 1.0001, "float32")[0] == []
    assert g.check_image(np.zeros((3, 3)))[0][0].startswith("shape")


def test_full_size_summary():
    g = load_golden("full_pilatus6m")
    s = g.summary
    assert s.shape == (2527, 2463) and s.block == 32 and s.grid.shape == (79, 77)
    assert s.crops.shape == (13, 64, 64) and len(s.labels) == 13
    assert s.labels[0] == "trace 685 1039"
    assert tuple(g.traced_pixels[0]) == (685, 1039)
    assert g.entry["image_stats"]["argmax"] == list(g.traced_pixels[1])  # "max"
    # a rebuilt full image (crops pasted into zeros) reproduces the crops but not the grid
    img = np.zeros(s.shape, dtype=np.float32)
    for (r, c), crop in zip(s.origins, s.crops, strict=True):
        img[r : r + 64, c : c + 64] = crop
    np.testing.assert_array_equal(s.crops_of(img), s.crops)
    fails, m = g.check_image(img)
    assert m["crops"]["max_rel_err"] == 0.0 and any(f.startswith("grid") for f in fails)


def test_summarize_full_synthetic():
    rng = np.random.default_rng(3)
    img = rng.random((300, 260)).astype(np.float32) * 0.01
    spots = [(50, 50), (150, 200), (290, 5), (10, 250)]
    for i, (s, f) in enumerate(spots):
        img[s, f] = 100 + i
    sm = summarize_full(img, [(0, 0)], crop=64, block=32, spots=3)
    assert sm.labels == ["trace 0 0", "spot 0", "spot 1", "spot 2"]
    assert [tuple(o) for o in sm.origins] == [(0, 0), (0, 196), (236, 0), (118, 168)]
    assert sm.grid.shape == (10, 9) and sm.grid.sum() == pytest.approx(img.astype(np.float64).sum())
    assert sm.stats["argmax"] == [10, 250]


def test_npz_bytes_is_deterministic():
    a = {"image": np.arange(12, dtype=np.float32).reshape(3, 4), "block": np.asarray(32)}
    b1, b2 = npz_bytes(a), npz_bytes(dict(reversed(list(a.items()))))
    assert b1 == b2
    with np.load(io.BytesIO(b1)) as z:
        assert z["block"].shape == () and int(z["block"]) == 32
        np.testing.assert_array_equal(z["image"], a["image"])


def test_bad_cases_file(tmp_path):
    p = tmp_path / "cases.toml"
    p.write_text('[[case]]\nname = "a"\nflags = ["-N", "1"]\n')
    with pytest.raises(ValueError, match="-noprogress"):
        load_cases(p)
    p.write_text('[[case]]\nname = "a"\nflags = ["-noprogress"]\ntrace = ["brightest"]\n')
    with pytest.raises(ValueError, match="trace keyword"):
        load_cases(p)
    p.write_text('[[case]]\nname = "a"\nflags = ["-noprogress"]\nvariant = ["pinned"]\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_cases(p)
