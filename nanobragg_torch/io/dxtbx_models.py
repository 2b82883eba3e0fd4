"""dxtbx/DIALS experiment models in and out, without dxtbx: `.expt` experiment lists and detector dictionaries.

dxtbx's conventions (cctbx/dxtbx, `src/dxtbx/model`), which we follow as written there:

- One lab frame for every model; lengths in mm, wavelengths in Angstrom, angles in degrees. We use that lab
  frame as the simulation's own (after the unit change to metres and radians).
- Beam: `direction` is the unit vector from the sample towards the source, so the C's beam_vector (the
  direction of travel) is -direction. `polarization_normal` is the normal to the plane that holds the
  E-vector of the polarized part, `polarization_fraction` the fraction of the intensity polarized in that
  plane (dxtbx defaults: (0, 1, 0) and 0.999). nanoBragg's polar_vector is the E-vector itself:
  polar_vector = normal x beam_vector, and normal = beam_vector x polar_vector (the C's vert_vector); the C's
  Kahn factor (-polar) is 2 fraction - 1 (DIALS' polarization correction and the C's polarization_factor()
  agree for every scattering direction with this choice).
- Panel: `origin` is the lab position of the outer corner of pixel (0, 0) (the C's pix0_vector), `fast_axis`
  and `slow_axis` its pixel axes, `image_size` (fast, slow), `pixel_size` (fast, slow) mm, `thickness` mm and
  `mu` 1/mm. In a hierarchy (dxtbx's `Detector.to_dict`), every node, panels included, stores its frame in
  its parent's frame: with the parent's lab axes f_p, s_p, n_p = f_p x s_p and origin o_p, a child's lab axis
  is [f_p s_p n_p] @ local axis and its lab origin [f_p s_p n_p] @ local origin + o_p (dxtbx's
  `VirtualPanelFrame::update_global_frame`). Without a hierarchy the panel frames are lab frames.
- Goniometer: the crystal at scan angle phi is S R(axis, phi) F (U B), with S the setting rotation, F the
  fixed rotation and `rotation_axis` the axis in the frame of S (row-major 3x3 lists). A multi-axis goniometer
  (`axes`, `angles` in degrees, `scan_axis`) has F = R_{k-1} ... R_0 and S = R_{n-1} ... R_{k+1} for scan axis
  k. Since S R(axis, phi) S^-1 = R(S axis, phi), every such goniometer is nanoBragg's rotation about the
  spindle axis S axis of a crystal whose orientation at phi = 0 is S F (U B): nothing needs refusing.
- Scan: `image_range` (first, last); image i covers [start_i, start_i + width) with the per-image starts in
  `properties.oscillation` and the width in `properties.oscillation_width` (or the legacy `oscillation`:
  [start of the first image, width]). Image i becomes the C's phi0 = start_i, osc = width.
- Crystal: `real_space_a`, `_b`, `_c` (Angstrom) at the goniometer's datum; we hand the engine MOSFLM's A
  matrix (`CrystalConfig.reciprocal_matrix`, rows a*, b*, c* times lambda in Angstrom, as `-mat` does) of the
  lab-frame cell at phi = 0, S F (a, b, c), for the beam's wavelength.

A polychromatic beam (`wavelength_range` [min, max] Angstrom) is the C's flat band: lambda0 the middle,
-dispersion (max - min)/lambda0. Not carried, and named with their values in `Experiment.ignored` (the CLI
prints them): profile models (gaussian_rs sigma_m, sigma_b), crystal mosaicity (ML_half_mosaicity_deg,
ML_domain_size_ang, mosaicity), beam divergence and flux; transmission, image sets and scan-varying models
(refused) are not carried either. Every error is an InputError naming `file:json.path`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanobragg_torch.config import (
    DetectorConfig,
    PanelConfig,
    SimulationConfig,
)
from nanobragg_torch.constants import RTD
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import atomic_write, read_input

MM = 1e-3  # dxtbx lengths are mm
ANGSTROM = 1e-10
ORTHOGONAL_TOLERANCE = 1e-6  # |fast . slow| of unit axes (dxtbx asserts 1e-7 on the raw vectors)
IDENTITY9 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Group:
    """A node of a hierarchical detector (dxtbx's Detector.Node group) in the lab frame (SI): its frame and its
    children, each a Group or the index of a panel in the detector's panel list."""

    name: str
    origin: tuple[float, float, float]  # m
    fast_axis: tuple[float, float, float]
    slow_axis: tuple[float, float, float]
    children: tuple[Group | int, ...]


@dataclass(frozen=True)
class Experiment:
    """One experiment of a list, as simulation inputs in SI units and the lab frame of the file.

    `config(base)` turns it into a SimulationConfig."""

    panels: tuple[PanelConfig, ...] | None = None
    hierarchy: Group | None = None
    wavelength: float | None = None  # m
    beam_vector: tuple[float, float, float] | None = None  # unit, direction of travel (-dxtbx direction)
    polar_vector: tuple[float, float, float] | None = None  # unit E-vector
    polarization: float | None = None  # the C's Kahn factor, 2 fraction - 1
    spindle_axis: tuple[float, float, float] | None = None  # lab frame: S rotation_axis
    phi0: float | None = None  # rad: start of the chosen image
    osc: float | None = None  # rad: oscillation width
    image: int | None = None  # the chosen image number of the scan
    image_range: tuple[int, int] | None = None
    real_space: np.ndarray | None = dataclasses.field(default=None, compare=False)  # rows a, b, c (m), lab, phi=0
    dispersion: float | None = None  # a polychromatic beam's band (max - min) / mid (the C's -dispersion, fraction)
    ignored: tuple[str, ...] = ()  # one line per quantity the file holds and the simulation does not use

    def reciprocal_matrix(self, wavelength: float | None = None) -> np.ndarray:
        """MOSFLM's A matrix (rows a*, b*, c* in 1/Angstrom times lambda in Angstrom) of `real_space`."""
        if self.real_space is None:
            raise ValueError("this experiment has no crystal")
        lam = self.wavelength if wavelength is None else wavelength
        if lam is None:
            raise ValueError("a wavelength is needed for MOSFLM's A matrix")
        return reciprocal_matrix(self.real_space, lam)

    def detector_config(self, base: DetectorConfig | None = None) -> DetectorConfig:
        """The detector: one panel as the C's CUSTOM detector pivoting about the sample (the flags a C run of
        it takes: -fdet/-sdet/-odet_vector, -Xclose/-Yclose from the origin, -close_distance), several as
        `DetectorConfig.panels`. Sampling fields (oversample, thickness steps, ...) come from `base`."""
        if not self.panels:
            raise ValueError("this experiment has no detector")
        base = base if base is not None else DetectorConfig()
        first = self.panels[0]  # several panels: its single-detector form is the reference (size, pixel, axes)
        f, s = np.asarray(first.fast_axis, float), np.asarray(first.slow_axis, float)
        o = np.asarray(first.origin, float)
        n = _unit(np.cross(f, s))
        return dataclasses.replace(
            base, panels=self.panels if len(self.panels) > 1 else None, fpixels=first.fpixels,
            spixels=first.spixels, pixel_size=first.pixel_size,
            convention="CUSTOM", pivot="SAMPLE", fdet_vector=_tuple(f), sdet_vector=_tuple(s),
            odet_vector=_tuple(n), Xclose=float(-o @ f), Yclose=float(-o @ s), Xbeam=None, Ybeam=None,
            close_distance=float(o @ n), distance=float(o @ n), ORGX=None, ORGY=None, pix0_vector=None,
            twotheta_axis=None, rotx=0.0, roty=0.0, rotz=0.0, twotheta=0.0,
            thickness=first.thickness, mu=first.mu,
        )

    def config(self, base: SimulationConfig | None = None) -> SimulationConfig:
        """`base` (default: SimulationConfig()) with every field this experiment describes replaced."""
        base = base if base is not None else SimulationConfig()
        detector = self.detector_config(base.detector) if self.panels else base.detector
        beam_fields = {
            "wavelength": self.wavelength, "beam_vector": self.beam_vector, "polar_vector": self.polar_vector,
            "polarization": self.polarization, "dispersion": self.dispersion,
        }
        beam = dataclasses.replace(base.beam, **{k: v for k, v in beam_fields.items() if v is not None})
        crystal_fields: dict[str, Any] = {"spindle_axis": self.spindle_axis, "phi0": self.phi0, "osc": self.osc}
        if self.real_space is not None:
            crystal_fields.update(reciprocal_matrix=self.reciprocal_matrix(beam.wavelength), cell=None, misset=None,
                                  misset_random=False)
        crystal = dataclasses.replace(base.crystal, **{k: v for k, v in crystal_fields.items() if v is not None})
        return dataclasses.replace(base, detector=detector, beam=beam, crystal=crystal, pix0_override=False)


# ---------------------------------------------------------------------------------------------------------------
# small numeric helpers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _tuple(v) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def axis_angle_matrix(axis, angle: float) -> np.ndarray:
    """Right-handed rotation by `angle` (rad) about `axis` (dxtbx's axis_and_angle_as_matrix, the C's
    rotate_axis)."""
    a = _unit(np.asarray(axis, dtype=np.float64))
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def reciprocal_matrix(real_space: np.ndarray, wavelength: float) -> np.ndarray:
    """MOSFLM's A (rows a*, b*, c*, 1/Angstrom times lambda/Angstrom) from rows a, b, c in metres."""
    real_A = np.asarray(real_space, dtype=np.float64) / ANGSTROM
    return np.linalg.inv(real_A).T * (wavelength / ANGSTROM)


def _frame_matrix(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """dxtbx's parent orientation: columns fast, slow, fast x slow."""
    return np.column_stack((fast, slow, np.cross(fast, slow)))


# ---------------------------------------------------------------------------------------------------------------
# reading: JSON-path-aware accessors


class _Where:
    """A file name and a JSON path, for one-line errors `file:path: detail`."""

    def __init__(self, name: str, path: str = "") -> None:
        self.name, self.path = name, path

    def __truediv__(self, key: str | int) -> _Where:
        if isinstance(key, int):
            return _Where(self.name, f"{self.path}[{key}]")
        return _Where(self.name, f"{self.path}.{key}" if self.path else key)

    def error(self, detail: str) -> InputError:
        return InputError(f"{self.name}:{self.path or '(top)'}: {detail}")


def _get(obj: Any, key: str, where: _Where, default: Any = ...) -> Any:
    if not isinstance(obj, dict):
        raise where.error(f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        if default is ...:
            raise (where / key).error("missing")
        return default
    return obj[key]


def _show(x: Any, n: int = 40) -> str:
    """A value as it reads in the file (JSON), shortened, for a message."""
    return json.dumps(x, default=str)[:n]


def _number(x: Any, where: _Where) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise where.error(f"expected a finite number, got {_show(x)}")
    return float(x)


def _integer(x: Any, where: _Where) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise where.error(f"expected an integer, got {_show(x)}")
    return x


def _numbers(x: Any, n: int, where: _Where) -> np.ndarray:
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if not isinstance(x, list | tuple) or len(x) != n:
        raise where.error(f"expected {n} numbers, got {_show(x, 60)}")
    return np.array([_number(v, where / i) for i, v in enumerate(x)], dtype=np.float64)


def _axis(x: Any, where: _Where) -> np.ndarray:
    v = _numbers(x, 3, where)
    length = np.linalg.norm(v)
    if length == 0.0:
        raise where.error("a zero-length axis")
    return v / length


def _rotation(x: Any, where: _Where) -> np.ndarray:
    m = _numbers(x, 9, where).reshape(3, 3)  # row-major, as dxtbx's mat3
    if not np.allclose(m @ m.T, np.eye(3), atol=1e-6) or np.linalg.det(m) <= 0:
        raise where.error("not a rotation matrix (orthonormal, determinant +1)")
    return m


def _load(source: str | os.PathLike[str] | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "<dict>"
    name = os.fspath(source)
    text = read_input(source, text=True).decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{exc.lineno}: not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{name}: expected a JSON object (an experiment list or a detector), got {type(obj).__name__}")
    return obj, name


# ---------------------------------------------------------------------------------------------------------------
# reading: the models


def _panel(d: Any, where: _Where, parent: np.ndarray | None, parent_origin: np.ndarray | None) -> PanelConfig:
    """One dxtbx panel dict (frame in its parent's frame when `parent` is given) -> PanelConfig (lab, SI)."""
    fast, slow, origin = _group_frame(d, where, parent, parent_origin)
    size = _get(d, "image_size", where)
    if not isinstance(size, list | tuple) or len(size) != 2:
        raise (where / "image_size").error(f"expected [fast, slow] pixel counts, got {_show(size)}")
    nf, ns = (_integer(v, where / "image_size" / i) for i, v in enumerate(size))
    if nf <= 0 or ns <= 0:
        raise (where / "image_size").error(f"expected positive pixel counts, got {[nf, ns]}")
    px = _numbers(_get(d, "pixel_size", where), 2, where / "pixel_size")
    if px[0] <= 0 or px[0] != px[1]:
        raise (where / "pixel_size").error(f"nanoBragg needs square pixels of positive size, got {px.tolist()}")
    thickness = _number(_get(d, "thickness", where, 0.0), where / "thickness")
    mu = _number(_get(d, "mu", where, 0.0), where / "mu")
    strategy = _get(d, "px_mm_strategy", where, {})
    if isinstance(strategy, dict) and "mu" in strategy and "t0" in strategy:  # dxtbx: the strategy's values win
        mu = _number(strategy["mu"], where / "px_mm_strategy" / "mu")
        thickness = _number(strategy["t0"], where / "px_mm_strategy" / "t0")
    if thickness < 0 or mu < 0:
        raise (where / "thickness").error(f"expected thickness >= 0 and mu >= 0, got {thickness}, {mu}")
    name = _get(d, "name", where, "")
    return PanelConfig(
        origin=_tuple(origin * MM), fast_axis=_tuple(fast), slow_axis=_tuple(slow), pixel_size=float(px[0]) * MM,
        fpixels=nf, spixels=ns, name=str(name), thickness=thickness * MM, mu=mu / MM if mu > 0 else None,
    )


def _group_frame(d: Any, where: _Where, parent: np.ndarray | None, parent_origin: np.ndarray | None):
    """A node's (fast, slow, origin) in the lab: its own frame composed with its parent's (dxtbx's rule)."""
    fast = _axis(_get(d, "fast_axis", where), where / "fast_axis")
    slow = _axis(_get(d, "slow_axis", where), where / "slow_axis")
    origin = _numbers(_get(d, "origin", where), 3, where / "origin")
    if abs(float(fast @ slow)) > ORTHOGONAL_TOLERANCE:
        raise (where / "slow_axis").error(f"not orthogonal to fast_axis (fast.slow = {float(fast @ slow):.3g})")
    if parent is not None:
        fast, slow, origin = parent @ fast, parent @ slow, parent @ origin + parent_origin
    return fast, slow, origin


def read_detector(d: dict | str | os.PathLike[str], name: str | None = None,
                  _where: _Where | None = None) -> tuple[tuple[PanelConfig, ...], Group | None]:
    """A dxtbx detector dictionary (or JSON file) -> (panels in the lab frame, hierarchy or None).

    With a `hierarchy`, each panel's frame is composed down from the root (dxtbx's rule); without one the panel
    frames are lab frames."""
    if not isinstance(d, dict):
        d, name = _load(d)
    where = _where or _Where(name or "<detector>")
    raw = _get(d, "panels", where)
    if not isinstance(raw, list) or not raw:
        raise (where / "panels").error("expected a non-empty list of panels")
    if "hierarchy" not in d:
        return tuple(_panel(p, where / "panels" / i, None, None) for i, p in enumerate(raw)), None
    panels: list[PanelConfig | None] = [None] * len(raw)

    def node(obj: Any, w: _Where, parent, parent_origin) -> Group:
        fast, slow, origin = _group_frame(obj, w, parent, parent_origin)
        frame = _frame_matrix(fast, slow)
        kids = _get(obj, "children", w, [])
        if not isinstance(kids, list):
            raise (w / "children").error("expected a list")
        children: list[Group | int] = []
        for i, child in enumerate(kids):
            cw = w / "children" / i
            if isinstance(child, dict) and "panel" in child:
                idx = _integer(child["panel"], cw / "panel")
                if not 0 <= idx < len(raw):
                    raise (cw / "panel").error(f"no panel {idx} (the detector has {len(raw)})")
                if panels[idx] is not None:
                    raise (cw / "panel").error(f"panel {idx} appears twice in the hierarchy")
                panels[idx] = _panel(raw[idx], where / "panels" / idx, frame, origin)
                children.append(idx)
            else:
                children.append(node(child, cw, frame, origin))
        return Group(name=str(_get(obj, "name", w, "")), origin=_tuple(origin * MM), fast_axis=_tuple(fast),
                     slow_axis=_tuple(slow), children=tuple(children))

    hw = where / "hierarchy"
    if isinstance(d["hierarchy"], dict) and "panel" in d["hierarchy"]:
        raise hw.error("the root of the hierarchy must be a group")
    root = node(d["hierarchy"], hw, None, None)
    missing = [i for i, p in enumerate(panels) if p is None]
    if missing:
        raise hw.error(f"panels {missing[:5]} are not in the hierarchy")
    return tuple(p for p in panels if p is not None), root


def read_beam(d: dict, where: _Where | None = None) -> dict[str, Any]:
    """A dxtbx beam dict -> {wavelength (m), beam_vector, polar_vector, polarization (Kahn)}."""
    where = where or _Where("<beam>")
    kind = _get(d, "__id__", where, "monochromatic")
    if kind not in ("monochromatic", "polychromatic"):
        raise (where / "__id__").error(f"only a monochromatic or polychromatic beam can be simulated, got {kind!r}")
    if "s0_at_scan_points" in d:
        raise (where / "s0_at_scan_points").error("a scan-varying beam is not supported")
    beam = -_axis(_get(d, "direction", where), where / "direction")
    extra: dict[str, Any] = {}
    if kind == "polychromatic":  # a flat band [min, max]: the C's lambda0 (1 +- dispersion / 2)
        lo, hi = _numbers(_get(d, "wavelength_range", where), 2, where / "wavelength_range")
        if not 0 < lo <= hi:
            raise (where / "wavelength_range").error(f"expected 0 < min <= max (Angstrom), got [{lo}, {hi}]")
        wavelength = (lo + hi) / 2.0
        extra["dispersion"] = (hi - lo) / wavelength
    else:
        wavelength = _number(_get(d, "wavelength", where), where / "wavelength")
    if wavelength <= 0:
        raise (where / "wavelength").error(f"expected a positive wavelength (Angstrom), got {wavelength}")
    normal = _axis(_get(d, "polarization_normal", where, [0.0, 1.0, 0.0]), where / "polarization_normal")
    fraction = _number(_get(d, "polarization_fraction", where, 0.999), where / "polarization_fraction")
    if not 0.0 <= fraction <= 1.0:
        raise (where / "polarization_fraction").error(f"expected a fraction in [0, 1], got {fraction}")
    e_vector = np.cross(normal, beam)
    if np.linalg.norm(e_vector) < 1e-9:
        raise (where / "polarization_normal").error("parallel to the beam direction")
    return {"wavelength": wavelength * ANGSTROM, "beam_vector": _tuple(beam), "polar_vector": _tuple(_unit(e_vector)),
            "polarization": 2.0 * fraction - 1.0, **extra}


def read_goniometer(d: dict, where: _Where | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A dxtbx goniometer dict -> (lab spindle axis S axis, the rotation S F applied to the crystal at phi=0)."""
    where = where or _Where("<goniometer>")
    if "setting_rotation_at_scan_points" in d:
        raise (where / "setting_rotation_at_scan_points").error("a scan-varying goniometer is not supported")
    if "axes" in d:  # MultiAxisGoniometer
        axes_raw = _get(d, "axes", where)
        angles_raw = _get(d, "angles", where)
        if not isinstance(axes_raw, list) or not isinstance(angles_raw, list) or len(axes_raw) != len(angles_raw) \
                or not axes_raw:
            raise (where / "angles").error("expected as many angles as axes (at least one)")
        axes = [_axis(a, where / "axes" / i) for i, a in enumerate(axes_raw)]
        angles = [_number(a, where / "angles" / i) / RTD for i, a in enumerate(angles_raw)]
        k = _integer(_get(d, "scan_axis", where), where / "scan_axis")
        if not 0 <= k < len(axes):
            raise (where / "scan_axis").error(f"no axis {k} (the goniometer has {len(axes)})")
        fixed, setting = np.eye(3), np.eye(3)
        for i in range(k):
            fixed = axis_angle_matrix(axes[i], angles[i]) @ fixed
        for i in range(k + 1, len(axes)):
            setting = axis_angle_matrix(axes[i], angles[i]) @ setting
        axis = axes[k]
    else:
        axis = _axis(_get(d, "rotation_axis", where), where / "rotation_axis")
        fixed = _rotation(_get(d, "fixed_rotation", where, list(IDENTITY9)), where / "fixed_rotation")
        setting = _rotation(_get(d, "setting_rotation", where, list(IDENTITY9)), where / "setting_rotation")
    return setting @ axis, setting @ fixed


def read_scan(d: dict, image: int | None, where: _Where | None = None) -> dict[str, Any]:
    """A dxtbx scan dict -> {phi0, osc (rad), image, image_range} of `image` (default: the first)."""
    where = where or _Where("<scan>")
    rng = _get(d, "image_range", where)
    if not isinstance(rng, list | tuple) or len(rng) != 2:
        raise (where / "image_range").error("expected [first, last]")
    first, last = (_integer(v, where / "image_range" / i) for i, v in enumerate(rng))
    if last < first:
        raise (where / "image_range").error(f"last image {last} before first {first}")
    image = first if image is None else image
    if not first <= image <= last:
        raise (where / "image_range").error(f"image {image} is outside the scan's images {first}..{last}")
    props = d.get("properties")
    if isinstance(props, dict) and "oscillation" in props:
        pw = where / "properties"
        starts = props["oscillation"]
        if not isinstance(starts, list | tuple) or len(starts) != last - first + 1:
            raise (pw / "oscillation").error(f"expected {last - first + 1} image start angles")
        start = _number(starts[image - first], pw / "oscillation" / (image - first))
        if "oscillation_width" in props:
            widths = props["oscillation_width"]
            if not isinstance(widths, list | tuple) or not widths:
                raise (pw / "oscillation_width").error("expected a list of widths")
            width = _number(widths[0], pw / "oscillation_width" / 0)
        elif len(starts) > 1:
            width = _number(starts[1], pw / "oscillation" / 1) - _number(starts[0], pw / "oscillation" / 0)
        else:
            raise (pw / "oscillation_width").error("missing (needed for a one-image scan)")
    elif "oscillation" in d:
        osc = _numbers(d["oscillation"], 2, where / "oscillation")
        start, width = osc[0] + (image - first) * osc[1], osc[1]
    else:
        raise (where / "properties" / "oscillation").error("missing")
    return {"phi0": float(start) / RTD, "osc": float(width) / RTD, "image": image, "image_range": (first, last)}


def read_crystal(d: dict, where: _Where | None = None) -> np.ndarray:
    """A dxtbx crystal dict -> rows a, b, c in metres (the crystal at the goniometer's datum)."""
    where = where or _Where("<crystal>")
    if "A_at_scan_points" in d:
        raise (where / "A_at_scan_points").error("a scan-varying crystal is not supported")
    rows = np.array([_numbers(_get(d, k, where), 3, where / k) for k in ("real_space_a", "real_space_b",
                                                                       "real_space_c")])
    if abs(np.linalg.det(rows)) < 1e-9:
        raise (where / "real_space_c").error("the cell vectors are coplanar")
    return rows * ANGSTROM


def read_experiments(source: str | os.PathLike[str] | dict, image: int | None = None,
                     experiment: int = 0) -> Experiment:
    """An experiment list (`.expt` JSON, or its dict) or a detector dict -> Experiment (SI, lab frame).

    `experiment` picks one experiment of the list, `image` one image of its scan (default: the first)."""
    obj, name = _load(source)
    top = _Where(name)
    if "__id__" not in obj and "panels" in obj:  # a bare detector dictionary
        panels, hierarchy = read_detector(obj, _where=top)
        return Experiment(panels=panels, hierarchy=hierarchy)
    if obj.get("__id__") != "ExperimentList":
        raise (top / "__id__").error(f"expected 'ExperimentList' (or a detector with 'panels'), got "
                                     f"{_show(obj.get('__id__'))}")
    exps = _get(obj, "experiment", top)
    if not isinstance(exps, list) or not exps:
        raise (top / "experiment").error("expected a non-empty list of experiments")
    if not 0 <= experiment < len(exps):
        raise (top / "experiment").error(f"no experiment {experiment} (the list has {len(exps)})")
    ew = top / "experiment" / experiment
    entry = exps[experiment]

    def model(kind: str):
        ref = _get(entry, kind, ew, None)
        if ref is None:
            return None, None
        if isinstance(ref, str):
            raise (ew / kind).error("models referenced by file name are not supported (give the model inline)")
        idx = _integer(ref, ew / kind)
        models = obj.get(kind)
        if not isinstance(models, list) or not 0 <= idx < len(models):
            raise (ew / kind).error(f"no {kind} {idx} in the list '{kind}'")
        return models[idx], top / kind / idx

    fields: dict[str, Any] = {}
    d, w = model("detector")
    if d is not None:
        fields["panels"], fields["hierarchy"] = read_detector(d, _where=w)
    d, w = model("beam")
    if d is not None:
        fields.update(read_beam(d, w))
    d, w = model("scan")
    if d is not None:
        fields.update(read_scan(d, image, w))
    elif image is not None:
        raise (ew / "scan").error(f"image {image} asked for, but the experiment has no scan")
    orient = np.eye(3)
    d, w = model("goniometer")
    if d is not None:
        spindle, orient = read_goniometer(d, w)
        fields["spindle_axis"] = _tuple(spindle)
    d, w = model("crystal")
    if d is not None:
        fields["real_space"] = read_crystal(d, w) @ orient.T  # each row r -> S F r
    fields["ignored"] = ignored_models(obj, entry, name)
    return Experiment(**fields)


def _found(d: Any, keys: tuple[str, ...]) -> list[str]:
    """'key value' for each key of `keys` that the dict `d` holds with a non-zero value."""
    out = []
    for k in keys:
        v = d.get(k) if isinstance(d, dict) else None
        if isinstance(v, int | float) and not isinstance(v, bool) and v != 0:
            out.append(f"{k} {v:g}")
    return out


def ignored_models(obj: dict, entry: dict, name: str) -> tuple[str, ...]:
    """One line for each quantity an experiment holds that the simulation does not use, with its value and the
    flags that simulate it: the profile model (DIALS' gaussian_rs sigma_m, sigma_b), the crystal's mosaicity
    (ML_half_mosaicity_deg, ML_domain_size_ang, mosaicity), the beam's divergence and flux."""
    out: list[str] = []

    def referenced(kind: str) -> Any:
        ref, models = entry.get(kind), obj.get(kind)
        if isinstance(ref, int) and not isinstance(ref, bool) and isinstance(models, list) and 0 <= ref < len(models):
            return models[ref]
        return None

    profile = referenced("profile")
    if isinstance(profile, dict):
        what = ", ".join(_found(profile, ("sigma_m", "sigma_b"))) or "no parameters"
        out.append(f"{name}: profile model {profile.get('__id__', '?')} ({what}) is not simulated: nanoBragg's "
                   "mosaicity is -mosaic DEG -mosaic_dom N, its beam divergence -divergence")
    crystal = referenced("crystal")
    found = _found(crystal, ("ML_half_mosaicity_deg", "ML_domain_size_ang", "mosaicity"))
    if found:
        out.append(f"{name}: crystal {', '.join(found)} is not simulated: give -mosaic DEG -mosaic_dom N (and "
                   "-N or -xtalsize for the domain size)")
    beam = referenced("beam")
    found = _found(beam, ("divergence", "sigma_divergence"))
    if found:
        out.append(f"{name}: beam {', '.join(found)} (deg) is not simulated: give -divergence (or -hdivrange, "
                   "-vdivrange)")
    found = _found(beam, ("flux",))
    if found:
        out.append(f"{name}: beam {found[0]} is not used: give -flux and -exposure (or -fluence)")
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# writing


def _list(v) -> list[float]:
    return [float(x) for x in np.asarray(v, dtype=np.float64).reshape(-1)]


def panel_dict(p: PanelConfig, parent: np.ndarray | None = None, parent_origin: np.ndarray | None = None) -> dict:
    """A PanelConfig as dxtbx's panel dict (mm), its frame given in the parent's frame when one is given."""
    fast = _unit(np.asarray(_floats(p.fast_axis), dtype=np.float64))
    slow = _unit(np.asarray(_floats(p.slow_axis), dtype=np.float64))
    origin = np.asarray(_floats(p.origin), dtype=np.float64) / MM
    if parent is not None:
        inv = np.linalg.inv(parent)
        fast, slow, origin = inv @ fast, inv @ slow, inv @ (origin - parent_origin)
    px = _scalar(p.pixel_size) / MM
    thickness = _scalar(p.thickness) / MM
    mu = 0.0 if p.mu is None else _scalar(p.mu) * MM
    return {
        "name": p.name, "type": "SENSOR_PAD", "fast_axis": _list(fast), "slow_axis": _list(slow),
        "origin": _list(origin), "raw_image_offset": [0, 0], "image_size": [int(p.fpixels), int(p.spixels)],
        "pixel_size": [px, px], "trusted_range": [0.0, 1.0e9], "thickness": thickness, "material": "",
        "mu": mu, "identifier": "", "mask": [], "gain": 1.0, "pedestal": 0.0,
        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
    }


def _scalar(x) -> float:
    return float(x.detach()) if hasattr(x, "detach") else float(x)


def _floats(v) -> list[float]:
    if hasattr(v, "detach"):
        return [float(x) for x in v.detach().cpu().reshape(-1)]
    return [float(x) for x in v]


def detector_dict(panels: tuple[PanelConfig, ...], hierarchy: Group | None = None) -> dict:
    """dxtbx's detector dict: `panels` (frames local to their parent group) and `hierarchy`.

    Without a hierarchy the root is the identity frame at the origin holding every panel, as dxtbx writes a
    flat detector."""
    if hierarchy is None:
        hierarchy = Group("", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), tuple(range(len(panels))))
    out: list[dict | None] = [None] * len(panels)

    def node(g: Group, parent: np.ndarray | None, parent_origin: np.ndarray | None) -> dict:
        fast, slow = _unit(np.asarray(g.fast_axis, float)), _unit(np.asarray(g.slow_axis, float))
        origin = np.asarray(g.origin, float) / MM
        frame = _frame_matrix(fast, slow)
        lf, ls, lo = fast, slow, origin
        if parent is not None:
            inv = np.linalg.inv(parent)
            lf, ls, lo = inv @ fast, inv @ slow, inv @ (origin - parent_origin)
        children = []
        for c in g.children:
            if isinstance(c, Group):
                children.append(node(c, frame, origin))
            else:
                if not 0 <= c < len(panels) or out[c] is not None:
                    raise ValueError(f"hierarchy: panel {c} is missing or repeated")
                out[c] = panel_dict(panels[c], frame, origin)
                children.append({"panel": c})
        return {"name": g.name, "type": "", "fast_axis": _list(lf), "slow_axis": _list(ls), "origin": _list(lo),
                "raw_image_offset": [0, 0], "image_size": [0, 0], "pixel_size": [0.0, 0.0],
                "trusted_range": [0.0, 0.0], "thickness": 0.0, "material": "", "mu": 0.0, "identifier": "",
                "mask": [], "gain": 1.0, "pedestal": 0.0, "px_mm_strategy": {"type": "SimplePxMmStrategy"},
                "children": children}

    tree = node(hierarchy, None, None)
    if any(p is None for p in out):
        raise ValueError("hierarchy: not every panel is in it")
    return {"panels": out, "hierarchy": tree}


def beam_dict(wavelength: float, beam_vector, polar_vector, polarization: float) -> dict:
    """dxtbx's monochromatic beam dict from the C's beam: direction = -beam_vector, normal = beam x polar,
    fraction = (1 + Kahn)/2."""
    beam = _unit(np.asarray(beam_vector, float))
    normal = np.cross(beam, np.asarray(polar_vector, float))
    if np.linalg.norm(normal) < 1e-12:  # the C's E-vector along the beam: psi = 0 for every direction
        if polarization != 0.0:
            raise ValueError("the polarization vector is parallel to the beam (no dxtbx equivalent unless the "
                             "Kahn factor is 0)")
        helper = np.array([0.0, 1.0, 0.0]) if abs(beam[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
        normal = helper - (helper @ beam) * beam  # unpolarized: any normal describes it
    return {
        "__id__": "monochromatic", "direction": _list(-beam), "wavelength": wavelength / ANGSTROM,
        "divergence": 0.0, "sigma_divergence": 0.0, "polarization_normal": _list(_unit(normal)),
        "polarization_fraction": (1.0 + polarization) / 2.0, "flux": 0.0, "transmission": 1.0, "probe": "x-ray",
        "sample_to_source_distance": 0.0,
    }


def experiment_list_dict(exp: Experiment) -> dict:
    """dxtbx's ExperimentList dict of one experiment (the models it has; identity goniometer rotations; the scan
    of the one simulated image)."""
    models: dict[str, list] = {k: [] for k in ("beam", "detector", "goniometer", "scan", "crystal")}
    entry: dict[str, Any] = {"__id__": "Experiment", "identifier": ""}
    if exp.wavelength is not None and exp.beam_vector is not None:
        polar = exp.polar_vector if exp.polar_vector is not None else (0.0, 0.0, 1.0)
        models["beam"].append(beam_dict(exp.wavelength, exp.beam_vector, polar, exp.polarization or 0.0))
    if exp.panels:
        models["detector"].append(detector_dict(exp.panels, exp.hierarchy))
    if exp.spindle_axis is not None:
        models["goniometer"].append({"rotation_axis": _list(_unit(np.asarray(exp.spindle_axis, float))),
                                     "fixed_rotation": list(IDENTITY9), "setting_rotation": list(IDENTITY9)})
    if exp.phi0 is not None and exp.osc is not None:  # the simulated image alone: a one-image scan
        image = exp.image if exp.image is not None else 1
        models["scan"].append({
            "image_range": [image, image], "batch_offset": 0,
            "properties": {"oscillation": [exp.phi0 * RTD], "oscillation_width": [exp.osc * RTD],
                           "exposure_time": [0.0], "epochs": [0.0]},
            "valid_image_ranges": {},
        })
    if exp.real_space is not None:
        rows = np.asarray(exp.real_space, float) / ANGSTROM
        models["crystal"].append({"__id__": "crystal", "real_space_a": _list(rows[0]),
                                  "real_space_b": _list(rows[1]), "real_space_c": _list(rows[2]),
                                  "space_group_hall_symbol": " P 1"})
    for kind, lst in models.items():
        if lst:
            entry[kind] = 0
    return {"__id__": "ExperimentList", "experiment": [entry], "imageset": [], **models, "profile": [],
            "scaling_model": []}


def experiment_from_config(cfg: SimulationConfig, hierarchy: Group | None = None) -> Experiment:
    """What a SimulationConfig simulates, as an Experiment: the resolved detector (panels, or the single
    detector's pix0/fdet/sdet), the beam and polarization, the spindle, phi0/osc and the crystal at phi = 0
    (after misset), all in float64. A still (osc = 0) has no goniometer or scan; its crystal is the one at
    phi0."""
    import torch  # the physics modules resolve the C's rules (conventions, beam centres, cell set-up)

    from nanobragg_torch.crystal import build_crystal, resolve_phi
    from nanobragg_torch.detector import resolve_geometry
    from nanobragg_torch.vectors import axis_rotation_matrix

    d = cfg.detector
    single = dataclasses.replace(cfg, detector=dataclasses.replace(d, panels=None))
    hi, cpu = torch.float64, torch.device("cpu")
    with torch.no_grad():
        geom = resolve_geometry(single, hi, cpu)
        if d.panels:
            panels = tuple(d.panels)
        else:
            panels = (PanelConfig(origin=_tuple(geom.pix0.tolist()), fast_axis=_tuple(geom.fdet.tolist()),
                                  slow_axis=_tuple(geom.sdet.tolist()), pixel_size=_scalar(d.pixel_size),
                                  fpixels=d.fpixels, spixels=d.spixels, thickness=_scalar(d.thickness),
                                  mu=None if d.mu is None else _scalar(d.mu)),)
            hierarchy = None
        phi = resolve_phi(cfg, hi, cpu)
        still = phi.osc == 0.0  # a still: no goniometer or scan, the crystal as it stands at phi0 (as DIALS has it)
        real = None
        c = cfg.crystal
        if c.cell is not None or c.reciprocal_matrix is not None:
            a0 = build_crystal(cfg, hi, cpu).a0
            if still:  # the C's rotate_axis of the cell about the spindle by phi0
                a0 = a0 @ axis_rotation_matrix(geom.spindle, torch.tensor(phi.phi0, dtype=hi)).T
            real = a0.numpy().copy()
    scan: dict[str, Any] = {} if still else {
        "spindle_axis": _tuple(geom.spindle.tolist()), "phi0": phi.phi0, "osc": phi.osc, "image": 1,
        "image_range": (1, 1)}
    return Experiment(
        panels=panels, hierarchy=hierarchy, wavelength=_scalar(cfg.beam.wavelength),
        beam_vector=_tuple(geom.beam.tolist()), polar_vector=_tuple(geom.polar_vector.tolist()),
        polarization=_scalar(cfg.beam.polarization), real_space=real, **scan,
    )


def write_experiments(config: SimulationConfig | Experiment | dict, path: str | os.PathLike[str] | None = None,
                      hierarchy: Group | None = None) -> dict:
    """Write (when `path` is given) and return the experiment list of what `config` simulates.

    An Experiment is written as it is; a SimulationConfig through `experiment_from_config`; a dict (an
    experiment list made earlier) as it is. `hierarchy` (e.g. from `read_experiments`) keeps a detector's
    groups: panels are then written in their group's frame. A set-up dxtbx cannot describe is a ValueError."""
    if isinstance(config, dict):
        out = config
    else:
        exp = config if isinstance(config, Experiment) else experiment_from_config(config, hierarchy)
        if hierarchy is not None and isinstance(config, Experiment):
            exp = dataclasses.replace(exp, hierarchy=hierarchy)
        out = experiment_list_dict(exp)
    if path is not None:
        with atomic_write(path, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
            fh.write("\n")
    return out
