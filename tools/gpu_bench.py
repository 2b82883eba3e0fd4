#!/usr/bin/env python
"""GPU benchmark for tools/gpu_check.sh: what issue 29 asks a GPU render to reach, in one time-boxed run.

    python tools/gpu_bench.py --json FILE [--budget 240] [--dry-run]

Sections (each row also records the peak GPU memory of its renders):
  scaling   a 1024 x 1024 cubic render with 100, 1,000 and 10,000 mosaic domains (about 1e8, 1e9 and 1e10
            samples), build_plan + render end to end (best of a few after a warm-up), for every kernel variant
            (Triton with polynomial sines, Triton with the device's sine, torch.compile, eager) in float32 and
            float64; the marginal rate per added mosaic domain is the slope between the points (as lcls-mlcv
            reports it: samples added / time added);
  setup     a 64 x 64 render of one sample per pixel from a cached plan: the fixed cost of a render;
  pilatus   the Pilatus 6M seed case (golden full_pilatus6m when the shared data is there, else the same
            detector and sweep with the demo's structure factors: 62 M samples), render time after warm-up;
  stills    1,000 stills of 256 x 256 with 10 mosaic domains (10 samples per pixel), random orientations,
            batched (batch.simulate_batch): images/s.
Every timing is synchronised (torch.cuda.synchronize). A point whose predicted time would overrun --budget
seconds is skipped and recorded as such. --dry-run runs every code path on the CPU at toy sizes, the Triton
variants through Triton's interpreter (TRITON_INTERPRET=1): a check of this script, not a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "--dry-run" in sys.argv:  # triton decorates its library at import: the interpreter must be on before
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from nanobragg_torch.batch import simulate_batch  # noqa: E402
from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.compiled import KernelRunner  # noqa: E402
from nanobragg_torch.engine import render  # noqa: E402
from nanobragg_torch.plan import build_plan  # noqa: E402

CUBIC = "-cell 100 100 100 90 90 90 -misset 5 10 15 -default_F 100 -N 10 -lambda 1.0 -distance 100 -pixel 0.1"
VARIANTS = ("triton-poly", "triton-libsin", "compile", "eager")
DOMAINS = (100, 1000, 10000)  # 1024^2 pixels x domains: ~1e8, 1e9, 1e10 samples
EAGER_MAX_SAMPLES = 2e8  # the eager kernel only at the smallest point (it is the reference, not a contender)


class Clock:
    """The run's time budget: `fits(seconds)` says whether a step predicted to take that long still fits."""

    def __init__(self, budget: float) -> None:
        self.end = time.perf_counter() + budget

    def left(self) -> float:
        return self.end - time.perf_counter()

    def fits(self, seconds: float) -> bool:
        return seconds < self.left()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config(flags: str):
    cfg, _ = config_from_flags(flags.split(), cwd=os.devnull)
    return cfg


def with_variant(plan, variant: str):
    """The plan with its kernel in the given form (triton-*: mode "triton" with that sine; compile: torch.compile;
    eager)."""
    spec, inputs = plan.kernel.spec, plan.kernel.inputs
    if variant.startswith("triton"):
        runner = KernelRunner(spec, inputs, "triton", "eager")
        runner.gpu_sin = variant.split("-", 1)[1]
    elif variant == "compile":
        runner = KernelRunner(spec, inputs, "jit", "jit")
    else:
        runner = KernelRunner(spec, inputs, "eager", "eager")
    return dataclasses.replace(plan, kernel=runner)


def timed(fn, device: torch.device, reps: int) -> tuple[float, float]:
    """(first call s, best of `reps` further calls s), synchronised."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return first, best


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def scaling(args, device, clock: Clock, log) -> list[dict]:
    rows = []
    pixels, domains = (1024, DOMAINS) if not args.dry_run else (16, (1, 2, 4))
    # the Triton variants first, both dtypes: a budget overrun costs the reference rows (compile, eager)
    for variant, dtype in [(v, d) for v in VARIANTS for d in (torch.float32, torch.float64)]:
        if variant.startswith("triton") and not _triton():
            rows.append({"section": "scaling", "variant": variant, "skipped": "triton not installed"})
            continue
        last = None  # (samples, seconds) of the previous point: predicts the next
        for M in domains:
            flags = f"{CUBIC} -detpixels {pixels} -oversample 1 -mosaic 0.5 -mosaic_domains {M}"
            cfg = config(flags)
            samples = pixels * pixels * M
            row = {"section": "scaling", "variant": variant, "dtype": str(dtype)[6:], "domains": M,
                   "samples": samples}
            predicted = (last[1] * samples / last[0] * 4 + 5) if last else 30.0
            if variant == "eager" and samples > EAGER_MAX_SAMPLES and not args.dry_run:
                row["skipped"] = "eager: smallest point only"
            elif not clock.fits(predicted):
                row["skipped"] = f"budget (predicted {predicted:.0f} s, {clock.left():.0f} s left)"
            if "skipped" in row:
                rows.append(row)
                log(json.dumps(row))
                continue
            peak_reset(device)
            try:
                with torch.no_grad():
                    def run(cfg=cfg, dtype=dtype, variant=variant):
                        return render(with_variant(build_plan(cfg, dtype, device), variant)).image

                    first, best = timed(run, device, args.reps)
                    plan = with_variant(build_plan(cfg, dtype, device), variant)
                    _, render_only = timed(lambda plan=plan: render(plan), device, args.reps)
            except Exception as exc:  # a variant that fails on this device: recorded, the run goes on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                rows.append(row)
                log(json.dumps(row))
                break
            row.update(first_s=first, best_s=best, render_s=render_only, samples_per_s=samples / best,
                       peak_gpu_MiB=peak_mib(device))
            if last is not None:  # the marginal rate: samples added per second added
                dt = best - last[1]
                row["marginal_samples_per_s"] = (samples - last[0]) / dt if dt > 0 else None
            last = (samples, best)
            rows.append(row)
            log(json.dumps(row))
    return rows


def setup_cost(args, device, log) -> dict:
    cfg = config(f"{CUBIC} -detpixels 64 -oversample 1")
    with torch.no_grad():
        first, best = timed(lambda: render(build_plan(cfg, torch.float32, device)).image, device, 20)
    row = {"section": "setup", "first_s": first, "best_s": best,
           "mode": build_plan(cfg, torch.float32, device).kernel.mode}
    log(json.dumps(row))
    return row


def pilatus(args, device, clock: Clock, log) -> dict:
    from nanobragg_torch import demo
    from nanobragg_torch.parity.goldens import get_case, golden_dir, shared_data_dir

    row: dict = {"section": "pilatus"}
    case = get_case("full_pilatus6m")
    if all((shared_data_dir() / rel).exists() for rel in case.shared_files()):
        argv = _without_outputs(case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()))
        row["input"] = "golden full_pilatus6m"
    else:
        tmp = tempfile.mkdtemp(prefix="nb_pil_")
        demo.write_inputs(tmp)
        argv = (f"-mat {tmp}/{demo.MAT} -hkl {tmp}/{demo.HKL} -N 5 -lambda 1 -distance 200 -pixel 0.172 "
                "-detsize_f 423.636 -detsize_s 434.644 -phi 0 -osc 1 -phisteps 10 -oversample 1").split()
        row["input"] = "synthetic: Pilatus 6M detector (2463 x 2527, 0.172 mm), 10 phi steps, the demo's F"
    if args.dry_run:
        argv = argv + ["-detpixels", "24", "-pixel", "4"]
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    if not clock.fits(30):
        row["skipped"] = "budget"
        return row
    peak_reset(device)
    with torch.no_grad():
        plan = build_plan(cfg, torch.float32, device)
        first, best = timed(lambda: render(plan), device, args.reps)
        _, whole = timed(lambda: render(build_plan(cfg, torch.float32, device)), device, args.reps)
    samples = plan.samples_per_pixel * int(plan.pixel_order.numel())
    row.update(mode=plan.kernel.mode, samples=samples, first_s=first, render_s=best, plan_render_s=whole,
               samples_per_s=samples / best, peak_gpu_MiB=peak_mib(device))
    log(json.dumps(row))
    return row


def stills(args, device, clock: Clock, log) -> dict:
    B, pixels = (1000, 256) if not args.dry_run else (3, 8)
    row: dict = {"section": "stills", "stills": B, "pixels": pixels, "samples_per_pixel": 10}
    if not clock.fits(30):
        row["skipped"] = "budget"
        return row
    base = config(f"{CUBIC} -detpixels {pixels} -pixel {0.1 * 1024 / pixels} -oversample 1 -mosaic 0.5 "
                  "-mosaic_domains 10")
    gen = torch.Generator().manual_seed(29)
    misset = (torch.rand((B, 3), generator=gen, dtype=torch.float64) * 2 * math.pi).to(device)
    peak_reset(device)
    with torch.no_grad():
        first, best = timed(lambda: simulate_batch(base, {"crystal.misset": misset}, torch.float32, device), device,
                            max(1, args.reps - 1))
    row.update(first_s=first, best_s=best, stills_per_s=B / best, peak_gpu_MiB=peak_mib(device))
    log(json.dumps(row))
    return row


OUTPUT_FLAGS = {"-floatfile": 1, "-intfile": 1, "-noisefile": 1, "-pgmfile": 1, "-nonoise": 0, "-nopgm": 0,
                "-noprogress": 0}


def _without_outputs(argv: list[str]) -> list[str]:
    """A golden case's flags without its output flags (and their values)."""
    out, i = [], 0
    while i < len(argv):
        skip = OUTPUT_FLAGS.get(argv[i])
        if skip is None:
            out.append(argv[i])
        i += 1 + (skip or 0)
    return out


def _triton() -> bool:
    from nanobragg_torch import gpu_kernel

    return gpu_kernel.available()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=240.0, help="seconds for the whole benchmark (default 240)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after each warm-up (default 3)")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (Triton interpreted): a script check")
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (use --dry-run to check the script on the CPU)", file=sys.stderr)
        return 2
    clock = Clock(args.budget)
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "dry_run": args.dry_run,
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "triton": None}
    if _triton():
        import triton

        info["triton"] = triton.__version__
    report: dict = {"info": info}

    def log(line: str) -> None:
        print(line, flush=True)

    def save() -> None:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")

    # the cheap sections first, so that a budget overrun costs only the largest scaling points
    report["setup"] = setup_cost(args, device, log)
    save()
    report["stills"] = stills(args, device, clock, log)
    save()
    report["pilatus"] = pilatus(args, device, clock, log)
    save()
    report["scaling"] = scaling(args, device, clock, log)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
