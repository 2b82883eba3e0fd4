"""Batched rendering: many configurations in one call, returning a (B, spixels, fpixels) tensor.

`simulate_batch(base, batched={"crystal.misset": (B, 3) tensor})` renders one image per row; a list of
configurations works too. Gradients flow per element: element i's image depends only on element i's
tensors.

Two strategies:
  * vectorized: when the elements differ only in the crystal's orientation/cell (misset, reciprocal matrix,
    cell, phi0/phistep/osc, spindle axis... anything that only changes the rotated cells of plan.Plan) and
    the render takes the fused kernel (nearest-neighbour F, SQUARE or ROUND shape, no pinned-C
    first-evaluation or oversample-toggle order), the elements' cell sets go to `kernel.pixel_kernel` as a
    leading axis of its cells: the pixel factors of each chunk are computed once and the lattice sum is
    evaluated for all elements at once, one pass over the detector for the whole batch;
  * loop: otherwise, one `simulate` per element.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .config import SimulationConfig
from .engine import EAGER_SAMPLES_PER_CHUNK, GPU_CHUNK_PIXELS
from .kernel import pixel_kernel
from .plan import Plan, build_plan
from .simulate import simulate

Tensor = torch.Tensor

# config fields that only change plan.Plan.cells (with the checks in `_compatible` on the plans)
CELL_ONLY_FIELDS = {("crystal", n) for n in ("misset", "reciprocal_matrix", "cell", "phi0", "phistep", "osc",
                                             "misset_random", "misset_seed", "mosaic_spread", "mosaic_seed",
                                             "spindle_axis")}


def expand_configs(base: SimulationConfig, batched: Mapping[str, Tensor]) -> list[SimulationConfig]:
    """One config per row of the batched tensors: {"group.field": (B, ...) tensor} (group: detector, beam,
    crystal; e.g. "crystal.misset" (B, 3) radians, "crystal.reciprocal_matrix" (B, 3, 3), "detector.distance"
    (B,) metres). Tuple-valued fields (misset, cell) get a tuple of 0-d tensors."""
    sizes = {k: v.shape[0] for k, v in batched.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batched tensors disagree on the batch size: {sizes}")
    B = next(iter(sizes.values()))
    out = []
    for i in range(B):
        cfg = base
        for key, value in batched.items():
            group, name = key.split(".")
            sub = getattr(cfg, group)
            old = getattr(sub, name)
            row = value[i]
            if isinstance(old, tuple) or name in ("misset", "cell"):
                row = tuple(row[j] for j in range(row.shape[0]))
            cfg = dataclasses.replace(cfg, **{group: dataclasses.replace(sub, **{name: row})})
        out.append(cfg)
    return out


def simulate_batch(configs: SimulationConfig | Sequence[SimulationConfig],
                   batched: Mapping[str, Tensor] | None = None, dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu", samples_per_chunk: int | None = None,
                   vectorize: bool | None = None) -> Tensor:
    """Render a batch: (B, spixels, fpixels) float images.

    `configs`: a list of configurations, or one base configuration with `batched` (see expand_configs).
    `vectorize`: None picks the shared-pixel-factor path when it applies (see the module docstring), True
    requires it (ValueError otherwise), False always loops over `simulate`."""
    if isinstance(configs, SimulationConfig):
        cfgs = expand_configs(configs, batched) if batched else [configs]
    else:
        if batched:
            raise ValueError("give either a list of configs or one base config with `batched`")
        cfgs = list(configs)
    if not cfgs:
        raise ValueError("empty batch")
    if vectorize is not False:
        reason = _why_not_vectorizable(cfgs)
        plans = None
        if reason is None:
            # compile=None lets a CUDA plan take the Triton kernel (_chunk_values_shared); on the CPU the shared
            # path calls the eager kernel itself, so no package is built for it
            gpu = None if torch.device(device).type == "cuda" else False
            plans = [build_plan(c, dtype, device, compile=gpu, samples_per_chunk=samples_per_chunk) for c in cfgs]
            reason = _plans_incompatible(plans)
        if reason is None:
            return _render_shared(plans, samples_per_chunk)
        if vectorize:
            raise ValueError(f"batch cannot be vectorized: {reason}")
    return torch.stack([simulate(c, dtype, device, samples_per_chunk) for c in cfgs])


def _same(a, b) -> bool:
    """Config values equal (tensors: the same object, or equal and not requiring grad)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        return (not a.requires_grad and not b.requires_grad and a.shape == b.shape and a.dtype == b.dtype
                and bool(torch.equal(a, b)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _why_not_vectorizable(cfgs: list[SimulationConfig]) -> str | None:
    ref = cfgs[0]
    if ref.crystal.shape not in ("SQUARE", "ROUND"):
        return f"shape {ref.crystal.shape} uses each element's reciprocal cell"
    for cfg in cfgs[1:]:
        for group in ("detector", "beam", "crystal"):
            a, b = getattr(ref, group), getattr(cfg, group)
            for f in dataclasses.fields(a):
                if (group, f.name) in CELL_ONLY_FIELDS:
                    continue
                if not _same(getattr(a, f.name), getattr(b, f.name)):
                    return f"elements differ in {group}.{f.name}"
        if ref.c_compat != cfg.c_compat or ref.pix0_override != cfg.pix0_override:
            return "elements differ in c_compat/pix0_override"
    return None


def _plans_incompatible(plans: list[Plan]) -> str | None:
    p0 = plans[0]
    if p0.interpolate:
        return "tricubic interpolation (its one-way switch is per image)"
    if p0.first_eval_phi_step is not None or p0.running_product:
        return "the render needs the engine's general (stateful) path"
    for p in plans[1:]:
        if (p.oversample, p.steps, p.phi.steps, p.mosaic.domains, p.layers.count, p.N_active,
                p.first_eval_phi_step, p.interpolate) != (p0.oversample, p0.steps, p0.phi.steps,
                                                          p0.mosaic.domains, p0.layers.count, p0.N_active,
                                                          p0.first_eval_phi_step, p0.interpolate):
            return "elements resolve to different sample counts (oversample, phi steps, domains)"
    return None


def _chunk_values_shared(plan: Plan, idx: Tensor, cells: Tensor) -> Tensor:
    """The plan's pipeline for one chunk and B cell sets (B, R, 3, 3) as the kernel's leading axis: (B, C)."""
    if plan.kernel.mode == "triton" and not (torch.is_grad_enabled() and cells.requires_grad):
        return plan.kernel.run_triton(idx, cells)[0]
    inputs = plan.kernel.inputs._replace(cells=cells)
    return pixel_kernel(plan.kernel.spec, inputs, idx)[0]


def _render_shared(plans: list[Plan], samples_per_chunk: int | None) -> Tensor:
    p0 = plans[0]
    shape = p0.image_shape  # (spixels, fpixels), or (P, S_max, F_max) for a multi-panel detector
    B = len(plans)
    cells = torch.stack([p.kernel.inputs.cells for p in plans])  # (B, R, 3, 3), the index dtype
    budget = samples_per_chunk or EAGER_SAMPLES_PER_CHUNK  # the eager kernel (engine.chunk_pixels)
    per_chunk = max(1, budget // max(1, p0.samples_per_pixel * B))
    if p0.kernel.mode == "triton":  # samples in registers: a chunk is its outputs (engine.GPU_CHUNK_PIXELS)
        per_chunk = max(1, GPU_CHUNK_PIXELS // B)
    order = p0.pixel_order
    grad = torch.is_grad_enabled()
    values = []
    for start in range(0, order.numel(), per_chunk):
        idx = order[start:start + per_chunk]
        if grad:
            values.append(checkpoint(_chunk_values_shared, p0, idx, cells, use_reentrant=False))
        else:
            values.append(_chunk_values_shared(p0, idx, cells))
    image = torch.zeros((B, int(np.prod(shape))), dtype=p0.dtype, device=p0.device)
    if values:
        image = image.index_copy(1, order.long(), torch.cat(values, dim=1))
    return image.reshape(B, *shape)
