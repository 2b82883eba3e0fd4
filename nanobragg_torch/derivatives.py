"""Derivative images: d(image)/d(parameter) of every pixel, for a handful of named config parameters at once.

`derivative_images(config, ["detector.distance", "crystal.cell.0", ...])` renders the image and, in the same
chunked sweep, its derivatives (diffBragg's per-parameter derivative images): a mapping path -> tensor of the
image's shape, in SI units (per metre, per radian). `order=2` adds the diagonal second derivatives
(curvatures).

How (chunk by chunk, so memory is bounded like the render's):

* The set-up (float64, `plan.build_plan`) is a small graph from the K parameters to the kernel's input
  tensors (`kernel.KernelInputs`); their tangents dx/dp_k (and d2x/dp_k^2) come from it by the double-vjp
  identity (forward-mode derivatives through reverse-mode autograd), so every set-up resolver is reused as it
  is.
* First derivatives of geometry, wavelength, cell and orientation parameters (the *fast* path): every pixel
  is a function value(h, f) of its samples' Miller indices h (orientation R x layer T x sub-pixel O2 x source
  S) and its per-pixel factors f (solid angle, polarization, capture fraction); pixels are independent, so
  one reverse pass through value(h, f) gives every sample's d value/dh. The parameters enter h = a_R . q
  (a_R the rotated cell rows, q = (diffracted - incident)/lambda) through the per-R cells and the per-pixel
  q, so d value/dp_k = [sum_{T,O2,S} dv/dh q] . da_R/dp_k + [sum_R dv/dh a_R] . dq/dp_k: two contractions
  formed once per chunk; per sample the cost does not grow with K. The per-pixel factors' tangents
  come from forward mode (`torch.func.jvp` under `vmap` over the K tangents) of `kernel.pixel_factors`, which
  has no orientation axis.
* Parameters that also reach the kernel's global inputs (N, fluence, structure factors, ...) and every second
  derivative (the *general* path): `torch.func.jvp` of the fused `kernel.pixel_kernel` under `vmap` over the
  K tangents, nested jvp (forward over forward) for order 2.

The fused forward's AOTInductor packages have no autograd: both paths run the kernel's stages eager, or,
with `compile=True` (large renders by default), the fast path's whole chunk through torch.compile (the
forward-mode, vmap and reverse passes fused, with the compiled render's polynomial lattice sines). Renders
that need the engine's per-image state (tricubic F interpolation's one-way switch, the pinned C's
first-evaluation and running-product quirks in --c-compat) are refused with a one-line error: their
derivative is that of a discrete state machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.func import jvp, vjp, vmap

from . import kernel as K
from .config import SimulationConfig
from .engine import ChunkState, chunk_pixels, needs_state
from .kernel import KernelInputs, KernelSpec, PixelFactors
from .plan import COMPILE_THRESHOLD, Plan, build_plan

Tensor = torch.Tensor

# special parameters that are not config fields: a rotation vector (radians, lab axes) applied to the crystal
# orientation before the phi rotation (refine.standard_model's `rotation`, at zero), and an image scale factor
ROTATION = "rotation"
SCALE = "scale"
# kernel inputs that only the per-sample lattice/structure-factor stages and the photon count read (not
# pixel_factors or sample_indices): a parameter whose tangent reaches one of them takes the general path
_GLOBAL_INPUTS = ("N", "fudge", "F_table", "grid_shape", "grid_lo", "grid_hi", "default_F", "I_bg", "fluence",
                  "steps", "dmin")
_WORK = 4  # samples held per chunk sample by the derivative sweep (intermediates, reverse pass): chunk / _WORK


class DerivativeImages(dict):
    """path -> d image / d param (order 1) or (first, second) (order 2), each the image's shape; `.image` is
    the render itself (the same values as `simulate`, eager)."""

    image: Tensor


@dataclass(frozen=True)
class Param:
    """A resolved parameter path: its value (SI float) and where it sits in the config."""

    path: str
    keys: tuple[str | int, ...]  # attribute names and tuple/vector indices from the SimulationConfig down
    value: float


def derivative_images(
    config: SimulationConfig,
    params: Sequence[str],
    *,
    order: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    samples_per_chunk: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    compile: bool | None = None,
) -> DerivativeImages:
    """d(image)/d(param) for every dotted path in `params` (see `resolve_param`): a DerivativeImages mapping
    path -> tensor of the image's shape (per SI unit of the parameter: per metre, per radian, ...); with
    `order=2` each value is (first, second) derivative. `device`: where the render runs (default: the CPU,
    or the device of a tensor in the config). `progress(done, total)` is called after every chunk.
    `compile`: run the fast path's per-sample reverse pass through torch.compile (a one-off compile of
    ~15 s per process and kernel variant, then several times faster); None: for renders above the engine's
    COMPILE_THRESHOLD samples, or as env NB_COMPILE=0/1 says."""
    if order not in (1, 2):
        raise ValueError(f"derivative_images: order must be 1 or 2, not {order!r}")
    if isinstance(params, str):
        params = [params]
    resolved = [resolve_param(config, p) for p in params]
    if len({p.path for p in resolved}) != len(resolved):
        raise ValueError(f"derivative_images: a parameter is named twice in {list(params)}")
    device = torch.device(device) if device is not None else _config_device(config)
    field_params = [p for p in resolved if p.path != SCALE]
    with torch.enable_grad():
        p = torch.tensor([q.value for q in field_params], dtype=torch.float64, device=device, requires_grad=True)
        cfg = with_params(config, field_params, p)
        plan = build_plan(cfg, dtype, device, compile=False)
        if needs_state(plan, ChunkState(plan.interpolate, True)):
            raise ValueError("derivative_images: this render needs the engine's per-image state (tricubic F "
                             "interpolation or --c-compat's first-evaluation/oversample-toggle quirks); use "
                             "nearest-neighbour F (interpolate=False) and c_compat=False")
        tangents = _input_tangents(plan.kernel.inputs, p, order)
    x = KernelInputs(*(t.detach() for t in plan.kernel.inputs))
    if compile is None:
        env = os.environ.get("NB_COMPILE")
        samples = plan.samples_per_pixel * plan.pixel_order.numel()
        compile = env == "1" if env in ("0", "1") else samples > COMPILE_THRESHOLD
    image, derivs = _sweep(plan, x, tangents, order, samples_per_chunk, progress, compile, len(field_params))
    out = DerivativeImages()
    k = 0
    for q in resolved:
        if q.path == SCALE:  # image * scale at scale = 1
            out[q.path] = image.clone() if order == 1 else (image.clone(), torch.zeros_like(image))
            continue
        out[q.path] = derivs[0][k] if order == 1 else (derivs[0][k], derivs[1][k])
        k += 1
    out.image = image
    return out


# ---- parameter paths ----------------------------------------------------------------------------------------


def resolve_param(config: SimulationConfig, path: str) -> Param:
    """A parameter path: "group.field" or "group.field.i" (a component of a tuple or vector field; panels:
    "detector.panels.P.origin.i"), "rotation.i" (i = 0, 1, 2: the crystal rotated about lab axis i, radians,
    at zero) or "scale" (the image times a factor, at 1). Raises ValueError naming the path for anything else:
    a field that does not exist, is not numeric, is not given (None), or is a vector without an index."""
    if not isinstance(path, str):
        raise ValueError(f"parameter {path!r}: not a dotted path string")
    if path == SCALE:
        return Param(path, (), 1.0)
    m = re.fullmatch(r"rotation\.([012])", path)
    if m:
        _orientation_source(config, path)
        return Param(path, (ROTATION, int(m.group(1))), 0.0)
    parts = path.split(".")
    obj: object = config
    keys: list[str | int] = []
    annotation = ""
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            names = {f.name: f for f in dataclasses.fields(obj)}
            if part not in names:
                raise ValueError(f"parameter {path}: {type(obj).__name__} has no field {part!r}")
            annotation = str(names[part].type)
            obj = getattr(obj, part)
            keys.append(part)
        elif isinstance(obj, tuple | list) or (isinstance(obj, torch.Tensor) and obj.dim() > 0):
            if not part.isdigit() or int(part) >= len(obj):
                raise ValueError(f"parameter {path}: {'.'.join(parts[:i])} has {len(obj)} components; "
                                 f"{part!r} is not one of 0..{len(obj) - 1}")
            obj = obj[int(part)]
            keys.append(int(part))
        else:
            raise ValueError(f"parameter {path}: {'.'.join(parts[:i])} is a number; nothing below it")
        if obj is None:
            raise ValueError(f"parameter {path}: {where} is not given (None); set a value to differentiate it")
    if isinstance(obj, tuple | list) or (isinstance(obj, torch.Tensor) and obj.dim() > 0):
        raise ValueError(f"parameter {path}: a vector of {len(obj)}; name one component ({path}.0)")
    numeric = "Scalar" in annotation or "Vec3" in annotation or "Tensor" in annotation
    if isinstance(obj, bool) or not numeric or not isinstance(obj, int | float | torch.Tensor):
        raise ValueError(f"parameter {path}: not a continuous numeric field ({annotation or type(obj).__name__})")
    if isinstance(obj, torch.Tensor) and not obj.is_floating_point():
        raise ValueError(f"parameter {path}: an integer tensor, not a continuous parameter")
    return Param(path, tuple(keys), float(obj))


def with_params(config: SimulationConfig, params: Sequence[Param], p: Tensor) -> SimulationConfig:
    """`config` with each parameter's field replaced by the tensor p[k] (rotation parameters become the
    crystal's reciprocal matrix, rotated by the rotation vector)."""
    rot = [None, None, None]
    for k, q in enumerate(params):
        if q.keys and q.keys[0] == ROTATION:
            rot[q.keys[1]] = p[k]
        else:
            config = _replace_at(config, q.keys, p[k])
    if any(r is not None for r in rot):
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        config = rotated(config, torch.stack([zero if r is None else r for r in rot]))
    return config


def _replace_at(obj, keys: tuple, value: Tensor):
    if not keys:
        return value
    head, rest = keys[0], keys[1:]
    if isinstance(head, str):
        return dataclasses.replace(obj, **{head: _replace_at(getattr(obj, head), rest, value)})
    if isinstance(obj, torch.Tensor):
        items = [obj[i].to(value.dtype) for i in range(len(obj))]
        items[head] = _replace_at(items[head], rest, value)
        return torch.stack(items)
    items = list(obj)
    items[head] = _replace_at(items[head], rest, value)
    return tuple(items) if isinstance(obj, tuple) else items


def _orientation_source(config: SimulationConfig, path: str) -> str:
    c = config.crystal
    if c.misset_random:
        raise ValueError(f"parameter {path}: the crystal has a random misset; give its misset angles")
    if c.reciprocal_matrix is not None:
        return "matrix"
    if c.cell is None:
        raise ValueError(f"parameter {path}: the crystal has neither a cell nor a reciprocal matrix")
    return "cell"


def rotated(config: SimulationConfig, rotvec: Tensor) -> SimulationConfig:
    """The config with its crystal turned by exp([rotvec]) (lab frame, radians) before the phi rotation: a
    cell + misset becomes refine.oriented_reciprocal_matrix(cell, R misset_rotation(misset)); a given
    reciprocal matrix A (rows a*, b*, c*) becomes A R^T."""
    from .refine import misset_rotation, oriented_reciprocal_matrix, rotation_from_rotvec

    c = config.crystal
    R = rotation_from_rotvec(rotvec)
    if _orientation_source(config, ROTATION) == "matrix":
        A = torch.as_tensor(c.reciprocal_matrix, dtype=R.dtype, device=R.device)
        crystal = dataclasses.replace(c, reciprocal_matrix=A @ R.T)
    else:
        misset = c.misset if c.misset is not None else (0.0, 0.0, 0.0)
        R0 = misset_rotation(torch.stack([torch.as_tensor(m, dtype=R.dtype, device=R.device) for m in misset]))
        A = oriented_reciprocal_matrix(c.cell, R @ R0, config.beam.wavelength)
        crystal = dataclasses.replace(c, reciprocal_matrix=A, misset=None)
    return dataclasses.replace(config, crystal=crystal)


def _config_device(config) -> torch.device:
    """The device of the first tensor found in the config (CPU when it holds none)."""
    stack = [config]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            return obj.device
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
        elif isinstance(obj, tuple | list):
            stack.extend(obj)
    return torch.device("cpu")


# ---- set-up tangents ------------------------------------------------------------------------------------------


def _jvp_rows(ys: list[Tensor], p: Tensor, create_graph: bool) -> list[list[Tensor]]:
    """dy/dp_k of every y for every k, by the double-vjp identity: g(u) = u . dy/dp is linear in u, and its
    gradient with respect to u is dy/dp_k. [k][i]: the tangent of ys[i] along p_k (zeros where y does not
    depend on p_k)."""
    live = [i for i, y in enumerate(ys) if y.requires_grad]
    us = [torch.zeros_like(ys[i], requires_grad=True) for i in live]
    rows = [[torch.zeros_like(y) for y in ys] for _ in range(p.numel())]
    if not live:
        return rows
    (g,) = torch.autograd.grad([ys[i] for i in live], p, us, create_graph=True, allow_unused=True,
                               materialize_grads=True)
    for k in range(p.numel()):
        if not g[k].requires_grad:
            continue
        grads = torch.autograd.grad(g[k], us, retain_graph=True, create_graph=create_graph, allow_unused=True)
        for i, gi in zip(live, grads, strict=True):
            if gi is not None:
                rows[k][i] = gi
    return rows


@dataclass
class Tangents:
    """The kernel inputs' derivatives along each parameter: names of the inputs that depend on a parameter,
    first[name] (K, *shape), and second[name] (K, *shape) for order 2 (d2x/dp_k^2)."""

    names: tuple[str, ...]
    first: dict[str, Tensor]
    second: dict[str, Tensor] | None


def _input_tangents(x: KernelInputs, p: Tensor, order: int) -> Tangents:
    names = tuple(n for n, t in zip(x._fields, x, strict=True) if t.is_floating_point() and t.requires_grad)
    ys = [getattr(x, n) for n in names]
    rows = _jvp_rows(ys, p, create_graph=order == 2)
    first = {n: torch.stack([rows[k][i].detach() for k in range(p.numel())]) for i, n in enumerate(names)}
    second = None
    if order == 2:
        second = {n: torch.zeros_like(first[n]) for n in names}
        for k in range(p.numel()):
            rows2 = _jvp_rows(rows[k], p, create_graph=False)[k]
            for i, n in enumerate(names):
                second[n][k] = rows2[i].detach()
    # drop inputs whose tangent is zero along every parameter (their jvp would be wasted work)
    keep = tuple(n for n in names if bool(first[n].ne(0).any()) or (second is not None and bool(second[n].ne(0).any())))
    first = {n: first[n] for n in keep}
    if second is not None:
        second = {n: second[n] for n in keep}
    return Tangents(keep, first, second)


# ---- the sweep --------------------------------------------------------------------------------------------------


def _sweep(plan: Plan, x: KernelInputs, tan: Tangents, order: int, samples_per_chunk: int | None,
           progress, compiled: bool, Kn: int) -> tuple[Tensor, list[Tensor]]:
    """The image and its derivative images (order 1: [first (K, *shape)]; order 2: [first, second]); a
    parameter that no kernel input depends on has a zero image."""
    spec = plan.kernel.spec
    n_img = math.prod(plan.image_shape)
    image = torch.zeros(n_img, dtype=plan.dtype, device=plan.device)
    outs = [torch.zeros(Kn, n_img, dtype=plan.dtype, device=plan.device) for _ in range(order)]
    fast, general = _split_params(spec, tan, order, Kn)
    work = _WORK + (len(general) * order if general else 0)
    per_chunk = max(1, chunk_pixels(plan, samples_per_chunk or plan.samples_per_chunk) // work)
    order_idx = plan.pixel_order
    n = order_idx.numel()
    for start in range(0, n, per_chunk):
        idx = order_idx[start : start + per_chunk]
        pos = idx.long()
        with torch.no_grad():
            value, d_fast = _chunk_fast(spec, x, idx, tan, fast, compiled)
        image.index_copy_(0, pos, value.detach())
        for j, k in enumerate(fast):
            outs[0][k].index_copy_(0, pos, d_fast[j].to(plan.dtype))
        if general:
            with torch.no_grad():
                d_gen = _chunk_general(spec, x, idx, tan, general, order)
            for o in range(order):
                for j, k in enumerate(general):
                    outs[o][k].index_copy_(0, pos, d_gen[o][j].to(plan.dtype))
        if progress is not None:
            progress(min(start + per_chunk, n), n)
    shape = plan.image_shape
    return image.reshape(shape), [o.reshape(Kn, *shape) for o in outs]


def _split_params(spec: KernelSpec, tan: Tangents, order: int, Kn: int) -> tuple[list[int], list[int]]:
    """(fast, general) parameter indices: the fast path takes first derivatives whose tangents stay out of
    the kernel's global inputs (`_GLOBAL_INPUTS`, and the reciprocal cell for the non-SQUARE shapes)."""
    def moves(k: int, names) -> bool:
        return any(bool(tan.first[n][k].ne(0).any()) or (tan.second is not None and bool(tan.second[n][k].ne(0).any()))
                   for n in names)

    live = [k for k in range(Kn) if moves(k, tan.names)]  # the others: zero images
    if order == 2:
        return [], live
    globals_ = [n for n in tan.names if n in _GLOBAL_INPUTS or (n == "a_star" and spec.shape != "SQUARE")]
    general = [k for k in live if moves(k, globals_)]
    return [k for k in live if k not in general], general


def _floats(f: PixelFactors) -> dict[str, Tensor]:
    """The floating tensor fields of the pixel factors (what carries a tangent)."""
    out = {}
    for field in dataclasses.fields(f):
        v = getattr(f, field.name)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            out[field.name] = v
    return out


def _scattering(f: PixelFactors, x: KernelInputs) -> tuple[Tensor, Tensor, Tensor]:
    """q = (diffracted - incident)/lambda of every (T, O2, S, C): h = a . q (kernel.sample_indices)."""
    return tuple((f.dif_hi[i][:, :, None, :] - f.inc_hi[i]) / x.wavelength[:, None] for i in range(3))


def pixel_values(spec: KernelSpec, x: KernelInputs, hkl, f: PixelFactors) -> Tensor:
    """The pixel values from the samples' Miller indices and the pixel factors: the stages of
    kernel.pixel_kernel after sample_indices."""
    dhkl, hkl0 = K.reduced(x, hkl, K.rounded(hkl))
    F_latt = K.lattice_factor(spec, x, dhkl, hkl0)
    F_cell = K.structure_factor(spec, x, hkl0)
    I = K.sample_sum(x, K.sample_terms(F_cell * F_cell * F_latt * F_latt, f))
    return K.photons(spec, x, I, f)


def fast_derivatives(spec: KernelSpec, x: KernelInputs, idx: Tensor, tangents: dict[str, Tensor]
                     ) -> tuple[Tensor, Tensor]:
    """The chunk's values (C,) and their first derivatives (K, C) along the parameters whose input tangents
    are `tangents` (name -> (K, *shape)): one reverse pass through value(h, f) (pixels are independent, so
    the gradient of the chunk's sum is every pixel's own), contracted over the sample axes
    (M = sum_X dvalue/dh_v q_i per R, Nq = sum_R,v dvalue/dh_v a_R,v,i per X), and forward tangents of the
    pixel factors and q (no orientation axis) for the K parameters."""
    names = tuple(tangents)

    def per_pixel(*vals):
        xx = x._replace(**dict(zip(names, vals, strict=True)))
        f = K.pixel_factors(spec, xx, idx)
        return _floats(f), _scattering(f, xx)

    f = K.pixel_factors(spec, x, idx)
    hkl = K.sample_indices(x.cells, f, x)

    def values(hkl, leaves):
        return pixel_values(spec, x, hkl, dataclasses.replace(f, **leaves))

    value, pullback = vjp(values, hkl, _floats(f))
    g_h, g_f = pullback(torch.ones_like(value))
    C = value.shape[-1]
    gh = torch.stack(torch.broadcast_tensors(*g_h))  # (v, R, T, O2, S, C)
    R_n = gh.shape[1]
    gh = gh.reshape(3, R_n, -1, C)  # (v, R, X = T*O2*S, C)
    primals = tuple(getattr(x, n) for n in names)
    f_dot, q_dot = vmap(lambda *t: jvp(per_pixel, primals, t)[1])(*(tangents[n] for n in names))
    Kn = q_dot[0].shape[0]
    d = torch.zeros(Kn, C, dtype=value.dtype, device=value.device)
    for k, g in g_f.items():  # through the pixel factors (solid angle, polarization, ...); omega_sum has no
        if k in f_dot and g.dim() and g.shape[-1] == C:  # pixel axis and no part in the values
            d = d + (g * f_dot[k]).reshape(Kn, -1, C).sum(1).to(d.dtype)
    if "cells" in tangents:  # sum_R,v,i da_k[R, v, i] M[v, R, C, i]
        q = torch.stack(torch.broadcast_tensors(*_scattering(f, x))).reshape(3, -1, C).to(gh.dtype)  # (i, X, C)
        M = torch.stack([(gh * q[i]).sum(2) for i in range(3)], -1)  # (v, R, C, i)
        a_dot = tangents["cells"].reshape(Kn, -1, 3, 3).to(M.dtype)  # (k, R, v, i)
        d = d + (a_dot.permute(0, 2, 1, 3).reshape(Kn, -1) @ M.permute(0, 1, 3, 2).reshape(-1, C)).to(d.dtype)
    # sum_X,i dq_k[i, X, C] Nq[i, X, C]
    cells = x.cells.reshape(-1, 3, 3).to(gh.dtype)  # (R, v, i)
    Nq = (cells.permute(1, 0, 2).reshape(-1, 3).T @ gh.reshape(3 * R_n, -1)).reshape(1, 3, -1, C)
    q_dot = torch.stack(q_dot, 1).reshape(Kn, 3, -1, C).to(Nq.dtype)  # (k, i, X, C)
    d = d + (q_dot * Nq).sum((1, 2)).to(d.dtype)
    return value, d


@functools.cache
def _compiled_fast():
    return torch.compile(fast_derivatives, dynamic=True)


def _chunk_fast(spec: KernelSpec, x: KernelInputs, idx: Tensor, tan: Tangents, fast: list[int],
                compiled: bool) -> tuple[Tensor, Tensor | None]:
    """The chunk's values (C,) and their first derivatives along the `fast` parameters (K_fast, C)."""
    if not fast:
        return K.pixel_kernel(spec, x, idx)[0], None
    tangents = {n: tan.first[n][fast].to(getattr(x, n).dtype) for n in tan.names}
    if compiled:  # the lattice sines as polynomials, as the compiled render has them (compiled.py)
        value, d = _compiled_fast()(dataclasses.replace(spec, poly_sin=True), x, idx, tangents)
    else:
        value, d = fast_derivatives(spec, x, idx, tangents)
    return value.detach(), d


def _chunk_general(spec: KernelSpec, x: KernelInputs, idx: Tensor, tan: Tangents, general: list[int],
                   order: int) -> list[Tensor]:
    """Derivatives along the `general` parameters by forward mode through the fused kernel: [first] or
    [first, second] (K_general, C) each."""
    names = tan.names
    primals = tuple(getattr(x, n) for n in names)

    def kernel(*vals):
        return K.pixel_kernel(spec, x._replace(**dict(zip(names, vals, strict=True))), idx)[0]

    t1 = tuple(tan.first[n][general].to(getattr(x, n).dtype) for n in names)
    if order == 1:
        return [vmap(lambda *t: jvp(kernel, primals, t)[1])(*t1)]
    t2 = tuple(tan.second[n][general].to(getattr(x, n).dtype) for n in names)
    m = len(names)

    def first(*xt):  # (inputs, their tangents) -> the first derivative: linear in the tangents
        return jvp(kernel, xt[:m], xt[m:])[1]

    def both(*t):  # d/dp of first(x(p), x'(p)) = H[x', x'] + J x''
        return jvp(first, primals + t[:m], t[:m] + t[m:])

    d1, d2 = vmap(both)(*(t1 + t2))
    return [d1, d2]
