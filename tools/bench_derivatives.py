#!/usr/bin/env python
"""The derivative-images row of tools/bench.py: derivative images of 6 parameters against one forward render.

    python tools/bench.py --derivatives [--reps N] [--threads T] [--dtype float32|float64] [--device cpu|cuda]
    python tools/bench_derivatives.py ...        (the same)

Times are interleaved in one process (forward, derivatives, forward, ...; min over the repetitions, after an
untimed warm-up of each): the machine's load hits both alike. The forward render is `simulate` as a user
calls it (the engine's own compile rule) and, for reference, the eager kernel (what the derivative sweep
runs). Peak memory: each in a fresh child process (ru_maxrss, and torch.cuda.max_memory_allocated on CUDA);
"+" is the rise over the child's RSS after its imports (the call's own memory, set-up included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

FLAGS = ("-cell 45 55 65 80 95 105 -misset 10 -20 30 -N 5 -default_F 100 -lambda 1.1 -distance 80 -detpixels 256 "
         "-pixel 0.1 -oversample 2 -mosaic 0.3 -mosaic_dom 5 -phisteps 3 -osc 0.3 -Xbeam 12.9 -Ybeam 13.1")
PARAMS = ("detector.distance", "detector.Xbeam", "detector.Ybeam", "beam.wavelength", "crystal.cell.0",
          "crystal.misset.2")
TARGET = 4.0  # the budget: 6 derivative images within 4 forward renders

_CHILD = """
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from nanobragg_torch.cli import config_from_flags
from nanobragg_torch import simulate
from nanobragg_torch.derivatives import derivative_images
torch.set_num_threads({threads})
cfg = config_from_flags({flags!r}.split())[0]
dt, dev = getattr(torch, {dtype!r}), {device!r}
torch.zeros(1, device=dev)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS: what follows is the call's own
def hwm():  # the peak RSS (kB) since the last reset
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = hwm()
if dev.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
if {what!r} == "derivatives":
    derivative_images(cfg, {params!r}, dtype=dt, device=dev, compile={compile!r})
else:
    simulate(cfg, dt, dev, compile={compile!r})
gpu = torch.cuda.max_memory_allocated() / 2**20 if dev.startswith("cuda") else None
print(json.dumps({{"rss_mb": hwm() / 1024, "before_mb": before / 1024,
                  "gpu_mb": gpu}}))
"""


def _memory(what: str, args, compile_: bool | None = None) -> dict:
    code = _CHILD.format(root=str(ROOT), threads=args.threads, flags=FLAGS, dtype=args.dtype, device=args.device,
                         what=what, params=list(PARAMS), compile=compile_)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def derivative_row(args, log=print) -> dict:
    """Interleaved timings and peak memory; the ratio derivatives / forward."""
    from nanobragg_torch import simulate
    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.derivatives import derivative_images

    torch.set_num_threads(args.threads)
    cfg = config_from_flags(FLAGS.split())[0]
    dt = getattr(torch, args.dtype)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    on = getattr(args, "compile", "on") != "off"
    runs = {
        "forward": lambda: simulate(cfg, dt, args.device, compile=True if on else False),
        "forward_eager": lambda: simulate(cfg, dt, args.device, compile=False),
        "derivatives": lambda: derivative_images(cfg, list(PARAMS), dtype=dt, device=args.device, compile=on),
        "derivatives_eager": lambda: derivative_images(cfg, list(PARAMS), dtype=dt, device=args.device,
                                                       compile=False),
    }
    best = {k: float("inf") for k in runs}
    for rep in range(args.reps + 1):
        for name, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            dt_s = time.perf_counter() - t0
            if rep:  # the first round warms caches (and loads or builds a compiled kernel)
                best[name] = min(best[name], dt_s)
        if rep:
            log(f"  round {rep}: " + ", ".join(f"{k} {v:.3f} s" for k, v in best.items()))
    mem = {"forward": _memory("forward", args, on), "forward_eager": _memory("forward", args, False),
           "derivatives": _memory("derivatives", args, on), "derivatives_eager": _memory("derivatives", args, False)}
    return {"flags": FLAGS, "params": list(PARAMS), "dtype": args.dtype, "device": args.device,
            "threads": args.threads, "seconds": best, "ratio": best["derivatives"] / best["forward"],
            "ratio_eager": best["derivatives_eager"] / best["forward_eager"], "memory": mem, "target": TARGET,
            "compiled": on}


def markdown(row: dict) -> str:
    s, m = row["seconds"], row["memory"]

    def peak(x):
        extra = f", GPU {x['gpu_mb']:.0f} MB" if x.get("gpu_mb") is not None else ""
        return f"{x['rss_mb']:.0f} MB (+{x['rss_mb'] - x['before_mb']:.0f}){extra}"

    kind = "compiled" if row.get("compiled") else "eager"
    lines = [
        "| render | seconds | / forward | peak RSS (+ over the process before the call) |",
        "|---|---:|---:|---|",
        f"| forward (`simulate`, {kind}) | {s['forward']:.3f} | 1.00 | {peak(m['forward'])} |",
        f"| forward, eager kernel | {s['forward_eager']:.3f} | {s['forward_eager'] / s['forward']:.2f} | "
        f"{peak(m['forward_eager'])} |",
        f"| derivative images, {len(row['params'])} parameters ({kind}) | {s['derivatives']:.3f} | "
        f"{row['ratio']:.2f} | {peak(m['derivatives'])} |",
        f"| derivative images, {len(row['params'])} parameters, eager | {s['derivatives_eager']:.3f} | "
        f"{s['derivatives_eager'] / s['forward']:.2f} | {peak(m['derivatives_eager'])} |",
        "",
        f"{row['dtype']}, {row['device']}, {row['threads']} thread(s); flags `{row['flags']}`; parameters "
        f"{', '.join(row['params'])}. Target: at most {row['target']:g}x one forward render "
        f"({'met' if row['ratio'] <= row['target'] else 'NOT met'}); eager derivatives / eager forward "
        f"{row['ratio_eager']:.2f}. Seconds: min over the interleaved rounds after a warm-up (compiles excluded).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    row = derivative_row(args, lambda m: print(m, file=sys.stderr, flush=True))
    sys.stdout.write(markdown(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return 0 if row["ratio"] <= TARGET else 1


if __name__ == "__main__":
    _ = resource
    sys.exit(main())
