"""Shots per second of nanobragg-dataset against a plain loop over `simulate`, in one run on this machine.

    python tools/bench_dataset.py [--shots 200] [--pixels 256] [--workers 2] [--skip-ray] [--out DIR]

Modes: a direct loop over `simulate` (the same shot configurations, no files: the floor) with 1 thread and
with all cores, the local engine with one worker (1 thread, all cores), a local pool of --workers processes
and a local Ray instance of --workers workers (cores/workers threads each). A one-worker mode's difference
to the direct loop of the same thread count, per shot, is the dataset layer's overhead (parameters,
batching, HDF5 writing and compression, hashing; negative where simulate_batch beats the loop). The
manifests of all dataset modes must be identical.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import torch

from nanobragg_torch import simulate
from nanobragg_torch.dataset import load_experiment, load_spec, make_dataset, shot_parameters
from nanobragg_torch.dataset.shots import shot_config

SPEC = """[experiment]
flags = "-cell 100 100 100 90 90 90 -default_F 100 -lambda 1 -distance 100 -detpixels {pixels} -pixel 0.1 -N 5"
[shots]
count = {shots}
seed = 1
shard_size = 20
[vary]
orientation = "random"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=200)
    ap.add_argument("--pixels", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one, removed)")
    args = ap.parse_args()
    scratch = args.out or tempfile.mkdtemp(prefix="nb_bench_dataset")
    os.makedirs(scratch, exist_ok=True)
    spec_path = os.path.join(scratch, "spec.toml")
    with open(spec_path, "w") as handle:
        handle.write(SPEC.format(pixels=args.pixels, shots=args.shots))
    cores = len(os.sched_getaffinity(0))
    print(f"{args.shots} shots of {args.pixels}x{args.pixels}, {cores} cores, torch {torch.__version__}")
    rows = []

    spec = load_spec(spec_path)
    ex = load_experiment(spec)
    configs = [shot_config(ex.config, shot_parameters(spec, ex.config, i)) for i in range(spec.count)]
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        with torch.no_grad():
            for cfg in configs:
                simulate(cfg, compile=False)
        rows.append(("direct loop over simulate", 1, threads, time.perf_counter() - t0))

    manifests = {}
    modes = [("local", "local", 1, t) for t in sorted({1, cores})]
    modes.append(("local pool", "local", args.workers, max(1, cores // args.workers)))
    if not args.skip_ray:
        modes.append(("ray (local instance)", "ray", args.workers, max(1, cores // args.workers)))
    for name, engine, workers, threads in modes:
        out = os.path.join(scratch, f"{engine}_{workers}x{threads}")
        shutil.rmtree(out, ignore_errors=True)
        s = make_dataset(spec_path, out, engine=engine, workers=workers, threads=threads, progress=False)
        rows.append((name, workers, threads, s.seconds))
        with open(os.path.join(out, "manifest.jsonl")) as handle:
            manifests[out] = handle.read()

    floor = {threads: seconds for name, _, threads, seconds in rows if name.startswith("direct")}
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<28} {'workers':>7} {'threads':>7} {'seconds':>8} {'shots/s':>8} {'ms/shot over loop':>18}")
    for name, workers, threads, seconds in rows:
        over = (seconds - floor[threads]) / args.shots * 1e3 if workers == 1 else float("nan")
        print(f"{name:<28} {workers:>7} {threads:>7} {seconds:>8.1f} {args.shots / seconds:>8.2f} {over:>18.1f}")
    same = len(set(manifests.values())) == 1
    print(f"manifests identical across dataset modes: {same}")
    if args.out is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
