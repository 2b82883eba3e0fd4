"""miniCBF images (``-cbffile``), laid out as PILATUS detectors write them: a CIF text block whose
``_array_data.header_contents`` carries the "PILATUS_1.2" header lines (pixel size, exposure, wavelength,
distance, beam centre, rotation), then the pixels as signed 32-bit integers compressed by fabio's CBF
byte-offset coder (``fabio.compression.compByteOffset``).

The image is the C's integer image (``-intfile``): the same values, stored as int32 instead of uint16.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from nanobragg_torch.constants import RTD
from nanobragg_torch.io.atomic import atomic_write

_STARTER = b"\x0c\x1a\x04\xd5"  # CBF binary section start
_PADDING = 4095  # zero bytes after the pixels, as PILATUS files have them


@dataclass(frozen=True)
class CBFHeader:
    """The PILATUS_1.2 header values, SI units (metres, seconds, radians)."""

    pixel_size: float  # m
    wavelength: float  # m
    distance: float  # m, sample to detector plane (the C's close_distance)
    beam_fast: float  # m, direct-beam spot from the outer corner of pixel (0, 0) along fast (the C's Fbeam)
    beam_slow: float  # m, ... along slow (the C's Sbeam)
    exposure_time: float = 1.0  # s
    phi_start: float = 0.0  # rad
    phi_range: float = 0.0  # rad
    twotheta: float = 0.0  # rad
    polarization: float = 0.0  # fraction (the C's Kahn factor)
    thickness: float = 0.0  # m, sensor thickness


def header_contents(h: CBFHeader, when: str = "1970-01-01T00:00:00.000") -> str:
    """The ``# ...`` lines of ``_array_data.header_contents`` (CRLF-separated, PILATUS style)."""
    px = h.pixel_size
    lines = [
        "# Detector: nanoBragg simulated pixel array detector, S/N 0-000",
        f"# {when}",
        f"# Pixel_size {px:.6g} m x {px:.6g} m",
        f"# Silicon sensor, thickness {h.thickness:.6f} m",
        f"# Exposure_time {h.exposure_time:.7f} s",
        f"# Exposure_period {h.exposure_time:.7f} s",
        "# Tau = 0 s",
        "# Count_cutoff 1048575 counts",
        "# Threshold_setting: 0 eV",
        "# Gain_setting: not implemented (vrf = 0.000)",
        "# N_excluded_pixels = 0",
        "# Excluded_pixels: (nil)",
        "# Flat_field: (nil)",
        "# Trim_file: (nil)",
        "# Image_path: (nil)",
        f"# Wavelength {h.wavelength * 1e10:.6f} A",
        f"# Detector_distance {h.distance:.6f} m",
        f"# Beam_xy ({h.beam_fast / px:.3f}, {h.beam_slow / px:.3f}) pixels",
        f"# Start_angle {h.phi_start * RTD:.6f} deg.",
        f"# Angle_increment {h.phi_range * RTD:.6f} deg.",
        f"# Detector_2theta {h.twotheta * RTD:.6f} deg.",
        f"# Polarization {h.polarization:.4f}",
        "# Alpha 0.0000 deg.",
        "# Kappa 0.0000 deg.",
        f"# Phi {h.phi_start * RTD:.6f} deg.",
        f"# Phi_increment {h.phi_range * RTD:.6f} deg.",
        "# Chi 0.0000 deg.",
        "# Chi_increment 0.0000 deg.",
        "# Oscillation_axis PHI",
        "# N_oscillations 1",
    ]
    return "\r\n".join(lines)


def cbf_bytes(image: np.ndarray, header: CBFHeader, name: str = "image") -> bytes:
    """The whole file: ``image`` (S, F) integer values that fit int32."""
    from fabio.compression import compByteOffset

    arr = np.asarray(image)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise ValueError(f"CBF pixels must be a 2-D integer array, got {arr.dtype} of shape {arr.shape}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise ValueError("CBF pixel values must fit a signed 32-bit integer")
    pixels = np.ascontiguousarray(arr, dtype="<i4")
    blob = bytes(compByteOffset(pixels))
    md5 = base64.b64encode(hashlib.md5(blob).digest())
    s, f = pixels.shape
    text = "\r\n".join(
        [
            "###CBF: VERSION 1.5, nanobragg_torch miniCBF (PILATUS_1.2 header)",
            "",
            f"data_{name}",
            "",
            '_array_data.header_convention "PILATUS_1.2"',
            "_array_data.header_contents",
            ";",
            header_contents(header),
            ";",
            "",
            "_array_data.data",
            ";",
            "--CIF-BINARY-FORMAT-SECTION--",
            "Content-Type: application/octet-stream;",
            '     conversions="x-CBF_BYTE_OFFSET"',
            "Content-Transfer-Encoding: BINARY",
            f"X-Binary-Size: {len(blob)}",
            "X-Binary-ID: 1",
            'X-Binary-Element-Type: "signed 32-bit integer"',
            "X-Binary-Element-Byte-Order: LITTLE_ENDIAN",
            f"Content-MD5: {md5.decode('ascii')}",
            f"X-Binary-Number-of-Elements: {s * f}",
            f"X-Binary-Size-Fastest-Dimension: {f}",
            f"X-Binary-Size-Second-Dimension: {s}",
            f"X-Binary-Size-Padding: {_PADDING}",
            "",
            "",
        ]
    ).encode("ascii")
    tail = b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\r\n\r\n"
    return text + _STARTER + blob + b"\0" * _PADDING + tail


def write_cbf(path: str | os.PathLike[str], image: np.ndarray, header: CBFHeader) -> None:
    """Write a miniCBF file (atomic, see `io.atomic`)."""
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "image"
    data = cbf_bytes(image, header, "".join(c if c.isalnum() or c in "_-." else "_" for c in stem))
    with atomic_write(path, "wb") as handle:
        handle.write(data)
