#!/usr/bin/env python
"""Time and peak memory of a 64-panel CSPAD render in one pass against its 64 panels rendered one by one.

    python tools/bench_panels.py [--detector cspad_detector.json ...] [--dtype float32|float64] [--N 10]
                                 [--oversample 2] [--reps 2] [--compile] [--threads N] [--json FILE]

Each (detector, mode) runs in a child process (peak RSS per mode, os.wait4), after an untimed warm-up:
  one-pass   DetectorConfig(panels=all 64): one plan, one render of the (64, 185, 194) stack,
  per-panel  64 single-detector plans (each panel as the C's CUSTOM detector, panels.panel_detector), each
             built and rendered in turn (what a C user does: 64 runs).
Plans are built inside the timed region in both modes. The crystal and beam are those of the CSPAD goldens
(80x90x100 A cell, misset 10 20 30 deg, N cells a side, default_F 100, 1.3 A). The detector dictionaries are
read into lab-frame panels by io.dxtbx_models.read_detector; shared data from
$NB_SHARED_DATA (default ../shared/data). The one-pass and per-panel images are compared (max rel diff).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _config(detector: str, N: float, oversample: int):
    from nanobragg_torch.config import BeamConfig, CrystalConfig, DetectorConfig, SimulationConfig
    from nanobragg_torch.constants import RTD
    from nanobragg_torch.io.dxtbx_models import read_detector
    from nanobragg_torch.parity.goldens import shared_data_dir

    deg = 1.0 / RTD
    panels, _ = read_detector(shared_data_dir() / "cspad" / detector)
    crystal = CrystalConfig(cell=(80e-10, 90e-10, 100e-10, 90 * deg, 90 * deg, 90 * deg),
                            misset=(10 * deg, 20 * deg, 30 * deg), Na=N, Nb=N, Nc=N, default_F=100.0)
    beam = BeamConfig(wavelength=1.3e-10, beam_vector=(0.0, 0.0, -1.0), polar_vector=(1.0, 0.0, 0.0))
    return SimulationConfig(detector=DetectorConfig(panels=panels, oversample=oversample), beam=beam,
                            crystal=crystal)


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> dict:
    """One mode in this process: warm-up, then the timed repetitions; the images' checksum."""
    import dataclasses

    import torch

    from nanobragg_torch.engine import render
    from nanobragg_torch.panels import panel_detector
    from nanobragg_torch.plan import build_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    cfg = _config(args.detector, args.N, args.oversample)
    compile = True if args.compile else False

    def one_pass():
        return render(build_plan(cfg, dtype, compile=compile)).image

    def per_panel():
        out = []
        for p in range(len(cfg.detector.panels)):
            single = dataclasses.replace(cfg, detector=panel_detector(cfg, p))
            out.append(render(build_plan(single, dtype, compile=compile)).image)
        return torch.stack(out)

    run = one_pass if args.child == "one-pass" else per_panel
    with torch.no_grad():
        base = _rss_mib()
        image = run()  # warm-up (a compiled kernel is built or loaded here)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            image = run()
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.save:
        torch.save(image, args.save)
    return {"mode": args.child, "min_s": min(times), "times_s": times, "rss_before_render_mib": base,
            "peak_rss_mib": peak, "pixels": int(image.numel()), "sum": float(image.double().sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", nargs="+", default=["cspad_detector.json", "distorted_cspad_detector.json"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--N", type=float, default=10.0)
    ap.add_argument("--oversample", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="compiled kernels (default eager in both modes)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.detector = args.detector[0]
        print(json.dumps(child(args)))
        return 0

    import tempfile

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for det in args.detector:
            images = {}
            for mode in ("one-pass", "per-panel"):
                save = os.path.join(tmp, f"{mode}.pt")
                cmd = [sys.executable, __file__, "--child", mode, "--detector", det, "--dtype", args.dtype,
                       "--N", str(args.N), "--oversample", str(args.oversample), "--reps", str(args.reps),
                       "--threads", str(args.threads), "--save", save] + (["--compile"] if args.compile else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                row = json.loads(out.strip().splitlines()[-1])
                row["detector"] = det
                rows.append(row)
                images[mode] = torch.load(save)
            a, b = images["one-pass"].double(), images["per-panel"].double()
            rows[-1]["max_rel_diff_vs_one_pass"] = float((a - b).abs().max() / a.abs().max())
    print(f"{'detector':32s} {'mode':10s} {'min s':>8s} {'peak RSS MiB':>13s} {'RSS before MiB':>15s}  sum")
    for r in rows:
        print(f"{r['detector']:32s} {r['mode']:10s} {r['min_s']:8.2f} {r['peak_rss_mib']:13.0f} "
              f"{r['rss_before_render_mib']:15.0f}  {r['sum']:.6g}"
              + (f"  (max rel diff {r['max_rel_diff_vs_one_pass']:.2g})" if "max_rel_diff_vs_one_pass" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
