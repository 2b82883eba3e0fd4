#!/usr/bin/env python
"""The snapshot updates a test run would make, as a patch a reviewer applies without re-running anything.

    python tools/snapshot_patch.py make --drift .tox/drift/py --out DIR/snapshots.patch
    python tools/snapshot_patch.py apply snapshots.patch       # in a clone at the same commit

make: reads the run's drift report (drift.json), re-runs only its failed snapshot tests with
--snapshot-update in a scratch copy of the committed tree (git archive HEAD; the checkout is not touched)
and writes their changes as a git patch whose header records the commit (HEAD) it applies to. No
pending snapshot change: no patch, exit 0.

apply: checks that HEAD is the commit the patch was made for (a patch from CI applies exactly what CI saw,
or nothing), then `git apply`. Exit status 0, 1 when the scratch run fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# nanobragg-torch snapshot patch"


def _git(*args: str, cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, **kw)


def pending_nodeids(drift: Path) -> list[str]:
    path = drift / "drift.json"
    if not path.is_file():
        raise SystemExit(f"snapshot_patch: --drift: {path} not found (pytest --drift-report DIR writes it)")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise SystemExit(f"snapshot_patch: {path}: not valid JSON ({exc})") from None
    return sorted({d["nodeid"] for d in doc.get("failures", []) if d.get("kind") == "snapshot"})


def make(drift: Path, out: Path) -> int:
    nodeids = pending_nodeids(drift)
    if not nodeids:
        print("no pending snapshot changes: no patch written")
        return 0
    head = _git("rev-parse", "HEAD").stdout.strip()
    with tempfile.TemporaryDirectory(prefix="nb_snapshots_") as tmp:
        scratch = Path(tmp) / "tree"
        scratch.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        for args in (("init", "-q"), ("add", "-A"), ("-c", "user.name=ci", "-c", "user.email=ci@localhost",
                                                     "commit", "-q", "-m", "head")):
            _git(*args, cwd=scratch, check=True)
        env = {**os.environ, "NB_REPO_ROOT": str(scratch)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nanobragg_torch.parity.drift",
               "--snapshot-update", *nodeids]
        proc = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-2000:], file=sys.stderr)
            print(f"snapshot_patch: the update run failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        diff = _git("diff", "--binary", "--", "*__snapshots__*", cwd=scratch).stdout
    if not diff:
        print(f"the {len(nodeids)} failed snapshot tests changed no snapshot file: no patch written")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    files = len(re.findall(r"^diff --git ", diff, flags=re.M))
    out.write_text(f"{HEADER}\n# head: {head}\n# tests: {len(nodeids)}\n{diff}")
    print(f"{out}: {files} snapshot files changed by {len(nodeids)} tests, for commit {head}")
    return 0


def apply(patch: Path) -> int:
    if not patch.is_file():
        print(f"snapshot_patch: {patch}: no such file", file=sys.stderr)
        return 2
    text = patch.read_text()
    m = re.search(r"^# head: ([0-9a-f]{40})$", text, flags=re.M)
    if not text.startswith(HEADER) or m is None:
        print(f"snapshot_patch: {patch}:1: not a snapshot patch (no '{HEADER}' header)", file=sys.stderr)
        return 2
    head = _git("rev-parse", "HEAD").stdout.strip()
    if m.group(1) != head:
        print(f"snapshot_patch: {patch}:2: made for commit {m.group(1)}, this checkout is at {head}; "
              f"check out {m.group(1)[:12]} first", file=sys.stderr)
        return 2
    check = _git("apply", "--check", str(patch.resolve()))
    if check.returncode != 0:
        print(f"snapshot_patch: {patch}: does not apply: {check.stderr.strip().splitlines()[0]}", file=sys.stderr)
        return 2
    _git("apply", str(patch.resolve()), check=True)
    n = len(re.findall(r"^diff --git ", text, flags=re.M))
    print(f"applied {n} snapshot changes; review with `git diff`, then commit")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    mk = sub.add_parser("make", help="write the patch of a run's pending snapshot updates")
    mk.add_argument("--drift", type=Path, required=True, help="the run's drift report folder (drift.json)")
    mk.add_argument("--out", type=Path, required=True, help="the patch file to write")
    ap_ = sub.add_parser("apply", help="apply a patch made for this checkout's commit")
    ap_.add_argument("patch", type=Path)
    args = ap.parse_args(argv)
    return make(args.drift, args.out) if args.what == "make" else apply(args.patch)


if __name__ == "__main__":
    sys.exit(main())
