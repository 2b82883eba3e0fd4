"""NeXus/NXmx HDF5 images (``-nxsfile``): the rendered photons of every panel with the detector modules, beam
and goniometer, in the NeXus (McStas) frame, through h5py (hdf5plugin for compression).

`write_nxmx(path, images, panels, beam, goniometer)` takes plain values (`PanelConfig`, `BeamGeometry`,
`GoniometerGeometry`, all SI and in the simulation's lab frame): a multi-panel detector's own
`DetectorConfig.panels`, or `panels_from_geometry` of a single-panel plan (the C's pix0_vector, fdet_vector,
sdet_vector).

**Frame.** NeXus uses the McStas frame: z along the beam, y up, x completing a right-handed set. nanoBragg's
MOSFLM frame has the beam along +x. The C's DIALS_ORIGIN maps a lab vector v to (v_z, v_y, -v_x) (the imgCIF
frame dxtbx uses, beam along -z); dxtbx's NeXus reader goes from McStas to imgCIF by diag(-1, 1, -1). Composed,
(x, y, z)_McStas = (-v_z, v_y, v_x) (`MOSFLM_TO_MCSTAS`). For a beam elsewhere (the XDS, DIALS and ADXV
conventions put it along +z; CUSTOM anywhere) `mcstas_rotation` follows that matrix with the smallest rotation
that brings the beam onto +z, so the file's beam is always McStas +z as NXmx readers assume.

**Layout** (one frame): ``/entry/data/data`` (a link to ``/entry/instrument/detector/data``), float32
photons per pixel, shape (1, S, F) for one panel, (1, P, S, F) for P panels; one NXdetector_module per
panel with data_origin/data_size (slow to fast, frame axis left out), ``module_offset`` (translation of the
panel's pixel-(0, 0) outer corner from the sample) depending on the detector's fixed ``detector_arm``
translation, ``fast_pixel_direction``/``slow_pixel_direction`` (translations by one pixel) depending on
``module_offset``; ``/entry/sample/transformations/phi`` the spindle rotation (start per frame, with
``phi_increment_set`` and ``phi_end``); ``/entry/instrument/beam`` wavelength and polarization. Lengths in
metres, angles in degrees.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nanobragg_torch.config import PanelConfig
from nanobragg_torch.constants import RTD
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import atomic_write

# (x, y, z)_McStas of a vector in nanoBragg's MOSFLM frame (beam along +x): the C's DIALS_ORIGIN mapping
# (v_z, v_y, -v_x), then dxtbx's imgCIF -> McStas diag(-1, 1, -1)
MOSFLM_TO_MCSTAS = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

USER_MASK_BIT = 1 << 8  # NXdetector pixel_mask bit 8: user-defined mask (here: pixels the render skipped)


@dataclass(frozen=True)
class BeamGeometry:
    """The incident beam in the simulation's lab frame."""

    wavelength: float  # m
    direction: tuple[float, float, float]  # unit, source to sample (the C's beam_vector)
    polarization: tuple[float, float, float] = (0.0, 0.0, 1.0)  # E-vector (the C's polar_vector)
    polarization_fraction: float = 0.0  # the C's Kahn factor (-polar)


@dataclass(frozen=True)
class GoniometerGeometry:
    """The spindle (the C's spindle_vector, lab frame) and the frame's rotation range."""

    spindle_axis: tuple[float, float, float]
    phi_start: float  # rad (the C's phi0)
    phi_range: float  # rad (the C's osc)


def _unit(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    if not math.isfinite(n) or n == 0.0:
        raise ValueError(f"not a direction: {tuple(a)}")
    return a / n


def _rotation_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector u onto unit vector v (Rodrigues)."""
    c = float(np.dot(u, v))
    if c > 1.0 - 1e-15:
        return np.eye(3)
    if c < -1.0 + 1e-15:  # opposite: half a turn about any perpendicular axis (y, unless u lies along y)
        axis = np.cross(u, (0.0, 1.0, 0.0))
        if np.linalg.norm(axis) < 1e-8:
            axis = np.cross(u, (1.0, 0.0, 0.0))
        axis = _unit(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    w = np.cross(u, v)
    k = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def mcstas_rotation(beam_direction: Sequence[float]) -> np.ndarray:
    """The rotation taking simulation-frame vectors to the McStas frame: `MOSFLM_TO_MCSTAS`, followed when the
    beam is not along +x by the smallest rotation that puts the beam on +z."""
    b = MOSFLM_TO_MCSTAS @ _unit(beam_direction)
    return _rotation_between(b, np.array([0.0, 0.0, 1.0])) @ MOSFLM_TO_MCSTAS


def _vec3(x) -> tuple[float, float, float]:
    """A 3-vector (tuple, array or tensor) as three Python floats."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().tolist()
    a, b, c = (float(v) for v in x)
    return (a, b, c)


def panels_from_geometry(geom, fpixels: int, spixels: int, thickness: float = 0.0) -> list[PanelConfig]:
    """The single panel of a resolved `detector.Geometry` (the C's pix0_vector, fdet_vector, sdet_vector)."""
    return [
        PanelConfig(
            origin=_vec3(geom.pix0),
            fast_axis=_vec3(geom.fdet),
            slow_axis=_vec3(geom.sdet),
            pixel_size=float(geom.pixel_size),
            fpixels=int(fpixels),
            spixels=int(spixels),
            name="module",
            thickness=float(thickness),
        )
    ]


# how the image is compressed: "gzip" (deflate level 4 + byte shuffle), "bitshuffle" (bitshuffle + LZ4 through
# hdf5plugin) or None; see docs/formats.md for the measurements behind the default
DEFAULT_COMPRESSION = "gzip"


def _compression(kind: str | None) -> dict:
    if kind is None:
        return {}
    if kind == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if kind == "bitshuffle":
        import hdf5plugin

        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    raise ValueError(f"compression must be 'gzip', 'bitshuffle' or None, got {kind!r}")


def _axis(group, name: str, value, *, kind: str, vector, units: str, depends_on: str, offset=None, **extra):
    ds = group.create_dataset(name, data=np.atleast_1d(np.asarray(value, dtype=np.float64)))
    ds.attrs["transformation_type"] = kind
    ds.attrs["vector"] = np.asarray(vector, dtype=np.float64)
    ds.attrs["units"] = units
    ds.attrs["depends_on"] = depends_on
    if offset is not None:
        ds.attrs["offset"] = np.asarray(offset, dtype=np.float64)
        ds.attrs["offset_units"] = "m"
    for key, val in extra.items():
        ds.attrs[key] = val
    return ds


def _nx_group(parent, name: str, nx_class: str):
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _plain(p: PanelConfig) -> PanelConfig:
    """A panel with Python floats where the config may hold tensors."""
    return dataclasses.replace(p, origin=_vec3(p.origin), fast_axis=_vec3(p.fast_axis), slow_axis=_vec3(p.slow_axis),
                               pixel_size=float(p.pixel_size), thickness=float(p.thickness))


def _module_names(panels: Sequence[PanelConfig]) -> list[str]:
    """HDF5 group names of the modules: the panel's name made safe, else (or when taken) ``module<i>``."""
    names: list[str] = []
    taken = {  # the detector's other children
        "data", "transformations", "description", "type", "depends_on", "sensor_material", "sensor_thickness",
        "x_pixel_size", "y_pixel_size", "count_time", "pixel_mask", "pixel_mask_applied",
    }
    for i, p in enumerate(panels):
        name = "".join(c if c.isalnum() or c in "_-." else "_" for c in p.name)
        if not name or name in taken or name.startswith("."):
            name = f"module{i}"
        while name in taken:
            name = f"{name}_{i}"
        taken.add(name)
        names.append(name)
    return names


def write_nxmx(
    path: str | os.PathLike[str],
    images: np.ndarray,
    panels: Sequence[PanelConfig],
    beam: BeamGeometry,
    goniometer: GoniometerGeometry,
    *,
    exposure_time: float = 1.0,
    compression: str | None = DEFAULT_COMPRESSION,
    title: str = "nanobragg_torch simulation",
    excluded: np.ndarray | None = None,
) -> None:
    """Write one frame as an NXmx file. ``images``: (S, F) for one panel, (P, S, F) for P panels, photons per
    pixel (stored float32). ``excluded``: pixels not simulated (outside ``-roi``, ``-mask`` 0), same shape as
    ``images``, stored as bit 8 (user-defined mask) of the detector's ``pixel_mask``. Atomic (see `io.atomic`);
    a mismatch between images, mask and panels is a ValueError."""
    import h5py

    panels = [_plain(p) for p in panels]
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != len(panels) or not panels:
        raise ValueError(f"images of shape {np.shape(images)} do not match {len(panels)} panel(s)")
    for i, p in enumerate(panels):
        if arr.shape[1:] != (p.spixels, p.fpixels):
            raise ValueError(f"panel {i}: image {arr.shape[1:]} is not (spixels, fpixels)=({p.spixels}, {p.fpixels})")
    single = len(panels) == 1
    mask = None
    if excluded is not None:
        ex = np.asarray(excluded, dtype=bool)
        if ex.shape != np.shape(images):
            raise ValueError(f"excluded pixels of shape {ex.shape} do not match the images {np.shape(images)}")
        mask = np.where(ex, np.uint32(USER_MASK_BIT), np.uint32(0)).astype(np.uint32)
    frames = arr[None].astype(np.float32)  # (1, P, S, F)
    if single:
        frames = frames[:, 0]  # (1, S, F)
    R = mcstas_rotation(beam.direction)

    def lab(v) -> np.ndarray:
        return R @ np.asarray(v, dtype=np.float64)

    with atomic_write(path, "w+b") as handle, h5py.File(handle, "w") as f:
        f.attrs["default"] = "entry"
        f.attrs["creator"] = "nanobragg_torch"
        entry = _nx_group(f, "entry", "NXentry")
        entry.attrs["default"] = "data"
        entry.create_dataset("definition", data="NXmx")
        entry.create_dataset("title", data=title)
        entry.create_dataset("start_time", data="1970-01-01T00:00:00Z")  # a simulation has no clock time
        entry.create_dataset("end_time", data="1970-01-01T00:00:00Z")

        source = _nx_group(entry, "source", "NXsource")
        source.create_dataset("name", data="nanoBragg simulation")
        source.create_dataset("type", data="Synchrotron X-ray Source")

        instrument = _nx_group(entry, "instrument", "NXinstrument")
        instrument.create_dataset("name", data="nanobragg_torch")
        nxbeam = _nx_group(instrument, "beam", "NXbeam")
        wl = nxbeam.create_dataset("incident_wavelength", data=beam.wavelength * 1e10)
        wl.attrs["units"] = "angstrom"
        pol = lab(_unit(beam.polarization))
        # Stokes vector (I, Q, U, V) in the McStas x/y plane: the degree of linear polarization along E
        psi = math.atan2(pol[1], pol[0])
        frac = float(beam.polarization_fraction)
        nxbeam.create_dataset(
            "incident_polarization_stokes",
            data=np.array([1.0, frac * math.cos(2 * psi), frac * math.sin(2 * psi), 0.0]),
        )
        e = nxbeam.create_dataset("polarization_vector_mcstas", data=pol)  # ours: the C's polar_vector
        e.attrs["units"] = ""

        det = _nx_group(instrument, "detector", "NXdetector")
        det.create_dataset("description", data="nanoBragg simulated detector")
        det.create_dataset("type", data="pixel")
        det.create_dataset("sensor_material", data="Si")
        thick = det.create_dataset("sensor_thickness", data=float(panels[0].thickness))
        thick.attrs["units"] = "m"
        for key in ("x_pixel_size", "y_pixel_size"):
            ds = det.create_dataset(key, data=float(panels[0].pixel_size))
            ds.attrs["units"] = "m"
        ct = det.create_dataset("count_time", data=float(exposure_time))
        ct.attrs["units"] = "s"
        det.create_dataset("depends_on", data="/entry/instrument/detector/transformations/detector_arm")
        data = det.create_dataset(
            "data", data=frames, chunks=(1,) + frames.shape[1:], **_compression(compression)
        )
        data.attrs["units"] = "photons"
        if mask is not None:
            det.create_dataset("pixel_mask", data=mask, **_compression("gzip"))
            det.create_dataset("pixel_mask_applied", data=False)
        trans = _nx_group(det, "transformations", "NXtransformations")
        arm = _axis(
            trans, "detector_arm", 0.0, kind="translation", vector=(0.0, 0.0, 1.0), units="m", depends_on=".",
            equipment_component="detector_arm",
        )
        for i, (p, name) in enumerate(zip(panels, _module_names(panels), strict=True)):
            m = _nx_group(det, name, "NXdetector_module")
            if single:
                m.create_dataset("data_origin", data=np.array([0, 0], dtype=np.int64))
                m.create_dataset("data_size", data=np.array([p.spixels, p.fpixels], dtype=np.int64))
            else:
                m.create_dataset("data_origin", data=np.array([i, 0, 0], dtype=np.int64))
                m.create_dataset("data_size", data=np.array([1, p.spixels, p.fpixels], dtype=np.int64))
            origin = lab(p.origin)
            dist = float(np.linalg.norm(origin))
            direction = origin / dist if dist > 0.0 else np.array([0.0, 0.0, 1.0])
            off = _axis(
                m, "module_offset", dist, kind="translation", vector=direction, units="m", depends_on=arm.name,
                equipment_component=f"module{i}",
            )
            for name, axis in (("fast_pixel_direction", p.fast_axis), ("slow_pixel_direction", p.slow_axis)):
                _axis(
                    m, name, p.pixel_size, kind="translation", vector=lab(_unit(axis)), units="m",
                    depends_on=off.name, offset=(0.0, 0.0, 0.0),
                )

        sample = _nx_group(entry, "sample", "NXsample")
        sample.create_dataset("name", data="simulated crystal")
        sample.create_dataset("depends_on", data="/entry/sample/transformations/phi")
        gon = _nx_group(sample, "transformations", "NXtransformations")
        start, step = goniometer.phi_start * RTD, goniometer.phi_range * RTD
        _axis(gon, "phi", [start], kind="rotation", vector=lab(_unit(goniometer.spindle_axis)), units="deg",
              depends_on=".")
        inc = gon.create_dataset("phi_increment_set", data=step)
        inc.attrs["units"] = "deg"
        end = gon.create_dataset("phi_end", data=np.array([start + step]))
        end.attrs["units"] = "deg"

        nxdata = _nx_group(entry, "data", "NXdata")
        nxdata.attrs["signal"] = "data"
        nxdata["data"] = h5py.SoftLink("/entry/instrument/detector/data")


def read_nxmx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """The frame stack of an NXmx file written here: (frames, S, F) or (frames, P, S, F) float32."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["/entry/data/data"][()])
    except (OSError, KeyError) as exc:
        raise InputError(f"{os.fspath(path)}: not an NXmx file written by nanobragg_torch ({exc})") from exc
