"""The render: nanoBragg.c's pixel loop over chunks of pixels, each chunk one call of the per-pixel pipeline.

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

import dataclasses
import functools
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from . import kernel as K
from . import panels as PN
from .beam import Sources, build_sources
from .compiled import KernelRunner, choose_mode
from .config import AVOGADRO, R_E_SQR, WATER_F, WATER_MW, SimulationConfig, scalar_value
from .crystal import Crystal, Mosaic, PhiSweep, build_crystal, resolve_mosaic, resolve_phi, rotated_cells
from .detector import Geometry, Layers, resolve_geometry, resolve_layers
from .kernel import KernelInputs, KernelSpec
from .setup_cache import CACHES, NotCacheable, ValueCache, value_key
from .structure_factors import FGrid, wide_index
from .validation import check_chunk, check_config
from .vectors import norm

Tensor = torch.Tensor

DEFAULT_SAMPLES_PER_CHUNK = 1 << 20
COMPILE_THRESHOLD = 20_000_000  # samples: below this the one-off compile costs more than it saves


@dataclass(frozen=True)
class Plan:
    """Everything the pixel loop needs, resolved once (the C's set-up before `sweep over detector`); complete
    and immutable when `build_plan` returns it. The tensors the pipeline reads are `kernel.inputs`."""

    cfg: SimulationConfig
    dtype: torch.dtype
    device: torch.device
    geom: Geometry
    layers: Layers
    sources: Sources
    crystal: Crystal
    phi: PhiSweep
    mosaic: Mosaic
    cells: Tensor  # (P, M, 3, 3)
    fgrid: FGrid
    oversample: int
    recommended_oversample: int
    steps: int
    interpolate: bool
    N_active: tuple[bool, bool, bool]  # the C skips sincg on an axis with N <= 1
    water_on: bool  # -water background (then F_latt == 0 samples are not skipped)
    any_toggle: bool  # any of -oversample_thick/polar/omega
    pixel_order: Tensor  # (n,) int32 flat indices of the rendered pixels in the C's raster order
    first_eval_phi_step: int | None  # c_compat: the phi step that the image's first evaluation takes unrotated
    kernel: KernelRunner  # the per-pixel pipeline of this plan (its switches, tensors and compiled form)
    samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK
    panels: PN.Panels | None = None  # a multi-panel detector (render dtype); plan.geom is its reference panel

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(spixels, fpixels), or (P, S_max, F_max) for a multi-panel detector."""
        if self.panels is not None:
            return self.panels.shape
        return (self.cfg.detector.spixels, self.cfg.detector.fpixels)

    @property
    def compiled(self) -> bool:
        return self.kernel.mode != "eager"

    @property
    def fluence(self) -> Tensor:
        return self.kernel.inputs.fluence

    @property
    def running_product(self) -> bool:
        """The pinned C multiplies the running sum by the -oversample_* factors (kernel.running_product_sum)."""
        return self.any_toggle and self.cfg.c_compat

    @property
    def samples_per_pixel(self) -> int:
        return (
            self.layers.count * self.oversample**2 * len(self.sources.wavelength) * self.phi.steps * self.mosaic.domains
        )


def build_plan(
    cfg: SimulationConfig,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    compile: bool | None = None,
    samples_per_chunk: int | None = None,
    precise_hkl: bool | None = None,
) -> Plan:
    """Resolve the configuration for rendering. `compile`: run the fused kernel compiled (compiled.py; None:
    when its package is already cached or the render has more than COMPILE_THRESHOLD samples; env NB_COMPILE=0/1
    overrides). `precise_hkl`: Miller indices in float64 in a lower-precision render (None: where the render
    dtype would put more than kernel.INDEX_PHASE_TOLERANCE into the phase of sin(N pi h)).

    A config equal in value to one of the last few planned (no tensor requiring grad) reuses that plan's
    resolved set-up (`_PLANS`); only the kernel's compiled form is chosen anew (a package built since)."""
    key = _plan_key(cfg, dtype, device, samples_per_chunk, precise_hkl)
    if key is not None and key in _PLANS.entries:
        plan = _PLANS.get(key, lambda: None)
        spec, inputs = plan.kernel.spec, plan.kernel.inputs
        modes = choose_mode(spec, inputs, compile, _samples(plan), COMPILE_THRESHOLD)
        return dataclasses.replace(plan, cfg=cfg, kernel=KernelRunner(spec, inputs, *modes))
    plan = _build_plan(cfg, dtype, device, compile, samples_per_chunk, precise_hkl)
    if key is not None:
        _PLANS.get(key, lambda: plan)
    return plan


# the last few plans by the value of what they were built from (setup_cache.value_key): a dataset or a noise
# series re-planning one config pays a key (~50 us) instead of the set-up's few hundred small tensor operations
_PLANS = CACHES.setdefault("plan", ValueCache(size=4))


def _plan_key(cfg, dtype, device, samples_per_chunk, precise_hkl) -> Hashable | None:
    """The memo key of a plan, or None when it must be built afresh (a tensor requires grad; not a config)."""
    if not isinstance(cfg, SimulationConfig):
        return None
    try:
        return (value_key(cfg), str(dtype), str(device), samples_per_chunk, precise_hkl)
    except NotCacheable:
        return None


def _samples(plan: Plan) -> int:
    return plan.samples_per_pixel * plan.pixel_order.numel()


def _build_plan(
    cfg: SimulationConfig,
    dtype: torch.dtype,
    device: torch.device | str,
    compile: bool | None,
    samples_per_chunk: int | None,
    precise_hkl: bool | None,
) -> Plan:
    # a multi-panel detector is set up (and checked) through its reference panel's single-detector form
    # (anything that is not a config with a DetectorConfig goes straight to check_config, which names it)
    multi = isinstance(cfg, SimulationConfig) and getattr(cfg.detector, "panels", None) is not None
    setup = PN.reference_config(cfg) if multi else cfg
    check_config(setup, dtype=dtype, device=device, samples_per_chunk=samples_per_chunk)  # validation.py
    device = torch.device(device)

    def t(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    # the set-up (3-vectors and 3x3 matrices) runs in float64, as the C does, and is cast to the render dtype
    # afterwards: discrete choices (N from -xtalsize, step counts, oversampling) never see float32 rounding
    hi = torch.float64
    geom = resolve_geometry(setup, hi, device)
    layers = resolve_layers(setup, hi, device)
    sources = build_sources(setup, geom, hi, device)
    panel_set = PN.resolve_panels(cfg, geom.beam, hi, device) if setup is not cfg else None
    crystal = build_crystal(cfg, hi, device)
    phi = resolve_phi(cfg, hi, device)
    mosaic = resolve_mosaic(cfg, hi, device)
    cells = rotated_cells(crystal, phi, mosaic, geom.spindle, cfg.c_compat)
    c = cfg.crystal
    fgrid = FGrid(c.structure_factors, t(c.default_F), dtype, device)

    # interpolation auto-selection (the C's `interpolate > 1` rule) and the no-data override
    N = (crystal.Na, crystal.Nb, crystal.Nc)
    if c.interpolate is None:
        interpolate = any(scalar_value(n) <= 2 for n in (c.Na, c.Nb, c.Nc))
    else:
        interpolate = c.interpolate
    if fgrid.hkls == 0:
        interpolate = False

    # oversampling: recommended = ceil(3 * xtalsize_max / (lambda0 * distance / pixel))
    lengths = norm(crystal.a0).detach()
    xtal_max = max(float(lengths[i]) * float(N[i].detach()) for i in range(3))
    recip_pixel = scalar_value(cfg.beam.wavelength) * float(geom.distance.detach()) / float(geom.pixel_size.detach())
    recommended = math.ceil(3.0 * xtal_max / recip_pixel)
    if recommended <= 0:
        recommended = 1
    if panel_set is not None:  # the most demanding panel's
        recommended = PN.recommended_oversample(panel_set, scalar_value(cfg.beam.wavelength), xtal_max)
    oversample = cfg.detector.oversample if (cfg.detector.oversample or 0) > 0 else recommended
    steps = len(sources.wavelength) * mosaic.domains * phi.steps * oversample * oversample
    # the Miller indices and the geometry under them stay float64 in a lower-precision render where the lattice
    # transform is sharp (kernel.reduced)
    if precise_hkl is None:
        lam_min = float(sources.wavelength.detach().min())
        n_float = tuple(float(n.detach()) for n in N)
        error = K.index_phase_error(n_float, tuple(float(x) for x in lengths), lam_min, torch.finfo(dtype).eps)
        precise_hkl = error > K.INDEX_PHASE_TOLERANCE
    precise = precise_hkl and dtype != hi
    index_dtype = hi if precise else dtype
    geom_hi, layers_hi, sources_hi, cells_hi = geom, layers, sources, cells

    def ix(x):  # an input of kernel.INDEX_FIELDS
        return torch.as_tensor(x, dtype=index_dtype, device=device)

    geom, layers, sources, crystal, phi, mosaic = (
        _cast(x, dtype) for x in (geom, layers, sources, crystal, phi, mosaic)
    )
    cells = cells.to(dtype)
    N = (crystal.Na, crystal.Nb, crystal.Nc)
    N_active = tuple(float(n.detach()) > 1.0 for n in N)

    fluence = t(cfg.beam.fluence)
    water = t(cfg.beam.water_size)
    I_bg = WATER_F * WATER_F * R_E_SQR * fluence * water**3 * 1e6 * AVOGADRO / WATER_MW

    d, b = cfg.detector, cfg.beam
    thick_on = float(layers.thickness.detach()) != 0.0
    spec = KernelSpec(
        shape=c.shape,
        N_active=N_active,
        curved=d.curved,
        point_pixel=d.point_pixel,
        thick_on=thick_on,
        dmin_on=c.dmin > 0.0,
        polar="off" if (b.nopolar and not d.oversample_polar) else ("sample" if d.oversample_polar else "pixel"),
        oversample_thick=d.oversample_thick,
        oversample_omega=d.oversample_omega,
        has_grid=fgrid.hkls > 0,
        wide_index=wide_index(fgrid.grid),
        precise_hkl=precise,
        panels=0 if panel_set is None else panel_set.count,
    )
    o = torch.arange(oversample, dtype=index_dtype, device=device)
    subS, subF = torch.meshgrid(o, o, indexing="ij")
    inputs = KernelInputs(
        fpixels=torch.tensor(d.fpixels, dtype=torch.int64, device=device),
        oversample=ix(float(oversample)),
        subpixel=ix(geom_hi.pixel_size / oversample),
        sub_f=subF.reshape(-1),
        sub_s=subS.reshape(-1),
        layer_t=torch.arange(layers.count, dtype=index_dtype, device=device),
        pixel_size=geom.pixel_size,
        close_distance=geom.close_distance,
        distance=ix(geom_hi.distance),
        fdet=ix(geom_hi.fdet),
        sdet=ix(geom_hi.sdet),
        odet=ix(geom_hi.odet),
        pix0=ix(geom_hi.pix0),
        beam=ix(geom_hi.beam),
        polar_vector=geom.polar_vector,
        layer_step=ix(layers_hi.step),
        layer_mu=layers.mu,
        incident=ix(-sources_hi.direction),
        wavelength=ix(sources_hi.wavelength),
        cells=ix(cells_hi.reshape(-1, 3, 3)),
        N=torch.stack(N),
        fudge=t(c.fudge),
        a_star=crystal.a_star,
        F_table=fgrid.table,
        grid_shape=t(fgrid.grid.shape),
        grid_lo=t(fgrid.lo),
        grid_hi=t(fgrid.hi),
        default_F=fgrid.default_F,
        I_bg=I_bg,
        kahn=t(b.polarization),
        fluence=fluence,
        steps=t(float(steps)),
        dmin=t(c.dmin),
        panel_pixels=torch.tensor(d.spixels * d.fpixels, dtype=torch.int64, device=device),
    )
    if panel_set is not None:
        inputs = inputs._replace(**PN.panel_inputs(panel_set, oversample, dtype, index_dtype))
    # contiguous: a compiled package assumes the strides it was built with (mosaic cells come out transposed)
    inputs = KernelInputs(*(x.contiguous() for x in inputs))

    pixel_order = _pixel_order(cfg, device) if panel_set is None else PN.pixel_order(panel_set, device)
    first_step = None
    if cfg.c_compat:
        zero = (phi.phi.detach() == 0.0).cpu().numpy()
        if zero[0] and not zero.all():
            first_step = 0  # a zero at a later step reuses the previous step even in the first evaluation
    samples = layers.count * oversample**2 * len(sources.wavelength) * phi.steps * mosaic.domains
    samples *= pixel_order.numel()
    return Plan(
        cfg=cfg,
        dtype=dtype,
        device=device,
        geom=geom,
        layers=layers,
        sources=sources,
        crystal=crystal,
        phi=phi,
        mosaic=mosaic,
        cells=cells,
        fgrid=fgrid,
        oversample=oversample,
        recommended_oversample=recommended,
        steps=steps,
        interpolate=interpolate,
        N_active=N_active,
        water_on=float(water.detach()) != 0.0,
        any_toggle=d.oversample_thick or d.oversample_polar or d.oversample_omega,
        pixel_order=pixel_order,
        first_eval_phi_step=first_step,
        kernel=KernelRunner(spec, inputs, *choose_mode(spec, inputs, compile, samples, COMPILE_THRESHOLD)),
        samples_per_chunk=samples_per_chunk or DEFAULT_SAMPLES_PER_CHUNK,
        panels=None if panel_set is None else _cast(panel_set, dtype),
    )


def _cast(obj, dtype: torch.dtype):
    """A copy of a set-up dataclass with every floating tensor field cast to the render dtype."""
    changes = {
        f.name: getattr(obj, f.name).to(dtype)
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), torch.Tensor) and getattr(obj, f.name).is_floating_point()
    }
    return dataclasses.replace(obj, **changes)


@functools.lru_cache(maxsize=4)
def _all_pixels(n: int, device: torch.device) -> Tensor:
    """0..n-1 (int32), shared by the plans of one image size (read only): the page faults of a fresh 4 MB
    arange were a third of a small plan's set-up."""
    return torch.arange(n, dtype=torch.int32, device=device)


def rendered_pixels(d) -> np.ndarray | None:
    """(spixels, fpixels) bool of a single detector: the pixels the C renders (inside -roi, not masked); None
    when that is every pixel."""
    if d.roi is None and d.mask is None:
        return None
    F, S = d.fpixels, d.spixels
    ok = np.ones((S, F), dtype=bool)
    if d.roi is not None:
        xmin, xmax, ymin, ymax = d.roi
        f = np.arange(F)
        s = np.arange(S)
        ok &= ((f >= xmin) & (f <= xmax))[None, :] & ((s >= ymin) & (s <= ymax))[:, None]
    if d.mask is not None:
        ok &= np.asarray(d.mask).reshape(S, F) != 0
    return ok


def _pixel_order(cfg: SimulationConfig, device: torch.device) -> Tensor:
    """Flat indices (spixel*fpixels + fpixel) of the pixels the C renders: inside the ROI, not masked."""
    d = cfg.detector
    ok = rendered_pixels(d)
    if ok is None:
        return _all_pixels(d.spixels * d.fpixels, device)
    return torch.as_tensor(np.flatnonzero(ok.reshape(-1)).astype(np.int32), device=device)


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
    inter: dict | None = None  # the pipeline's intermediates (kernel layout), when kept for a trace


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
    culled = f["culled"] if f["culled"] is not None else torch.zeros((), dtype=torch.bool, device=plan.device)
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
        I = K.running_product_sum(x.I_bg, _c_order(terms), _c_order(f["toggled"].expand(shape)), _c_order(reached))
    else:
        I = K.sample_sum(x, K.sample_terms(terms, f))
    value = K.photons(spec, x, I, f)
    inter = dict(f, hkl=hkl, hkl0=hkl0, dhkl=dhkl, F_latt=F_latt, F_cell=F_cell, I=I) if keep else None
    return ChunkResult(value, f["omega_sum"], switch_pixel, first_pixel, inter)


def _first_evaluation(plan: Plan, hkl, f: dict):
    """Pinned C: the image's first evaluation (the first (layer, sub-pixel, source) group, in raster order,
    that reaches the phi loop; dmin may cull whole pixels) still has the unrotated cell at the phi == 0 step
    (ap = a0).

    Returns (hkl, pixel): the chunk position of the pixel holding that evaluation (None: all culled)."""
    x = plan.kernel.inputs
    k = 0
    if f["culled"] is not None:
        alive = ~_c_order(f["culled"][None]).reshape(-1)
        if not bool(alive.any()):
            return hkl, None
        k = int(torch.argmax(alive.to(torch.int8)))
    T, O2 = f["omega"].shape[:2]
    S_n = x.wavelength.shape[0]
    c, rest = divmod(k, T * O2 * S_n)
    t, rest = divmod(rest, O2 * S_n)
    o, s = divmod(rest, S_n)
    # the scattering vector of that group: (diffracted - incident)/lambda
    S = torch.stack([(f["dif_hi"][i][t, o, c] - x.incident[s, i]) / x.wavelength[s] for i in range(3)])
    M = plan.mosaic.domains
    i0 = plan.first_eval_phi_step
    fresh = torch.einsum("mij,vj->mvi", plan.mosaic.umats, plan.crystal.a0).to(S.dtype)  # (M, 3 vectors, 3)
    out = []
    for v, h in enumerate(hkl):
        h = h.clone()
        h[i0 * M : (i0 + 1) * M, t, o, s, c] = fresh[:, v, :] @ S
        out.append(h)
    return tuple(out), c


# the Triton kernel (compiled.py mode "triton") keeps every sample in registers: a chunk costs only its pixels'
# outputs (16 MB at float32), so the sample budget does not apply and a 1024^2 image is one launch
GPU_CHUNK_PIXELS = 1 << 22


def chunk_pixels(plan: Plan, samples_per_chunk: int | None = None) -> int:
    if plan.kernel.mode == "triton":
        return GPU_CHUNK_PIXELS
    per_pixel = plan.samples_per_pixel
    budget = samples_per_chunk or DEFAULT_SAMPLES_PER_CHUNK
    return max(1, budget // max(1, per_pixel))


@dataclass
class RenderResult:
    image: Tensor  # (spixels, fpixels) in the plan dtype; (P, S_max, F_max) for a multi-panel detector
    plan: Plan
    omega_sum: float
    trace: dict | None = None  # the factors of `trace_pixel`
    traces: dict = field(default_factory=dict)  # (slow, fast) or (panel, slow, fast) -> factors

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
    traces: dict[tuple[int, int], dict] = {}
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
                traces[pending[flat]] = {"inter": one.inter, "value": value[pos], "pixel": pending[flat]}
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
