#!/usr/bin/env python
"""GPU benchmark for tools/gpu_check.sh: samples/s of one render on CUDA (float32, float64) and on this
machine's CPU, their ratio, and the peak GPU memory.

    python tools/gpu_bench.py --json FILE [--seconds 8] [--cpu-seconds 20] [--compile 0|1]

The render is the 1024 x 1024 default detector with a cubic cell, 2 x 2 sub-pixels and 5 phi steps
(about 21 M samples). Each timing repeats the render (after one warm-up) until ``--seconds`` have passed
and keeps the best. Runs with the installed torch (no 2.13-only API): eager kernel unless --compile 1
(torch.compile on CUDA, as the package does for large renders); the CPU reference is always eager (an AOT
package build would cost a minute of the check).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.engine import render  # noqa: E402
from nanobragg_torch.plan import build_plan  # noqa: E402

FLAGS = (
    "-cell 100 100 100 90 90 90 -misset 5 10 15 -default_F 100 -N 10 -lambda 1.0 -distance 100 "
    "-detpixels 1024 -pixel 0.1 -oversample 2 -phi 0 -osc 0.5 -phisteps 5 -noprogress -nonoise -nopgm"
).split()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_render(device: str, dtype: torch.dtype, seconds: float, compile: bool | None) -> dict:
    cfg, _ = config_from_flags(FLAGS, cwd=os.devnull)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    plan = build_plan(cfg, dtype, dev, compile=compile)
    samples = plan.samples_per_pixel * int(plan.pixel_order.numel())
    with torch.no_grad():
        image = render(plan).image
        _sync(dev)
        first = time.perf_counter() - t0
        best, reps, start = float("inf"), 0, time.perf_counter()
        while reps < 1 or (time.perf_counter() - start < seconds and reps < 50):
            t = time.perf_counter()
            image = render(plan).image
            _sync(dev)
            best = min(best, time.perf_counter() - t)
            reps += 1
    out = {
        "device": device,
        "dtype": str(dtype).rsplit(".", 1)[-1],
        "kernel_mode": plan.kernel.mode if plan.kernel is not None else "none",
        "samples": samples,
        "first_call_s": first,
        "best_s": best,
        "reps": reps,
        "samples_per_s": samples / best,
        "image_sum": float(image.double().sum()),
    }
    if dev.type == "cuda":
        out["peak_gpu_mem_MiB"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--cpu-seconds", type=float, default=20.0, help="0: no CPU timing")
    ap.add_argument("--compile", choices=("0", "1"), default="0")
    args = ap.parse_args(argv)
    compile = args.compile == "1"
    rows: list[dict] = []
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "flags": " ".join(FLAGS),
        "compile": compile,
    }
    for dtype in (torch.float32, torch.float64):
        if torch.cuda.is_available():
            rows.append(time_render("cuda", dtype, args.seconds, compile))
            print(json.dumps(rows[-1]), flush=True)
        if args.cpu_seconds > 0:
            rows.append(time_render("cpu", dtype, args.cpu_seconds, False))
            print(json.dumps(rows[-1]), flush=True)
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    for dtype in ("float32", "float64"):
        gpu = [r for r in rows if r["device"] == "cuda" and r["dtype"] == dtype]
        cpu = [r for r in rows if r["device"] == "cpu" and r["dtype"] == dtype]
        if gpu and cpu:
            info[f"gpu_over_cpu_{dtype}"] = gpu[0]["samples_per_s"] / cpu[0]["samples_per_s"]
            info[f"image_rel_diff_{dtype}"] = abs(gpu[0]["image_sum"] / cpu[0]["image_sum"] - 1.0)
    args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
