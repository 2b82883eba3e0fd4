"""The compiled-kernel cache is keyed on content: every module the kernel reaches, torch, device, dtype, variant.

A package records its variant; one that does not match (copied from another variant, damaged) is rebuilt,
never run; a package that fails to load is rebuilt once, then the render falls back to eager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nanobragg_torch import compiled
from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.plan import build_plan

PACKAGE = Path(compiled.__file__).resolve().parent
BASE = "-cell 100 100 100 90 90 90 -default_F 100 -N 3 -lambda 1 -distance 100 -detpixels 12 -pixel 0.1"


@pytest.fixture
def package_copy(tmp_path) -> Path:
    root = tmp_path / "src" / "nanobragg_torch"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_walk_finds_every_module_the_kernel_imports():
    names = {p.relative_to(PACKAGE).as_posix() for p in compiled.kernel_modules()}
    # kernel.py's own imports, and theirs (structure_factors imports config)
    assert {"kernel.py", "compiled.py", "vectors.py", "lattice.py", "polarization.py", "structure_factors.py",
            "config.py"} <= names
    assert "cli.py" not in names and "engine.py" not in names and "plan.py" not in names


def test_key_changes_when_any_reached_module_changes(package_copy):
    """Edit each module of the walk in a copy: the key changes every time; an unrelated module does not."""
    base = compiled.source_digest(package_copy)
    modules = compiled.kernel_modules(package_copy)
    assert len(modules) >= 7
    for path in modules:
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert compiled.source_digest(package_copy) != base, path.name
        path.write_bytes(original)
    assert compiled.source_digest(package_copy) == base
    cli = package_copy / "cli.py"
    cli.write_bytes(cli.read_bytes() + b"\n# edited\n")
    assert compiled.source_digest(package_copy) == base


def test_walk_follows_a_new_import(package_copy):
    """The module list is computed: a helper the kernel starts to import joins the key without a hand list."""
    helper = package_copy / "newhelper.py"
    helper.write_text("SCALE = 1.0\n")
    assert helper not in compiled.kernel_modules(package_copy)
    vectors = package_copy / "vectors.py"
    vectors.write_text(vectors.read_text() + "\nfrom .newhelper import SCALE  # noqa\n")
    assert helper in compiled.kernel_modules(package_copy)
    before = compiled.source_digest(package_copy)
    helper.write_text("SCALE = 2.0\n")
    assert compiled.source_digest(package_copy) != before


def _plan(flags: str = BASE, dtype=torch.float64):
    cfg, _ = config_from_flags(flags.split(), cwd=os.devnull)
    return build_plan(cfg, dtype, "cpu", compile=True)


def _fake_package(path: Path, name: str, content: bytes = b"package bytes") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    compiled._record_path(path).write_text(json.dumps(compiled._record(path, name)))


def test_record_checks_variant_sources_and_bytes(monkeypatch, tmp_path):
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    p64, p32 = _plan(), _plan(dtype=torch.float32)
    path64 = compiled.package_path(p64.kernel.spec, p64.kernel.inputs)
    name64 = compiled.variant(p64.kernel.spec, p64.kernel.inputs)
    name32 = compiled.variant(p32.kernel.spec, p32.kernel.inputs)
    assert name64 != name32 and name64.endswith("float64-cpu")
    _fake_package(path64, name64)
    assert compiled.package_matches(path64, name64)
    _fake_package(path64, name32)  # a float32 package (and its record) copied under the float64 name
    assert not compiled.package_matches(path64, name64)
    _fake_package(path64, name64)
    path64.write_bytes(b"damaged")  # bytes changed after the record
    assert not compiled.package_matches(path64, name64)
    compiled._record_path(path64).unlink()  # no record at all
    assert not compiled.package_matches(path64, name64)
    _fake_package(path64, name64)
    monkeypatch.setattr(compiled, "_DIGEST", lambda: "other-sources")
    assert not compiled.package_matches(path64, name64)


def test_verified_packages_are_hashed_once_per_file_version(monkeypatch, tmp_path):
    """A package is hashed once per process while its files stay the same (2 ms per plan otherwise); a file
    replaced since, or young enough to be rewritten within its mtime tick, is checked again."""
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    plan = _plan()
    path = compiled.package_path(plan.kernel.spec, plan.kernel.inputs)
    name = compiled.variant(plan.kernel.spec, plan.kernel.inputs)
    _fake_package(path, name)
    assert compiled.package_matches(path, name) and path not in compiled._VERIFIED  # young: not remembered
    old = time.time() - 60
    for f in (path, compiled._record_path(path)):
        os.utime(f, (old, old))
    assert compiled.package_matches(path, name) and path in compiled._VERIFIED
    hashed = []
    monkeypatch.setattr(compiled, "_record", lambda p, n: hashed.append(p) or {})
    assert compiled.package_matches(path, name) and not hashed  # remembered: no hashing
    monkeypatch.undo()
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    other = tmp_path / "other.pt2"
    other.write_bytes(b"other bytes")
    os.replace(other, path)  # a new file under the name, its record unchanged
    assert not compiled.package_matches(path, name)


def test_mismatched_package_is_rebuilt_not_run(monkeypatch, tmp_path):
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    plan = _plan()
    p32 = _plan(dtype=torch.float32)
    path = compiled.package_path(plan.kernel.spec, plan.kernel.inputs)
    _fake_package(path, compiled.variant(p32.kernel.spec, p32.kernel.inputs))
    calls = []

    def build(spec, inputs, flat_idx, target):
        calls.append("build")
        _fake_package(target, compiled.variant(spec, inputs), b"rebuilt")

    def load(target):
        calls.append(("load", target.read_bytes()))
        return _EagerRunner(plan)

    monkeypatch.setattr(compiled, "build_package", build)
    monkeypatch.setattr(compiled, "load_package", load)
    with torch.no_grad():
        image = render(plan).image
    assert calls == ["build", ("load", b"rebuilt")]
    torch.testing.assert_close(image, render(build_plan(plan.cfg, torch.float64, "cpu", compile=False)).image)


def test_damaged_package_is_rebuilt_once(monkeypatch, tmp_path):
    """A package whose record matches but which fails to load is rebuilt once; if the rebuilt one fails too,
    the render goes eager with a warning (no endless rebuilding)."""
    monkeypatch.setenv("NB_KERNEL_CACHE", str(tmp_path))
    plan = _plan()
    path = compiled.package_path(plan.kernel.spec, plan.kernel.inputs)
    _fake_package(path, compiled.variant(plan.kernel.spec, plan.kernel.inputs))
    calls = []

    def build(spec, inputs, flat_idx, target):
        calls.append("build")
        _fake_package(target, compiled.variant(spec, inputs), b"rebuilt")

    def load(target):
        calls.append("load")
        raise RuntimeError("bad zip")

    monkeypatch.setattr(compiled, "build_package", build)
    monkeypatch.setattr(compiled, "load_package", load)
    with pytest.warns(RuntimeWarning) as warned, torch.no_grad():
        image = render(plan).image
    assert calls == ["load", "build", "load"]
    assert plan.kernel.mode == "eager"
    assert any("rebuilding" in str(w.message) for w in warned)
    assert any("rendering eager" in str(w.message) for w in warned)
    assert torch.isfinite(image).all()


class _EagerRunner:
    """Stands in for a loaded package: runs the eager kernel."""

    def __init__(self, plan) -> None:
        self.spec = plan.kernel.spec

    def run(self, args):
        from nanobragg_torch.kernel import KernelInputs, pixel_kernel

        return list(pixel_kernel(self.spec, KernelInputs(*args[1:]), args[0]))


STALE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.engine import render
    from nanobragg_torch.plan import build_plan
    cfg, _ = config_from_flags(sys.argv[2].split(), cwd=".")
    with torch.no_grad():
        plan = build_plan(cfg, torch.float64, "cpu", compile=sys.argv[1] == "compiled")
        image = render(plan).image
    print(plan.kernel.mode, repr(float(image.sum())))
    """
)


@pytest.mark.slow
def test_stale_kernel_reproduction(package_copy, tmp_path):
    """The issue's reproduction: build a package, edit a helper the kernel imports (vectors.rotate_axis_xyz,
    used by the curved detector), render compiled and eager: they agree (the edit gave a new package)."""
    flags = f"{BASE} -curved_det -detector_rotx 3 -twotheta 5"
    env = {**os.environ, "PYTHONPATH": str(package_copy.parent), "NB_KERNEL_CACHE": str(tmp_path / "kernels"),
           "OMP_NUM_THREADS": "2"}
    env.pop("NB_COMPILE", None)

    def run(mode: str) -> tuple[str, float]:
        out = subprocess.run([sys.executable, "-c", STALE_SCRIPT, mode, flags], env=env, capture_output=True,
                             text=True, timeout=900, cwd=tmp_path, check=True)
        kind, total = out.stdout.split()[-2:]
        return kind, float(total)

    before = run("compiled")
    assert before[0] == "aot"
    vectors = package_copy / "vectors.py"
    text = vectors.read_text()
    assert "def rotate_axis_xyz" in text
    vectors.write_text(text + textwrap.dedent(
        """
        _original_rotate_axis_xyz = rotate_axis_xyz


        def rotate_axis_xyz(v, axis, phi):  # the edit: a 1.5x larger rotation
            return _original_rotate_axis_xyz(v, axis, phi * 1.5)
        """
    ))
    compiled_after, eager_after = run("compiled"), run("eager")
    assert compiled_after[0] == "aot" and eager_after[0] == "eager"
    assert eager_after[1] != pytest.approx(before[1], rel=1e-6)  # the edit changes the image
    assert compiled_after[1] == pytest.approx(eager_after[1], rel=1e-10)
    assert len(list((tmp_path / "kernels").iterdir())) == 2  # one cache folder per source digest
