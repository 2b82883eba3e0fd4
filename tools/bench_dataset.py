"""Shots per second of nanobragg-dataset against a plain loop over `simulate`, in one run on this machine.

    python tools/bench_dataset.py [--shots 200] [--pixels 256] [--workers 2] [--skip-ray] [--out DIR]

Modes: a direct loop over `simulate` (the same shot configurations, no files: the floor), the local engine
with one worker, a local pool of --workers processes, and a local Ray instance of --workers workers. The
difference to the direct loop, per shot, is the dataset layer's overhead (parameters, batching, HDF5 writing
and compression, hashing, worker start-up). The manifests of all dataset modes must be identical.
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
    torch.set_num_threads(cores)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(spec.count):
            simulate(shot_config(ex.config, shot_parameters(spec, ex.config, i)), compile=False)
    rows.append(("direct loop over simulate", 1, cores, time.perf_counter() - t0))

    manifests = {}
    modes = [("local, 1 worker", "local", 1), (f"local pool, {args.workers} workers", "local", args.workers)]
    if not args.skip_ray:
        modes.append((f"ray (local instance), {args.workers} workers", "ray", args.workers))
    for name, engine, workers in modes:
        out = os.path.join(scratch, name.split(",")[0].replace(" ", "_"))
        shutil.rmtree(out, ignore_errors=True)
        s = make_dataset(spec_path, out, engine=engine, workers=workers, progress=False)
        rows.append((name, workers, max(1, cores // workers), s.seconds))
        with open(os.path.join(out, "manifest.jsonl")) as handle:
            manifests[name] = handle.read()

    floor = rows[0][3]
    print(f"{'mode':<40} {'workers':>7} {'threads':>7} {'seconds':>8} {'shots/s':>8} {'ms/shot over loop':>18}")
    for name, workers, threads, seconds in rows:
        over = (seconds - floor) / args.shots * 1e3
        print(f"{name:<40} {workers:>7} {threads:>7} {seconds:>8.1f} {args.shots / seconds:>8.2f} {over:>18.1f}")
    same = len(set(manifests.values())) == 1
    print(f"manifests identical across dataset modes: {same}")
    if args.out is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
