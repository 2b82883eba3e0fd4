#!/usr/bin/env python
"""What this branch changed, factor by factor, against the merge-base with a base revision: read from git
alone, without running the simulator.

    python tools/pr_report.py --base main [--head REV] [--drift DIR] [--base-drift DIR] --out DIR

Writes DIR/comment.md (the pull-request comment: grouped table, collapsed details per factor, commands to
reproduce and accept; under 60,000 characters), DIR/summary.md (every row; under 900 KiB, for
$GITHUB_STEP_SUMMARY), DIR/index.html (base | head | difference figures of changed golden images) and
DIR/report.json. --drift DIR merges a test run's drift report (pytest --drift-report DIR: its failures,
pending updates and environment stamp); --base-drift DIR gives the base's, so a drift that coincides with
a version change is flagged. Only committed changes count (the working tree is not read). Exit status 0,
2 on bad input (unknown revision, unreadable drift report). See docs/golden.md, "Reviewing a pull request".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobragg_torch.parity.prreport import GitError, build_report, write_outputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the revision the branch is compared with (its merge-base)")
    ap.add_argument("--head", default="HEAD", help="the branch's revision (default HEAD)")
    ap.add_argument("--drift", type=Path, default=None, help="a test run's drift report folder (drift.json)")
    ap.add_argument("--base-drift", type=Path, default=None, help="the base's drift report folder")
    ap.add_argument("--repo", type=Path, default=Path("."), help="the git checkout (default: here)")
    ap.add_argument("--link", default="", help="where readers find the full report (a CI run's URL)")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    args = ap.parse_args(argv)
    try:
        rep = build_report(args.repo, args.base, args.head, args.drift, args.base_drift)
    except (GitError, FileNotFoundError, ValueError) as exc:
        print(f"pr_report: {exc}", file=sys.stderr)
        return 2
    run_page = ""  # the test run's own drift page, linked relative to ours (as they lie in the CI artifact)
    if args.drift is not None and (args.drift / "index.html").is_file():
        run_page = os.path.relpath(args.drift.resolve() / "index.html", args.out.resolve())
    sizes = write_outputs(rep, args.out, link=args.link, run_page=run_page)
    dirty = subprocess.run(["git", "-C", str(args.repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    print(f"base {args.base} {rep.base_sha}; merge base {rep.merge_base}; head {rep.head_sha}")
    by_kind = {k: sum(1 for c in rep.changes if c.kind == k) for k in ("snapshot", "golden")}
    print(f"{by_kind['snapshot']} snapshots and {by_kind['golden']} goldens changed; "
          + ", ".join(f"{args.out / n} ({s:,} bytes)" for n, s in sizes.items()))
    if dirty:
        print("note: uncommitted changes are not part of the report (only commits are read)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
