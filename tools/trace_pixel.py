#!/usr/bin/env python
"""Write our per-pixel trace (TRACE_PY lines) for one pixel of a golden case or of any C command line.

    python tools/trace_pixel.py --case NAME [--variant pinned|fixed] [--pixel SLOW FAST] [--out FILE]
                                [--dtype float64|float32] [--device cpu|cuda]
    python tools/trace_pixel.py --pixel SLOW FAST [--out FILE] -- C-FLAGS...
    python tools/trace_pixel.py --c-order --pixel FAST SLOW ...      (the C's -printout_pixel order)

Pixels are (slow, fast), as -trace_pixel and the TRACE_PY lines; the C's -printout_pixel takes (fast, slow):
``--c-order`` reads --pixel in the C's order. The trace opens with a comment stating both orders, stderr
gets the exact C command for the same pixel, and a nearly dark pixel (often a swapped order) is flagged.

The trace is the engine's own evaluation of the pixel inside a full render (engine.render(trace_pixel=)),
so ``I_pixel_final`` is the image's value. ``--variant pinned`` (the default) renders with --c-compat, as the
pinned C build behaves; ``fixed`` renders our default behaviour. Without --pixel a golden case traces the
first pixel its golden traced. With --out FILE the trace goes to FILE and the run's environment (versions,
git sha, device, dtype, threads, date, flags) to FILE.env.json; without it the trace goes to stdout. Compare
with the C: ``tools/compare_traces.py --c-log golden/<variant>/<case>/printout_s<S>_f<F>.txt --c-stdout
golden/<variant>/<case>/stdout.txt --py-log FILE`` (printed on stderr for a golden case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nanobragg_torch.cflags import strip_own_flags  # noqa: E402
from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.engine import render  # noqa: E402
from nanobragg_torch.parity.goldens import get_case, golden_dir, has_golden, load_golden, shared_data_dir  # noqa: E402
from nanobragg_torch.plan import build_plan  # noqa: E402
from nanobragg_torch.trace import dark_note, format_trace, order_note, pixel_trace  # noqa: E402


def git_sha() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def environment(device: torch.device, dtype: str) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "platform": platform.platform(), "git_sha": git_sha(), "device": str(device), "dtype": dtype,
           "threads": torch.get_num_threads(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def resolve(args: argparse.Namespace) -> tuple[list[str], tuple[int, int], dict]:
    """(argv for config_from_flags, pixel (slow, fast), provenance) from --case or the raw flags."""
    raw = args.flags[1:] if args.flags[:1] == ["--"] else list(args.flags)
    if args.case:
        if raw:
            raise SystemExit("give either --case or raw flags after --, not both")
        case = get_case(args.case)
        argv = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
        for rel in case.shared_files():
            if not (shared_data_dir() / rel).exists():
                raise SystemExit(f"shared input {rel} not found under {shared_data_dir()} (set NB_SHARED_DATA)")
        if args.variant == "pinned":
            argv.append("--c-compat")
        pixel = tuple(args.pixel) if args.pixel else None
        info = {"case": case.name, "variant": args.variant}
        if has_golden(case, args.variant):
            golden = load_golden(case, args.variant)
            pixel = pixel or golden.traced_pixels[0]
            p = golden.directory / f"printout_s{pixel[0]}_f{pixel[1]}.txt"
            if p.exists():
                info["c_printout"] = str(p)
                info["c_stdout"] = str(golden.directory / "stdout.txt")
        if pixel is None:
            raise SystemExit(f"case {case.name} has no {args.variant} golden: give --pixel SLOW FAST")
        return argv, (int(pixel[0]), int(pixel[1])), info
    if not raw:
        raise SystemExit("give --case NAME or C flags after --")
    if not args.pixel:
        raise SystemExit("give --pixel SLOW FAST")
    return raw, (int(args.pixel[0]), int(args.pixel[1])), {}


def trace_text(argv: list[str], pixel: tuple[int, int], dtype: str, device: torch.device) -> tuple[str, dict]:
    """(TRACE_PY lines, {"trace": factors, "image_value": the rendered pixel}) of one pixel."""
    cfg, _ = config_from_flags(argv, cwd=os.devnull)  # cwd: no stray Fdump.bin is picked up
    d = cfg.detector
    if not (0 <= pixel[0] < d.spixels and 0 <= pixel[1] < d.fpixels):
        raise SystemExit(f"pixel (slow, fast) {pixel} is outside the {d.spixels} x {d.fpixels} detector")
    plan = build_plan(cfg, torch.float64 if dtype == "float64" else torch.float32, device)
    with torch.no_grad():
        result = render(plan, trace_pixel=pixel)
    if result.trace is None:
        raise SystemExit(f"pixel {pixel} is not rendered (outside the ROI or masked)")
    trace = pixel_trace(result)
    text = (order_note(*pixel) + f"\nTRACE_PY: pixel {pixel[0]} {pixel[1]}\n"
            + format_trace(trace, plan.dtype, plan.device) + "\n")
    value = float(result.image[pixel].double())
    dark = dark_note(value, float(result.image.max()))
    return text + (dark + "\n" if dark else ""), {"trace": trace, "image_value": value, "dark": dark}


def c_command(flags: list[str], pixel: tuple[int, int]) -> str:
    """The C command that prints the same pixel (-printout_pixel takes fast, slow)."""
    c_flags = strip_own_flags(flags)
    program = os.environ.get("NB_C_BIN", "nanoBragg")
    return shlex.join([program, *c_flags, "-printout", "-printout_pixel", str(pixel[1]), str(pixel[0])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", help="golden case name (golden/cases.toml)")
    ap.add_argument("--variant", choices=("pinned", "fixed"), default="pinned",
                    help="pinned: render with --c-compat (default); fixed: our default behaviour")
    ap.add_argument("--pixel", type=int, nargs=2, metavar=("SLOW", "FAST"),
                    help="the pixel, slow then fast (with --c-order: fast then slow, as the C's -printout_pixel)")
    ap.add_argument("--c-order", action="store_true", help="--pixel is given as FAST SLOW (the C's order)")
    ap.add_argument("--out", type=Path, help="trace file (TRACE_PY lines); FILE.env.json is written beside it")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("flags", nargs=argparse.REMAINDER, help="C flags after --")
    args = ap.parse_args(argv)
    if args.c_order and args.pixel:
        args.pixel = args.pixel[::-1]
    device = torch.device(args.device)
    flags, pixel, info = resolve(args)
    text, values = trace_text(flags, pixel, args.dtype, device)
    final = values["trace"]["I_pixel_final"]
    print(f"pixel (slow, fast) {pixel}: I_pixel_final {final!r}, image value {values['image_value']!r}",
          file=sys.stderr)
    if values["dark"]:
        print(values["dark"][2:], file=sys.stderr)
    print(f"the same pixel from the C: {c_command(flags, pixel)}", file=sys.stderr)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        env = environment(device, args.dtype)
        env.update(info, pixel=list(pixel), flags=flags, I_pixel_final=final, image_value=values["image_value"])
        Path(str(args.out) + ".env.json").write_text(json.dumps(env, indent=1) + "\n")
        print(f"wrote {args.out} and {args.out}.env.json", file=sys.stderr)
    if "c_printout" in info:
        print(f"compare: python tools/compare_traces.py --c-log {info['c_printout']} --c-stdout "
              f"{info['c_stdout']} --py-log {args.out or 'TRACE_FILE'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
