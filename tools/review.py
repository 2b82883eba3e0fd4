#!/usr/bin/env python
"""Review pending snapshot and golden changes, grouped by first changed factor and case; accept all, some
or none.

    python tools/review.py [--from DIR] [--accept all|none|NAME[,NAME...]]
    python tools/review.py --goldens [--accept ...]
    tox -e review -- --accept polar

Snapshots: reads the drift report of a test run that already happened (DIR/drift.json, written by
``pytest --drift-report DIR``; every tox test env writes one into .tox/drift/<env>/; default: the newest
of those) and lists every snapshot that run found changed, grouped by the first changed factor. It does not
run the suite again. ``--goldens`` lists the C goldens the binaries no longer reproduce
(``tools/regen_goldens.py --check``; needs NB_C_BIN / NB_C_FIXED_BIN). ``--accept`` selects what to
update: ``all``, ``none`` (the default without a terminal), or factor names and/or case names ("variant/case"
or "case"), comma separated. Accepted snapshots are rewritten with ``--snapshot-update`` on exactly their
tests; accepted goldens with ``regen_goldens.py --update --case``. Without --accept on a terminal it asks.
Exit status: 0 when nothing is left pending, 1 otherwise, 2 on errors (no run to review).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobragg_torch.parity.drift import DriftRecord, group_records, summary_lines  # noqa: E402


def _records(path: Path, key: str, kind: str | None) -> list[DriftRecord]:
    doc = json.loads(path.read_text())
    out = []
    for d in doc[key]:
        if kind is not None and d["kind"] != kind:
            continue
        d["pixel"] = tuple(d["pixel"]) if d.get("pixel") else None
        out.append(DriftRecord(**d))
    return out


def latest_report(root: Path = ROOT) -> Path | None:
    """The newest drift report of a run: .tox/drift/<env>/ (where the tox test envs write theirs)."""
    found = sorted((root / ".tox" / "drift").glob("*/drift.json"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def pending_snapshots(report: Path | None) -> list[DriftRecord]:
    """The snapshot changes the run that wrote ``report`` found (its snapshot failures)."""
    if report is None or not (report / "drift.json").is_file():
        where = f"{report}/drift.json" if report is not None else ".tox/drift/*/drift.json"
        raise SystemExit(f"review: no drift report of a test run at {where}: run the tests with --drift-report "
                         "DIR (every tox test env does) and pass --from DIR")
    age = time.time() - (report / "drift.json").stat().st_mtime
    print(f"reviewing the run that wrote {report}/drift.json ({age / 60:.0f} min ago)")
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
    ap.add_argument("--from", dest="source", type=Path, default=None,
                    help="the drift report folder of the run to review (default: the newest .tox/drift/<env>)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nb_review_") as tmp:
        what = "golden" if args.goldens else "snapshot"
        if args.goldens:
            records = pending_goldens(Path(tmp))
        else:
            records = pending_snapshots(args.source or latest_report())
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
