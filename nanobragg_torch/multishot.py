"""Refinement over many stills at once: shared parameters (cell, detector distance and beam centre, panel
offsets: any config paths) and per-shot ones (crystal orientation, image scale), by Levenberg-Marquardt on
the derivative images (`derivatives.derivative_images`) or by L-BFGS through the render's gradients.

The model of shot s is scale_s * render(config_s), config_s being the shot's configuration with the shared
parameters set and its crystal turned by its orientation; the cost is the sum over shots and pixels of the
squared Anscombe residuals r = 2 (sqrt(model + 3/8) - sqrt(observed + 3/8)), which have unit variance for
Poisson counts whatever their level (a weight 1/observed would bias the model low where counts are few).
Parameters are in SI units (metres, radians); per-shot orientations are kept as x-y-z misset angles
rebuilt after each step from the rotation matrix exp([delta]) U (the update itself is a rotation vector at
zero, so no gimbal lock in the step); scales are refined as log(scale) (they stay positive).

Levenberg-Marquardt: J_s = d r_s / d (shared, rotation_s, log scale_s) = d model_s / d(...) / sqrt(model_s +
3/8) from one derivative render per shot (K shared + 3 columns; the log-scale column is the model itself),
the normal matrix H = sum_s J_s^T J_s (shared block dense, per-shot blocks on the diagonal; tiny: K + 4 x
shots), Jacobi-scaled (SI units span 20 orders of magnitude), Marquardt's damping lambda diag(H), a step
accepted when the cost falls (lambda / 10), else lambda x 10.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .config import SimulationConfig
from .derivatives import derivative_images, resolve_param, with_params
from .refine import misset_from_rotation, misset_rotation, rotation_from_rotvec
from .simulate import simulate

Tensor = torch.Tensor
ROTATION_PATHS = ("rotation.0", "rotation.1", "rotation.2")


@dataclass
class Shots:
    """The state of a many-shot model: the shared parameters' values and every shot's misset (radians) and
    scale, over `configs` (each shot's configuration; the shared paths' values in it are replaced)."""

    configs: list[SimulationConfig]
    shared_paths: tuple[str, ...]
    shared: Tensor  # (K,) float64, SI
    missets: Tensor  # (N, 3) float64, radians
    scales: Tensor  # (N,) float64

    @classmethod
    def start(cls, configs: Sequence[SimulationConfig], shared_paths: Sequence[str],
              scales: Sequence[float] | None = None) -> Shots:
        """The start state read from the configs (the shared values from the first; each shot's misset)."""
        configs = list(configs)
        values = [resolve_param(configs[0], p).value for p in shared_paths]
        missets = []
        for i, c in enumerate(configs):
            m = c.crystal.misset
            if m is None or c.crystal.misset_random or c.crystal.reciprocal_matrix is not None:
                raise ValueError(f"shot {i}: give the crystal's orientation as misset angles (crystal.misset)")
            missets.append([float(v) for v in m])
        n = len(configs)
        return cls(configs, tuple(shared_paths), torch.tensor(values, dtype=torch.float64),
                   torch.tensor(missets, dtype=torch.float64),
                   torch.tensor(list(scales) if scales is not None else [1.0] * n, dtype=torch.float64))

    def config(self, s: int, shared: Tensor | None = None) -> SimulationConfig:
        """Shot s's configuration at the current (or the given) shared values."""
        c = self.configs[s]
        crystal = dataclasses.replace(c.crystal, misset=tuple(float(v) for v in self.missets[s]))
        c = dataclasses.replace(c, crystal=crystal)
        params = [resolve_param(c, p) for p in self.shared_paths]
        return with_params(c, params, self.shared if shared is None else shared)

    def rotated(self, s: int, rotvec: Tensor) -> Tensor:
        """Shot s's misset after turning its crystal by the rotation vector (radians, lab frame)."""
        U = rotation_from_rotvec(rotvec) @ misset_rotation(self.missets[s])
        return misset_from_rotation(U)

    def copy(self) -> Shots:
        return dataclasses.replace(self, shared=self.shared.clone(), missets=self.missets.clone(),
                                   scales=self.scales.clone())


@dataclass
class Iteration:
    iteration: int
    cost: float
    damping: float  # Levenberg-Marquardt lambda (nan for L-BFGS)
    step: float  # largest |change| of a shared parameter relative to its value (0 when rejected)
    accepted: bool
    seconds: float
    shared: list[float] = field(default_factory=list)


@dataclass
class MultiShotResult:
    shots: Shots
    history: list[Iteration]
    seconds: float

    def table(self, names: Sequence[str] | None = None, factors: Sequence[float] | None = None) -> str:
        """The per-iteration table (markdown); `names` head the shared columns (default: their paths), whose
        values are multiplied by `factors` (e.g. 1e10 for Angstrom; default 1: SI)."""
        names = list(names or self.shots.shared_paths)
        factors = list(factors or [1.0] * len(names))
        head = "| iter | cost | lambda | accepted | max rel step | " + " | ".join(names) + " | s |"
        rule = "|" + "---|" * (6 + len(names))
        rows = [head, rule]
        for it in self.history:
            lam = "-" if math.isnan(it.damping) else f"{it.damping:.1e}"
            vals = " | ".join(f"{v * f:.6g}" for v, f in zip(it.shared, factors, strict=True))
            rows.append(f"| {it.iteration} | {it.cost:.6g} | {lam} | {'yes' if it.accepted else 'no'} | "
                        f"{it.step:.2e} | {vals} | {it.seconds:.1f} |")
        return "\n".join(rows)


ANSCOMBE = 0.375


def residuals(model: Tensor, observed: Tensor) -> Tensor:
    """Anscombe residuals: unit variance for Poisson counts."""
    return 2.0 * (torch.sqrt(model.clamp(min=0.0) + ANSCOMBE) - torch.sqrt(observed + ANSCOMBE))


def cost_of(shots: Shots, observed: Sequence[Tensor], dtype: torch.dtype, device) -> float:
    total = 0.0
    with torch.no_grad():
        for s, obs in enumerate(observed):
            model = shots.scales[s] * simulate(shots.config(s), dtype, device).double()
            total += float((residuals(model, obs) ** 2).sum())
    return total


def refine_shots(
    shots: Shots,
    observed: Sequence[Tensor],
    *,
    method: str = "lm",
    iterations: int = 20,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    damping: float = 1e-3,
    tolerance: float = 1e-9,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> MultiShotResult:
    """Fit the shots' shared and per-shot parameters to the observed images ((S, F) tensors, photons).

    `method`: "lm" (Levenberg-Marquardt on derivative images) or "lbfgs" (torch L-BFGS through the render's
    gradients, strong-Wolfe line search). Stops after `iterations` or when the relative cost decrease of an
    accepted step is below `tolerance`. `progress`: a tqdm bar on stderr (None: on a terminal); `log`: called
    with each line of the per-iteration table."""
    observed = [torch.as_tensor(o, dtype=torch.float64, device=device) for o in observed]
    if len(observed) != len(shots.configs):
        raise ValueError(f"refine_shots: {len(observed)} images for {len(shots.configs)} shots")
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=iterations, desc=f"refine {len(observed)} shots ({method})", unit="it", file=sys.stderr,
               disable=not show)
    t0 = time.perf_counter()
    history: list[Iteration] = []

    def record(it: Iteration) -> None:
        history.append(it)
        bar.update(1)
        bar.set_postfix_str(f"cost {it.cost:.4g}", refresh=False)
        if log is not None:
            if len(history) == 1:
                log(f"{'iter':>4s} {'cost':>14s} {'lambda':>9s} {'ok':>3s} {'rel step':>9s}  shared")
            lam = "-" if math.isnan(it.damping) else f"{it.damping:.1e}"
            log(f"{it.iteration:4d} {it.cost:14.6g} {lam:>9s} {'y' if it.accepted else 'n':>3s} {it.step:9.2e}  "
                + " ".join(f"{v:.6g}" for v in it.shared))

    try:
        if method == "lm":
            shots = _levenberg_marquardt(shots, observed, iterations, dtype, device, damping, tolerance, record, t0)
        elif method == "lbfgs":
            shots = _lbfgs(shots, observed, iterations, dtype, device, tolerance, record, t0)
        else:
            raise ValueError(f"refine_shots: unknown method {method!r} (lm, lbfgs)")
    finally:
        bar.close()
    return MultiShotResult(shots, history, time.perf_counter() - t0)


def _levenberg_marquardt(shots, observed, iterations, dtype, device, lam, tolerance, record, t0) -> Shots:
    K, N = len(shots.shared_paths), len(observed)
    P = K + 4 * N  # shared, then per shot: rotation (3), scale
    cost = cost_of(shots, observed, dtype, device)
    record(Iteration(0, cost, lam, 0.0, True, time.perf_counter() - t0, shots.shared.tolist()))
    for it in range(1, iterations + 1):
        H = torch.zeros(P, P, dtype=torch.float64)
        g = torch.zeros(P, dtype=torch.float64)
        for s, obs in enumerate(observed):
            d = derivative_images(shots.config(s), [*shots.shared_paths, *ROTATION_PATHS], dtype=dtype,
                                  device=device)
            image = d.image.double()
            model = shots.scales[s] * image
            # the scale's column is d model / d log(scale) = model: the scale stays positive
            cols = [shots.scales[s] * d[p].double() for p in (*shots.shared_paths, *ROTATION_PATHS)] + [model]
            dr = 1.0 / torch.sqrt(model.clamp(min=0.0) + ANSCOMBE)  # d r / d model
            J = torch.stack([(c * dr).reshape(-1) for c in cols]).cpu()  # (K + 4, pixels)
            r = residuals(model, obs).reshape(-1).cpu()
            idx = torch.tensor(list(range(K)) + list(range(K + 4 * s, K + 4 * s + 4)))
            H[idx[:, None], idx[None, :]] += J @ J.T
            g[idx] += J @ r
        # Jacobi scaling (SI units span 20 orders of magnitude): (S H S + lambda I) y = -S g, delta = S y
        S = 1.0 / H.diagonal().clamp(min=1e-300).sqrt()
        Hs, gs = S[:, None] * H * S[None, :], S * g
        accepted = False
        while not accepted:
            delta = S * torch.linalg.solve(Hs + lam * torch.eye(P, dtype=torch.float64), -gs)
            trial = _apply(shots, delta, K)
            new_cost = cost_of(trial, observed, dtype, device)
            step = float((delta[:K].abs() / shots.shared.abs().clamp(min=1e-30)).max()) if K else 0.0
            if new_cost < cost:
                accepted = True
                decrease = (cost - new_cost) / cost
                shots, cost, lam = trial, new_cost, max(lam / 10.0, 1e-12)
                record(Iteration(it, cost, lam, step, True, time.perf_counter() - t0, shots.shared.tolist()))
                if decrease < tolerance:
                    return shots
            else:
                lam *= 10.0
                if lam > 1e10:
                    record(Iteration(it, cost, lam, 0.0, False, time.perf_counter() - t0, shots.shared.tolist()))
                    return shots
    return shots


def _apply(shots: Shots, delta: Tensor, K: int) -> Shots:
    new = shots.copy()
    new.shared = shots.shared + delta[:K]
    for s in range(len(shots.configs)):
        block = delta[K + 4 * s : K + 4 * s + 4]
        new.missets[s] = shots.rotated(s, block[:3])
        new.scales[s] = shots.scales[s] * torch.exp(block[3])
    return new


def _lbfgs(shots, observed, iterations, dtype, device, tolerance, record, t0) -> Shots:
    """L-BFGS on (shared, rotation vectors, scales), each divided by a typical size so the line search sees
    comparable variables: |value| for the shared ones, 1e-3 rad for rotations, 1 for scales."""
    K, N = len(shots.shared_paths), len(observed)
    unit_shared = shots.shared.abs().clamp(min=1e-12)
    z_shared = torch.ones(K, dtype=torch.float64, requires_grad=True)
    z_rot = torch.zeros(N, 3, dtype=torch.float64, requires_grad=True)
    z_scale = shots.scales.clone().requires_grad_()
    base = shots.copy()
    rot_unit = 1e-3

    def objective() -> Tensor:
        total = torch.zeros((), dtype=torch.float64)
        shared = z_shared * unit_shared
        for s, obs in enumerate(observed):
            cfg = base.config(s, shared)
            m = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, misset=tuple(
                base.rotated(s, z_rot[s] * rot_unit).unbind())))
            model = z_scale[s] * simulate(m, dtype, device).double()
            total = total + (residuals(model, obs) ** 2).sum()
        return total

    opt = torch.optim.LBFGS([z_shared, z_rot, z_scale], lr=1.0, max_iter=8, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        opt.zero_grad()
        v = objective()
        v.backward()
        return v

    def state() -> Shots:
        with torch.no_grad():
            new = base.copy()
            new.shared = (z_shared * unit_shared).detach().clone()
            for s in range(N):
                new.missets[s] = base.rotated(s, z_rot[s].detach() * rot_unit)
            new.scales = z_scale.detach().clone()
        return new

    with torch.no_grad():
        cost = float(objective())
    record(Iteration(0, cost, math.nan, 0.0, True, time.perf_counter() - t0, shots.shared.tolist()))
    for it in range(1, iterations + 1):
        before = z_shared.detach().clone()
        opt.step(closure)
        with torch.no_grad():
            new_cost = float(objective())
        step = float((z_shared.detach() - before).abs().max())
        record(Iteration(it, new_cost, math.nan, step, True, time.perf_counter() - t0,
                         (z_shared.detach() * unit_shared).tolist()))
        if abs(cost - new_cost) <= tolerance * cost:
            break
        cost = new_cost
    return state()
