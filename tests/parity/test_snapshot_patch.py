"""tools/snapshot_patch.py: the snapshot updates of a run become a patch made in a scratch copy (the checkout
untouched), and the patch applies only at the commit it was made for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from nanobragg_torch.parity.goldens import repo_root

ROOT = repo_root()
TEST = '''
def test_value(snapshot):
    assert {"polar": 0.99412095 * (1 + 1e-5)} == snapshot
'''
SNAP = '''# serializer version: 1
# name: test_value
  dict({
    'polar': 0.99412095,
  })
# ---
'''


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout


def test_make_then_apply_at_the_same_commit_only(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "snapshot_patch.py", repo / "tools")
    (repo / "tests" / "__snapshots__" / "test_x").mkdir(parents=True)
    (repo / "tests" / "test_x.py").write_text(TEST)
    (repo / "tests" / "__snapshots__" / "test_x.ambr").write_text(SNAP)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    drift = tmp_path / "drift"
    drift.mkdir()
    (drift / "drift.json").write_text(json.dumps({"failures": [
        {"nodeid": "tests/test_x.py::test_value", "kind": "snapshot", "case": "pinned/x"}], "changes": []}))
    tool = [sys.executable, str(repo / "tools" / "snapshot_patch.py")]
    patch = tmp_path / "out" / "snapshots.patch"
    made = subprocess.run([*tool, "make", "--drift", str(drift), "--out", str(patch)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    head = _git(repo, "rev-parse", "HEAD").strip()
    text = patch.read_text()
    assert f"# head: {head}" in text and "-    'polar': 0.99412095," in text and "+    'polar': 0.9941308912" in text
    assert _git(repo, "status", "--porcelain") == ""  # the checkout is untouched
    applied = subprocess.run([*tool, "apply", str(patch)], capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert "0.9941308912" in (repo / "tests" / "__snapshots__" / "test_x.ambr").read_text()
    _git(repo, "checkout", "-q", "--", ".")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    refused = subprocess.run([*tool, "apply", str(patch)], capture_output=True, text=True)
    assert refused.returncode == 2 and f"made for commit {head}" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_no_pending_change_writes_no_patch(tmp_path):
    (tmp_path / "drift.json").write_text(json.dumps({"failures": [], "changes": []}))
    out = tmp_path / "p.patch"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "snapshot_patch.py"), "make", "--drift",
                           str(tmp_path), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and "no pending snapshot changes" in proc.stdout and not out.exists()
