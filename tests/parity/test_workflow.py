"""The maintainer's loop: tox.ini names only paths that exist, the checkout is found without site-packages,
the drift summary stays short, manifest errors name the file, regen never overwrites without --update."""

from __future__ import annotations

import configparser
import json
import math
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from nanobragg_torch.parity import goldens, regen
from nanobragg_torch.parity.drift import MAX_LINES, DriftRecord, summary_lines, write_reports
from nanobragg_torch.parity.goldens import GoldenIntegrityError, golden_dir, load_manifest, repo_root

ROOT = repo_root()


def _tox_paths() -> list[tuple[str, str]]:
    """(env, path) for every repository path a tox.ini command names."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    out = []
    for section in ini.sections():
        for line in ini[section].get("commands", "").splitlines():
            for tok in shlex.split(line.replace("{posargs}", "")):
                if re.match(r"^(tests|tools|nanobragg_torch|golden|docs)(/|$)", tok):
                    out.append((section, tok))
    return out


def test_every_path_tox_names_exists():
    paths = _tox_paths()
    assert len(paths) >= 6, paths
    missing = [f"[{env}] {p}" for env, p in paths if not (ROOT / p).exists()]
    assert not missing, f"tox.ini names paths that do not exist: {missing}"


def test_tox_test_envs_point_the_suite_at_the_checkout():
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "tox.ini")
    assert "NB_REPO_ROOT = {toxinidir}" in ini["testenv"]["set_env"]
    for env in ("testenv", "testenv:quick", "testenv:cuda", "testenv:update-snapshots"):
        assert "--drift-report" in ini[env]["commands"], env


def test_repo_root_from_the_environment_and_not_from_site_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("NB_REPO_ROOT", str(tmp_path))
    assert goldens.repo_root() == tmp_path
    monkeypatch.delenv("NB_REPO_ROOT")
    # a non-editable install: no checkout beside the package; the working directory's checkout is found
    fake_pkg = tmp_path / "site-packages" / "nanobragg_torch" / "parity" / "goldens.py"
    monkeypatch.setattr(goldens, "__file__", str(fake_pkg))
    monkeypatch.chdir(ROOT / "tests")
    assert goldens.repo_root() == ROOT
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="NB_REPO_ROOT"):
        goldens.repo_root()


def test_cuda_runner_without_a_gpu_says_so_in_one_line(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the runner would run the CUDA tests")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "cuda_tests.py"), "tests/golden"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith("cuda: skipped: no CUDA device"), proc.stdout


def _records(n: int, factors: int) -> list[DriftRecord]:
    return [
        DriftRecord(f"t{i}", "image", f"pinned/case{i % 150}", factor=f"factor{i % factors}", rel=1e-5 * (1 + i),
                    pixel=(i, i), metrics={"corr": 0.99999, "sum_ratio": 1.00001})
        for i in range(n)
    ]


@pytest.mark.parametrize("n,factors", [(1, 1), (371, 1), (5000, 60)])
def test_drift_summary_is_short_whatever_the_failures(n, factors):
    lines = summary_lines(_records(n, factors), _records(n // 2, 3), "/tmp/x")
    assert 3 <= len(lines) <= MAX_LINES
    assert any("factor0" in line for line in lines)


def test_reports_are_written(tmp_path):
    import numpy as np

    recs = _records(12, 2)
    ref = np.outer(np.arange(1.0, 33.0), np.arange(1.0, 33.0))
    pictures = {recs[0].case: (recs[0], type("P", (), {"ref": ref, "ours": ref * (1 + 1e-5)})())}
    write_reports(tmp_path, recs, [], pictures)
    md = (tmp_path / "report.md").read_text()
    assert "factor0" in md and len(md.splitlines()) < 60
    page = (tmp_path / "index.html").read_text()
    # one drawn case: its three-panel figure and the two images of its blink/swipe comparer
    assert page.count("data:image/png;base64,") == 3 and "<table" in page and page.count("class=cmp ") == 1
    doc = json.loads((tmp_path / "drift.json").read_text())
    assert len(doc["failures"]) == 12


def test_unreadable_manifest_is_named(tmp_path):
    (tmp_path / "manifest.json").write_text('{"entries": {,}')
    with pytest.raises(GoldenIntegrityError, match=r"manifest\.json:1:\d+: manifest is not valid JSON"):
        load_manifest(tmp_path)
    shutil.copy(golden_dir() / "cases.toml", tmp_path / "cases.toml")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "regen_goldens.py"), "--root", str(tmp_path), "--check"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "manifest.json:1:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_changed_tokens_only():
    old = ["-lambda", "1.0", "-distance", "100", "-N", "5", "-noprogress"]
    new = ["-lambda", "1.0", "-distance", "120", "-N", "5", "-noprogress"]
    text = regen._changed_tokens("flags", old, new)
    assert text == "flags: [3] 100 -> 120"
    assert "-lambda" not in text
    assert regen._changed_tokens("traced_pixels", [[1, 2]], [[1, 3]]) == "traced_pixels: [0] [1, 2] -> [1, 3]"


_PROV = regen.Provenance("pinned", "/bin/true", "0" * 64, None, None)


def _fake_rendered(case, variant, image_bytes=b"x"):
    entry = {"case": case.name, "variant": variant, "flags": list(case.flags), "traced_pixels": [],
             "shape": [1, 1], "outputs": ["float"], "cflags": None, "files": {"stdout.txt": "0"}}
    return regen.Rendered(case=case, variant=variant, files={"stdout.txt": image_bytes}, entry=entry, image=None)


def test_regen_never_writes_into_an_existing_folder_without_update(tmp_path, monkeypatch):
    case = goldens.load_cases()[0]
    (tmp_path / "pinned" / case.name).mkdir(parents=True)
    (tmp_path / "pinned" / case.name / "stray.txt").write_text("kept")
    monkeypatch.setattr(regen.Provenance, "from_env", classmethod(lambda cls, v, require_source=True: _PROV))
    monkeypatch.setattr(regen, "render_case", lambda c, v, p, root=None, shared=None: _fake_rendered(c, v))
    log: list[str] = []
    status = regen.regenerate([case], ["pinned"], root=tmp_path, log=log.append)
    assert status["changed"] == [f"pinned/{case.name}"] and not status["new"]
    assert (tmp_path / "pinned" / case.name / "stray.txt").read_text() == "kept"
    assert any("REFUSED" in line and "--update" in line for line in log)
    status = regen.regenerate([case], ["pinned"], root=tmp_path, update=True, log=log.append)
    assert status["new"] == [f"pinned/{case.name}"]
    assert not (tmp_path / "pinned" / case.name / "stray.txt").exists()


def test_update_keeps_the_recorded_compiler_flags(tmp_path, monkeypatch):
    case = goldens.load_cases()[0]
    monkeypatch.setattr(regen.Provenance, "from_env", classmethod(lambda cls, v, require_source=True: _PROV))
    monkeypatch.setattr(regen, "render_case", lambda c, v, p, root=None, shared=None: _fake_rendered(c, v, b"a"))
    regen.regenerate([case], ["pinned"], root=tmp_path, log=lambda _: None)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["entries"][f"pinned/{case.name}"]["cflags"] = "-O2 recorded"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(regen, "render_case", lambda c, v, p, root=None, shared=None: _fake_rendered(c, v, b"b"))
    status = regen.regenerate([case], ["pinned"], root=tmp_path, update=True, log=lambda _: None)
    assert status["updated"] == [f"pinned/{case.name}"]
    assert load_manifest(tmp_path)["entries"][f"pinned/{case.name}"]["cflags"] == "-O2 recorded"
    assert not math.isnan(len(status["drift"]))
