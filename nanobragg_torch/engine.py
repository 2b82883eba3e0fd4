"""The sweep: nanoBragg.c's pixel loop over a `Plan` (plan.py), chunks of pixels, each chunk one call of the
per-pixel pipeline.

For a chunk of C pixels every sample is evaluated at once, broadcasting over (orientation R = phi step x
mosaic domain, layer T, sub-pixel O2, source S, pixel C); the intensity is reduced over the samples inside
the chunk, so peak memory is bounded by the chunk size, not by the image. The physics is `kernel.py`'s
pipeline, nowhere else: chunks that need no per-sample state run the fused `pixel_kernel` (compiled by
compiled.py); `evaluate_chunk` runs the same stages with the C's per-image state, in the C's order of
evaluation, for
  * traces (the named intermediates of one pixel),
  * the pinned C's phi == 0 stale rotation (`c_compat`; crystal.rotated_cells and `_first_evaluation`),
  * the pinned C's oversample_* factors applied to the running sum (`c_compat`; kernel.running_product_sum),
  * interpolation switched off for the rest of the image at the first out-of-range sample (both variants).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from . import kernel as K
from . import panels as PN
from .plan import DEFAULT_SAMPLES_PER_CHUNK, Plan
from .validation import check_chunk

Tensor = torch.Tensor


@dataclass(frozen=True)
class ChunkState:
    """The C's per-image state when a chunk starts: `interpolate` (cleared for the rest of the image by the
    first out-of-range sample) and whether the image's first evaluation is still to come (pinned C)."""

    interpolate: bool
    first_eval: bool = False


@dataclass
class ChunkResult:
    intensity: Tensor  # (C,) the float image values
    omega_sum: Tensor  # scalar: sum of omega_pixel over layers and sub-pixels (the C's omega_sum)
    switch_pixel: int | None = None  # position in the chunk of the first out-of-range interpolation sample
    first_pixel: int | None = None  # chunk position of the image's first evaluation (c_compat phi quirk)
    inter: K.Intermediates | None = None  # the pipeline's intermediates (kernel layout), when kept for a trace


def needs_state(plan: Plan, state: ChunkState) -> bool:
    """Whether a chunk needs `evaluate_chunk` (per-sample state), not the fused kernel."""
    return state.interpolate or (state.first_eval and plan.first_eval_phi_step is not None) or plan.running_product


def render_chunk(plan: Plan, flat_idx: Tensor, state: ChunkState) -> ChunkResult:
    """Render the pixels `flat_idx` (C,), in the C's order, from the image state `state`."""
    if needs_state(plan, state):
        return evaluate_chunk(plan, flat_idx, state)
    value, omega_sum = plan.kernel(flat_idx)
    return ChunkResult(intensity=value, omega_sum=omega_sum)


def _c_order(x: Tensor) -> Tensor:
    """A per-sample tensor (R, T, O2, S, C) as (C, T*O2*S*R): the C's loop order, pixel outermost."""
    return x.permute(4, 1, 2, 3, 0).reshape(x.shape[4], -1)


def evaluate_chunk(plan: Plan, flat_idx: Tensor, state: ChunkState, keep: bool = False) -> ChunkResult:
    """The pipeline of kernel.py with the C's per-image state: the pinned C's first evaluation, the one-way
    interpolation switch, the running-product sum; `keep`: return the intermediates (a trace)."""
    spec, x = plan.kernel.spec, plan.kernel.inputs
    f = K.pixel_factors(spec, x, flat_idx, keep=keep)
    hkl = K.sample_indices(x.cells, f, x)  # three (R, T, O2, S, C)
    first_pixel = None
    if state.first_eval and plan.first_eval_phi_step is not None:
        hkl, first_pixel = _first_evaluation(plan, hkl, f)
    hkl0 = K.rounded(hkl)
    dhkl, hkl0_lo = K.reduced(x, hkl, hkl0)
    F_latt = K.lattice_factor(spec, x, dhkl, hkl0_lo)
    shape = F_latt.shape
    C = flat_idx.shape[0]
    culled = f.culled if f.culled is not None else torch.zeros((), dtype=torch.bool, device=plan.device)
    reached = ~culled if plan.water_on else ~culled & (F_latt != 0.0)
    reached = reached.expand(shape)
    # structure factors, with the C's one-way switch from interpolation to nearest neighbour
    F_cell = K.structure_factor(spec, x, hkl0_lo).expand(shape)
    switch_pixel = None
    if state.interpolate:
        hkl_lo = tuple(h.to(plan.dtype) for h in hkl)
        F_interp = plan.fgrid.tricubic(hkl_lo)
        bad = _c_order(plan.fgrid.out_of_interpolation_range(hkl_lo) & reached).reshape(-1)
        if bool(bad.any()):
            k = int(torch.argmax(bad.to(torch.int8)))
            order = torch.arange(bad.numel(), device=plan.device).reshape(C, *shape[1:4], shape[0])
            F_cell = torch.where(order.permute(4, 1, 2, 3, 0) < k, F_interp, F_cell)
            switch_pixel = k // (bad.numel() // C)
        else:
            F_cell = F_interp
    terms = F_cell * F_cell * F_latt * F_latt
    if plan.running_product:
        terms = torch.where(culled, torch.zeros_like(terms), terms)
        I = K.running_product_sum(x.I_bg, _c_order(terms), _c_order(f.toggled.expand(shape)), _c_order(reached))
    else:
        I = K.sample_sum(x, K.sample_terms(terms, f))
    value = K.photons(spec, x, I, f)
    inter = None
    if keep:  # a trace: every stage, and the per-axis lattice factors of a SQUARE crystal
        axes = K.lattice_axes(spec, x, dhkl, hkl0_lo) if spec.shape == "SQUARE" else None
        inter = K.Intermediates.of(f, hkl=hkl, hkl0=hkl0, dhkl=dhkl, F_latt_axes=axes, F_latt=F_latt, F_cell=F_cell,
                                   I=I)
    return ChunkResult(value, f.omega_sum, switch_pixel, first_pixel, inter)


def _first_evaluation(plan: Plan, hkl, f: K.PixelFactors):
    """Pinned C: the image's first evaluation (the first (layer, sub-pixel, source) group, in raster order,
    that reaches the phi loop; dmin may cull whole pixels) still has the unrotated cell at the phi == 0 step
    (ap = a0).

    Returns (hkl, pixel): the chunk position of the pixel holding that evaluation (None: all culled)."""
    x = plan.kernel.inputs
    k = 0
    if f.culled is not None:
        alive = ~_c_order(f.culled[None]).reshape(-1)
        if not bool(alive.any()):
            return hkl, None
        k = int(torch.argmax(alive.to(torch.int8)))
    T, O2 = f.omega.shape[:2]
    S_n = x.wavelength.shape[0]
    c, rest = divmod(k, T * O2 * S_n)
    t, rest = divmod(rest, O2 * S_n)
    o, s = divmod(rest, S_n)
    # that group's indices with the unrotated cell of every mosaic domain, by the kernel's own formula
    M = plan.mosaic.domains
    i0 = plan.first_eval_phi_step
    fresh = torch.einsum("mij,vj->mvi", plan.mosaic.umats, plan.crystal.a0).to(x.pix0.dtype)  # (M, 3 vectors, 3)
    dif = tuple(f.dif_hi[i][t, o, c] for i in range(3))
    inc = tuple(x.incident[s, i] for i in range(3))
    stale = K.miller_indices(fresh, dif, inc, 1.0 / x.wavelength[s])  # three (M,)
    out = []
    for h, h_stale in zip(hkl, stale, strict=True):
        h = h.clone()
        h[i0 * M : (i0 + 1) * M, t, o, s, c] = h_stale
        out.append(h)
    return tuple(out), c


# the Triton kernel (compiled.py mode "triton") keeps every sample in registers: a chunk costs only its pixels'
# outputs (16 MB at float32), so the sample budget does not apply and a 1024^2 image is one launch
GPU_CHUNK_PIXELS = 1 << 22
# the eager kernel runs op by op (on one thread: compiled.one_thread): a chunk of 2^15 samples keeps each
# temporary (128 KB in float32) in the core's cache and reuses the allocator's blocks; 2^20, the compiled forms'
# budget, sends ~150 passes per chunk to memory and page-faults fresh 4 MB buffers (2x slower, 2.5x on a fresh
# process's first render)
EAGER_SAMPLES_PER_CHUNK = 1 << 15


def chunk_pixels(plan: Plan, samples_per_chunk: int | None = None) -> int:
    """Pixels per chunk: the caller's sample budget, else the kernel form's (eager, compiled, Triton)."""
    mode = plan.kernel.mode
    if mode == "triton":
        return GPU_CHUNK_PIXELS
    default = EAGER_SAMPLES_PER_CHUNK if mode == "eager" else DEFAULT_SAMPLES_PER_CHUNK
    budget = samples_per_chunk or default
    return max(1, budget // max(1, plan.samples_per_pixel))


@dataclass(frozen=True)
class TracedPixel:
    """A traced pixel: its stage results from a one-pixel evaluation in the image's state, and its image value."""

    inter: K.Intermediates
    value: Tensor  # the image's own value of the pixel
    pixel: tuple[int, ...]  # (slow, fast) or (panel, slow, fast)


@dataclass
class RenderResult:
    image: Tensor  # (spixels, fpixels) in the plan dtype; (P, S_max, F_max) for a multi-panel detector
    plan: Plan
    omega_sum: float
    trace: TracedPixel | None = None  # `trace_pixel`
    traces: dict[tuple[int, ...], TracedPixel] = field(default_factory=dict)  # keyed by the pixel

    def panel_images(self) -> list[Tensor]:
        """One (S_p, F_p) image per panel (views of the stack); [image] for a single detector."""
        if self.plan.panels is None:
            return [self.image]
        return PN.panel_images(self.image, self.plan.panels)


def render(
    plan: Plan,
    samples_per_chunk: int | None = None,
    trace_pixel: tuple[int, ...] | None = None,
    trace_pixels: list[tuple[int, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RenderResult:
    """Render the whole image chunk by chunk (the C's raster order); optionally keep the factors of
    `trace_pixel` / `trace_pixels` ((slow, fast) each; (panel, slow, fast) for panels), evaluated in the
    image's own state. `progress`, when given, is called after every chunk with (pixels done, pixels
    rendered) (progress.progress_bar draws one).

    With gradients enabled each chunk is checkpointed: its intermediates are recomputed in backward, so the
    backward pass is memory-bounded like the forward pass."""
    check_chunk(samples_per_chunk)
    order = plan.pixel_order
    n = order.numel()
    per_chunk = chunk_pixels(plan, samples_per_chunk or plan.samples_per_chunk)
    active = plan.interpolate
    # written chunk by chunk: no small per-chunk tensors stay behind to pin freed work buffers in the heap
    shape = plan.image_shape
    image = torch.zeros(math.prod(shape), dtype=plan.dtype, device=plan.device)
    omega_sum = torch.zeros((), dtype=plan.dtype, device=plan.device)
    wanted = list(trace_pixels or []) + ([trace_pixel] if trace_pixel is not None else [])
    pending = {_flat_index(shape, p): tuple(int(v) for v in p) for p in wanted}
    traces: dict[tuple[int, ...], TracedPixel] = {}
    grad = torch.is_grad_enabled()
    whole = n == image.numel()
    first = True  # the pinned C's first evaluation has not happened yet
    for start, stop, fresh in _chunk_bounds(plan, n, per_chunk):
        if fresh:  # an image starts (each panel is its own image where the state matters)
            active, first = plan.interpolate, True
        idx = order[start:stop]
        if grad:
            value, omega, state = checkpoint(_chunk_values, plan, idx, active, first, use_reentrant=False)
        else:
            value, omega, state = _chunk_values(plan, idx, active, first)
        if value.requires_grad:
            image = image.index_copy(0, idx.long(), value)
        elif whole:  # every pixel, in order: the chunk is a slice
            image[start : start + idx.numel()] = value
        else:
            image.index_copy_(0, idx.long(), value)
        omega_sum = omega_sum + omega.detach()
        switch, first_pixel = int(state[0]), int(state[1])
        for flat in [f for f in pending if pending[f] not in traces]:
            hit = (idx == flat).nonzero()
            if hit.numel():
                pos = int(hit[0, 0])
                here = ChunkState(active and (switch < 0 or switch >= pos),
                                  first and (first_pixel < 0 or first_pixel >= pos))
                one = evaluate_chunk(plan, idx[pos : pos + 1], here, keep=True)
                # the factors from the one-pixel evaluation; the final value is the image's own (a one-pixel
                # chunk may sum the samples in another order: 1 ulp)
                traces[pending[flat]] = TracedPixel(one.inter, value[pos], pending[flat])
        active = active and switch < 0
        first = first and first_pixel < 0
        if progress is not None:
            progress(stop, n)
    single = traces.get(tuple(int(v) for v in trace_pixel)) if trace_pixel is not None else None
    return RenderResult(
        image=image.reshape(shape),
        plan=plan,
        omega_sum=float(omega_sum),
        trace=single,
        traces=traces,
    )


def _chunk_bounds(plan: Plan, n: int, per_chunk: int):
    """(start, stop, fresh) of every chunk of the pixel order; `fresh`: the C's per-image state (the one-way
    interpolation switch, the pinned C's first evaluation) starts anew. One run over all pixels, except for a
    multi-panel plan with such state: one run per panel, as the C's rendering of each panel alone."""
    runs = [(0, n)]
    if plan.panels is not None and (plan.interpolate or plan.first_eval_phi_step is not None):
        sizes = [s * f for s, f in zip(plan.panels.spixels, plan.panels.fpixels, strict=True)]
        ends = np.cumsum(sizes).tolist()
        runs = list(zip([0, *ends[:-1]], ends, strict=True))
    for a, b in runs:
        for start in range(a, b, per_chunk):
            yield start, min(start + per_chunk, b), start == a


def _flat_index(shape: tuple[int, ...], pixel) -> int:
    """The raster index of a pixel (slow, fast), or (panel, slow, fast) of a multi-panel image."""
    if len(pixel) != len(shape):
        names = "(panel, slow, fast)" if len(shape) == 3 else "(slow, fast)"
        raise ValueError(f"trace pixel {tuple(pixel)}: expected {names} for an image of shape {tuple(shape)}")
    flat = 0
    for v, n in zip(pixel, shape, strict=True):
        flat = flat * n + int(v)
    return flat


def _chunk_values(plan: Plan, idx: Tensor, active: bool, first: bool) -> tuple[Tensor, Tensor, Tensor]:
    """render_chunk as a pure function of its inputs (for checkpointing):
    (values, omega_sum, [interpolation switch position or -1, first-evaluation position or -1])."""
    res = render_chunk(plan, idx, ChunkState(active, first))
    switch = -1 if res.switch_pixel is None else res.switch_pixel
    first = -1 if res.first_pixel is None else res.first_pixel
    return res.intensity, res.omega_sum, torch.tensor([switch, first])
