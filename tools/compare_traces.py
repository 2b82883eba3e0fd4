#!/usr/bin/env python
"""Compare two per-pixel traces factor by factor and write a Markdown drift table.

    python tools/compare_traces.py --c-log C.txt --py-log PY.txt [--out summary.md]
                                   [--pixel SLOW FAST] [--c-stdout stdout.txt] [--rtol-scale X]

Either log may be a C ``-printout_pixel`` output (a whole stdout or just the block) or a log of our
``TRACE_PY:`` lines; the kind is detected from the content. ``--c-log`` is the reference. With
``--c-stdout`` the geometry the C prints (detector axes, beam, distance, Fbeam/Sbeam, Fclose/Sclose,
pix0 from the DIALS origin) joins the reference trace. The first divergent factor (earliest in
pipeline order) is named at the top. Exit status: 0 all within tolerance, 1 some factor drifted,
2 unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanobragg_torch.parity.compare import compare_traces  # noqa: E402
from nanobragg_torch.parity.cstdout import parse_stdout, stdout_trace  # noqa: E402
from nanobragg_torch.parity.printout import parse_any  # noqa: E402


def _label(trace, default: str) -> str:
    return {"trace-py": "PyTorch", "c-printout": "C"}.get(trace.origin, default)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--c-log", type=Path, required=True, help="reference log (C printout or TRACE_PY)")
    ap.add_argument("--py-log", type=Path, required=True, help="candidate log (TRACE_PY or C printout)")
    ap.add_argument("--out", type=Path, help="write the Markdown table here (default: stdout)")
    ap.add_argument(
        "--pixel",
        type=int,
        nargs=2,
        metavar=("SLOW", "FAST"),
        help="pick this pixel when a log holds several",
    )
    ap.add_argument("--c-stdout", type=Path, help="C stdout whose geometry joins the reference trace")
    ap.add_argument("--rtol-scale", type=float, default=1.0, help="multiply every schema rtol")
    args = ap.parse_args(argv)

    pixel = tuple(args.pixel) if args.pixel else None
    try:
        ref = parse_any(args.c_log.read_text(), pixel)
        ours = parse_any(args.py_log.read_text(), pixel)
        if args.c_stdout:
            ref = ref.merged(stdout_trace(parse_stdout(args.c_stdout.read_text())))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ref.values or not ours.values:
        print("error: a log holds no trace factors", file=sys.stderr)
        return 2
    report = compare_traces(ref, ours, rtol_scale=args.rtol_scale)
    ref_label, ours_label = _label(ref, "reference"), _label(ours, "candidate")
    if ref_label == ours_label:
        ref_label, ours_label = f"{ref_label} (ref)", f"{ours_label} (candidate)"
    where = f" pixel (slow, fast) {ref.pixel or ours.pixel}" if (ref.pixel or ours.pixel) else ""
    md = report.to_markdown(ref_label, ours_label, title=f"Trace comparison{where}")
    if args.out:
        args.out.write_text(md)
    else:
        sys.stdout.write(md)
    print(report.summary(), file=sys.stderr)
    if not report.rows:
        print("error: the two traces share no factor", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
