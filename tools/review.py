#!/usr/bin/env python
"""Review pending snapshot and golden changes, grouped by first changed factor and case; accept all, some
or none.

    python tools/review.py [--goldens] [--accept all|none|NAME[,NAME...]] [--report DIR] [-- pytest args]
    tox -e review -- --accept polar

Snapshots: runs the fingerprint snapshot tests (pytest, no update) with a drift report and lists every
snapshot that would change, grouped by the first changed factor. ``--goldens`` does the same for the C
goldens (``tools/regen_goldens.py --check``; needs NB_C_BIN / NB_C_FIXED_BIN). ``--accept`` selects what
to update: ``all``, ``none`` (the default without a terminal), or factor names and/or case names
("variant/case" or "case"), comma separated. Accepted snapshots are rewritten with ``--snapshot-update``
on exactly their tests; accepted goldens with ``regen_goldens.py --update --case``. Without --accept on a
terminal it asks. Exit status: 0 when nothing is left pending, 1 otherwise, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobragg_torch.parity.drift import DriftRecord, group_records, summary_lines  # noqa: E402

SNAPSHOT_TESTS = "tests/golden/test_golden_parity.py"


def _records(path: Path, key: str, kind: str | None) -> list[DriftRecord]:
    doc = json.loads(path.read_text())
    out = []
    for d in doc[key]:
        if kind is not None and d["kind"] != kind:
            continue
        d["pixel"] = tuple(d["pixel"]) if d.get("pixel") else None
        out.append(DriftRecord(**d))
    return out


def pending_snapshots(report: Path, pytest_args: list[str]) -> list[DriftRecord]:
    cmd = [sys.executable, "-m", "pytest", SNAPSHOT_TESTS, "-k", "fingerprint_snapshot", "-q", "-p",
           "no:cacheprovider", "--drift-report", str(report), *pytest_args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if not (report / "drift.json").is_file():
        raise SystemExit(f"review: pytest wrote no drift report (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    return _records(report / "drift.json", "failures", "snapshot")


def pending_goldens(report: Path) -> list[DriftRecord]:
    cmd = [sys.executable, str(ROOT / "tools" / "regen_goldens.py"), "--check", "--drift-report", str(report)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 2:
        raise SystemExit(f"review: {proc.stderr.strip()}")
    if not (report / "drift.json").is_file():
        return []
    return _records(report / "drift.json", "changes", None)


def select(records: list[DriftRecord], accept: str) -> list[DriftRecord]:
    """The records ``accept`` names: "all", "none", or factor / case names, comma separated."""
    if accept == "all":
        return list(records)
    if accept in ("", "none"):
        return []
    names = {n.strip() for n in accept.split(",") if n.strip()}
    known = {r.factor for r in records} | {r.case for r in records} | {r.case.split("/", 1)[1] for r in records}
    unknown = names - known
    if unknown:
        raise SystemExit(f"review: --accept names nothing pending: {', '.join(sorted(unknown))}")
    return [r for r in records if r.factor in names or r.case in names or r.case.split("/", 1)[1] in names]


def listing(records: list[DriftRecord], what: str) -> list[str]:
    out = [f"{len(records)} pending {what} changes"]
    for factor, group in group_records(records):
        out.append(f"  {factor}: " + ", ".join(sorted(r.case for r in group)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--goldens", action="store_true", help="review the C goldens instead of the snapshots")
    ap.add_argument("--accept", default=None, help="all | none | factor and case names, comma separated")
    ap.add_argument("--report", type=Path, default=None, help="keep the drift report in this directory")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the snapshot run (after --)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nb_review_") as tmp:
        report = args.report or Path(tmp)
        what = "golden" if args.goldens else "snapshot"
        records = pending_goldens(report) if args.goldens else pending_snapshots(report, args.pytest_args)
        if not records:
            print(f"no pending {what} changes")
            return 0
        for line in listing(records, what):
            print(line)
        print("\n".join(summary_lines([], records, None, noun=f"{what}s")))
        accept = args.accept
        if accept is None:
            accept = input("accept [all / none / factor or case names]: ") if sys.stdin.isatty() else "none"
        chosen = select(records, accept)
        if chosen:
            if args.goldens:
                cmd = [sys.executable, str(ROOT / "tools" / "regen_goldens.py"), "--update"]
                for case in sorted({r.case.split("/", 1)[1] for r in chosen}):
                    cmd += ["--case", case]
            else:
                cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--snapshot-update",
                       *sorted({r.nodeid for r in chosen})]
            rc = subprocess.run(cmd, cwd=ROOT).returncode
            if rc != 0:
                print(f"review: the update command failed (exit {rc})", file=sys.stderr)
                return 2
        print(f"accepted {len(chosen)} of {len(records)} pending {what} changes")
        return 0 if len(chosen) == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
