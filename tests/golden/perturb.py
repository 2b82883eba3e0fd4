"""The one place the golden tests perturb the engine (drift demonstrations): re-point :func:`perturbed`
when the perturbation mechanism moves."""

from __future__ import annotations

import os

import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import Plan, build_plan, render
from nanobragg_torch.parity.goldens import golden_dir, load_golden, shared_data_dir
from nanobragg_torch.trace import pixel_trace

CASES = {
    "polar": "mosflm_default",
    "omega_pixel": "mosflm_default",
    "capture_fraction": "detector_thick",
    "F_cell": "mat_triclinic_hkl",
    "F_latt": "mosflm_default",
    "I_before_scaling": "mosflm_default",
    "fluence": "mosflm_default",
}


def perturbed(plan: Plan, factors: dict[str, float]) -> Plan:
    """``plan`` with each named factor multiplied by its value (the engine's test-only perturbation hooks;
    "fluence" scales the plan's fluence)."""
    for name, scale in factors.items():
        if name == "fluence":
            plan.fluence = plan.fluence * scale
        else:
            plan.hooks[name] = plan.hooks.get(name, 1.0) * scale
    return plan


def traced(case: str, variant: str, factors: dict[str, float], extra: tuple[str, ...] = (), dtype=torch.float64):
    """(golden, its first traced pixel, our trace of that pixel) rendered with ``factors`` perturbed."""
    golden = load_golden(case, variant)
    argv = golden.case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()) + list(extra)
    if variant == "pinned":
        argv.append("--c-compat")
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    plan = perturbed(build_plan(cfg, dtype), factors)
    pixel = golden.traced_pixels[0]
    with torch.no_grad():
        result = render(plan, trace_pixels=[pixel])
    return golden, pixel, pixel_trace(result, pixel)
