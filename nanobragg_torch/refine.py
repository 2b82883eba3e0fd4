"""Parameter refinement against an observed image, by gradient descent through the differentiable render.

Two parts:

* orientation helpers that avoid the gimbal lock of the C's x-y-z misset angles: a rotation vector
  (axis * angle, radians) or a quaternion becomes a rotation matrix, and `oriented_reciprocal_matrix` turns
  a cell and such a rotation into the MOSFLM-style matrix that `CrystalConfig.reciprocal_matrix` takes.
  With `rotation = misset_rotation(misset)` the render equals the one with `CrystalConfig.misset=misset`
  (the C's `rotate()` of a*, b*, c* about x, then y, then z).
* `refine`: fit named parameters (in natural units: Angstrom, degrees, mm, pixels) of a model function
  `build(params) -> SimulationConfig` to a target image with Adam or L-BFGS, recording the trajectory.
  `standard_model` is the usual model: cell, orientation (rotation vector about a starting misset),
  distance and beam centre.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch

from .config import SimulationConfig
from .constants import RTD
from .crystal import cell_reciprocal
from .detector import resolve_geometry
from .simulate import simulate
from .vectors import rotate_xyz

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# orientation


def _skew(v: Tensor) -> Tensor:
    z = torch.zeros_like(v[..., 0])
    return torch.stack((torch.stack((z, -v[..., 2], v[..., 1]), -1),
                        torch.stack((v[..., 2], z, -v[..., 0]), -1),
                        torch.stack((-v[..., 1], v[..., 0], z), -1)), -2)


def rotation_from_rotvec(rotvec: Tensor) -> Tensor:
    """R = exp([rotvec]_x) (..., 3, 3): right-handed rotation by |rotvec| radians about rotvec.

    The matrix exponential is smooth everywhere, including at rotvec = 0, so gradients are finite there."""
    return torch.linalg.matrix_exp(_skew(rotvec))


def rotation_from_quaternion(q: Tensor) -> Tensor:
    """Rotation matrix of the quaternion (w, x, y, z) (..., 4), normalised first (any nonzero q is valid)."""
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack((
        torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)), -1),
        torch.stack((2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)), -1),
        torch.stack((2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)), -1)), -2)


def misset_rotation(misset) -> Tensor:
    """The matrix of the C's rotate(v, rotx, roty, rotz) (x, then y, then z; radians): R @ v == rotate(v)."""
    mx, my, mz = (torch.as_tensor(m) for m in misset)
    dtype = torch.promote_types(torch.promote_types(mx.dtype, my.dtype), mz.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    eye = torch.eye(3, dtype=dtype, device=mx.device)
    return torch.stack([rotate_xyz(eye[i], mx, my, mz) for i in range(3)], dim=-1)


def rotvec_from_rotation(R: Tensor) -> Tensor:
    """The rotation vector (radians) of a rotation matrix (3, 3) with angle < pi (for starting values)."""
    cos = ((R[0, 0] + R[1, 1] + R[2, 2] - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    w = torch.stack((R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]))
    s = torch.sin(angle)
    scale = torch.where(s.abs() > 1e-12, angle / (2.0 * torch.where(s.abs() > 1e-12, s, torch.ones_like(s))),
                        torch.full_like(s, 0.5))
    return w * scale


def misset_from_rotation(R: Tensor) -> Tensor:
    """x-y-z misset angles (radians) of R = Rz Ry Rx (the inverse of misset_rotation, |roty| < 90 deg)."""
    ry = torch.asin((-R[2, 0]).clamp(-1.0, 1.0))
    rx = torch.atan2(R[2, 1], R[2, 2])
    rz = torch.atan2(R[1, 0], R[0, 0])
    return torch.stack((rx, ry, rz))


def rotation_angle_between(R1: Tensor, R2: Tensor) -> Tensor:
    """Geodesic distance (radians) between two rotations: the angle of R1^T R2."""
    M = R1.transpose(-1, -2) @ R2
    cos = ((M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def oriented_reciprocal_matrix(cell, rotation: Tensor, wavelength) -> Tensor:
    """MOSFLM-style matrix for CrystalConfig.reciprocal_matrix: rows rotation @ a*, b*, c*, where a*, b*, c*
    are the C's default orientation of the reciprocal cell (its user-cell block), times lambda in Angstrom.

    `cell`: a, b, c (m), alpha, beta, gamma (rad), floats or tensors; `wavelength` (m) as in BeamConfig (the
    C divides the matrix by lambda, so lambda cancels). Use with `cell=cell` and `misset=None` in the
    CrystalConfig: then `rotation = misset_rotation(m)` renders exactly like `misset=m`."""
    dtype = rotation.dtype
    device = rotation.device

    def t(x):
        return torch.as_tensor(x, dtype=dtype, device=device)

    cell_A = tuple(t(cell[i]) * 1e10 for i in range(3)) + tuple(t(cell[i]) for i in range(3, 6))
    a_star, b_star, c_star, _, _ = cell_reciprocal(cell_A, t)
    star = torch.stack((a_star, b_star, c_star))  # rows (1/A)
    return (star @ rotation.transpose(-1, -2)) * (t(wavelength) * 1e10)


# ---------------------------------------------------------------------------------------------------------
# refinement


@dataclass
class Step:
    iteration: int
    loss: float
    params: dict[str, list[float]]


@dataclass
class RefineResult:
    params: dict[str, Tensor]  # final values (natural units, detached)
    history: list[Step] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.history[-1].loss if self.history else math.nan


Builder = Callable[[Mapping[str, Tensor]], SimulationConfig]


def image_loss(model: Tensor, target: Tensor, kind: str = "sqrt") -> Tensor:
    """Mean squared residual; "sqrt": on sqrt(I) (a variance-stabilised, Poisson-like scale, so that weak
    spots and the spot tails count), "linear": on I, both divided by the target's mean (scale-free)."""
    if kind == "sqrt":
        m = torch.sqrt(model.clamp(min=0.0) + 1e-12)
        t = torch.sqrt(target.clamp(min=0.0) + 1e-12)
    elif kind == "linear":
        m, t = model, target
    else:
        raise ValueError(f"unknown loss {kind!r}")
    scale = (t * t).mean().clamp(min=1e-30)
    return ((m - t) ** 2).mean() / scale


def refine(target: Tensor, build: Builder, start: Mapping[str, Tensor | float | list[float]],
           scales: Mapping[str, float] | None = None, method: str = "lbfgs", iterations: int = 30,
           lr: float | None = None, loss: str = "sqrt", dtype: torch.dtype = torch.float64,
           device: torch.device | str = "cpu", samples_per_chunk: int | None = None,
           callback: Callable[[Step], None] | None = None, stop_loss: float = 0.0) -> RefineResult:
    """Fit `start` (name -> value in natural units) so that simulate(build(params)) matches `target`.

    `scales`: the typical size of each parameter's error (natural units); the optimiser works on
    value/scale so that one step moves every parameter comparably. `method`: "lbfgs" (strong-Wolfe line
    search; `iterations` outer steps) or "adam" (`lr` in scaled units, default 0.05). Each iteration's
    loss and parameters are recorded in the result's history and passed to `callback`; the loop stops early
    once the loss is at or below `stop_loss`."""
    scales = dict(scales or {})
    target = torch.as_tensor(target, dtype=dtype, device=device)
    names = list(start)
    z = {n: (torch.as_tensor(start[n], dtype=dtype, device=device).clone() / scales.get(n, 1.0))
         .requires_grad_() for n in names}

    def params() -> dict[str, Tensor]:
        return {n: z[n] * scales.get(n, 1.0) for n in names}

    def objective() -> Tensor:
        image = simulate(build(params()), dtype=dtype, device=device, samples_per_chunk=samples_per_chunk)
        return image_loss(image, target, loss)

    result = RefineResult(params={})
    t0 = time.perf_counter()

    def record(i: int, value: float) -> None:
        with torch.no_grad():
            p = {n: v.detach().reshape(-1).tolist() for n, v in params().items()}
        step = Step(i, value, p)
        result.history.append(step)
        if callback is not None:
            callback(step)

    if method == "lbfgs":
        opt = torch.optim.LBFGS(list(z.values()), lr=1.0 if lr is None else lr, max_iter=8, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

        def closure():
            opt.zero_grad()
            value = objective()
            value.backward()
            return value

        with torch.no_grad():
            record(0, float(objective()))
        for i in range(1, iterations + 1):
            if result.history[-1].loss <= stop_loss:
                break
            opt.step(closure)
            with torch.no_grad():
                record(i, float(objective()))
    elif method == "adam":
        opt = torch.optim.Adam(list(z.values()), lr=0.05 if lr is None else lr)
        for i in range(iterations + 1):
            opt.zero_grad()
            value = objective()
            record(i, value.item())
            if i == iterations or value.item() <= stop_loss:
                break
            value.backward()
            opt.step()
    else:
        raise ValueError(f"unknown method {method!r}")
    result.seconds = time.perf_counter() - t0
    result.params = {n: v.detach() for n, v in params().items()}
    return result


def standard_model(base: SimulationConfig, misset0: tuple[float, float, float] = (0.0, 0.0, 0.0)
                   ) -> tuple[Builder, dict[str, Tensor], dict[str, float]]:
    """The usual refinement model over `base` (which must give a cell; its misset is ignored):

      cell      (6,) a, b, c (Angstrom), alpha, beta, gamma (degrees)
      rotation  (3,) rotation vector (degrees) applied after the misset `misset0` (radians):
                orientation = exp([rotation]) @ misset_rotation(misset0), no gimbal lock
      distance  ()   mm
      beam      (2,) Xbeam, Ybeam in pixels (the C's -Xbeam/-Ybeam divided by the pixel size); needs a
                convention whose beam centre places the detector (BEAM pivot: MOSFLM, DENZO, ADXV, CUSTOM
                with pivot BEAM), else ValueError (XDS/DIALS place it by ORGX/ORGY: write a build for those)

    Returns (build, start values read from `base`, default scales). Refine a subset by leaving names out of
    the start dict passed to `refine` (missing names keep their start value)."""
    c, d = base.crystal, base.detector
    if c.cell is None:
        raise ValueError("standard_model needs a cell in the base configuration")
    pixel = float(d.pixel_size)
    start = {
        "cell": torch.tensor([float(c.cell[i]) * 1e10 for i in range(3)]
                             + [float(c.cell[i]) * RTD for i in range(3, 6)], dtype=torch.float64),
        "rotation": torch.zeros(3, dtype=torch.float64),
        "distance": torch.tensor(float(d.distance) * 1e3, dtype=torch.float64),
        "beam": torch.tensor(_beam_pixels(base), dtype=torch.float64),
    }
    scales = {"cell": 0.1, "rotation": 0.1, "distance": 0.1, "beam": 0.1}
    fixed = dict(start)

    def build(p: Mapping[str, Tensor]) -> SimulationConfig:
        q = {**fixed, **p}
        cell_p = q["cell"]
        cell = tuple(cell_p[i] * 1e-10 for i in range(3)) + tuple(cell_p[i] / RTD for i in range(3, 6))
        R0 = misset_rotation(torch.as_tensor(misset0, dtype=cell_p.dtype))
        R = rotation_from_rotvec(q["rotation"] / RTD) @ R0
        A = oriented_reciprocal_matrix(cell, R, base.beam.wavelength)
        crystal = replace(c, cell=cell, reciprocal_matrix=A, misset=None, misset_random=False)
        detector = replace(d, distance=q["distance"] * 1e-3, Xbeam=q["beam"][0] * pixel,
                           Ybeam=q["beam"][1] * pixel)
        return replace(base, crystal=crystal, detector=detector)

    return build, start, scales


def orientation_of(params: Mapping[str, Tensor], misset0: tuple[float, float, float]) -> Tensor:
    """The orientation matrix a `standard_model` parameter set stands for."""
    rot = torch.as_tensor(params["rotation"], dtype=torch.float64)
    return rotation_from_rotvec(rot / RTD) @ misset_rotation(torch.as_tensor(misset0, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------
# recovery experiments (tests, tools/refine_example.py)

# start offsets: cell lengths (relative), cell angles (deg), misset (deg), distance (relative), beam (pixels)
DEFAULT_OFFSETS = {"lengths": (0.004, -0.003, 0.005), "angles": (0.3, -0.2, 0.25),
                   "misset": (0.3, -0.25, 0.2), "distance": 0.01, "beam": (0.6, -0.4)}
# recovery tolerances: beam centre (pixels), distance and lengths (relative), angles and orientation (deg)
TOLERANCES = {"beam_px": 0.05, "distance_rel": 1e-3, "length_rel": 1e-3, "angle_deg": 0.05,
              "orientation_deg": 0.05}


def _beam_pixels(cfg: SimulationConfig) -> tuple[float, float]:
    """Xbeam, Ybeam in pixels as the engine resolves them (the convention's defaults when not given)."""
    g = resolve_geometry(cfg, torch.float64, torch.device("cpu"))
    if g.pivot != "BEAM":
        raise ValueError(f"the {g.convention} convention places the detector by Xclose/ORGX (SAMPLE pivot): "
                         "Xbeam/Ybeam do not move it")
    pixel = float(g.pixel_size)
    return float(g.Xbeam) / pixel, float(g.Ybeam) / pixel


def perturb(truth: SimulationConfig, offsets: Mapping[str, object] | None = None
            ) -> tuple[SimulationConfig, tuple[float, float, float]]:
    """A start configuration: `truth` with cell, distance and beam centre offset, and the start misset
    (radians) for standard_model (the truth's misset plus the misset offsets). MOSFLM-style default beam
    centres (Xbeam/Ybeam None) are made explicit."""
    o = {**DEFAULT_OFFSETS, **(offsets or {})}
    c, d = truth.crystal, truth.detector
    pixel = float(d.pixel_size)
    cell = tuple(float(c.cell[i]) * (1 + o["lengths"][i]) for i in range(3)) + tuple(
        float(c.cell[3 + i]) + o["angles"][i] / RTD for i in range(3))
    xb, yb = _beam_pixels(truth)
    start = replace(truth, crystal=replace(c, cell=cell),
                    detector=replace(d, distance=float(d.distance) * (1 + o["distance"]),
                                     Xbeam=(xb + o["beam"][0]) * pixel, Ybeam=(yb + o["beam"][1]) * pixel))
    misset = c.misset if c.misset is not None else (0.0, 0.0, 0.0)
    misset0 = tuple(float(m) + off / RTD for m, off in zip(misset, o["misset"], strict=True))
    return start, misset0


def recovery_errors(params: Mapping[str, Tensor], truth: SimulationConfig,
                    misset0: tuple[float, float, float]) -> dict[str, float]:
    """Largest errors of standard_model parameters against `truth`, in the units of TOLERANCES."""
    c, d = truth.crystal, truth.detector
    cell = params["cell"].detach().double()
    true_len = torch.tensor([float(c.cell[i]) * 1e10 for i in range(3)], dtype=torch.float64)
    true_ang = torch.tensor([float(c.cell[i]) * RTD for i in range(3, 6)], dtype=torch.float64)
    beam = torch.tensor(_beam_pixels(truth), dtype=torch.float64)
    misset = c.misset if c.misset is not None else (0.0, 0.0, 0.0)
    R_true = misset_rotation(torch.tensor([float(m) for m in misset], dtype=torch.float64))
    return {
        "beam_px": float((params["beam"].detach().double() - beam).abs().max()),
        "distance_rel": abs(float(params["distance"]) / (float(d.distance) * 1e3) - 1.0),
        "length_rel": float((cell[:3] / true_len - 1.0).abs().max()),
        "angle_deg": float((cell[3:] - true_ang).abs().max()),
        "orientation_deg": float(rotation_angle_between(orientation_of(params, misset0), R_true)) * RTD,
    }
