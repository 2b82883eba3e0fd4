"""Which golden can see which factor: the sensitivity map golden/sensitivity.json.

For every golden (variant/case) and every factor of ``perturb.PERTURBABLE`` plus ``fluence``: does a 1e-5
relative change of the factor (in both evaluation paths, ``perturb.perturbed``) change the case's fingerprint
(parity.fingerprint, as the snapshot test writes it) in its image part (image statistics, block sums) and in
its trace part (the first traced pixel)? A factor a golden cannot see is physics, not a bug (a water
background swamps polarization; -nopolar has none); the map says which goldens guard which factor, and
tests/golden/test_sensitivity.py fails when a factor is visible in fewer than ``MIN_IMAGES`` goldens' images.

Written by the regeneration tool after the goldens (tools/regen_goldens.py, or ``python
tests/golden/sensitivity.py``); computed from our float64 renders, eager, without the C. One base render per
golden; a fluence change is exact scaling (the whole pixel value, water included, is proportional to the
fluence), so only the pipeline factors are rendered again. The full-size (slow) goldens are skipped (listed
under "skipped"): each takes minutes per render.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from perturb import PERTURBABLE, perturbed  # noqa: E402

from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.engine import ChunkState, needs_state, render  # noqa: E402
from nanobragg_torch.parity.fingerprint import fingerprint, fingerprint_changes  # noqa: E402
from nanobragg_torch.parity.goldens import (  # noqa: E402
    golden_dir,
    load_cases,
    load_golden,
    load_manifest,
    shared_data_dir,
)
from nanobragg_torch.plan import build_plan  # noqa: E402
from nanobragg_torch.trace import pixel_trace  # noqa: E402

FACTORS = (*sorted(PERTURBABLE), "fluence")
PERTURBATION = 1e-5
MIN_IMAGES = 3  # goldens whose image must see every factor
FORMAT = 1


def path(root: Path | None = None) -> Path:
    return (root or golden_dir()) / "sensitivity.json"


def load(root: Path | None = None) -> dict:
    return json.loads(path(root).read_text())


def _fingerprint(key: str, result, pixel, image=None) -> str:
    img = (result.image if image is None else image).detach().cpu().double().numpy()
    return fingerprint(f"{key} float64", trace=pixel_trace(result, pixel), image=img)


def _seen(base: str, new: str) -> tuple[bool, bool]:
    """(image part changed, trace part changed) between two fingerprints."""
    changes = fingerprint_changes(base, new)
    image = any(name.startswith(("image:", "grid:")) for name, _ in changes)
    trace = any(not name.startswith(("image:", "grid:", "stats:")) for name, _ in changes)
    return image, trace


def golden_sensitivity(variant: str, name: str) -> dict:
    """{"image": [factors], "trace": [factors], "fused": the image comes from the fused kernel alone, "cost":
    samples rendered} of one golden."""
    golden = load_golden(name, variant)
    argv = golden.case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
    if variant == "pinned":
        argv.append("--c-compat")
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    pixel = golden.traced_pixels[0]
    key = f"{variant}/{name}"

    def run(c):
        with torch.no_grad():
            return render(build_plan(c, torch.float64, compile=False), trace_pixels=[pixel])

    base = run(cfg)
    plan = base.plan
    base_fp = _fingerprint(key, base, pixel)
    out = {"image": [], "trace": []}
    for factor in FACTORS:
        if factor == "fluence":  # value = r_e^2 fluence I/steps (I_bg too is proportional to the fluence)
            beam = dataclasses.replace(cfg.beam, fluence=cfg.beam.fluence * (1.0 + PERTURBATION))
            new = run(dataclasses.replace(cfg, beam=beam))
        else:
            with perturbed({factor: 1.0 + PERTURBATION}):
                new = run(cfg)
        image, trace = _seen(base_fp, _fingerprint(key, new, pixel))
        for part, seen in (("image", image), ("trace", trace)):
            if seen:
                out[part].append(factor)
    out["fused"] = not needs_state(plan, ChunkState(plan.interpolate, True))
    out["cost"] = plan.samples_per_pixel * plan.pixel_order.numel()
    return out


def compute(keys: list[str] | None = None, progress=None) -> dict:
    """The map over the manifest's goldens (or ``keys``), full-size goldens skipped."""
    cases = {c.name: c for c in load_cases()}
    entries = keys or sorted(load_manifest().get("entries", {}))
    goldens, skipped = {}, {}
    for key in entries:
        variant, name = key.split("/", 1)
        if cases[name].full:
            skipped[key] = "full-size detector (slow): minutes per render"
            continue
        t0 = time.perf_counter()
        goldens[key] = golden_sensitivity(variant, name)
        if progress:
            progress(key, goldens[key], time.perf_counter() - t0)
    return {"format": FORMAT, "perturbation": PERTURBATION, "factors": list(FACTORS),
            "summary": summarize(goldens), "skipped": skipped, "goldens": goldens}


def summarize(goldens: dict) -> dict:
    """factor -> how many goldens see it in the image and in the trace, and the best case for it: seen in
    both, image from the fused kernel alone (so a kernel-only change shows), the fewest samples."""
    out = {}
    for factor in FACTORS:
        image = [k for k, g in goldens.items() if factor in g["image"]]
        trace = [k for k, g in goldens.items() if factor in g["trace"]]
        both = [k for k in image if k in trace and goldens[k]["fused"]]
        best = min(both, key=lambda k: (goldens[k]["cost"], k)) if both else None
        out[factor] = {"image": len(image), "trace": len(trace), "best": best}
    return out


def best_case(factor: str, root: Path | None = None) -> tuple[str, str]:
    """(variant, name) of the golden that sees ``factor`` best (the map's summary)."""
    best = load(root)["summary"][factor]["best"]
    if best is None:
        raise LookupError(f"no golden sees {factor} in both its image and its trace (golden/sensitivity.json)")
    variant, name = best.split("/", 1)
    return variant, name


def write(data: dict, root: Path | None = None) -> Path:
    p = path(root)
    lines = ["{"]
    head = {k: v for k, v in data.items() if k not in ("summary", "skipped", "goldens")}
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    for section in ("summary", "skipped", "goldens"):  # one line per factor / golden: short diffs
        rows = [f"    {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in data[section].items()]
        lines.append(f"  {json.dumps(section)}: {{" + ("\n" + ",\n".join(rows) + "\n  }" if rows else "}")
                     + ("," if section != "goldens" else ""))
    lines.append("}")
    p.write_text("\n".join(lines) + "\n")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--key", action="append", default=[], help="only this golden, variant/case (repeatable; "
                    "merged into the existing map)")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    t0 = time.perf_counter()

    def progress(key, g, dt):
        print(f"{key:48s} {dt:6.2f}s image {','.join(g['image']) or '-'}; trace {','.join(g['trace']) or '-'}",
              flush=True)

    data = compute(args.key or None, progress)
    if args.key:  # merge into the committed map
        old = load()
        old["goldens"].update(data["goldens"])
        old["skipped"].update(data["skipped"])
        old["summary"] = summarize(old["goldens"])
        data = old
    print(f"wrote {write(data)} in {time.perf_counter() - t0:.0f} s")
    for factor, s in data["summary"].items():
        print(f"  {factor:18s} image {s['image']:3d}  trace {s['trace']:3d}  best {s['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
