"""SMV (ADSC-style) images: nanoBragg.c's ``-intfile``/``-noisefile`` writer, ``-img``/``-mask`` reader.

Writing: a 512-byte ASCII header ``{\\nKEY=VALUE;\\n...}\\f`` padded with spaces, then fpixels x spixels
unsigned 16-bit little-endian pixels, fast index first. Values are formatted with C's ``%g`` from the same
double arithmetic as the C, so headers are byte-identical. The two C writers differ in one place: the
int-file computes DENZO_X_BEAM/DENZO_Y_BEAM as ``(Sbeam - 0.0*pixel_size)*1000`` and the noise-file as
``(Sbeam + 0.0*pixel_size)*1000``, so a beam centre of -0.0 prints ``-0`` in the first and ``0`` in the
second.

Reading mirrors GetFrame/ValueOf: the first 12 bytes must be ``{\\nHEADER_BYT``; HEADER_BYTES gives the header
size; a keyword's value is taken from its *last* occurrence anywhere in the header text (a plain substring
search, so ``DISTANCE`` finds the one inside ``CLOSE_DISTANCE`` when that comes later), from just after the
next ``=``, by ``atof``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from nanobragg_torch.constants import RTD
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.atomic import atomic_write, read_input
from nanobragg_torch.io.textcolumns import c_atof

Variant = Literal["int", "noise"]

HEADER_BYTES = 512
_MAGIC = "{\nHEADER_BYT"  # GetFrame compares the first 12 characters only


@dataclass(frozen=True)
class SMVHeader:
    """The values nanoBragg.c prints into an SMV header, in its own (mostly SI) units.

    Lengths in metres, angles in radians, except ``dials_origin`` (mm, as the C keeps it) and ORGX/ORGY
    (pixels). Xbeam/Ybeam are the user-convention beam centre; Fbeam/Sbeam the beam spot along the fast/slow
    axes; detsize_s = pixel_size * spixels (unless ``-detsize`` said otherwise).
    """

    fpixels: int
    spixels: int
    pixel_size_m: float
    distance_m: float
    lambda_m: float
    Xbeam: float
    Ybeam: float
    Fbeam: float
    Sbeam: float
    detsize_s: float
    dials_origin: tuple[float, float, float]
    ORGX: float
    ORGY: float
    close_distance_m: float
    phi0_rad: float
    osc_rad: float
    twotheta_rad: float

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SMVHeader:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in values]
        if missing:
            raise ValueError(f"SMV header fields missing: {', '.join(missing)}")
        kw = {n: values[n] for n in names}
        kw["fpixels"], kw["spixels"] = int(kw["fpixels"]), int(kw["spixels"])
        origin = tuple(float(v) for v in kw["dials_origin"])
        if len(origin) != 3:
            raise ValueError("dials_origin needs 3 values (mm)")
        kw["dials_origin"] = origin
        for n in names:
            if n not in ("fpixels", "spixels", "dials_origin"):
                kw[n] = float(kw[n])
        return cls(**kw)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def c_g(value: float) -> str:
    """C's ``printf("%g")`` for a double (glibc spells a NaN with the sign bit set ``-nan``)."""
    value = float(value)
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return f"{value:g}"


def smv_header_text(header: SMVHeader | Mapping[str, Any], variant: Variant = "int", c_compat: bool = False) -> bytes:
    """The header nanoBragg.c writes: ``variant`` "int" (intimage) or "noise" (noiseimage).

    It fits 512 bytes unless the values print long (e.g. the Pilatus 6M geometry: 518 bytes). The C then
    writes it unpadded while still declaring HEADER_BYTES=512 (readers misplace the pixels): ``c_compat``
    reproduces that; otherwise HEADER_BYTES becomes the next multiple of 512 and the header is padded to it."""
    return _header_text(header, variant, c_compat, HEADER_BYTES)


def _header_text(header: SMVHeader | Mapping[str, Any], variant: Variant, c_compat: bool, size: int) -> bytes:
    if variant not in ("int", "noise"):
        raise ValueError(f"variant must be 'int' or 'noise', got {variant!r}")
    h = header if isinstance(header, SMVHeader) else SMVHeader.from_mapping(header)
    px, Sb, Fb = h.pixel_size_m, h.Sbeam, h.Fbeam
    # the one difference between the two writers: the sign of the 0.0*pixel_size term
    denzo_x = (Sb - 0.0 * px) if variant == "int" else (Sb + 0.0 * px)
    denzo_y = (Fb - 0.0 * px) if variant == "int" else (Fb + 0.0 * px)
    lines = [
        "{",
        f"HEADER_BYTES={size};",
        "DIM=2;",
        "BYTE_ORDER=little_endian;",
        "TYPE=unsigned_short;",
        f"SIZE1={h.fpixels};",
        f"SIZE2={h.spixels};",
        f"PIXEL_SIZE={c_g(px * 1000.0)};",
        f"DISTANCE={c_g(h.distance_m * 1000.0)};",
        f"WAVELENGTH={c_g(h.lambda_m * 1e10)};",
        f"BEAM_CENTER_X={c_g(h.Xbeam * 1000.0)};",
        f"BEAM_CENTER_Y={c_g(h.Ybeam * 1000)};",
        f"ADXV_CENTER_X={c_g(Fb * 1000.0)};",
        f"ADXV_CENTER_Y={c_g((h.detsize_s - Sb) * 1000)};",
        f"MOSFLM_CENTER_X={c_g((Sb - 0.5 * px) * 1000.0)};",
        f"MOSFLM_CENTER_Y={c_g((Fb - 0.5 * px) * 1000)};",
        f"DENZO_X_BEAM={c_g(denzo_x * 1000.0)};",
        f"DENZO_Y_BEAM={c_g(denzo_y * 1000.0)};",
        "DIALS_ORIGIN=" + ",".join(c_g(v) for v in h.dials_origin),  # no ';' in the C either
        f"XDS_ORGX={c_g(h.ORGX)};",
        f"XDS_ORGY={c_g(h.ORGY)};",
        f"CLOSE_DISTANCE={c_g(h.close_distance_m * 1000.0)};",
        f"PHI={c_g(h.phi0_rad * RTD)};",
        f"OSC_START={c_g(h.phi0_rad * RTD)};",
        f"OSC_RANGE={c_g(h.osc_rad * RTD)};",
        f"TWOTHETA={c_g(h.twotheta_rad * RTD)};",
        "DETECTOR_SN=000;",
        "BEAMLINE=fake;",
    ]
    text = ("\n".join(lines) + "\n}\f").encode("ascii")
    if len(text) > size:
        if c_compat:
            return text  # the C pads only up to 512 bytes (quirk smv-long-header)
        return _header_text(header, variant, c_compat, size + HEADER_BYTES)
    return text + b" " * (size - len(text))


def _as_uint16(image: np.ndarray, fpixels: int, spixels: int) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype.kind not in "ui":
        raise ValueError(f"SMV pixels must be an integer array (uint16), got {arr.dtype}")
    if arr.size != fpixels * spixels or (arr.ndim == 2 and arr.shape != (spixels, fpixels)):
        raise ValueError(f"image shape {arr.shape} does not match (spixels, fpixels)=({spixels}, {fpixels})")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ValueError("SMV pixel values must lie in 0..65535")
    return np.ascontiguousarray(arr, dtype="<u2").reshape(-1)


def smv_bytes(
    image: np.ndarray, header: SMVHeader | Mapping[str, Any], variant: Variant = "int", c_compat: bool = False
) -> bytes:
    """Header plus pixels, exactly as the C writes them."""
    h = header if isinstance(header, SMVHeader) else SMVHeader.from_mapping(header)
    return smv_header_text(h, variant, c_compat) + _as_uint16(image, h.fpixels, h.spixels).tobytes()


def write_smv(
    path: str | os.PathLike[str],
    image_uint16: np.ndarray,
    header_fields: SMVHeader | Mapping[str, Any],
    variant: Variant = "int",
    c_compat: bool = False,
) -> None:
    """Write an SMV file as nanoBragg.c's intimage ("int") or noiseimage ("noise") writer does.

    ``image_uint16`` has shape (spixels, fpixels) (slow, fast) or is flat in that order.
    """
    data = smv_bytes(image_uint16, header_fields, variant, c_compat)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def smv_value(header_text: str | bytes, key: str) -> float:
    """nanoBragg.c's ValueOf: the number after the ``=`` that follows the last occurrence of ``key``.

    NaN when ``key`` does not occur, 0.0 when no ``=`` follows it; otherwise ``atof`` of the text after the
    ``=`` (0.0 if that is not a number). Only text before the first NUL counts, as for a C string.
    """
    text = header_text.decode("latin-1") if isinstance(header_text, bytes) else header_text
    text = text.split("\0", 1)[0]
    last = text.rfind(key) if key else -1
    if last < 0:
        return math.nan
    eq = text.find("=", last + len(key))
    if eq < 0:
        return 0.0
    return c_atof(text[eq + 1 :])


def parse_smv_header(header_text: str) -> dict[str, str]:
    """``KEY=VALUE;`` lines of a header as strings (later lines win, as ValueOf's last-instance rule)."""
    body = header_text.split("\0", 1)[0]
    if body.startswith("{"):
        body = body[1:]
    body = body.split("}", 1)[0]
    out: dict[str, str] = {}
    for line in body.split("\n"):
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = value.strip().removesuffix(";").strip()
    return out


def read_smv(path: str | os.PathLike[str], *, honor_byte_order: bool = True) -> tuple[dict[str, str], np.ndarray, int]:
    """Read an SMV file as GetFrame does: returns ``(header, image, header_bytes)``.

    ``header`` maps keywords to their value strings; ``image`` is uint16 of shape (SIZE2, SIZE1) (slow, fast);
    ``header_bytes`` is HEADER_BYTES. SIZE1 = 0 falls back to DETECTOR_DIMENSIONS for both sizes, as in the C.
    TYPE is not checked (the C assumes unsigned_short).

    ``honor_byte_order``: the C works out whether BYTE_ORDER differs from the machine's but never swaps, so it
    reads pixels little-endian whatever the header says; pass False for that behaviour. With True (default)
    a big_endian file is swapped. A missing BYTE_ORDER means little_endian.

    InputError when the file is not SMV, HEADER_BYTES or the sizes are unusable, or the pixels are cut short
    (the C would read zeros there).
    """
    name = os.fspath(path)
    data = read_input(path)
    if len(data) < HEADER_BYTES:
        raise InputError(f"{name}: only {len(data)} bytes, shorter than a {HEADER_BYTES}-byte SMV header")
    first = data[:HEADER_BYTES].decode("latin-1")
    if not first.startswith(_MAGIC):
        raise InputError(f"{name}:1: not an SMV (ADSC) frame: must start with '{{' then HEADER_BYTES")

    size = smv_value(first, "HEADER_BYTES")
    if not math.isfinite(size) or int(size) < 1:
        raise InputError(f"{name}: bad HEADER_BYTES value")
    header_size = int(size)
    if header_size != HEADER_BYTES:
        if len(data) < header_size:
            raise InputError(f"{name}: HEADER_BYTES={header_size} but the file has {len(data)} bytes")
        text = data[:header_size].decode("latin-1")
    else:
        text = first
    text = text.split("\0", 1)[0]

    order = text.rfind("BYTE_ORDER=")
    big = order >= 0 and text[order + 11 : order + 21] != "little_end"

    width, height = smv_value(text, "SIZE1"), smv_value(text, "SIZE2")
    if math.isfinite(width) and int(width) == 0:
        width = height = smv_value(text, "DETECTOR_DIMENSIONS")
    if not (math.isfinite(width) and math.isfinite(height)) or int(width) < 1 or int(height) < 1:
        raise InputError(f"{name}: bad image size SIZE1={width:g} SIZE2={height:g}")
    w, h = int(width), int(height)

    nbytes = 2 * w * h
    pixels = data[header_size : header_size + nbytes]
    if len(pixels) < nbytes:
        raise InputError(f"{name}: truncated: {len(pixels)} bytes of pixels, expected {nbytes} ({w}x{h})")
    dtype = ">u2" if (big and honor_byte_order) else "<u2"
    image = np.frombuffer(pixels, dtype=dtype).astype(np.uint16).reshape(h, w)
    return parse_smv_header(text), image, header_size
