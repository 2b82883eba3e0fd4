"""The golden regeneration engine: trace resolution, block extraction, content diffs, and (with the C
binary) a re-render that must reproduce the committed goldens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.parity import regen
from nanobragg_torch.parity.goldens import (
    Case,
    golden_dir,
    load_cases,
    load_golden,
    load_manifest,
    npz_bytes,
    repo_root,
    sha256_bytes,
)

CASES = {c.name: c for c in load_cases()}


def _case(trace) -> Case:
    return Case(
        name="t",
        flags=("-noprogress",),
        trace=tuple(trace),
        variants=("pinned",),
        outputs=(),
        tags=(),
        size="small",
        tolerance={},
    )


def test_resolve_trace():
    img = np.zeros((40, 30), dtype=np.float32)
    img[20, 10], img[22, 12], img[5, 25] = 9.0, 8.0, 7.0
    assert regen.resolve_trace(_case(["max", "max2", (1, 2), "max"]), img) == [(20, 10), (5, 25), (1, 2)]
    with pytest.raises(regen.RenderError, match="outside"):
        regen.resolve_trace(_case([(40, 0)]), img)


def test_extract_block_with_glued_warning():
    text = (
        "line\nWARNING: further warnings will not be printed!    3    7 : stol = 1 or 2\nat 1 2 3\n"
        "X: 1 2 3\nY: 1 2 3\nZ: 1 2 3\nafter\n"
    )
    block = regen._extract_block(text, (7, 3))
    assert block.startswith("   3    7 : stol = 1 or 2\n") and block.endswith("Z: 1 2 3\n")
    with pytest.raises(regen.RenderError):
        regen._extract_block(text, (3, 7))


def _committed(case: str, variant: str = "pinned") -> regen.Rendered:
    g = load_golden(case, variant)
    files = {n: (g.directory / n).read_bytes() for n in g.entry["files"]}
    return regen.Rendered(case=g.case, variant=variant, files=files, entry=dict(g.entry), image=g.image)


def test_diff_rendered_content_comparison():
    new = _committed("mosflm_default")
    d = golden_dir() / "pinned" / "mosflm_default"
    old_entry = load_manifest()["entries"]["pinned/mosflm_default"]
    assert regen.diff_rendered(new, old_entry, d) == []
    img = new.image.copy()
    img[3, 4] *= 2
    new.files["image.npz"] = npz_bytes({"image": img})
    new.files["stdout.txt"] += b"x"
    new.entry["traced_pixels"] = [[1, 1]]
    diffs = regen.diff_rendered(new, old_entry, d)
    assert any(s.startswith("traced_pixels") for s in diffs)
    assert any("image.npz[image]: 1 values differ" in s for s in diffs)
    assert "stdout.txt: content differs" in diffs
    assert regen.diff_rendered(new, None, d) == ["no committed golden"]


def test_manifest_dump_roundtrip(tmp_path):
    m = load_manifest()
    regen._save_manifest(m, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()) == m


def test_provenance_needs_env(monkeypatch):
    monkeypatch.delenv("NB_C_BIN", raising=False)
    with pytest.raises(regen.RenderError, match="NB_C_BIN"):
        regen.Provenance.from_env("pinned")
    monkeypatch.setenv("NB_C_FIXED_BIN", "/nonexistent/nanoBragg")
    with pytest.raises(regen.RenderError, match="not a file"):
        regen.Provenance.from_env("fixed")


def test_regen_tool_lists_cases_without_binary():
    out = subprocess.run(
        [sys.executable, str(repo_root() / "tools" / "regen_goldens.py"), "--list", "--tag", "noise"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "noise_low" in out.stdout and "mosflm_default" not in out.stdout


# ---------------------------------------------------------------------------------- with the C binary


@pytest.mark.needs_c
@pytest.mark.parametrize("case", ["mosflm_default", "mask", "sourcefile", "quirk_phi0_multistep"])
def test_binary_reproduces_committed_golden(case):
    prov = regen.Provenance.from_env("pinned", require_source=False)
    new = regen.render_case(CASES[case], "pinned", prov)
    old = load_manifest()["entries"][f"pinned/{case}"]
    assert regen.diff_rendered(new, old, golden_dir() / "pinned" / case) == []
    assert new.warnings == []


def _tmp_root(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "golden"
    shutil.copytree(golden_dir() / "pinned" / case, root / "pinned" / case)
    shutil.copytree(golden_dir() / "inputs", root / "inputs")
    shutil.copy(golden_dir() / "cases.toml", root / "cases.toml")
    key = f"pinned/{case}"
    (root / "manifest.json").write_text(
        json.dumps({"format": 1, "entries": {key: load_manifest()["entries"][key]}})
    )
    return root


@pytest.mark.needs_c
def test_check_update_cycle(tmp_path, monkeypatch):
    monkeypatch.setenv("NB_C_SRC", os.environ.get("NB_C_SRC", os.environ["NB_C_BIN"]))
    case = CASES["xtal_tophat"]
    root = _tmp_root(tmp_path, case.name)
    logs: list[str] = []
    st = regen.regenerate([case], ["pinned"], check=True, root=root, log=logs.append)
    assert st["unchanged"] == ["pinned/xtal_tophat"]
    # a golden edited consistently (file + manifest sha): --check and a plain run report it, --update fixes it
    d = root / "pinned" / case.name
    img = np.load(d / "image.npz")["image"].copy()
    img[0, 0] += 1.0
    data = npz_bytes({"image": img})
    (d / "image.npz").write_bytes(data)
    m = json.loads((root / "manifest.json").read_text())
    m["entries"]["pinned/xtal_tophat"]["files"]["image.npz"] = sha256_bytes(data)
    (root / "manifest.json").write_text(json.dumps(m))
    assert regen.regenerate([case], ["pinned"], check=True, root=root, log=logs.append)["changed"]
    assert regen.regenerate([case], ["pinned"], root=root, log=logs.append)["changed"]
    assert (d / "image.npz").read_bytes() == data  # not overwritten without --update
    assert regen.regenerate([case], ["pinned"], update=True, root=root, log=logs.append)["updated"]
    assert regen.regenerate([case], ["pinned"], check=True, root=root, log=logs.append)["unchanged"]
    assert any("image.npz[image]: 1 values differ" in line for line in logs)
