#!/usr/bin/env python
"""GitHub Actions annotations for a test run's failures, ranked: drifted golden tests first (largest
relative drift first, naming the first divergent factor), then the other failures, at most --limit (GitHub
shows 10 per step). Each points at the test function's line.

    python tools/ci_annotate.py --junit junit.xml [--drift .tox/drift/py] [--limit 10]

Prints `::error file=...,line=...,title=...::message` workflow commands; exit 0 (bad input: 2).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _line(path: str, func: str) -> int:
    try:
        src = (ROOT / path).read_text().splitlines()
    except OSError:
        return 1
    pat = re.compile(rf"^\s*(async\s+)?def {re.escape(func)}\b")
    return next((i + 1 for i, s in enumerate(src) if pat.match(s)), 1)


def _where(nodeid: str) -> tuple[str, int]:
    path, _, rest = nodeid.partition("::")
    func = rest.split("::")[-1].split("[")[0]
    return path, _line(path, func)


def junit_failures(path: Path) -> list[tuple[str, str]]:
    """(nodeid, first line of the failure message) of each failed or errored test case."""
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as exc:
        raise SystemExit(f"ci_annotate: --junit: {path}: {exc}") from None
    out = []
    for tc in tree.iter("testcase"):
        bad = tc.find("failure")
        bad = bad if bad is not None else tc.find("error")
        if bad is None:
            continue
        cls, name = tc.get("classname", ""), tc.get("name", "")
        parts = cls.split(".")
        # classname "tests.golden.test_x" or "tests.golden.test_x.TestClass": the module is the longest prefix
        for k in range(len(parts), 0, -1):
            if (ROOT / ("/".join(parts[:k]) + ".py")).is_file():
                nodeid = "/".join(parts[:k]) + ".py::" + "::".join([*parts[k:], name])
                break
        else:
            nodeid = f"{cls}::{name}"
        msg = (bad.get("message") or bad.text or "failed").strip().splitlines()
        out.append((nodeid, msg[0][:300] if msg else "failed"))
    return out


def annotations(junit: list[tuple[str, str]], drift: list[dict], limit: int) -> list[str]:
    def rel(d: dict) -> float:
        r = d.get("rel")
        return abs(r) if isinstance(r, int | float) and math.isfinite(r) else -1.0

    out, seen = [], set()
    for d in sorted(drift, key=lambda d: -rel(d)):
        path, line = _where(d["nodeid"])
        r = f"rel {d['rel']:.2g}" if rel(d) >= 0 else "rel -"
        title = f"drift at {d.get('factor') or 'an unnamed factor'} ({r})"
        msg = f"{d['case']}: {d.get('kind', '')} test, first divergent factor {d.get('factor')}, {r}"
        if d.get("pixel"):
            msg += f" at pixel (slow, fast) {tuple(d['pixel'])}"
        out.append(f"::error file={_escape(path, True)},line={line},title={_escape(title, True)}::{_escape(msg)}")
        seen.add(d["nodeid"])
    for nodeid, msg in junit:
        if nodeid in seen:
            continue
        path, line = _where(nodeid)
        title = _escape("failed: " + nodeid.split("::")[-1], True)
        out.append(f"::error file={_escape(path, True)},line={line},title={title}::{_escape(msg)}")
    return out[:limit]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--junit", type=Path, required=True, help="pytest --junitxml file")
    ap.add_argument("--drift", type=Path, default=None, help="the run's drift report folder (drift.json)")
    ap.add_argument("--limit", type=int, default=10)
    args = ap.parse_args(argv)
    drift = []
    if args.drift is not None and (args.drift / "drift.json").is_file():
        drift = json.loads((args.drift / "drift.json").read_text()).get("failures", [])
    junit = junit_failures(args.junit) if args.junit.is_file() else []
    for line in annotations(junit, drift, args.limit):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
