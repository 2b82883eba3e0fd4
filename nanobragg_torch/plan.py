"""The plan: a SimulationConfig validated and resolved once into what the sweep needs (the C's set-up before
`sweep over detector`).

`build_plan` reads top to bottom: validate the config (validation.py), resolve the set-up in float64 (detector
geometry, sensor layers, sources, panels, crystal, phi steps, mosaic domains, rotated cells, HKL grid), make
the C's discrete choices (interpolation, oversampling, step count, whether Miller indices need float64), cast
to the render dtype and assemble the kernel's switches (`KernelSpec`), tensors (`KernelInputs`) and compiled
form (`KernelRunner`). The result is a frozen `Plan`; a config equal in value to a recent one gets that plan
back (`_PLANS`). The sweep over pixels is engine.py.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from . import kernel as K
from . import panels as PN
from .beam import Sources, build_sources
from .compiled import KernelRunner, choose_mode
from .config import SimulationConfig, scalar_value
from .constants import AVOGADRO, R_E_SQR, WATER_F, WATER_MW
from .crystal import Crystal, Mosaic, PhiSweep, build_crystal, resolve_mosaic, resolve_phi, rotated_cells
from .detector import Geometry, Layers, resolve_layers
from .kernel import KernelInputs, KernelSpec
from .sampling import recommended_oversample
from .setup_cache import CACHES, NotCacheable, ValueCache, value_key
from .structure_factors import FGrid
from .validation import check_config
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
    geom64: Geometry  # the same detector in float64, as resolved (files carry the geometry asked for, as doubles)
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
    samples_per_chunk: int | None = None  # the caller's budget (None: by the kernel's form, engine.chunk_pixels)
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
    # 1. validate. A multi-panel detector is set up (and checked) through its reference panel's single-detector
    # form (anything that is not a config with a DetectorConfig goes straight to check_config, which names it);
    # the detector check_config checked is the plan's, resolved once in float64
    multi = isinstance(cfg, SimulationConfig) and getattr(cfg.detector, "panels", None) is not None
    setup = PN.reference_config(cfg) if multi else cfg
    geom = check_config(setup, dtype=dtype, device=device, samples_per_chunk=samples_per_chunk)
    device = torch.device(device)

    # 2. resolve the set-up (3-vectors and 3x3 matrices) in float64, as the C does; it is cast to the render
    # dtype afterwards: discrete choices (N from -xtalsize, step counts, oversampling) never see float32 rounding
    hi = torch.float64
    layers = resolve_layers(setup, hi, device)
    sources = build_sources(setup, geom, hi, device)
    panel_set = PN.resolve_panels(cfg, geom.beam, hi, device) if multi else None
    crystal = build_crystal(cfg, hi, device)
    phi = resolve_phi(cfg, hi, device)
    mosaic = resolve_mosaic(cfg, hi, device)
    cells = rotated_cells(crystal, phi, mosaic, geom.spindle, cfg.c_compat)
    fgrid = FGrid(cfg.crystal.structure_factors, torch.as_tensor(cfg.crystal.default_F, dtype=dtype, device=device),
                  dtype, device)

    # 3. the C's discrete choices
    interpolate = _interpolate(cfg, fgrid)
    lengths = tuple(float(x) for x in norm(crystal.a0).detach())
    N = tuple(float(n.detach()) for n in (crystal.Na, crystal.Nb, crystal.Nc))
    xtal_max = max(a * n for a, n in zip(lengths, N, strict=True))
    lambda0 = scalar_value(cfg.beam.wavelength)
    if panel_set is None:  # the C's recommended oversampling (of the most demanding panel)
        recip_pixel = lambda0 * float(geom.distance.detach()) / float(geom.pixel_size.detach())
        recommended = recommended_oversample(xtal_max, recip_pixel)
    else:
        recommended = PN.recommended_oversample(panel_set, lambda0, xtal_max)
    oversample = cfg.detector.oversample if (cfg.detector.oversample or 0) > 0 else recommended
    steps = len(sources.wavelength) * mosaic.domains * phi.steps * oversample * oversample
    if precise_hkl is None:  # Miller indices in float64 where the lattice transform is sharp (kernel.reduced)
        lam_min = float(sources.wavelength.detach().min())
        error = K.index_phase_error(N, lengths, lam_min, torch.finfo(dtype).eps)
        precise_hkl = error > K.INDEX_PHASE_TOLERANCE
    precise = precise_hkl and dtype != hi

    # 4. the kernel: its switches, its tensors (the index geometry from the float64 set-up) and compiled form
    crystal_lo, phi_lo, layers_lo = _cast(crystal, dtype), _cast(phi, dtype), _cast(layers, dtype)
    N_active = tuple(float(n.detach()) > 1.0 for n in (crystal_lo.Na, crystal_lo.Nb, crystal_lo.Nc))
    spec = _kernel_spec(cfg, layers_lo, N_active, fgrid, precise, panel_set)
    inputs = _kernel_inputs(cfg, dtype, hi if precise else dtype, geom, layers, sources, crystal, cells, fgrid,
                            oversample, steps, panel_set)
    pixel_order = _pixel_order(cfg, device) if panel_set is None else PN.pixel_order(panel_set, device)
    samples = layers.count * oversample**2 * len(sources.wavelength) * phi.steps * mosaic.domains
    samples *= pixel_order.numel()
    kernel = KernelRunner(spec, inputs, *choose_mode(spec, inputs, compile, samples, COMPILE_THRESHOLD))

    # 5. the plan, in the render dtype
    d = cfg.detector
    return Plan(
        cfg=cfg,
        dtype=dtype,
        device=device,
        geom=_cast(geom, dtype),
        geom64=geom,
        layers=layers_lo,
        sources=_cast(sources, dtype),
        crystal=crystal_lo,
        phi=phi_lo,
        mosaic=_cast(mosaic, dtype),
        cells=cells.to(dtype),
        fgrid=fgrid,
        oversample=oversample,
        recommended_oversample=recommended,
        steps=steps,
        interpolate=interpolate,
        N_active=spec.N_active,
        water_on=float(torch.as_tensor(cfg.beam.water_size, dtype=dtype).detach()) != 0.0,
        any_toggle=d.oversample_thick or d.oversample_polar or d.oversample_omega,
        pixel_order=pixel_order,
        first_eval_phi_step=_first_eval_phi_step(cfg, phi_lo),
        kernel=kernel,
        samples_per_chunk=samples_per_chunk,
        panels=None if panel_set is None else _cast(panel_set, dtype),
    )


def _interpolate(cfg: SimulationConfig, fgrid: FGrid) -> bool:
    """Tricubic F: the C's auto-selection (`interpolate > 1`: some N <= 2) unless given; never without data."""
    c = cfg.crystal
    if fgrid.hkls == 0:
        return False
    if c.interpolate is None:
        return any(scalar_value(n) <= 2 for n in (c.Na, c.Nb, c.Nc))
    return c.interpolate


def _first_eval_phi_step(cfg: SimulationConfig, phi: PhiSweep) -> int | None:
    """Pinned C (c_compat): the phi step that the image's first evaluation takes unrotated (engine._first_evaluation):
    step 0 when phi is 0 there and not everywhere (a zero at a later step reuses the previous step anyway)."""
    if not cfg.c_compat:
        return None
    zero = (phi.phi.detach() == 0.0).cpu().numpy()
    return 0 if zero[0] and not zero.all() else None


def _kernel_spec(cfg: SimulationConfig, layers: Layers, N_active: tuple[bool, bool, bool], fgrid: FGrid,
                 precise: bool, panel_set: PN.Panels | None) -> KernelSpec:
    """The kernel's discrete switches (`layers` in the render dtype, as the kernel sees the thickness)."""
    c, d, b = cfg.crystal, cfg.detector, cfg.beam
    return KernelSpec(
        shape=c.shape,
        N_active=N_active,
        curved=d.curved,
        point_pixel=d.point_pixel,
        thick_on=float(layers.thickness.detach()) != 0.0,
        dmin_on=c.dmin > 0.0,
        polar="off" if (b.nopolar and not d.oversample_polar) else ("sample" if d.oversample_polar else "pixel"),
        oversample_thick=d.oversample_thick,
        oversample_omega=d.oversample_omega,
        has_grid=fgrid.hkls > 0,
        wide_index=fgrid.wide_index,
        sparse_F=fgrid.sparse,
        precise_hkl=precise,
        panels=0 if panel_set is None else panel_set.count,
    )


def _kernel_inputs(cfg: SimulationConfig, dtype: torch.dtype, index_dtype: torch.dtype, geom: Geometry,
                   layers: Layers, sources: Sources, crystal: Crystal, cells: Tensor, fgrid: FGrid, oversample: int,
                   steps: int, panel_set: PN.Panels | None) -> KernelInputs:
    """The kernel's tensors from the float64 set-up: the inputs of kernel.INDEX_FIELDS in `index_dtype` (float64
    in a precise_hkl plan), the rest in the render dtype; contiguous (a compiled package assumes the strides it
    was built with, and mosaic cells come out transposed)."""
    device = geom.pix0.device
    c, d, b = cfg.crystal, cfg.detector, cfg.beam

    def t(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    def ix(x):  # an input of kernel.INDEX_FIELDS
        return torch.as_tensor(x, dtype=index_dtype, device=device)

    fluence = t(b.fluence)
    I_bg = WATER_F * WATER_F * R_E_SQR * fluence * t(b.water_size) ** 3 * 1e6 * AVOGADRO / WATER_MW
    o = torch.arange(oversample, dtype=index_dtype, device=device)
    subS, subF = torch.meshgrid(o, o, indexing="ij")
    inputs = KernelInputs(
        fpixels=torch.tensor(d.fpixels, dtype=torch.int64, device=device),
        oversample=ix(float(oversample)),
        subpixel=ix(geom.pixel_size / oversample),
        sub_f=subF.reshape(-1),
        sub_s=subS.reshape(-1),
        layer_t=torch.arange(layers.count, dtype=index_dtype, device=device),
        pixel_size=t(geom.pixel_size),
        close_distance=t(geom.close_distance),
        distance=ix(geom.distance),
        fdet=ix(geom.fdet),
        sdet=ix(geom.sdet),
        odet=ix(geom.odet),
        pix0=ix(geom.pix0),
        beam=ix(geom.beam),
        polar_vector=t(geom.polar_vector),
        layer_step=ix(layers.step),
        layer_mu=t(layers.mu),
        incident=ix(-sources.direction),
        wavelength=ix(sources.wavelength),
        cells=ix(cells.reshape(-1, 3, 3)),
        N=torch.stack([t(crystal.Na), t(crystal.Nb), t(crystal.Nc)]),
        fudge=t(c.fudge),
        a_star=t(crystal.a_star),
        F_table=fgrid.table,
        grid_shape=t(fgrid.shape),
        grid_lo=t(fgrid.lo),
        grid_hi=t(fgrid.hi),
        default_F=fgrid.default_F,
        I_bg=I_bg,
        kahn=t(b.polarization),
        fluence=fluence,
        steps=t(float(steps)),
        dmin=t(c.dmin),
        panel_pixels=torch.tensor(d.spixels * d.fpixels, dtype=torch.int64, device=device),
        F_index=fgrid.index,
    )
    if panel_set is not None:
        inputs = inputs._replace(**PN.panel_inputs(panel_set, oversample, dtype, index_dtype))
    return KernelInputs(*(x.contiguous() for x in inputs))


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
