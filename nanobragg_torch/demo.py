"""`nanobragg -demo`: a small built-in case that writes its own inputs (a MOSFLM matrix and an HKL file) beside
its outputs, so that the next command can reuse them (`nanobragg -mat out/demo.mat -hkl out/demo.hkl ...`).

The crystal: a 100 Å cubic P1 cell in the orientation of `-misset 10 20 30`, 5 cells a side, with
structure factors falling off as a Wilson-like exp(-B s²) out to `H_MAX` (beyond the corners of the
demo's detector).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .constants import RTD
from .io.atomic import atomic_write
from .io.mosflm import mosflm_matrix_text
from .vectors import rotate_xyz

CELL_A = 100.0  # Å, cubic
LAMBDA_A = 1.0  # Å: the matrix is a*, b*, c* times the wavelength (MOSFLM)
MISSET_DEG = (10.0, 20.0, 30.0)
H_MAX = 18  # |h|, |k|, |l|: d = 5.6 Å at the demo detector's corner
F0, B = 100.0, 20.0  # F = F0 exp(-B s^2), s = 1/(2d)

MAT = "demo.mat"
HKL = "demo.hkl"


def demo_args(outdir: str) -> list[str]:
    """The demo's flags, reading the inputs `write_inputs(outdir)` writes."""
    return ["-mat", os.path.join(outdir, MAT), "-hkl", os.path.join(outdir, HKL), "-N", "5",
            "-lambda", str(LAMBDA_A), "-distance", "100", "-detpixels", "256", "-pixel", "0.1",
            "-phi", "0", "-osc", "1", "-phisteps", "4", "-mosaic", "0.2", "-mosaic_domains", "5"]


def matrix() -> np.ndarray:
    """Rows a*, b*, c* (× λ) of the cubic cell rotated as the C's -misset (rotate about x, y, z)."""
    angles = [torch.tensor(a / RTD, dtype=torch.float64) for a in MISSET_DEG]
    star = torch.eye(3, dtype=torch.float64) * (LAMBDA_A / CELL_A)
    return rotate_xyz(star, *angles).numpy()


def hkl_text() -> str:
    """`h k l F` lines for every index out to H_MAX."""
    r = np.arange(-H_MAX, H_MAX + 1)
    h, k, l = (a.ravel() for a in np.meshgrid(r, r, r, indexing="ij"))
    s2 = (h * h + k * k + l * l) / (2.0 * CELL_A) ** 2
    F = F0 * np.exp(-B * s2)
    return "".join(f"{a} {b} {c} {f:.3f}\n" for a, b, c, f in zip(h, k, l, F, strict=True))


def write_inputs(outdir: str) -> None:
    """Write demo.mat and demo.hkl into `outdir` (made if missing), each atomically."""
    os.makedirs(outdir, exist_ok=True)
    for name, text in ((MAT, mosflm_matrix_text(matrix())), (HKL, hkl_text())):
        with atomic_write(os.path.join(outdir, name)) as f:
            f.write(text.encode())


def announcement(outdir: str, outputs: list[str]) -> str:
    """The line `nanobragg -demo` opens with: the folder, the inputs written there and the outputs to come."""
    folder = os.path.abspath(outdir)
    names = ", ".join(os.path.basename(f) for f in outputs)
    return (f"demo: wrote its inputs {MAT} and {HKL} to {folder}/ (reuse them: -mat {os.path.join(outdir, MAT)} "
            f"-hkl {os.path.join(outdir, HKL)}); the outputs {names} go to the same folder")
