"""Multi-panel detectors: resolving `DetectorConfig.panels` into the kernel's per-panel geometry.

Each panel is the C's CUSTOM detector pivoting about the sample: pix0_vector = the panel's origin, fdet/sdet its
axes, odet = fdet x sdet, and the C's Xclose = -pix0.fdet, Yclose = -pix0.sdet, close_distance = pix0.odet
(`panel_detector` writes that single-detector form; a panel renders like the C run with those flags). All
panels render in one pass: the flat pixel index runs over a padded (panel, slow, fast) raster of shape
(P, S_max, F_max) and the kernel gathers each pixel's panel vectors (`kernel.panel_view`); the plan's
pixel_order lists only the real pixels of each panel.

Shared by all panels (one value per render): the beam, the crystal, the sampling, the sensor layers (panels
must agree on thickness and mu) and the oversampling (the C's recommended value of the most demanding panel,
i.e. the largest; `-oversample` overrides it for all). `-roi` selects the same (fast, slow) window on every
panel, in the panel's own pixels; a mask is the (P, S_max, F_max) stack (`rendered_stack`): each panel renders
as the C's run of that panel with -roi and its slice of the mask.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from . import sampling
from .config import DetectorConfig, PanelConfig, SimulationConfig, scalar_value
from .detector import Geometry, resolve_geometry
from .errors import ConfigError
from .memory import BYTES_PER_PIXEL, allocation_problem
from .vectors import cross, dot, unitize

Tensor = torch.Tensor

AXIS_TOLERANCE = 1e-6  # |axis| - 1 and fast.slow allowed (the C unitizes; dxtbx axes are unit to ~1e-15)


@dataclass
class Panels:
    """The resolved panels, stacked (float64 on the set-up device unless cast): row p is panel p."""

    pix0: Tensor  # (P, 3) m: the origin (outer corner of pixel (0, 0))
    fdet: Tensor  # (P, 3) unit
    sdet: Tensor  # (P, 3) unit
    odet: Tensor  # (P, 3) unit, fdet x sdet
    pixel_size: Tensor  # (P,) m
    close_distance: Tensor  # (P,) pix0.odet (the C's close_distance)
    distance: Tensor  # (P,) close_distance / (beam.odet) (the C's distance)
    fpixels: tuple[int, ...]
    spixels: tuple[int, ...]
    names: tuple[str, ...]
    rendered: np.ndarray | None = None  # (P, S_max, F_max) bool: inside -roi, not masked (`rendered_stack`)

    @property
    def count(self) -> int:
        return len(self.fpixels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(P, S_max, F_max): the padded raster of the render."""
        return (self.count, max(self.spixels), max(self.fpixels))


def _vec(x, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A panel field as a tensor; a tuple holding tensors is stacked, so that their gradients flow."""
    if isinstance(x, tuple | list) and any(isinstance(v, Tensor) for v in x):
        return torch.stack([torch.as_tensor(v, dtype=dtype, device=device) for v in x])
    return torch.as_tensor(x, dtype=dtype, device=device)


def check_panels(cfg: SimulationConfig) -> None:
    """Refuse panel set-ups the engine cannot render as the C's CUSTOM detectors (one-line error naming
    `detector.panels[i].field`)."""
    d = cfg.detector
    panels = d.panels
    if panels is None:
        return
    if not isinstance(panels, tuple | list) or len(panels) == 0:
        raise ConfigError("detector.panels", "expected a non-empty tuple of PanelConfig")
    if d.curved:
        raise ConfigError("detector.curved", "a curved detector with panels is not supported")
    for name in ("rotx", "roty", "rotz", "twotheta"):
        if scalar_value(getattr(d, name)) != 0.0:
            raise ConfigError(f"detector.{name}", "detector rotations do not apply to panels (place each panel)")
    _check_selection(d)
    if cfg.pix0_override or d.pix0_vector is not None:
        raise ConfigError("detector.pix0_vector", "each panel's origin places it; pix0_vector does not apply")
    beam = unitize(_vec(cfg.beam.beam_vector if cfg.beam.beam_vector is not None else (1.0, 0.0, 0.0),
                        torch.float64, torch.device("cpu")))[0]
    ref = None
    with torch.no_grad():
        for i, p in enumerate(panels):
            where = f"detector.panels[{i}]"
            if not isinstance(p, PanelConfig):
                raise ConfigError(where, f"expected a PanelConfig, got {type(p).__name__}")
            for name in ("fpixels", "spixels"):
                n = getattr(p, name)
                if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                    raise ConfigError(f"{where}.{name}", f"expected a positive integer, got {n!r}")
            vals = {}
            for name in ("origin", "fast_axis", "slow_axis"):
                try:
                    v = _vec(getattr(p, name), torch.float64, torch.device("cpu")).reshape(-1)
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise ConfigError(f"{where}.{name}", f"expected 3 numbers ({exc})") from None
                if v.numel() != 3 or not bool(torch.isfinite(v).all()):
                    raise ConfigError(f"{where}.{name}", f"expected 3 finite numbers, got {tuple(v.tolist())}")
                vals[name] = v
            f, s, o = vals["fast_axis"], vals["slow_axis"], vals["origin"]
            for name, v in (("fast_axis", f), ("slow_axis", s)):
                if abs(float(v.norm()) - 1.0) > AXIS_TOLERANCE:
                    raise ConfigError(f"{where}.{name}", f"not a unit vector (length {float(v.norm()):.9g})")
            if abs(float(f @ s)) > AXIS_TOLERANCE:
                raise ConfigError(f"{where}.slow_axis", f"not orthogonal to fast_axis (fast.slow = {float(f @ s):.3g})")
            normal = torch.linalg.cross(f, s)
            if float(o @ normal) <= 0.0:
                raise ConfigError(f"{where}.origin", "the panel faces away from the sample (origin . (fast x slow) "
                                 "<= 0); swap fast/slow or flip an axis")
            if abs(float(beam @ normal)) < 1e-9:
                raise ConfigError(f"{where}.fast_axis", "the panel is edge-on to the beam (its plane contains it)")
            size = scalar_value(p.pixel_size)
            if not (math.isfinite(size) and size > 0.0):
                raise ConfigError(f"{where}.pixel_size", f"expected a positive size, got {size!r}")
            thick = (scalar_value(p.thickness), None if p.mu is None else scalar_value(p.mu))
            if not (math.isfinite(thick[0]) and thick[0] >= 0.0):
                raise ConfigError(f"{where}.thickness", f"expected a length >= 0, got {thick[0]!r}")
            if ref is None:
                ref = thick
            elif thick != ref:
                raise ConfigError(f"{where}.thickness", f"panels of unequal thickness/mu are not supported "
                                 f"({thick} here, {ref} in panel 0)")


def _check_selection(d: DetectorConfig) -> None:
    """-roi (the same (xmin, xmax, ymin, ymax) on every panel, in its own pixels) and the mask ((P, S_max, F_max),
    the padded stack, nonzero: rendered) of a multi-panel detector."""
    panels = d.panels
    if d.roi is not None:
        roi = d.roi
        if len(roi) != 4 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in roi):
            raise ConfigError("detector.roi", f"expected four integers (xmin, xmax, ymin, ymax), got {roi!r}")
        xmin, xmax, ymin, ymax = roi
        if not any(xmin <= xmax and ymin <= ymax and xmax >= 0 and ymax >= 0 and xmin < p.fpixels
                   and ymin < p.spixels for p in panels):
            raise ConfigError("detector.roi", f"{xmin} {xmax} {ymin} {ymax} selects no pixel of any panel")
    if d.mask is not None:
        shape = (len(panels), max(p.spixels for p in panels), max(p.fpixels for p in panels))
        if np.shape(d.mask) != shape:
            raise ConfigError("detector.mask", f"shape {np.shape(d.mask)} is not the panel stack's {shape} "
                             "(panel, slow, fast)")
        if not np.isfinite(np.asarray(d.mask, dtype=np.float64)).all():
            raise ConfigError("detector.mask", "holds a value that is not finite")


def rendered_stack(d: DetectorConfig) -> np.ndarray | None:
    """(P, S_max, F_max) bool of a multi-panel detector: the pixels rendered (real pixels of each panel, inside
    -roi, not masked); None when that is every real pixel. Each panel's rule is the C's run of that panel with
    the same -roi and its slice of the mask (engine.rendered_pixels of `panel_detector`)."""
    if d.roi is None and d.mask is None:
        return None
    ps = d.panels
    P, S, F = len(ps), max(p.spixels for p in ps), max(p.fpixels for p in ps)
    s, f = np.arange(S)[:, None], np.arange(F)[None, :]
    ok = np.stack([(s < p.spixels) & (f < p.fpixels) for p in ps])
    if d.roi is not None:
        xmin, xmax, ymin, ymax = d.roi
        ok &= ((f >= xmin) & (f <= xmax) & (s >= ymin) & (s <= ymax))[None]
    if d.mask is not None:
        ok &= np.asarray(d.mask).reshape(P, S, F) != 0
    return ok


def panel_detector(cfg: SimulationConfig, p: int) -> DetectorConfig:
    """Panel p as the C's single CUSTOM detector (pivot SAMPLE; Xclose, Yclose, close_distance from the origin):
    the flags a C rendering of this panel takes. Sampling fields come from cfg.detector."""
    d = cfg.detector
    panel = d.panels[p]
    hi, cpu = torch.float64, torch.device("cpu")
    f = unitize(_vec(panel.fast_axis, hi, cpu))[0]
    s = unitize(_vec(panel.slow_axis, hi, cpu))[0]
    o = unitize(cross(f, s))[0]
    origin = _vec(panel.origin, hi, cpu)
    return dataclasses.replace(
        d,
        panels=None,
        fpixels=panel.fpixels,
        spixels=panel.spixels,
        pixel_size=panel.pixel_size,
        convention="CUSTOM",
        pivot="SAMPLE",
        distance=float(dot(origin, o).detach()),
        close_distance=dot(origin, o),
        Xclose=-dot(origin, f),
        Yclose=-dot(origin, s),
        Xbeam=None,
        Ybeam=None,
        ORGX=None,
        ORGY=None,
        fdet_vector=f,
        sdet_vector=s,
        odet_vector=o,
        thickness=panel.thickness,
        mu=panel.mu,
        mask=None if d.mask is None else np.asarray(d.mask)[p, :panel.spixels, :panel.fpixels],
    )


def reference_config(cfg: SimulationConfig) -> SimulationConfig:
    """The configuration of the plan's reference detector (plan.geom, the layers, the validation of the shared
    fields): the single-detector form of the panel with the largest recommended oversampling (`demanding`)."""
    check_panels(cfg)
    p = demanding_panel(cfg)
    # -roi and the mask select pixels of every panel (checked above, applied by `rendered_stack`)
    return dataclasses.replace(cfg, detector=dataclasses.replace(panel_detector(cfg, p), roi=None, mask=None))


def demanding_panel(cfg: SimulationConfig) -> int:
    """The panel whose pixels subtend the most reciprocal space, pixel / distance (the C's recommended
    oversample grows with it): the largest pixel_size/(close_distance/(beam.odet)) (first on ties)."""
    beam = unitize(_vec(cfg.beam.beam_vector if cfg.beam.beam_vector is not None else (1.0, 0.0, 0.0),
                        torch.float64, torch.device("cpu")))[0]
    best, best_p = -math.inf, 0
    for i, p in enumerate(cfg.detector.panels):
        f = unitize(_vec(p.fast_axis, torch.float64, torch.device("cpu")).detach())[0]
        s = unitize(_vec(p.slow_axis, torch.float64, torch.device("cpu")).detach())[0]
        o = unitize(cross(f, s))[0]
        distance = float(dot(_vec(p.origin, torch.float64, torch.device("cpu")).detach(), o)) / float(dot(beam, o))
        value = scalar_value(p.pixel_size) / abs(distance)
        if value > best:
            best, best_p = value, i
    return best_p


def resolve_panels(cfg: SimulationConfig, beam: Tensor, dtype: torch.dtype, device: torch.device) -> Panels:
    """The panels stacked in `dtype` on `device` (gradients flow from tensor-valued origins/axes/sizes).
    `beam`: the resolved (unit) beam vector, for the C's distance = close_distance / (beam.odet)."""
    rows = {k: [] for k in ("pix0", "fdet", "sdet", "odet", "pixel_size")}
    for p in cfg.detector.panels:
        f = unitize(_vec(p.fast_axis, dtype, device))[0]
        s = unitize(_vec(p.slow_axis, dtype, device))[0]
        rows["pix0"].append(_vec(p.origin, dtype, device))
        rows["fdet"].append(f)
        rows["sdet"].append(s)
        rows["odet"].append(unitize(cross(f, s))[0])
        rows["pixel_size"].append(_vec(p.pixel_size, dtype, device))
    st = {k: torch.stack(v) for k, v in rows.items()}
    close = (st["pix0"] * st["odet"]).sum(-1)
    distance = close / (st["odet"] @ beam.to(dtype))
    ps = cfg.detector.panels
    P, S, F = len(ps), max(p.spixels for p in ps), max(p.fpixels for p in ps)
    problem = allocation_problem(P * S * F * BYTES_PER_PIXEL, f"the {P}x{S}x{F} panel stack", device)
    if problem:  # validation._check_memory sees one panel: the stack is checked here
        raise ConfigError("detector.panels", problem)
    return Panels(
        pix0=st["pix0"], fdet=st["fdet"], sdet=st["sdet"], odet=st["odet"], pixel_size=st["pixel_size"],
        close_distance=close, distance=distance,
        fpixels=tuple(p.fpixels for p in ps), spixels=tuple(p.spixels for p in ps),
        names=tuple(p.name for p in ps), rendered=rendered_stack(cfg.detector),
    )


def recommended_oversample(panels: Panels, wavelength: float, xtal_max: float) -> int:
    """The C's recommended oversample (sampling.recommended_oversample) of the most demanding panel (the
    largest over the panels)."""
    sizes, distances = panels.pixel_size.detach().tolist(), panels.distance.detach().tolist()
    return max(sampling.recommended_oversample(xtal_max, wavelength * abs(dist) / size)
               for size, dist in zip(sizes, distances, strict=True))


def pixel_order(panels: Panels, device: torch.device) -> Tensor:
    """Flat indices p*S_max*F_max + s*F_max + f of every rendered pixel (real, inside -roi, not masked), panel by
    panel in the C's raster order."""
    P, S, F = panels.shape
    if panels.rendered is not None:
        return torch.as_tensor(np.flatnonzero(panels.rendered.reshape(-1)).astype(np.int32), device=device)
    if all(s == S for s in panels.spixels) and all(f == F for f in panels.fpixels):
        return torch.arange(P * S * F, dtype=torch.int32, device=device)
    parts = []
    for p, (sp, fp) in enumerate(zip(panels.spixels, panels.fpixels, strict=True)):
        s = torch.arange(sp, dtype=torch.int64)
        f = torch.arange(fp, dtype=torch.int64)
        parts.append((p * S * F + s[:, None] * F + f[None, :]).reshape(-1))
    return torch.cat(parts).to(torch.int32).to(device)


def panel_images(image: Tensor, panels: Panels) -> list[Tensor]:
    """One (S_p, F_p) image per panel from the padded (P, S_max, F_max) stack (views)."""
    return [image[p, :s, :f] for p, (s, f) in enumerate(zip(panels.spixels, panels.fpixels, strict=True))]


def panel_inputs(panels: Panels, oversample: int, dtype: torch.dtype, index_dtype: torch.dtype) -> dict[str, Tensor]:
    """The KernelInputs fields of a multi-panel plan (kernel.panel_view reads them): the raster's F_max and
    S_max*F_max, the panel vectors as (3, P) in the index dtype, the sizes and close_distance as (P,)."""
    P, S, F = panels.shape
    device = panels.pix0.device
    return dict(
        fpixels=torch.tensor(F, dtype=torch.int64, device=device),
        panel_pixels=torch.tensor(S * F, dtype=torch.int64, device=device),
        pix0=panels.pix0.T.to(index_dtype),
        fdet=panels.fdet.T.to(index_dtype),
        sdet=panels.sdet.T.to(index_dtype),
        odet=panels.odet.T.to(index_dtype),
        subpixel=(panels.pixel_size / oversample).to(index_dtype),
        pixel_size=panels.pixel_size.to(dtype),
        close_distance=panels.close_distance.to(dtype),
    )


def panel_geometry(cfg: SimulationConfig, p: int, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu") -> Geometry:
    """The C's resolved geometry of panel p rendered alone as its CUSTOM detector (a trace's pix0, Fbeam, ...)."""
    return resolve_geometry(dataclasses.replace(cfg, detector=panel_detector(cfg, p)), dtype, torch.device(device))
