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
import math
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from . import kernel as K
from . import panels as PN
from .beam import Sources, build_sources
from .compiled import KernelRunner, choose_mode
from .config import AVOGADRO, R_E_SQR, WATER_F, WATER_MW, SimulationConfig, scalar_value
from .crystal import Crystal, Mosaic, PhiSweep, build_crystal, resolve_mosaic, resolve_phi, rotated_cells
from .detector import Geometry, Layers, resolve_layers
from .kernel import KernelInputs, KernelSpec
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
    # validation.py; the detector it checked, resolved in float64 as the whole set-up is (then cast)
    geom = check_config(setup, dtype=dtype, device=device, samples_per_chunk=samples_per_chunk)
    device = torch.device(device)

    def t(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    # the set-up (3-vectors and 3x3 matrices) runs in float64, as the C does, and is cast to the render dtype
    # afterwards: discrete choices (N from -xtalsize, step counts, oversampling) never see float32 rounding
    hi = torch.float64
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
        wide_index=fgrid.wide_index,
        sparse_F=fgrid.sparse,
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
