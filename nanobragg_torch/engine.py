"""The vectorized render: nanoBragg.c's pixel loop as tensor algebra over chunks of pixels.

For a chunk of C pixels every sample is evaluated at once, broadcasting over
(pixel C, layer T, sub-pixel O2, source S, phi P, mosaic domain M); the intensity is reduced over the samples
inside the chunk, so peak memory is bounded by the chunk size, not by the image. Chunks that need no
per-sample state go through the fused kernel (kernel.py, compiled by compiled.py); the general path here
serves traces, test hooks and the stateful behaviours. The C's order of evaluation matters for three of
them, reproduced exactly:
  * the pinned C's phi == 0 stale rotation (`c_compat`; see crystal.rotated_cells and `_first_evaluation`),
  * the pinned C's oversample_* factors applied to the running sum (`c_compat`; `_running_product_sum`),
  * interpolation switched off for the rest of the image at the first out-of-range sample (both variants).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .beam import Sources, build_sources
from .compiled import KernelRunner, choose_mode
from .config import AVOGADRO, R_E_SQR, WATER_F, WATER_MW, SimulationConfig, scalar_value
from .crystal import Crystal, Mosaic, PhiSweep, build_crystal, resolve_mosaic, resolve_phi, rotated_cells
from .detector import Geometry, Layers, resolve_geometry, resolve_layers
from .kernel import kernel_inputs, kernel_spec, miller_indices
from .lattice import shape_factor, square_factors
from .polarization import kahn_polarization
from .structure_factors import FGrid
from .validation import check_chunk, check_config
from .vectors import dot, norm, rotate_axis

Tensor = torch.Tensor

DEFAULT_SAMPLES_PER_CHUNK = 1 << 20
COMPILE_THRESHOLD = 20_000_000  # samples: below this the one-off compile costs more than it saves


@dataclass
class Plan:
    """Everything the pixel loop needs, resolved once (the C's set-up before `sweep over detector`)."""

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
    I_bg: Tensor
    fluence: Tensor
    polarization: Tensor
    fudge: Tensor
    N: tuple[Tensor, Tensor, Tensor]
    N_active: tuple[bool, bool, bool]  # the C skips sincg on an axis with N <= 1
    thick_on: bool  # detector thickness modelled (else capture_fraction = 1)
    water_on: bool  # -water background (then F_latt == 0 samples are not skipped)
    any_toggle: bool  # any of -oversample_thick/polar/omega
    pixel_order: Tensor  # (n,) int32 flat indices of the rendered pixels in the C's raster order
    first_eval_phi_step: int | None  # c_compat: the phi step that the image's first evaluation takes unrotated
    hooks: dict[str, float] = field(default_factory=dict)  # test-only factor perturbations (drift demos)
    samples_per_chunk: int = DEFAULT_SAMPLES_PER_CHUNK
    kernel: KernelRunner | None = None  # the fused kernel for chunks that need no per-sample state

    @property
    def compiled(self) -> bool:
        return self.kernel is not None and self.kernel.mode != "eager"

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
) -> Plan:
    """Resolve the configuration for rendering. `compile`: run the fused kernel compiled (compiled.py; None:
    when its package is already cached or the render has more than COMPILE_THRESHOLD samples; env NB_COMPILE=0/1
    overrides)."""
    check_config(cfg, dtype=dtype, device=device, samples_per_chunk=samples_per_chunk)  # validation.py
    device = torch.device(device)

    def t(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    # the set-up (3-vectors and 3x3 matrices) runs in float64, as the C does, and is cast to the render dtype
    # afterwards: discrete choices (N from -xtalsize, step counts, oversampling) never see float32 rounding
    hi = torch.float64
    geom = resolve_geometry(cfg, hi, device)
    layers = resolve_layers(cfg, hi, device)
    sources = build_sources(cfg, geom, hi, device)
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
    oversample = cfg.detector.oversample if (cfg.detector.oversample or 0) > 0 else recommended
    steps = len(sources.wavelength) * mosaic.domains * phi.steps * oversample * oversample
    geom, layers, sources, crystal, phi, mosaic = (
        _cast(x, dtype) for x in (geom, layers, sources, crystal, phi, mosaic)
    )
    cells = cells.to(dtype)
    N = (crystal.Na, crystal.Nb, crystal.Nc)

    fluence = t(cfg.beam.fluence)
    water = t(cfg.beam.water_size)
    I_bg = WATER_F * WATER_F * R_E_SQR * fluence * water**3 * 1e6 * AVOGADRO / WATER_MW

    pixel_order = _pixel_order(cfg, device)
    first_step = None
    if cfg.c_compat:
        zero = (phi.phi.detach() == 0.0).cpu().numpy()
        if zero[0] and not zero.all():
            first_step = 0  # a zero at a later step reuses the previous step even in the first evaluation
    plan = Plan(
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
        I_bg=I_bg,
        fluence=fluence,
        polarization=t(cfg.beam.polarization),
        fudge=t(c.fudge),
        N=N,
        N_active=tuple(float(n.detach()) > 1.0 for n in N),
        thick_on=float(layers.thickness.detach()) != 0.0,
        water_on=float(water.detach()) != 0.0,
        any_toggle=cfg.detector.oversample_thick or cfg.detector.oversample_polar or cfg.detector.oversample_omega,
        pixel_order=pixel_order,
        first_eval_phi_step=first_step,
        samples_per_chunk=samples_per_chunk or DEFAULT_SAMPLES_PER_CHUNK,
    )
    spec, inputs = kernel_spec(plan), kernel_inputs(plan)
    samples = plan.samples_per_pixel * pixel_order.numel()
    plan.kernel = KernelRunner(spec, inputs, *choose_mode(spec, inputs, compile, samples, COMPILE_THRESHOLD))
    return plan


def _cast(obj, dtype: torch.dtype):
    """A copy of a set-up dataclass with every floating tensor field cast to the render dtype."""
    changes = {
        f.name: getattr(obj, f.name).to(dtype)
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), torch.Tensor) and getattr(obj, f.name).is_floating_point()
    }
    return dataclasses.replace(obj, **changes)


def _pixel_order(cfg: SimulationConfig, device: torch.device) -> Tensor:
    """Flat indices (spixel*fpixels + fpixel) of the pixels the C renders: inside the ROI, not masked."""
    d = cfg.detector
    F, S = d.fpixels, d.spixels
    if d.roi is None and d.mask is None:
        return torch.arange(S * F, dtype=torch.int32, device=device)
    ok = np.ones((S, F), dtype=bool)
    if d.roi is not None:
        xmin, xmax, ymin, ymax = d.roi
        f = np.arange(F)
        s = np.arange(S)
        ok &= ((f >= xmin) & (f <= xmax))[None, :] & ((s >= ymin) & (s <= ymax))[:, None]
    if d.mask is not None:
        ok &= np.asarray(d.mask).reshape(S, F) != 0
    return torch.as_tensor(np.flatnonzero(ok.reshape(-1)).astype(np.int32), device=device)


@dataclass
class ChunkResult:
    intensity: Tensor  # (C,) the float image values
    omega_sum: Tensor  # scalar: sum of omega_pixel over layers and sub-pixels (the C's omega_sum)
    switch_pixel: int | None  # position in the chunk of the first out-of-range interpolation sample
    inter: dict[str, Tensor] | None = None
    first_pixel: int | None = None  # chunk position of the image's first evaluation (c_compat phi quirk)


class InterpolationState:
    """The C's `interpolate` flag, which the first out-of-range sample clears for the rest of the image."""

    def __init__(self, active: bool) -> None:
        self.active = active


def sample_miller_indices(f: dict[str, Tensor], cells: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """h, k, l of every orientation r (cells (R, 3, 3)) and group n of `pixel_factors` f: three (R, n)."""
    dif = f["diffracted"][..., None, :]  # (C, T, O2, 1, 3)
    inc, lam = f["incident"], f["lam"]  # (Ns, 3), (Ns,)
    hkl = miller_indices(
        cells[:, None, None, None, None], dif.unbind(-1), inc.unbind(-1), 1.0 / lam
    )  # (R, C, T, O2, Ns)
    R = cells.shape[0]
    return tuple(x.reshape(R, -1) for x in hkl)


def lattice_transform(plan: Plan, hkl, hkl0):
    """F_latt (and the per-axis sincg factors for the square crystal) of every sample."""
    shape = plan.cfg.crystal.shape
    if shape == "SQUARE":
        fa, fb, fc = square_factors(hkl, hkl0, plan.N, plan.N_active)
        return fa * fb * fc, (fa, fb, fc)
    return shape_factor(shape, hkl, hkl0, plan.N, plan.crystal.a_star, plan.fudge), None


def pixel_factors(plan: Plan, flat_idx: Tensor) -> dict[str, Tensor]:
    """Everything of the chunk's pixels that does not depend on the crystal orientation: sub-pixel positions,
    solid angle, capture fraction, scattering vectors of every (pixel, layer, sub-pixel, source) group, dmin
    culling, polarization, and the per-group factors of -oversample_thick/polar/omega."""
    cfg, g, dt, dev = plan.cfg, plan.geom, plan.dtype, plan.device
    d = cfg.detector
    O = plan.oversample
    T = plan.layers.count
    fp = (flat_idx % d.fpixels).to(dt)
    sp = torch.div(flat_idx, d.fpixels, rounding_mode="floor").to(dt)

    # sub-pixel positions: Fdet = subpixel_size*(fpixel*oversample + subF) + subpixel_size/2
    sub = g.pixel_size / O
    subS, subF = plan.kernel.inputs.sub_s, plan.kernel.inputs.sub_f  # (O2,) in the C's subS-major order
    Fdet = sub * (fp[:, None] * O + subF[None, :]) + sub / 2.0  # (C, O2)
    Sdet = sub * (sp[:, None] * O + subS[None, :]) + sub / 2.0
    Odet = torch.arange(T, dtype=dt, device=dev) * plan.layers.step  # (T,)
    pos = (
        Fdet[:, None, :, None] * g.fdet + Sdet[:, None, :, None] * g.sdet + Odet[None, :, None, None] * g.odet + g.pix0
    )  # (C, T, O2, 3)
    if d.curved:
        base = g.distance * g.beam
        tmp = rotate_axis(base, g.sdet, pos[..., 1] / g.distance)
        pos = rotate_axis(tmp, g.fdet, pos[..., 2] / g.distance)
    airpath = norm(pos)
    diffracted = pos / airpath.unsqueeze(-1)

    # solid angle: pixel_size^2/airpath^2 * close_distance/airpath (or 1/airpath^2 for -point_pixel)
    if d.point_pixel:
        omega_all = 1.0 / airpath / airpath
    else:
        omega_all = g.pixel_size * g.pixel_size / airpath / airpath * g.close_distance / airpath
    omega_all = omega_all * plan.hooks.get("omega_pixel", 1.0)
    omega_first = omega_all[:, 0, 0]  # cached from the first sub-pixel of the first layer
    omega_used = omega_all if d.oversample_omega else omega_first[:, None, None].expand(-1, T, O * O)
    omega_sum = omega_used.sum()

    # capture fraction per layer: exp(-t*step*mu/parallax) - exp(-(t+1)*step*mu/parallax)
    if plan.thick_on:
        parallax = dot(diffracted, g.odet)
        tt = torch.arange(T, dtype=dt, device=dev)[None, :, None]
        step_mu = plan.layers.step * plan.layers.mu
        capture_all = torch.exp(-tt * step_mu / parallax) - torch.exp(-(tt + 1) * step_mu / parallax)
    else:
        capture_all = torch.ones_like(airpath)
    capture_all = capture_all * plan.hooks.get("capture_fraction", 1.0)
    capture_last = capture_all[:, T - 1, 0]  # the C applies the last layer's value (first sub-pixel)

    # sources and scattering vector S = (diffracted - incident)/lambda, groups n = (C, T, O2, Ns) flattened
    incident = -plan.sources.direction  # (Ns, 3)
    lam = plan.sources.wavelength
    scattering = (diffracted[:, :, :, None, :] - incident) / lam[:, None]  # (C, T, O2, Ns, 3)
    gshape = scattering.shape[:-1]
    C = gshape[0]
    stol = 0.5 * norm(scattering)
    dmin = cfg.crystal.dmin
    if dmin > 0.0:
        culled = (stol > 0.0) & (dmin > 0.5 / torch.where(stol > 0, stol, torch.ones_like(stol)))
    else:
        culled = torch.zeros(gshape, dtype=torch.bool, device=dev)

    # polarization (Kahn): cached per pixel from its first evaluated source unless -oversample_polar
    b = cfg.beam
    if b.nopolar and not d.oversample_polar:
        polar_all = torch.ones(gshape, dtype=dt, device=dev)
    elif d.oversample_polar or dmin > 0.0:
        polar_all = kahn_polarization(plan.polarization, incident, diffracted[:, :, :, None, :], g.polar_vector)
    else:
        polar_all = kahn_polarization(
            plan.polarization, incident[:1], diffracted[:, :1, :1, None, :], g.polar_vector
        ).expand(gshape)
    polar_all = polar_all * plan.hooks.get("polar", 1.0)
    if b.nopolar and not d.oversample_polar:
        polar_first = torch.ones(C, dtype=dt, device=dev)
    else:
        alive = (~culled).reshape(C, -1)
        first = torch.argmax(alive.to(torch.int8), dim=1)
        polar_first = polar_all.reshape(C, -1).gather(1, first[:, None])[:, 0]
        polar_first = torch.where(alive.any(1), polar_first, torch.zeros_like(polar_first))

    # factors applied per sample when -oversample_thick/polar/omega are on
    toggled = torch.ones(gshape, dtype=dt, device=dev)
    if d.oversample_thick:
        toggled = toggled * capture_all[..., None]
    if d.oversample_polar:
        toggled = toggled * polar_all
    if d.oversample_omega:
        toggled = toggled * omega_all[..., None]
    toggled = toggled.reshape(-1)

    return dict(
        pos=pos,
        airpath=airpath,
        diffracted=diffracted,
        omega_all=omega_all,
        omega_first=omega_first,
        omega_sum=omega_sum,
        capture_all=capture_all,
        capture_last=capture_last,
        incident=incident,
        lam=lam,
        scattering=scattering,
        stol=stol,
        culled=culled,
        polar_all=polar_all,
        polar_first=polar_first,
        toggled=toggled,
        S=scattering.reshape(-1, 3).T,
    )


def scale_to_photons(plan: Plan, I: Tensor, f: dict[str, Tensor]) -> Tensor:
    """test = r_e_sqr*fluence*I/steps, times the cached capture fraction, polarization and solid angle."""
    d = plan.cfg.detector
    value = R_E_SQR * plan.fluence * I * plan.hooks.get("I_before_scaling", 1.0) / plan.steps
    if not d.oversample_thick:
        value = value * f["capture_last"]
    if not d.oversample_polar:
        value = value * f["polar_first"]
    if not d.oversample_omega:
        value = value * f["omega_first"]
    return value


def render_chunk(
    plan: Plan, flat_idx: Tensor, interp: InterpolationState, first_eval: bool = False, keep: bool = False
) -> ChunkResult:
    """Render the pixels `flat_idx` (C,), in the C's order; `first_eval`: the image's first evaluation has
    not happened before this chunk."""
    cfg = plan.cfg
    first_fix = first_eval and plan.first_eval_phi_step is not None
    general = keep or interp.active or first_fix or (plan.any_toggle and cfg.c_compat) or bool(plan.hooks)
    if not general:
        value, omega_sum = plan.kernel(flat_idx)
        return ChunkResult(intensity=value, omega_sum=omega_sum, switch_pixel=None)
    dev = plan.device
    f = pixel_factors(plan, flat_idx)
    culled, toggled, S = f["culled"], f["toggled"], f["S"]
    C = flat_idx.shape[0]
    cells = plan.cells.reshape(-1, 3, 3)  # (R, 3, 3), r = phi_tic*domains + mos_tic
    R = cells.shape[0]
    switch_pixel = None
    inter = None
    hkl = sample_miller_indices(f, cells)  # three (R, n)
    first_pixel = None
    if first_fix:
        hkl, first_pixel = _first_evaluation(plan, hkl, S, culled)
    hkl0 = tuple(torch.ceil(x - 0.5).detach() for x in hkl)
    F_latt, axes = lattice_transform(plan, hkl, hkl0)
    F_latt = F_latt * plan.hooks.get("F_latt", 1.0)
    reached = ~culled.reshape(1, -1).expand(R, -1)
    if not plan.water_on:
        reached = reached & (F_latt != 0.0)
    # structure factors, with the C's one-way switch from interpolation to nearest neighbour
    F_near = plan.fgrid.nearest(hkl0)
    if interp.active:
        bad = (plan.fgrid.out_of_interpolation_range(hkl) & reached).T.reshape(-1)  # C order: (n, R)
        F_interp = plan.fgrid.tricubic(hkl)
        if bool(bad.any()):
            k = int(torch.argmax(bad.to(torch.int8)))
            order = torch.arange(bad.numel(), device=dev).reshape(-1, R).T
            F_cell = torch.where(order < k, F_interp, F_near)
            switch_pixel = k // (bad.numel() // C)
            interp.active = False
        else:
            F_cell = F_interp
    else:
        F_cell = F_near
    F_cell = F_cell * plan.hooks.get("F_cell", 1.0)
    contrib = F_cell * F_cell * F_latt * F_latt
    contrib = torch.where(culled.reshape(1, -1), torch.zeros_like(contrib), contrib)  # (R, n)
    if plan.any_toggle and cfg.c_compat:
        I = _running_product_sum(
            plan.I_bg,
            contrib.T.reshape(C, -1),
            toggled[:, None].expand(-1, R).reshape(C, -1),
            reached.T.reshape(C, -1),
        )
    else:
        I = plan.I_bg + (contrib.sum(0) * toggled).reshape(C, -1).sum(1)
    if keep:

        def last(x):  # value at the pixel's last sample: group n-1, orientation R-1
            return x[-1, -1]

        inter = dict(
            f,
            hkl=torch.stack([last(x) for x in hkl]),
            hkl0=torch.stack([last(x) for x in hkl0]),
            axes=None if axes is None else torch.stack([last(x) for x in axes]),
            F_latt=last(F_latt),
            F_cell=last(F_cell),
            cells=plan.cells,
            lam=f["lam"],
        )
    value = scale_to_photons(plan, I, f)
    if inter is not None:
        inter["I"] = I * plan.hooks.get("I_before_scaling", 1.0)
    return ChunkResult(
        intensity=value,
        omega_sum=f["omega_sum"],
        switch_pixel=switch_pixel,
        inter=inter,
        first_pixel=first_pixel,
    )


def _first_evaluation(plan: Plan, hkl, S: Tensor, culled: Tensor):
    """Pinned C: the image's first evaluation (the first group, in raster order, that reaches the phi loop;
    dmin may cull whole pixels) still has the unrotated cell at the phi == 0 step (ap = a0).

    Returns (hkl, pixel): the chunk position of the pixel holding that evaluation (None: all culled)."""
    alive = ~culled.reshape(-1)
    if not bool(alive.any()):
        return hkl, None
    k = int(torch.argmax(alive.to(torch.int8)))
    M = plan.mosaic.domains
    i0 = plan.first_eval_phi_step
    fresh = torch.einsum("mij,vj->mvi", plan.mosaic.umats, plan.crystal.a0)  # (M, 3 vectors, 3)
    out = []
    for v, x in enumerate(hkl):
        x = x.clone()
        x[i0 * M : (i0 + 1) * M, k] = fresh[:, v, :] @ S[:, k]
        out.append(x)
    return tuple(out), k // (alive.numel() // culled.shape[0])


def _running_product_sum(I_bg: Tensor, contrib: Tensor, factor: Tensor, reached: Tensor) -> Tensor:
    """Pinned C: `I += term; I *= factor` after each sample, i.e. I = I_bg*prod(f) + sum_k c_k prod_{j>=k} f_j.

    Inputs are (C, K) in the C's sample order; samples the C skips (culled, F_latt == 0) do not multiply."""
    f = torch.where(reached, factor, torch.ones_like(factor))
    suffix = torch.flip(torch.cumprod(torch.flip(f, [1]), dim=1), [1])
    return I_bg * suffix[:, 0] + (contrib * suffix).sum(1)


def chunk_pixels(plan: Plan, samples_per_chunk: int | None = None) -> int:
    per_pixel = plan.samples_per_pixel
    budget = samples_per_chunk or DEFAULT_SAMPLES_PER_CHUNK
    return max(1, budget // max(1, per_pixel))


@dataclass
class RenderResult:
    image: Tensor  # (spixels, fpixels) in the plan dtype
    plan: Plan
    omega_sum: float
    trace: dict | None = None  # the factors of `trace_pixel`
    traces: dict = field(default_factory=dict)  # (slow, fast) -> factors, for every traced pixel


def render(
    plan: Plan,
    samples_per_chunk: int | None = None,
    trace_pixel: tuple[int, int] | None = None,
    trace_pixels: list[tuple[int, int]] | None = None,
) -> RenderResult:
    """Render the whole image chunk by chunk (the C's raster order); optionally keep the factors of
    `trace_pixel` / `trace_pixels` ((slow, fast) each), evaluated in the image's own state.

    With gradients enabled each chunk is checkpointed: its intermediates are recomputed in backward, so the
    backward pass is memory-bounded like the forward pass."""
    check_chunk(samples_per_chunk)
    cfg = plan.cfg
    d = cfg.detector
    order = plan.pixel_order
    n = order.numel()
    per_chunk = chunk_pixels(plan, samples_per_chunk or plan.samples_per_chunk)
    active = plan.interpolate
    # written chunk by chunk: no small per-chunk tensors stay behind to pin freed work buffers in the heap
    image = torch.zeros(d.spixels * d.fpixels, dtype=plan.dtype, device=plan.device)
    omega_sum = torch.zeros((), dtype=plan.dtype, device=plan.device)
    wanted = list(trace_pixels or []) + ([trace_pixel] if trace_pixel is not None else [])
    pending = {int(p[0]) * d.fpixels + int(p[1]): (int(p[0]), int(p[1])) for p in wanted}
    traces: dict[tuple[int, int], dict] = {}
    grad = torch.is_grad_enabled()
    whole = n == image.numel()
    first = True  # the pinned C's first evaluation has not happened yet
    for start in range(0, n, per_chunk):
        idx = order[start : start + per_chunk]
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
                state = InterpolationState(active and (switch < 0 or switch >= pos))
                before = first and (first_pixel < 0 or first_pixel >= pos)
                one = render_chunk(plan, idx[pos : pos + 1], state, first_eval=before, keep=True)
                traces[pending[flat]] = {"inter": one.inter, "value": one.intensity[0]}
        active = active and switch < 0
        first = first and first_pixel < 0
    single = traces.get(tuple(int(v) for v in trace_pixel)) if trace_pixel is not None else None
    return RenderResult(
        image=image.reshape(d.spixels, d.fpixels),
        plan=plan,
        omega_sum=float(omega_sum),
        trace=single,
        traces=traces,
    )


def _chunk_values(plan: Plan, idx: Tensor, active: bool, first: bool) -> tuple[Tensor, Tensor, Tensor]:
    """render_chunk as a pure function of its inputs (for checkpointing):
    (values, omega_sum, [interpolation switch position or -1, first-evaluation position or -1])."""
    res = render_chunk(plan, idx, InterpolationState(active), first_eval=first)
    switch = -1 if res.switch_pixel is None else res.switch_pixel
    first = -1 if res.first_pixel is None else res.first_pixel
    return res.intensity, res.omega_sum, torch.tensor([switch, first])
