#!/usr/bin/env python
"""Child process of tools/bench.py: renders one case through the Python API on command.

    python tools/bench_runner.py --dtype float32 --device cpu --threads 2 --image OUT.npy -- C-FLAGS...

It parses the flags once, prints ``BENCH_JSON {"event": "ready", ...}``, then for each line ``render`` on
stdin renders the image (build_plan + render, no autograd) and prints ``BENCH_JSON {"seconds": ...,
"render_seconds": ..., "loop_seconds": ..., "orient_seconds": ...}``: the whole call and render() alone
(a plan reused), both after the parent's other runs (an idle process: cold caches and sleeping threads);
then the per-image time of K renders back to back (a refinement or dataset loop), of the same config
(`loop_seconds`) and with a new crystal orientation each (`orient_seconds`: the misset nudged by 1e-9 rad,
so that the orientation's set-up is resolved anew and the image stays the case's). On ``quit`` (or end of
input) it saves the last image of the first kind to --image (float32 .npy) and exits. The parent interleaves
``render`` with its other runs and reads this process's peak RSS, so the RSS is per case and per dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.engine import render  # noqa: E402
from nanobragg_torch.plan import build_plan  # noqa: E402

MARK = "BENCH_JSON "


def peak_rss_kb() -> int:
    """ru_maxrss of this process (kB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def emit(obj: dict) -> None:
    print(MARK + json.dumps(obj), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# renders per loop measurement: enough for ~LOOP_SECONDS, within [LOOP_MIN, LOOP_MAX]
LOOP_SECONDS, LOOP_MIN, LOOP_MAX = 0.05, 3, 20


def reoriented(cfg, nudge: float):
    """The config with its misset turned by `nudge` rad about x: a new orientation for the set-up's caches."""
    c = cfg.crystal
    misset = tuple(c.misset) if c.misset is not None else (0.0, 0.0, 0.0)
    misset = (misset[0] + nudge, *misset[1:])
    return dataclasses.replace(cfg, crystal=dataclasses.replace(c, misset=misset))


def back_to_back(configs: list, dtype: torch.dtype, device: torch.device) -> float:
    """Mean seconds per image of build_plan + render over `configs`, one after the other."""
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for cfg in configs:
            render(build_plan(cfg, dtype, device))
    _sync(device)
    return (time.perf_counter() - t0) / len(configs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--image", type=Path, help="save the last rendered image here (.npy, float32)")
    ap.add_argument("--once", action="store_true", help="render once without waiting for commands")
    ap.add_argument("flags", nargs=argparse.REMAINDER, help="C flags (after --)")
    args = ap.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    device = torch.device(args.device)
    cfg, _ = config_from_flags(flags, cwd=os.devnull)
    emit({"event": "ready", "rss_kb": peak_rss_kb(), "threads": torch.get_num_threads(),
          "torch": torch.__version__, "device": str(device), "dtype": args.dtype})
    image = None
    nudges = 0  # orientations rendered so far
    commands = iter(["render", "quit"]) if args.once else (line.strip() for line in sys.stdin)
    for command in commands:
        if command != "render":
            break
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            plan = build_plan(cfg, dtype, device)
            _sync(device)
            t1 = time.perf_counter()
            result = render(plan)
        _sync(device)
        t2 = time.perf_counter()
        seconds, render_seconds = t2 - t0, t2 - t1
        image = result.image
        loops = min(LOOP_MAX, max(LOOP_MIN, math.ceil(LOOP_SECONDS / seconds)))
        loop_seconds = back_to_back([cfg] * loops, dtype, device)
        turned = [reoriented(cfg, (nudges + i + 1) * 1e-9) for i in range(loops)]  # never one seen before
        nudges += loops
        orient_seconds = back_to_back(turned, dtype, device)
        emit({"event": "render", "seconds": seconds, "render_seconds": render_seconds, "loop_seconds": loop_seconds,
              "orient_seconds": orient_seconds, "loops": loops, "rss_kb": peak_rss_kb(),
              "compiled": plan.compiled, "samples": plan.samples_per_pixel * int(plan.pixel_order.numel()),
              "samples_per_chunk": plan.samples_per_chunk})
    if image is not None and args.image is not None:
        np.save(args.image, image.detach().to("cpu", torch.float32).numpy())
    emit({"event": "done", "rss_kb": peak_rss_kb()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
