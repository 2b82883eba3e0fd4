"""The one place the golden tests perturb the engine (drift demonstrations, the naming self-check):
:func:`perturbed` wraps the pipeline functions of kernel.py that carry a factor (production code has no test
hooks), in both evaluation paths, in the fused kernel only or in the general path only (``WAYS``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
from collections.abc import Iterator

import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.parity.goldens import golden_dir, load_golden, shared_data_dir
from nanobragg_torch.plan import build_plan
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


# factor name (parity.schema) -> the pipeline functions whose results carry it (module attribute paths); the
# production code has no test hooks, so a perturbation wraps these functions for the duration of a render
PERTURBABLE = {
    "omega_pixel": ("kernel.solid_angle",),
    "capture_fraction": ("kernel.capture_fraction",),
    "polar": ("kernel.polarization",),
    "F_latt": ("kernel.lattice_factor",),
    "F_cell": ("kernel.structure_factor", "structure_factors.FGrid.tricubic"),
    "I_before_scaling": ("kernel.sample_sum", "kernel.running_product_sum"),
}


# where a perturbation acts: both evaluation paths, the fused kernel only (kernel.fused_pixels, which
# kernel.pixel_kernel and the kernel's debug entry run), or the general path only (engine.evaluate_chunk:
# traces, stateful chunks)
WAYS = ("both", "kernel", "general")
_in_kernel = [0]  # depth of kernel.fused_pixels calls under way


def _applies(way: str) -> bool:
    return way == "both" or (way == "kernel") == (_in_kernel[0] > 0)


def _scaled(fn, k: float, way: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if not _applies(way):
            return out
        if isinstance(out, tuple):
            return tuple(None if v is None else v * k for v in out)
        return out * k

    return wrapper


def _marked(fn):
    """kernel.fused_pixels, counting that the fused kernel is running."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _in_kernel[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _in_kernel[0] -= 1

    return wrapper


def _swap(path: str, make, saved: list) -> None:
    module, *attrs = path.split(".")
    owner = importlib.import_module(f"nanobragg_torch.{module}")
    for a in attrs[:-1]:
        owner = getattr(owner, a)
    fn = getattr(owner, attrs[-1])
    saved.append((owner, attrs[-1], fn))
    setattr(owner, attrs[-1], make(fn))


@contextlib.contextmanager
def perturbed(factors: dict[str, float], way: str = "both") -> Iterator[None]:
    """Within the block, each named pipeline factor is multiplied by its value where ``way`` says ("fluence"
    is scaled in the config by :func:`traced`, both ways). Renders must run eager: a compiled package would
    not see the wrappers (NB_COMPILE=0, or build_plan(compile=False))."""
    if way not in WAYS:
        raise ValueError(f"way {way!r}: one of {WAYS}")
    saved: list = []
    try:
        if way != "both":
            _swap("kernel.fused_pixels", _marked, saved)
        for name, k in factors.items():
            for path in PERTURBABLE.get(name, ()):
                _swap(path, lambda fn, k=k: _scaled(fn, k, way), saved)
        yield
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)


def traced(case: str, variant: str, factors: dict[str, float], extra: tuple[str, ...] = (), dtype=torch.float64,
           way: str = "both"):
    """(golden, its first traced pixel, our trace of that pixel) rendered with ``factors`` perturbed ``way``."""
    golden = load_golden(case, variant)
    argv = golden.case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()) + list(extra)
    if variant == "pinned":
        argv.append("--c-compat")
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    if "fluence" in factors:
        beam = dataclasses.replace(cfg.beam, fluence=cfg.beam.fluence * factors["fluence"])
        cfg = dataclasses.replace(cfg, beam=beam)
    pixel = golden.traced_pixels[0]
    with perturbed(factors, way), torch.no_grad():
        result = render(build_plan(cfg, dtype, compile=False), trace_pixels=[pixel])
    return golden, pixel, pixel_trace(result, pixel)
