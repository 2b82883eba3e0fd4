#!/usr/bin/env python
"""Write the small inputs the golden cases use into golden/inputs/ (deterministic, numpy RNG).

    python tools/golden_inputs.py [--out DIR] [--check]

Files: P1 HKL lists (p1_h14.hkl: every h,k,l in [-14, 14] with ~5% left out; p1_h4.hkl: [-4, 4], too
small for the detector, to hit the interpolation out-of-range fallback), a MOSFLM-style orientation
matrix for a triclinic cell (tric.mat), a source list with missing columns and mixed delimiters
(sources.txt), and two SMV frames: a 128x128 mask (mask128.img) and a header-only frame (header128.img).
``--check`` regenerates into memory and reports files whose bytes differ from the committed ones.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def hkl_text(hmax: int, seed: int, missing: float) -> str:
    """P1 structure factors for all |h|,|k|,|l| <= hmax; a fraction ``missing`` of them left out."""
    rng = np.random.default_rng(seed)
    idx = np.arange(-hmax, hmax + 1)
    h, k, l = (a.ravel() for a in np.meshgrid(idx, idx, idx, indexing="ij"))
    amp = rng.gamma(shape=2.0, scale=60.0, size=h.size) + 1.0
    keep = rng.random(h.size) >= missing
    keep |= (h == 0) & (k == 0) & (l == 0)
    return "".join(
        f"{a:4d}{b:4d}{c:4d}{f:10.2f}\n" for a, b, c, f, m in zip(h, k, l, amp, keep, strict=True) if m
    )


def _rotation(seed: int) -> np.ndarray:
    """A random rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def mat_text(cell: tuple[float, ...], seed: int, wavelength: float = 1.0) -> str:
    """A MOSFLM .mat: rows are x, y, z of (a*, b*, c*) times the wavelength, then cell and U."""
    a, b, c, al, be, ga = cell
    al, be, ga = (math.radians(x) for x in (al, be, ga))
    # real-space basis in a standard frame (a along x, b in the xy plane)
    av = np.array([a, 0.0, 0.0])
    bv = np.array([b * math.cos(ga), b * math.sin(ga), 0.0])
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cv = np.array([cx, cy, math.sqrt(c * c - cx * cx - cy * cy)])
    real = _rotation(seed) @ np.stack([av, bv, cv], axis=1)  # columns a, b, c
    recip = np.linalg.inv(real).T  # columns a*, b*, c*
    amat = recip * wavelength
    rows = ["".join(f"{v:14.9f}" for v in amat[i]) for i in range(3)]
    rows.append("".join(f"{v:14.9f}" for v in (0.0, 0.0, 0.0)))
    u = _rotation(seed)
    rows += ["".join(f"{v:14.9f}" for v in u[i]) for i in range(3)]
    rows.append("".join(f"{v:12.4f}" for v in cell))
    rows.append("".join(f"{v:12.4f}" for v in (0.0, 0.0, 0.0)))
    return "\n".join(rows) + "\n"


def sources_text() -> str:
    """Source points (X Y Z [I [lambda]]), beam along +x (MOSFLM); missing columns take the C defaults."""
    return (
        "-10.0 0.0 0.0 1.0 1.0e-10\n"
        "-10.0\t0.0015\t0.0\t0.5\t1.004e-10\n"
        "\n"
        "-10.0,-0.0015,0.0008,0.25\n"
        "-10.0 0.0 -0.0012\n"
        "-10.0;0.0007;0.0007;2.0;0.996e-10\n"
    )


def smv_bytes(header: dict[str, object], data: np.ndarray) -> bytes:
    """A 512-byte-header SMV frame (little-endian unsigned short), laid out like nanoBragg's own."""
    text = "{\nHEADER_BYTES=  512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\n"
    text += "".join(f"{k}={v};\n" for k, v in header.items()) + "}\f"
    raw = text.encode("ascii")
    if len(raw) > 512:
        raise ValueError("SMV header longer than 512 bytes")
    return raw + b" " * (512 - len(raw)) + np.ascontiguousarray(data, dtype="<u2").tobytes()


def mask_frame() -> bytes:
    """128x128 mask: 0 = skip. A 3-pixel frame, a beam-stop disc and its arm, and a dead column."""
    n = 128
    m = np.ones((n, n), dtype=np.uint16)
    m[:3, :] = m[-3:, :] = 0
    m[:, :3] = m[:, -3:] = 0
    s, f = np.mgrid[0:n, 0:n]
    m[(s - 64) ** 2 + (f - 64) ** 2 <= 16] = 0
    m[62:67, 64:] = 0
    m[:, 100] = 0
    header = {
        "SIZE1": n,
        "SIZE2": n,
        "PIXEL_SIZE": 0.2,
        "DISTANCE": 110,
        "WAVELENGTH": 1.0,
        "BEAM_CENTER_X": 12.9,
        "BEAM_CENTER_Y": 12.5,
    }
    return smv_bytes(header, m)


def header_frame() -> bytes:
    """A 128x128 frame used only for its header (-img), with the keys nanoBragg writes itself."""
    n = 128
    header = {
        "SIZE1": n,
        "SIZE2": n,
        "PIXEL_SIZE": 0.2,
        "DISTANCE": 120,
        "WAVELENGTH": 1.1,
        "BEAM_CENTER_X": 13.1,
        "BEAM_CENTER_Y": 11.9,
        "ADXV_CENTER_X": 13.2,
        "ADXV_CENTER_Y": 13.7,
        "XDS_ORGX": 66.0,
        "XDS_ORGY": 60.0,
        "CLOSE_DISTANCE": 118,
        "PHI": 5,
        "OSC_START": 5,
        "OSC_RANGE": 1,
        "TWOTHETA": 0,
        "DETECTOR_SN": "000",
        "BEAMLINE": "fake",
    }
    return smv_bytes(header, np.zeros((n, n), dtype=np.uint16))


def all_inputs() -> dict[str, bytes]:
    return {
        "p1_h14.hkl": hkl_text(14, seed=20240601, missing=0.05).encode(),
        "p1_h4.hkl": hkl_text(4, seed=20240602, missing=0.0).encode(),
        "tric.mat": mat_text((53.0, 61.0, 71.0, 83.0, 97.0, 109.0), seed=7).encode(),
        "sources.txt": sources_text().encode(),
        "mask128.img": mask_frame(),
        "header128.img": header_frame(),
    }


def write_inputs(out: Path, check: bool = False) -> list[str]:
    """Write (or with ``check`` compare) every input; returns the names that differ from disk."""
    out.mkdir(parents=True, exist_ok=True)
    differ = []
    for name, data in all_inputs().items():
        path = out / name
        same = path.is_file() and path.read_bytes() == data
        if not same:
            differ.append(name)
            if not check:
                path.write_bytes(data)
    return differ


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "golden" / "inputs")
    ap.add_argument("--check", action="store_true", help="only report inputs that would change")
    args = ap.parse_args(argv)
    differ = write_inputs(args.out, check=args.check)
    verb = "differ" if args.check else "written"
    print(f"{len(differ)} input file(s) {verb}: {', '.join(differ) if differ else '-'}")
    return 1 if (args.check and differ) else 0


if __name__ == "__main__":
    sys.exit(main())
