#!/usr/bin/env python
"""Recover cell, orientation, distance and beam centre from an image by gradient descent through the render.

    python tools/refine_example.py [--golden CASE [--variant pinned|fixed] | --flags "C FLAGS ..."]
                                   [--method lbfgs|adam] [--iterations N] [--lr X] [--dtype float64|float32]
                                   [--offsets JSON] [--params cell,rotation,distance,beam]

The target is a committed C golden image (default: cell_triclinic, if present), or an image our engine
renders from C-style flags (--flags; known truth, e.g. to try other geometries). The start is the truth
perturbed by refine.DEFAULT_OFFSETS (override with --offsets '{"distance": 0.02}'); the parameters are
refine.standard_model's: cell (6, Angstrom/deg), rotation vector (3, deg, about the start misset), distance
(mm), beam centre (2, pixels). Prints the trajectory (loss and parameters per iteration), then truth, start,
result and error of every parameter against refine.TOLERANCES. Exit status 0 when all are within them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.constants import RTD  # noqa: E402
from nanobragg_torch.refine import (  # noqa: E402
    TOLERANCES,
    misset_from_rotation,
    orientation_of,
    perturb,
    recovery_errors,
    refine,
    standard_model,
)
from nanobragg_torch.simulate import simulate  # noqa: E402

DEFAULT_FLAGS = ("-cell 40 50 60 88 100 92 -misset 10 20 30 -N 5 -default_F 100 -lambda 1 -distance 60 "
                 "-detpixels 48 -pixel 0.4 -Xbeam 9.7 -Ybeam 9.5 -oversample 1 -phisteps 3 -osc 1")


def _fmt(values) -> str:
    return " ".join(f"{v:10.4f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", default=None, help="golden case name (default cell_triclinic when present)")
    ap.add_argument("--variant", default="pinned")
    ap.add_argument("--flags", default=None, help="render the target with our engine from these C flags")
    ap.add_argument("--method", choices=("lbfgs", "adam"), default="lbfgs")
    ap.add_argument("--iterations", type=int, default=None, help="default: 25 (lbfgs), 300 (adam)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--offsets", default=None, help="JSON overriding refine.DEFAULT_OFFSETS")
    ap.add_argument("--params", default="cell,rotation,distance,beam", help="parameters to refine")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small images: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    source = None
    if args.flags is None:
        from nanobragg_torch.parity.goldens import has_golden, load_golden
        name = args.golden or "cell_triclinic"
        if has_golden(name, args.variant):
            g = load_golden(name, args.variant)
            if g.image is None:
                print(f"golden {name} keeps no whole image (full-size case)", file=sys.stderr)
                return 2
            truth, _ = config_from_flags(g.case.argv())
            target = torch.as_tensor(g.image, dtype=dtype)
            source = f"C golden {args.variant}/{name}: {' '.join(g.case.flags)}"
        elif args.golden is not None:
            print(f"no golden {args.variant}/{name}", file=sys.stderr)
            return 2
    if source is None:
        flags = args.flags or DEFAULT_FLAGS
        truth, _ = config_from_flags(shlex.split(flags) + ["-nonoise", "-nopgm"])
        with torch.no_grad():
            target = simulate(truth, dtype)
        source = f"our render of: {flags}"
    if truth.crystal.cell is None:
        print("the truth needs -cell (standard_model refines a cell)", file=sys.stderr)
        return 2

    start_cfg, misset0 = perturb(truth, json.loads(args.offsets) if args.offsets else None)
    build, start, scales = standard_model(start_cfg, misset0)
    names = [n.strip() for n in args.params.split(",") if n.strip()]
    start = {n: start[n] for n in names}
    print(f"target: {source}")
    print(f"image {tuple(target.shape)}, {args.method}, {args.dtype}, refining {', '.join(names)}")
    print("iteration  loss  parameters (cell A/deg | rotation deg | distance mm | beam px)")

    def show(step) -> None:
        p = "  |".join(_fmt(step.params[n]) for n in names)
        print(f"{step.iteration:4d} {step.loss:11.4e} {p}", flush=True)

    iterations = args.iterations or (25 if args.method == "lbfgs" else 300)
    result = refine(target, build, start, scales, method=args.method, iterations=iterations, lr=args.lr,
                    dtype=dtype, callback=show, stop_loss=1e-14 if args.dtype == "float64" else 1e-9)
    final = {**standard_model(start_cfg, misset0)[1], **result.params}

    _, truth_p, _ = standard_model(truth, truth.crystal.misset or (0.0, 0.0, 0.0))
    start_all = standard_model(start_cfg, misset0)[1]
    print(f"\n{len(result.history) - 1} iterations, {result.seconds:.2f} s, loss {result.history[0].loss:.3e}"
          f" -> {result.loss:.3e}")
    print("parameter  truth | start | refined")
    for n in ("cell", "distance", "beam"):
        print(f"{n:10s} {_fmt(truth_p[n].reshape(-1))} | {_fmt(start_all[n].reshape(-1))} | "
              f"{_fmt(final[n].reshape(-1))}")
    mis_true = [float(m) * RTD for m in (truth.crystal.misset or (0.0, 0.0, 0.0))]
    mis_start = [m * RTD for m in misset0]
    mis_final = (misset_from_rotation(orientation_of(final, misset0)) * RTD).tolist()
    print(f"{'misset':10s} {_fmt(mis_true)} | {_fmt(mis_start)} | {_fmt(mis_final)}")
    errors = recovery_errors(final, truth, misset0)
    ok = True
    print("\nerror            value   tolerance")
    for key, tol in TOLERANCES.items():
        good = errors[key] < tol
        ok &= good
        print(f"{key:15s} {errors[key]:9.2e}   {tol:9.2e}  {'ok' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
