#!/usr/bin/env python
"""Regenerate or check the C goldens of golden/cases.toml.

    NB_C_BIN=... NB_C_FIXED_BIN=... NB_C_SRC=... NB_C_FIXED_SRC=... NB_C_CFLAGS="..." \\
        python tools/regen_goldens.py [--case NAME]... [--tag TAG]... [--variant pinned|fixed]
                                      [--update] [--check] [--jobs N] [--make-inputs] [--list]
        python tools/regen_goldens.py --derivatives [--case NAME]... [--update]

Without --update an existing golden whose content changed is reported (CHANGED) and left alone; a new
golden is written only into a new folder. Changed goldens are summarised grouped by the first divergent
factor of their printout blocks (--drift-report DIR also writes report.md / index.html). --update keeps
an entry's recorded compiler flags unless NB_C_CFLAGS gives new ones. --check renders everything again
and writes nothing: it reports every golden the binaries no longer reproduce (exit 1), naming only the
flag tokens that changed. After writing goldens it updates golden/sensitivity.json (which golden sees which
factor: tests/golden/sensitivity.py) for the goldens written, and drops the entries of goldens that no longer
exist (--no-sensitivity skips that). The C binary is only ever run, from the paths in
NB_C_BIN (pinned) and NB_C_FIXED_BIN (fixed); NB_C_SRC / NB_C_FIXED_SRC are read only for their sha256.
See docs/golden.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nanobragg_torch.parity.drift import DriftRecord, summary_lines, write_reports  # noqa: E402
from nanobragg_torch.parity.goldens import (  # noqa: E402
    VARIANTS,
    GoldenIntegrityError,
    golden_dir,
    load_cases,
    load_manifest,
)
from nanobragg_torch.parity.regen import RenderError, orphans, regenerate  # noqa: E402


def _summary(drift: list[str], args) -> None:
    """The changed goldens grouped by first divergent factor (the pytest drift summary's format)."""
    if not drift:
        return
    records = []
    for line in drift:
        key, factor, rel = line.rsplit(" ", 2)
        r = float(rel)
        records.append(
            DriftRecord(key, "update", key, factor=factor, rel=r, change=f"{r:+.1e}" if math.isfinite(r) else "")
        )
    noun = "goldens" if args.update else "goldens (pending, not written)"
    print("\n" + "\n".join(summary_lines([], records, args.drift_report, noun)))
    if args.drift_report:
        write_reports(args.drift_report, [], records)


def _update_sensitivity(keys: list[str], root: Path) -> None:
    """golden/sensitivity.json for the goldens just written (our renders, no C), the rest kept; entries of
    goldens no longer in the manifest dropped."""
    sys.path.insert(0, str(ROOT / "tests" / "golden"))
    import sensitivity

    t0 = time.time()
    fresh = sensitivity.compute(sorted(keys))
    data = sensitivity.load(root) if sensitivity.path(root).is_file() else fresh
    entries = set(load_manifest(root).get("entries", {}))
    for section in ("goldens", "skipped"):
        data[section] = {k: v for k, v in {**data[section], **fresh[section]}.items() if k in entries}
    data["summary"] = sensitivity.summarize(data["goldens"])
    sensitivity.write(data, root)
    print(f"sensitivity map: {len(keys)} goldens in {time.time() - t0:.0f} s -> {sensitivity.path(root)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", default=[], help="only this case (repeatable)")
    ap.add_argument("--tag", action="append", default=[], help="only cases with this tag (repeatable)")
    ap.add_argument("--variant", choices=VARIANTS, action="append", help="only this C build (repeatable)")
    ap.add_argument("--update", action="store_true", help="overwrite goldens whose content changed")
    ap.add_argument("--check", action="store_true", help="re-render and compare only; write nothing")
    ap.add_argument("--jobs", type=int, default=2, help="parallel C runs (default 2)")
    ap.add_argument("--root", type=Path, default=None, help="golden directory (default: golden/)")
    ap.add_argument("--shared", type=Path, default=None, help="shared data dir (default: $NB_SHARED_DATA)")
    ap.add_argument(
        "--make-inputs",
        action="store_true",
        help="(re)write golden/inputs with tools/golden_inputs.py first (with --check: verify them)",
    )
    ap.add_argument("--list", action="store_true", help="list the selected cases and exit")
    ap.add_argument("--derivatives", action="store_true",
                    help="the derivative goldens of golden/derivatives.toml instead (fixed C at p +- h, +- 2h)")
    ap.add_argument("--no-sensitivity", action="store_true",
                    help="do not update golden/sensitivity.json for the goldens written")
    ap.add_argument(
        "--drift-report",
        metavar="DIR",
        help="write DIR/report.md, index.html and drift.json: the changed goldens grouped by factor",
    )
    args = ap.parse_args(argv)
    if args.update and args.check:
        ap.error("--update and --check exclude each other")

    root = args.root or golden_dir()
    if args.derivatives:
        from nanobragg_torch.parity.derivgold import regenerate_derivatives

        return 1 if regenerate_derivatives(root, args.case or None, update=args.update) else 0
    try:
        load_manifest(root)
        cases = load_cases(root / "cases.toml")
    except (GoldenIntegrityError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = {c.name for c in cases}
    unknown = [n for n in args.case if n not in names]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}")
    if args.case:
        cases = [c for c in cases if c.name in args.case]
    if args.tag:
        cases = [c for c in cases if set(args.tag) & set(c.tags)]
    if args.list:
        for c in cases:
            print(f"{c.name:<40s} {','.join(c.variants):<13s} {c.size:<5s} {' '.join(c.tags)}")
        return 0

    bad_inputs: list[str] = []
    if args.make_inputs:
        import golden_inputs

        bad_inputs = golden_inputs.write_inputs(root / "inputs", check=args.check)
        print(f"inputs {'differing' if args.check else 'written'}: {', '.join(bad_inputs) or '-'}")

    t0 = time.time()
    try:
        status = regenerate(
            cases,
            args.variant,
            update=args.update,
            check=args.check,
            root=root,
            shared=args.shared,
            jobs=args.jobs,
        )
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _summary(status.pop("drift", []), args)
    counts = ", ".join(f"{k} {len(v)}" for k, v in status.items() if v)
    print(f"\n{sum(len(v) for v in status.values())} goldens in {time.time() - t0:.0f} s: {counts}")
    if not args.case and not args.tag and not args.variant:
        stray = orphans(load_cases(root / "cases.toml"), root)
        if stray:
            print("orphan goldens (no case): " + ", ".join(stray))
    written = status["new"] + status["updated"]
    if written and not args.check and not args.no_sensitivity:
        _update_sensitivity(written, root)
    failed = status["changed"] + status["error"] + status["missing"]
    if args.check:
        print(
            "check: "
            + (
                "all goldens reproduced"
                if not failed and not bad_inputs
                else f"{len(failed)} golden(s) not reproduced"
            )
        )
    return 1 if (failed or (args.check and bad_inputs)) else 0


if __name__ == "__main__":
    sys.exit(main())
