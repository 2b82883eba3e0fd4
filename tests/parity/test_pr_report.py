"""tools/pr_report.py on synthetic git repositories: snapshots and C goldens changed, new and deleted, counted
apart and grouped by factor; golden image metrics computed from the arrays; the comment stays under 60,000
characters with 10,000 changed goldens; no change and no base said plainly; bad revisions exit 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from nanobragg_torch.parity import prreport
from nanobragg_torch.parity.fingerprint import fingerprint
from nanobragg_torch.parity.goldens import repo_root
from nanobragg_torch.parity.prreport import COMMENT_LIMIT, MARKER, SUMMARY_LIMIT, build_report, image_metrics

ROOT = repo_root()
SNAP = "tests/golden/__snapshots__/test_golden_parity"


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def _commit(repo, files: dict[str, bytes | str | None], message: str):
    for rel, data in files.items():
        p = repo / rel
        if data is None:
            p.unlink()
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)


def _fast_import(repo, commits: list[tuple[str, dict[str, str]]]):
    """Commits of whole trees in one `git fast-import` (10,000 files in a second); each on its own branch,
    the second a child of the first."""
    out = []
    for i, (branch, files) in enumerate(commits):
        out.append(f"commit refs/heads/{branch}\ncommitter t <t@t> {1700000000 + i} +0000\ndata 1\nc\n")
        if i:
            out.append(f"from refs/heads/{commits[i - 1][0]}\n")
        out.append("deleteall\n")
        for path, text in files.items():
            out.append(f"M 100644 inline {path}\ndata {len(text.encode())}\n{text}\n")
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input="".join(out).encode(), check=True)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _fp(case: str, polar: float, scale: float = 1.0) -> str:
    trace = {"omega_pixel": 3.9e-6, "polar": polar, "I_pixel_final": 598.7 * polar}
    image = np.arange(64, dtype=np.float64).reshape(8, 8) * scale
    return fingerprint(f"{case} float64", trace=trace, image=image)


def _entry(case, variant, files, binary="a" * 64, flags=("-N", "5")):
    return {"case": case, "variant": variant, "flags": list(flags), "files": files, "c_binary_sha256": binary,
            "c_binary_env": "NB_C_BIN", "cflags": "-O2"}


@pytest.fixture
def repo(tmp_path):
    """main: three snapshots, three goldens; branch: polar +1e-5 in two snapshots, one new and one deleted
    snapshot; golden g1's image changed (one pixel NaN), g2 deleted, g3 new, g0 unchanged."""
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q", "-b", "main")
    rng = np.random.default_rng(1)
    img = rng.random((16, 16)).astype(np.float32) * 100
    base_files = {f"{SNAP}/test_fingerprint_snapshot[pinned-c{i}].txt": _fp(f"pinned/c{i}", 0.99) for i in range(3)}
    manifest = {"format": 1, "entries": {
        f"pinned/g{i}": _entry(f"g{i}", "pinned", {"image.npz": f"{i}" * 64}) for i in range(3)}}
    base_files["golden/manifest.json"] = json.dumps(manifest)
    for i in range(3):
        base_files[f"golden/pinned/g{i}/image.npz"] = _npz(image=img)
    _commit(r, base_files, "base")
    _git(r, "checkout", "-q", "-b", "branch")
    changed = img.copy()
    changed[3, 4] *= 1.5
    changed[5, 5] = np.nan
    manifest["entries"]["pinned/g1"]["files"]["image.npz"] = "f" * 64
    manifest["entries"]["pinned/g1"]["flags"] = ["-N", "6"]
    del manifest["entries"]["pinned/g2"]
    manifest["entries"]["pinned/g3"] = _entry("g3", "pinned", {"image.npz": "3" * 64})
    _commit(r, {
        f"{SNAP}/test_fingerprint_snapshot[pinned-c0].txt": _fp("pinned/c0", 0.99 * (1 + 1e-5)),
        f"{SNAP}/test_fingerprint_snapshot[pinned-c1].txt": _fp("pinned/c1", 0.99 * (1 + 1e-5)),
        f"{SNAP}/test_fingerprint_snapshot[pinned-c2].txt": None,
        f"{SNAP}/test_fingerprint_snapshot[pinned-c9].txt": _fp("pinned/c9", 0.5),
        "golden/manifest.json": json.dumps(manifest),
        "golden/pinned/g1/image.npz": _npz(image=changed),
        "golden/pinned/g2/image.npz": None,
        "golden/pinned/g3/image.npz": _npz(image=img),
    }, "drift")
    return r, img, changed


def test_branch_changes_grouped_by_factor(repo, tmp_path):
    r, img, changed = repo
    rep = build_report(r, "main")
    by = {(c.kind, c.case): c for c in rep.changes}
    assert by[("snapshot", "pinned/c0")].factor == "polar"
    assert by[("snapshot", "pinned/c0")].rel == pytest.approx(1e-5, rel=1e-3)
    assert by[("snapshot", "pinned/c9")].status == "new" and by[("snapshot", "pinned/c2")].status == "deleted"
    assert by[("golden", "pinned/g2")].status == "deleted" and by[("golden", "pinned/g3")].status == "new"
    assert ("golden", "pinned/g0") not in by
    g1 = by[("golden", "pinned/g1")]
    assert g1.status == "changed" and any("flags: [1] 5 -> 6" in d for d in g1.details)
    assert g1.metrics["nan/inf head"] == "1/0" and "nan/inf base" not in g1.metrics
    assert g1.metrics["max_abs_diff"] == pytest.approx(0.5 * float(img[3, 4]), rel=1e-6)
    assert g1.metrics["beyond_tol"] == 1
    assert "pinned/g1" in rep.pictures
    out = tmp_path / "out"
    sizes = prreport.write_outputs(rep, out)
    comment = (out / "comment.md").read_text()
    assert comment.startswith(MARKER) and sizes["comment.md"] < COMMENT_LIMIT
    assert "| snapshots | `polar` | 2 | 0 | 0 | +1e-05 |" in comment
    assert "| snapshots | `(new)` | 0 | 1 | 0 |" in comment and "| snapshots | `(deleted)` | 0 | 0 | 1 |" in comment
    assert "tox -e review -- --accept polar" in comment and rep.merge_base[:12] in comment
    page = (out / "index.html").read_text()
    assert "golden: pinned/g1: base | head | difference" in page
    assert page.count("data:image/png;base64,") == 3  # g1: figure and the two comparer images


def test_nothing_changed_and_no_base_are_said_plainly(repo, tmp_path):
    r, _, _ = repo
    rep = build_report(r, "branch", "branch")
    assert rep.changes == []
    text = prreport.comment_markdown(rep)
    assert "**No snapshot or golden changed**" in text
    _git(r, "checkout", "-q", "--orphan", "lonely")
    _commit(r, {"x.txt": "x"}, "unrelated")
    rep = build_report(r, "main", "lonely")
    assert rep.merge_base is None
    assert "**No base to compare with:**" in prreport.comment_markdown(rep)


def test_bad_revision_is_one_line_exit_2_and_no_output(repo, tmp_path):
    r, _, _ = repo
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "pr_report.py"), "--repo", str(r), "--base",
                           "nosuch", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "--base" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_environment_change_is_flagged(repo, tmp_path):
    r, _, _ = repo
    for name, torch in (("base", "2.13.0"), ("head", "2.14.0")):
        d = tmp_path / name
        d.mkdir()
        env = {"nanobragg-torch": "0.1.0", "torch": torch, "numpy": "2.1", "python": "3.12", "platform": "Linux"}
        (d / "drift.json").write_text(json.dumps({"failures": [], "changes": [], "environment": env}))
    rep = build_report(r, "main", drift=tmp_path / "head", base_drift=tmp_path / "base")
    text = prreport.comment_markdown(rep)
    assert "coincides with a change of torch" in text and "| torch | 2.13.0 | 2.14.0 |" in text
    assert "snapshot_patch.py apply" not in text  # the run had no failed snapshot test: CI made no patch


def test_the_patch_command_when_the_run_failed_snapshot_tests(repo, tmp_path):
    r, _, _ = repo
    fail = {"nodeid": "tests/golden/test_golden_parity.py::test_fingerprint_snapshot[pinned-c0]",
            "kind": "snapshot", "case": "pinned/c0", "factor": "polar", "rel": 1e-5}
    (tmp_path / "drift.json").write_text(json.dumps({"failures": [fail], "changes": []}))
    rep = build_report(r, "main", drift=tmp_path)
    text = prreport.comment_markdown(rep)
    assert f"snapshot_patch.py apply drift-report/snapshots.patch   # checked against {rep.head_sha[:12]}" in text
    assert "**Test run: 1 failed golden tests** in 1 cases" in text


def test_image_metrics_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0, 2.0], [3.0, 4.5]])
    m = image_metrics(a, b)
    assert m["max_abs_diff"] == 0.5 and m["rms_diff"] == pytest.approx(0.25)
    assert m["rel_l2"] == pytest.approx(0.5 / np.sqrt(30.0)) and m["beyond_tol"] == 1
    assert image_metrics(a, b.astype(np.float32))["dtype"] == "float64 -> float32"
    assert image_metrics(a, np.zeros((3, 2)))["shape"] == "(2, 2) -> (3, 2)"


def test_ten_thousand_changed_goldens_keep_the_comment_short(tmp_path):
    """10,000 changed goldens and 10,000 changed snapshots over 30 factors: comment < 60,000 characters,
    summary.md < 900 KiB, every factor counted."""
    from nanobragg_torch.parity.schema import FACTORS

    names = [n for n in FACTORS if not n.endswith("_vector")][:30]
    r = tmp_path / "repo"
    r.mkdir()
    _git(r, "init", "-q", "-b", "main")
    n = 10_000

    def snap(i: int, k: float) -> str:
        return f"fingerprint v2: pinned/case{i:05d} float64\n[trace]\n  {names[i % 30]:<18s} {k * (1 + i):.7e}\n"

    def manifest(flag: str) -> str:
        return json.dumps({"format": 1, "entries": {f"pinned/case{i:05d}": _entry(f"case{i:05d}", "pinned", {},
                                                                                flags=("-N", flag)) for i in range(n)}})

    _fast_import(r, [("main", {**{f"{SNAP}/s[pinned-case{i:05d}].txt": snap(i, 1.0) for i in range(n)},
                               "golden/manifest.json": manifest("5")}),
                     ("branch", {**{f"{SNAP}/s[pinned-case{i:05d}].txt": snap(i, 1.00001) for i in range(n)},
                                 "golden/manifest.json": manifest("6")})])
    rep = build_report(r, "main", "branch")
    assert sum(c.kind == "snapshot" for c in rep.changes) == n and sum(c.kind == "golden" for c in rep.changes) == n
    out = tmp_path / "out"
    sizes = prreport.write_outputs(rep, out)
    assert sizes["comment.md"] < COMMENT_LIMIT and sizes["summary.md"] < SUMMARY_LIMIT
    comment = (out / "comment.md").read_text()
    assert "This branch changes 10000 snapshots (10000 changed) and 10000 C goldens (10000 changed)" in comment
    assert "more factors" in comment and "+" in comment and "more |" in comment
    summary = (out / "summary.md").read_text()
    for name in names:  # the full table names every factor
        assert f"| snapshots | `{name}` | {n // 30 + (1 if names.index(name) < n % 30 else 0)} |" in summary
