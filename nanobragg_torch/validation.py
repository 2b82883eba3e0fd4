"""One validation layer for finished configurations: the CLI and the API refuse the same things.

`check_config` looks at a SimulationConfig field by field (finiteness, the ranges the physics needs, enum
values, array shapes), checks the resolved detector and estimates the memory of the render before anything is
allocated. A refusal is a `ConfigError` (a ValueError) naming the config field; the CLI passes `flags=True` and
the message names the C flags instead (the flag table's `fields` column, `flagtable.flags_setting`). Values the
C quietly replaces by its auto rule (`-phisteps 0`, `-mosaic_domains 0`, `-oversample -5`, N <= 1, a negative
-lambda or -distance, ...) are accepted here and handled as the C does; values for which the C renders NaN or
zeros are refused in both modes. Both lists are in the quirk registry (quirks.INVALID_VALUES_C_RULES,
quirks.INVALID_VALUES_REFUSED).
"""

from __future__ import annotations

import functools
import math
import typing

import numpy as np
import torch

from .beam import BEAM_STEPS
from .config import BeamConfig, CrystalConfig, DetectorConfig, SimulationConfig, SparseGrid, scalar_value
from .detector import Geometry, geometry_key, resolve_geometry
from .errors import ConfigError
from .memory import BYTES_PER_PIXEL, BYTES_PER_SAMPLE, allocation_problem
from .sampling import auto_steps, recommended_oversample
from .setup_cache import CACHES, NotCacheable, ValueCache, value_key


def _value(x) -> float:
    return scalar_value(x)


# angles (radians): beyond MAX_ANGLE a float32 render cannot tell one degree from the next
ANGLES = frozenset(
    {"detector.rotx", "detector.roty", "detector.rotz", "detector.twotheta", "crystal.phi0", "crystal.osc",
     "crystal.phistep", "crystal.mosaic_spread", "crystal.misset", "beam.hdivrange", "beam.vdivrange",
     "beam.hdivstep", "beam.vdivstep"}
)
MAX_ANGLE = 1e6


class _Checker:
    def __init__(self, flags: bool, files: dict[str, str] | None = None) -> None:
        self.flags = flags
        self.files = files

    def fail(self, field: str, detail: str) -> typing.NoReturn:
        raise ConfigError(field, detail, self.flags, self.files)

    def finite(self, field: str, x, *, positive: bool = False, nonzero: bool = False, minimum=None) -> float:
        v = self._finite(field, x, positive=positive, nonzero=nonzero, minimum=minimum)
        if field in ANGLES and abs(v) > MAX_ANGLE:
            self.fail(field, f"{v:g} radians is beyond {MAX_ANGLE:g} (float32 cannot resolve a degree there)")
        return v

    def _finite(self, field: str, x, *, positive: bool, nonzero: bool, minimum) -> float:
        if isinstance(x, torch.Tensor) and x.numel() != 1:
            self.fail(field, f"expected a scalar, got a tensor of shape {tuple(x.shape)}")
        if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating | torch.Tensor):
            self.fail(field, f"expected a number, got {x!r}")
        v = _value(x)
        if not math.isfinite(v):
            self.fail(field, f"{v:g} is not a finite number")
        if positive and v <= 0:
            self.fail(field, f"must be positive, got {v:g}")
        if nonzero and v == 0:
            self.fail(field, "must not be zero")
        if minimum is not None and v < minimum:
            self.fail(field, f"must be at least {minimum:g}, got {v:g}")
        return v

    def optional(self, field: str, x, **kw) -> float | None:
        return None if x is None else self.finite(field, x, **kw)

    def integer(self, field: str, x, minimum: int) -> int:
        if isinstance(x, bool) or not isinstance(x, int | np.integer):
            self.fail(field, f"expected an integer, got {x!r}")
        if x < minimum:
            self.fail(field, f"must be at least {minimum}, got {x}")
        return int(x)

    def vector(self, field: str, x, nonzero: bool = True) -> np.ndarray | None:
        if x is None:
            return None
        arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        if arr.shape != (3,):
            self.fail(field, f"expected 3 components, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            self.fail(field, "has a non-finite component")
        if nonzero and not (arr != 0).any():
            self.fail(field, "is the zero vector (no direction)")
        return arr

    def choice(self, field: str, x, options) -> None:
        if x not in options:
            self.fail(field, f"expected one of {', '.join(options)}, got {x!r}")


@functools.cache  # typing.get_type_hints evaluates every annotation of the class: ~10 ms
def _literal_values(cls, name: str) -> tuple:
    hint = typing.get_type_hints(cls)[name]
    return typing.get_args(hint)


def check_config(
    cfg: SimulationConfig,
    flags: bool = False,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    samples_per_chunk: int | None = None,
    files: dict[str, str] | None = None,
) -> Geometry:
    """Refuse an invalid configuration (ConfigError naming the field, or with `flags` the C flag; `files` maps
    fields read from a file to its name, for the message). Returns the lab-frame detector it checked, resolved
    in float64 on `device` (the plan's geometry: resolved once)."""
    if not isinstance(cfg, SimulationConfig):
        raise ConfigError("config", f"expected a SimulationConfig, got {type(cfg).__name__}", flags)
    ck = _Checker(flags, files)
    if dtype not in (torch.float32, torch.float64):
        ck.fail("dtype", f"expected torch.float32 or torch.float64, got {dtype!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        ck.fail("device", f"unknown device {device!r} (cpu, cuda, cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        ck.fail("device", "CUDA requested but no CUDA device is available")
    _once("detector", cfg.detector, lambda: _check_detector(ck, cfg.detector))
    _once("beam", cfg.beam, lambda: _check_beam(ck, cfg.beam))
    _once("crystal", cfg.crystal, lambda: _check_crystal(ck, cfg.crystal))
    check_chunk(samples_per_chunk, flags)
    geom = resolve_geometry(cfg, torch.float64, device)
    _once("geometry", lambda: geometry_key(cfg, torch.float64, device), lambda: _check_geometry(ck, geom))
    _check_memory(ck, cfg, dtype, device, samples_per_chunk)
    return geom


# sections that passed, by the value of what they read (setup_cache.value_key): a dataset that changes only the
# orientation re-checks only the crystal (a refusal is never remembered: its message names flags or fields)
_PASSED = CACHES.setdefault("checks", ValueCache(size=32))


def _once(section: str, values, check: typing.Callable[[], None]) -> None:
    """Run `check` unless the section passed before with equal `values` (a callable is called here, so that
    its NotCacheable is caught too). A refusal raises inside `get`, so only a pass is stored."""
    try:
        key = (section, value_key(values() if callable(values) else values))
    except NotCacheable:  # a tensor that requires grad, an array too large to hash: checked every time
        check()
        return
    _PASSED.get(key, lambda: check() or True)


def check_chunk(samples_per_chunk: int | None, flags: bool = False) -> None:
    """samples_per_chunk: None (the default) or a positive integer."""
    if samples_per_chunk is not None:
        _Checker(flags).integer("samples_per_chunk", samples_per_chunk, 1)


def _check_detector(ck: _Checker, d: DetectorConfig) -> None:
    ck.integer("detector.fpixels", d.fpixels, 1)
    ck.integer("detector.spixels", d.spixels, 1)
    ck.finite("detector.pixel_size", d.pixel_size, positive=True)
    # the C renders zeros at distance 0; a negative distance mirrors the detector as the C does
    ck.finite("detector.distance", d.distance, nonzero=True)
    ck.optional("detector.close_distance", d.close_distance, nonzero=True)
    for name in ("Xbeam", "Ybeam", "Xclose", "Yclose", "ORGX", "ORGY", "thickstep"):
        ck.optional(f"detector.{name}", getattr(d, name))
    for name in ("rotx", "roty", "rotz", "twotheta", "thickness"):
        ck.finite(f"detector.{name}", getattr(d, name))
    if d.mu is not None and math.isnan(_value(d.mu)):
        ck.fail("detector.mu", "is not a number")
    for name in ("fdet_vector", "sdet_vector", "odet_vector", "twotheta_axis"):
        ck.vector(f"detector.{name}", getattr(d, name))
    ck.vector("detector.pix0_vector", d.pix0_vector, nonzero=False)
    if d.thicksteps is not None:
        ck.integer("detector.thicksteps", d.thicksteps, 1)
    if d.oversample is not None:
        ck.integer("detector.oversample", d.oversample, 1)
    ck.choice("detector.convention", d.convention, _literal_values(DetectorConfig, "convention"))
    ck.choice("detector.pivot", d.pivot, _literal_values(DetectorConfig, "pivot"))
    if d.panels:  # -roi and the mask of a multi-panel detector: panels.check_panels
        return
    if d.roi is not None:
        if len(d.roi) != 4 or not all(isinstance(v, int | np.integer) for v in d.roi):
            ck.fail("detector.roi", f"expected four integers (xmin, xmax, ymin, ymax), got {d.roi!r}")
        xmin, xmax, ymin, ymax = d.roi
        if xmin > xmax or ymin > ymax or xmax < 0 or ymax < 0 or xmin >= d.fpixels or ymin >= d.spixels:
            ck.fail(
                "detector.roi", f"{xmin} {xmax} {ymin} {ymax} selects no pixel of a {d.fpixels}x{d.spixels} detector"
            )
    if d.mask is not None:
        shape = np.shape(d.mask)
        if shape != (d.spixels, d.fpixels):
            ck.fail("detector.mask", f"shape {shape} is not the detector's ({d.spixels}, {d.fpixels})")


def _check_beam(ck: _Checker, b: BeamConfig) -> None:
    ck.finite("beam.wavelength", b.wavelength, nonzero=True)  # the C renders NaN at 0; negative: as the C
    ck.finite("beam.fluence", b.fluence, positive=True)
    ck.vector("beam.beam_vector", b.beam_vector)
    ck.vector("beam.polar_vector", b.polar_vector)
    ck.finite("beam.polarization", b.polarization)
    for name in ("hdivrange", "vdivrange", "hdivstep", "vdivstep", "dispersion"):
        ck.optional(f"beam.{name}", getattr(b, name))
    for name in ("hdivsteps", "vdivsteps", "dispsteps"):
        if getattr(b, name) is not None:
            ck.integer(f"beam.{name}", getattr(b, name), 1)
    ck.finite("beam.water_size", b.water_size, minimum=0.0)
    if b.sources is not None:
        src = b.sources
        rows = np.asarray(src.detach().cpu() if isinstance(src, torch.Tensor) else src, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 5 or rows.shape[0] == 0:
            ck.fail("beam.sources", f"expected rows of X Y Z I lambda, got shape {rows.shape}")
        if np.isinf(rows).any():  # NaN means "the default" (a short line); infinity is no value at all
            ck.fail("beam.sources", f"source {int(np.argmax(np.isinf(rows).any(axis=1))) + 1} has an infinite value")
        pos = rows[:, :3]
        at_sample = (np.where(np.isnan(pos), 1.0, pos) == 0).all(axis=1)
        if at_sample.any():
            ck.fail("beam.sources", f"source {int(np.argmax(at_sample)) + 1} is at the sample (position 0 0 0)")
        if (rows[:, 4] == 0).any():
            ck.fail("beam.sources", f"source {int(np.argmax(rows[:, 4] == 0)) + 1} has wavelength 0")


def _check_crystal(ck: _Checker, c: CrystalConfig) -> None:
    if c.cell is None and c.reciprocal_matrix is None:
        ck.fail("crystal.cell", "no crystal: give a cell or a reciprocal_matrix")
    if c.cell is not None:
        if len(c.cell) != 6:
            ck.fail("crystal.cell", f"expected a b c alpha beta gamma, got {len(c.cell)} values")
        a, b, cc, al, be, ga = (ck.finite("crystal.cell", x) for x in c.cell)
        if min(a, b, cc) <= 0:
            ck.fail("crystal.cell", "cell lengths must be positive")
        if not all(0 < x < math.pi for x in (al, be, ga)):
            ck.fail("crystal.cell", "cell angles must lie strictly between 0 and 180 degrees")
        ca, cb, cg = math.cos(al), math.cos(be), math.cos(ga)
        metric = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg  # (V / abc)^2
        if metric <= 1e-12:
            ck.fail("crystal.cell", "the angles give a flat cell (zero volume)")
    if c.reciprocal_matrix is not None:
        m = c.reciprocal_matrix
        arr = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
        if arr.shape != (3, 3):
            ck.fail("crystal.reciprocal_matrix", f"expected a 3x3 matrix, got shape {arr.shape}")
        if not np.isfinite(arr).all():
            ck.fail("crystal.reciprocal_matrix", "has a non-finite element")
        with np.errstate(all="ignore"):
            det = float(np.linalg.det(arr))
            real = np.linalg.inv(arr) if det != 0 and math.isfinite(det) else None
        if real is None or not np.isfinite(real).all():
            ck.fail("crystal.reciprocal_matrix", f"is singular (determinant {det:g})")
        # the real-space axes are the columns of the inverse, in Angstrom / lambda units: far outside
        # (1e-6, 1e12) they overflow or vanish in the render's float32 squares
        with np.errstate(all="ignore"):
            lengths = np.linalg.norm(real, axis=0)
        if not ((lengths > 1e-6) & (lengths < 1e12)).all():
            axes = " ".join(f"{x:g}" for x in lengths)
            ck.fail("crystal.reciprocal_matrix", f"gives cell axes of {axes} Angstrom/lambda (out of range)")
    if c.misset is not None:
        for x in c.misset:
            ck.finite("crystal.misset", x)
    for name in ("Na", "Nb", "Nc"):  # N <= 1: a single cell on that axis (the C's rule)
        ck.finite(f"crystal.{name}", getattr(c, name))
    for name in ("sample_x", "sample_y", "sample_z", "fudge", "phi0", "default_F", "dmin"):
        ck.finite(f"crystal.{name}", getattr(c, name))
    for name in ("osc", "phistep", "mosaic_spread"):
        ck.optional(f"crystal.{name}", getattr(c, name))
    if c.phisteps is not None:
        ck.integer("crystal.phisteps", c.phisteps, 0)
    if c.mosaic_domains is not None:
        ck.integer("crystal.mosaic_domains", c.mosaic_domains, 1)
    ck.vector("crystal.spindle_axis", c.spindle_axis)
    ck.choice("crystal.shape", c.shape, _literal_values(CrystalConfig, "shape"))
    sf = c.structure_factors
    if sf is not None and isinstance(sf.grid, SparseGrid):
        _check_sparse(ck, sf)
    elif sf is not None:
        grid = sf.grid.detach().cpu().numpy() if isinstance(sf.grid, torch.Tensor) else np.asarray(sf.grid)
        if grid.ndim != 3 or 0 in grid.shape:
            ck.fail("crystal.structure_factors", f"expected a non-empty 3-D grid, got shape {grid.shape}")
        if not np.isfinite(grid).all():
            bad = np.argwhere(~np.isfinite(grid))[0]
            hkl = (bad[0] + sf.h_min, bad[1] + sf.k_min, bad[2] + sf.l_min)
            ck.fail("crystal.structure_factors", f"F of h k l {hkl[0]} {hkl[1]} {hkl[2]} is not finite")


def _check_sparse(ck, sf) -> None:
    """A SparseGrid: a box of positive sizes under 2^62 cells, distinct sorted int64 keys inside it, one finite
    value per key, a finite fill."""
    store = sf.grid
    field = "crystal.structure_factors"
    shape = tuple(store.shape)
    if len(shape) != 3 or any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0 for n in shape):
        ck.fail(field, f"expected a sparse grid of 3 positive sizes, got shape {shape}")
    if math.prod(int(n) for n in shape) >= 2**62:
        ck.fail(field, f"a sparse grid of shape {shape} has more cells than int64 keys index")
    keys = np.asarray(store.keys)
    values = store.values.detach().cpu().numpy() if isinstance(store.values, torch.Tensor) else np.asarray(
        store.values)
    if keys.ndim != 1 or keys.dtype != np.int64 or values.shape != keys.shape or len(keys) == 0:
        ck.fail(field, f"expected n int64 keys and n values (n > 0), got {keys.dtype} {keys.shape} and {values.shape}")
    if (np.diff(keys) <= 0).any() or keys[0] < 0 or keys[-1] >= math.prod(int(n) for n in shape):
        ck.fail(field, "the sparse grid's keys must be distinct, sorted and inside its box")
    if not np.isfinite(values).all() or not math.isfinite(store.fill):
        bad = int(np.argmax(~np.isfinite(values))) if not np.isfinite(values).all() else None
        where = "the fill" if bad is None else "F of h k l " + " ".join(
            str(int(i) + lo) for i, lo in zip(np.unravel_index(keys[bad], shape), (sf.h_min, sf.k_min, sf.l_min),
                                               strict=True))
        ck.fail(field, f"{where} is not finite")


# a detector farther than this many pixels from the sample: its solid angles underflow float32
MAX_DISTANCE_IN_PIXELS = 1e12


def _check_geometry(ck: _Checker, g: Geometry) -> None:
    """The resolved detector (float64, as the set-up runs): finite, not edge-on to the beam, not so far away
    that the solid angle of a pixel underflows."""
    with torch.no_grad():
        parts = (g.pix0, g.fdet, g.sdet, g.odet, g.beam, g.distance)
        if not all(bool(torch.isfinite(v).all()) for v in parts):
            ck.fail("detector.orientation", "the detector position or axes are not finite")
        if abs(float(torch.dot(g.beam, g.odet))) < 1e-9:
            ck.fail("detector.orientation", "the detector is edge-on to the beam (its plane contains the beam)")
        if abs(float(g.distance)) > MAX_DISTANCE_IN_PIXELS * float(g.pixel_size):
            ck.fail("detector.distance", f"more than {MAX_DISTANCE_IN_PIXELS:g} pixels from the sample")


def _count_steps(steps, rng, step) -> int:
    """The C's step count of a divergence/dispersion axis (sampling.auto_steps with beam's sanity check)."""
    def given(x):
        return None if x is None else scalar_value(x)

    st = auto_steps(steps, given(rng), given(step), BEAM_STEPS)
    return st.count if (st.range > 0 and st.step > 0 and st.count > 0) else 1


def _check_memory(ck, cfg: SimulationConfig, dtype, device, samples_per_chunk) -> None:
    """Estimate the image and the smallest possible chunk (one pixel with all its samples) before allocating."""
    d, b, c = cfg.detector, cfg.beam, cfg.crystal
    pixels = d.fpixels * d.spixels

    def guard(nbytes: float, what: str, field: str) -> None:
        problem = allocation_problem(nbytes, what, device)
        if problem:
            ck.fail(field, problem)

    guard(pixels * BYTES_PER_PIXEL, f"the {d.fpixels}x{d.spixels} image", "detector.fpixels")
    sf = c.structure_factors
    if sf is not None and sf.hkls:  # the render's copy of the grid and its table (structure_factors.FGrid)
        size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 8
        sparse = isinstance(sf.grid, SparseGrid)
        cells = len(sf.grid.keys) if sparse else math.prod(sf.grid.shape)
        guard(2.0 * cells * (size + (8 if sparse else 0)), f"the F grid in the render ({cells} cells, {dtype}, "
              "twice)", "crystal.structure_factors")
    if b.sources is not None:
        sources = len(b.sources)
    else:
        sources = (
            _count_steps(b.hdivsteps, b.hdivrange, b.hdivstep)
            * _count_steps(b.vdivsteps, b.vdivrange, b.vdivstep)
            * _count_steps(b.dispsteps, b.dispersion if b.dispersion is not None else 0.0, None)
        )
    phisteps = c.phisteps or 1
    if c.phisteps is None and c.osc is not None and c.phistep is not None and scalar_value(c.phistep) > 0:
        phisteps = max(1, math.ceil(scalar_value(c.osc) / scalar_value(c.phistep)))
    domains = c.mosaic_domains or 1
    layers = d.thicksteps or 1
    oversample = d.oversample or _recommended_oversample(cfg)
    factors = {
        "detector.oversample": oversample * oversample,
        "beam.hdivsteps/vdivsteps/dispsteps" if b.sources is None else "beam.sources": sources,
        "crystal.phisteps": phisteps,
        "crystal.mosaic_domains": domains,
        "detector.thicksteps": layers,
    }
    per_pixel = math.prod(factors.values())
    largest = max(factors, key=lambda k: factors[k])
    auto = "" if d.oversample or largest != "detector.oversample" else " (the C's automatic oversampling)"
    guard(
        per_pixel * BYTES_PER_SAMPLE,
        f"one pixel of {per_pixel:.3g} samples ({oversample}x{oversample} sub-pixels{auto}, {sources} sources, "
        f"{phisteps} phi steps, {domains} mosaic domains, {layers} layers)",
        largest,
    )
    if samples_per_chunk is not None:
        guard(samples_per_chunk * BYTES_PER_SAMPLE, f"a chunk of {samples_per_chunk} samples", "samples_per_chunk")


def _recommended_oversample(cfg: SimulationConfig) -> int:
    """The C's recommended oversampling (sampling.recommended_oversample) estimated from the config, in float64:
    enough to refuse a render whose automatic oversampling would not fit."""
    c = cfg.crystal
    if c.cell is not None:
        lengths = [scalar_value(x) for x in c.cell[:3]]
    else:
        m = c.reciprocal_matrix
        arr = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
        lam = abs(scalar_value(cfg.beam.wavelength))
        with np.errstate(all="ignore"):
            lengths = list(np.linalg.norm(np.linalg.inv(arr), axis=0) * lam)  # Angstrom*lambda/lambda -> metres
    sizes = (c.sample_x, c.sample_y, c.sample_z)
    xtal = max(
        (s if s > 0 else abs(length) * max(1.0, abs(scalar_value(n))))
        for s, length, n in zip(sizes, lengths, (c.Na, c.Nb, c.Nc), strict=True)
    )
    d = cfg.detector
    return recommended_oversample(xtal, abs(scalar_value(cfg.beam.wavelength) * scalar_value(d.distance)
                                            / scalar_value(d.pixel_size)))
