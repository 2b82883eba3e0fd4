"""Per-pixel trace: the engine's own intermediates for one pixel, named by the canonical trace schema.

The trace is not a second implementation: `engine.render(..., trace_pixel=...)` evaluates the traced pixel
with `evaluate_chunk(keep=True)` (kernel.py's pipeline) in the same state as the image render, and this
module only picks out the values the C would hold after the pixel's last sample (last layer, sub-pixel,
source, phi step and domain).
"""

from __future__ import annotations

import torch

from . import kernel as K
from .constants import R_E_SQR
from .engine import RenderResult, _flat_index
from .panels import panel_geometry
from .plan import Plan, rendered_pixels

TraceValue = float | tuple[float, ...]
# trace entries that are not factors of parity.schema: where in the sampling the "last" values come from
LOCATION_KEYS = ("source_index", "phi_step", "phi", "mosaic_domain", "layer", "capture_per_layer")


def _f(x: torch.Tensor) -> float:
    return float(x.detach().double().cpu())


def _v(x: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(c) for c in x.detach().double().cpu().reshape(-1))


def _last(x: torch.Tensor) -> torch.Tensor:
    """A per-sample value (R, T, O2, S, C) of a one-pixel chunk at its last sample (broadcast axes of length
    1 or missing: the fused kernel keeps default_F a scalar)."""
    return x.reshape((1,) * (5 - x.dim()) + tuple(x.shape))[-1, -1, -1, -1, 0]


def pixel_trace(result: RenderResult, pixel: tuple[int, ...] | None = None) -> dict[str, TraceValue]:
    """Factors of a traced pixel (default: render's `trace_pixel`) in pipeline order (parity.schema); a pixel of
    a multi-panel render is (panel, slow, fast) and its geometry entries are its panel's. `I_pixel_final` is the
    image's value of the pixel."""
    kept = result.trace if pixel is None else result.traces.get(tuple(pixel))
    if kept is None:
        raise ValueError(f"render() was not asked to trace pixel {pixel}")
    return _factors(result.plan, kept.inter, kept.value, kept.pixel)


def kernel_trace(plan: Plan, pixel: tuple[int, ...]) -> dict[str, TraceValue]:
    """The factors of ``pixel`` as the fused kernel computes them (`kernel.kernel_intermediates`, eager), in
    the layout of :func:`pixel_trace`; `I_pixel_final` is the kernel's own value. Compared with the general
    path's trace of the same pixel it names the factor the two evaluation paths disagree on. The kernel keeps
    no per-image state (the pinned C's first evaluation, the interpolation switch): on a pixel where that
    state matters the two differ by design (engine.needs_state)."""
    if not is_rendered(plan, pixel):
        raise ValueError(f"pixel {tuple(pixel)} is not rendered (outside -roi or masked)")
    flat = _flat_index(plan.image_shape, pixel)
    idx = torch.tensor([flat], dtype=torch.int32, device=plan.device)
    inter, value = K.kernel_intermediates(plan.kernel.spec, plan.kernel.inputs, idx)
    return _factors(plan, inter, value[0], tuple(int(v) for v in pixel))


def is_rendered(plan: Plan, pixel: tuple[int, ...]) -> bool:
    """Whether the render computes ``pixel`` (inside the image, -roi and the mask); only those can be traced."""
    shape = plan.image_shape
    if len(pixel) != len(shape) or not all(0 <= int(v) < n for v, n in zip(pixel, shape, strict=True)):
        return False
    if plan.panels is not None:
        return True
    ok = rendered_pixels(plan.cfg.detector)
    return ok is None or bool(ok[int(pixel[0]), int(pixel[1])])


def _factors(plan: Plan, x: K.Intermediates, value: torch.Tensor, pixel: tuple[int, ...]) -> dict[str, TraceValue]:
    """The trace entries from a one-pixel chunk's intermediates `x` (kernel layout) and its value."""
    inputs = plan.kernel.inputs
    g = plan.geom
    if plan.panels is not None:  # the geometry of the traced pixel's panel, as the C's CUSTOM detector
        g = panel_geometry(plan.cfg, int(pixel[0]))
    d = plan.cfg.detector
    src = plan.sources

    def vec(v: tuple[torch.Tensor, ...], *at) -> torch.Tensor:  # a component tuple at one index
        return torch.stack([c[at] for c in v])

    hkl = tuple(_last(h) for h in x.hkl)
    hkl0 = tuple(_last(h) for h in x.hkl0)
    diffracted = vec(x.dif, -1, -1, 0)
    out: dict[str, TraceValue] = {  # in the schema's order (parity.schema, the C's order of computation)
        "pix0_vector": _v(g.pix0),
        "fdet_vector": _v(g.fdet),
        "sdet_vector": _v(g.sdet),
        "odet_vector": _v(g.odet),
        "beam_vector": _v(g.beam),
        "distance": _f(g.distance),
        "close_distance": _f(g.close_distance),
        "Fbeam": _f(g.Fbeam),
        "Sbeam": _f(g.Sbeam),
        "Fclose": _f(g.Fclose),
        "Sclose": _f(g.Sclose),
        # the source list the C prints before its loop (beam.build_sources)
        "sources": float(len(src.wavelength)),
        "source_directions": _v(src.direction),
        "source_weights": _v(src.weight),
        "source_wavelengths": _v(src.wavelength),
        "pixel_pos": _v(vec(x.pos, -1, -1, 0)),
        "airpath": _f(x.airpath[-1, -1, 0]),
        "diffracted": _v(diffracted),
    }
    # the C's variables after the pixel: the last value computed (cached ones from the first sub-pixel)
    out["omega_pixel"] = _f(x.omega[-1, -1, 0] if d.oversample_omega else x.omega_first[0])
    capture = x.capture
    if capture is None:  # no detector thickness: capture_fraction = 1
        out["capture_fraction"] = 1.0
    else:
        out["capture_fraction"] = _f(capture[-1, -1, 0] if d.oversample_thick else x.capture_last[0])
    out["incident"] = _v(inputs.incident[-1])
    out["lambda"] = _f(inputs.wavelength[-1])
    out["scattering"] = _v(vec(x.scattering, -1, -1, -1, 0))
    out["stol"] = _f(x.stol[-1, -1, -1, 0])
    if x.polar_sample is not None:
        out["polar"] = _f(x.polar_sample[-1, -1, -1, 0])
    else:
        out["polar"] = 1.0 if x.polar_first is None else _f(x.polar_first[0])
    out["cos_2theta"] = _f(x.cos_2theta[-1, -1, -1, 0])
    cells = plan.cells[-1, -1] * 1e10
    out.update(a_vec=_v(cells[0]), b_vec=_v(cells[1]), c_vec=_v(cells[2]),
               hkl_frac=_v(torch.stack(hkl)), hkl_rounded=_v(torch.stack(hkl0)))
    if x.F_latt_axes is not None:
        fa, fb, fc = (_last(v) for v in x.F_latt_axes)
        out.update(F_latt_a=_f(fa), F_latt_b=_f(fb), F_latt_c=_f(fc))
    I = _f(x.I[0])
    out.update(
        F_latt=_f(_last(x.F_latt)),
        F_cell=_f(_last(x.F_cell)),
        I_before_scaling=I,
        r_e_sqr=R_E_SQR,
        fluence=_f(inputs.fluence),
        steps=float(plan.steps),
        I_over_steps=I / plan.steps,
    )
    out["I_pixel_final"] = _f(value)
    # where in the sampling the "last" values above come from, and the per-layer capture fractions
    out["source_index"] = float(len(plan.sources.wavelength) - 1)
    out["phi_step"] = float(plan.phi.steps - 1)
    out["phi"] = _f(plan.phi.phi[-1])
    out["mosaic_domain"] = float(plan.mosaic.domains - 1)
    out["layer"] = float(plan.layers.count - 1)
    out["capture_per_layer"] = (1.0,) * plan.layers.count if capture is None else _v(capture[:, 0, 0])
    return out


def format_trace(trace: dict[str, TraceValue], dtype: torch.dtype | str | None = None,
                 device: torch.device | str | None = None) -> str:
    """`TRACE_PY: name v1 [v2 v3]` lines, full precision (repr), opened by the precision and device the trace
    was computed in (`TRACE_PY: dtype float32`, `TRACE_PY: device cpu`): a comparison takes its tolerances
    from them (parity.compare)."""
    lines = []
    if dtype is not None:
        lines.append("TRACE_PY: dtype " + str(dtype).removeprefix("torch."))
    if device is not None:
        lines.append(f"TRACE_PY: device {device}")
    for name, value in trace.items():
        vals = value if isinstance(value, tuple) else (value,)
        lines.append("TRACE_PY: " + name + " " + " ".join(repr(float(v)) for v in vals))
    return "\n".join(lines)


DARK_FRACTION = 1e-3  # a traced pixel below this fraction of the image's maximum is called nearly dark


def order_note(slow: int, fast: int) -> str:
    """The comment line that opens a trace: our order (slow, fast) and the C's command for the same pixel."""
    return (f"# pixel (slow {slow}, fast {fast}): -trace_pixel and TRACE_PY take (slow, fast); the C's "
            f"-printout_pixel takes (fast, slow): -printout_pixel {fast} {slow}")


def dark_note(value: float, image_max: float) -> str | None:
    """A comment line when the traced pixel is nearly dark (a swapped slow/fast often is), else None."""
    if image_max > 0 and value >= DARK_FRACTION * image_max:
        return None
    return (f"# note: this pixel is nearly dark ({value:.4g} photons, image maximum {image_max:.4g}); "
            "if you meant the C's (fast, slow) order, swap the two numbers")


def format_c_printout(
    trace: dict[str, TraceValue], fpixel: int, spixel: int, pixel_value: float, lambda0: float
) -> str:
    """The C's -printout_pixel block, in its format (values from our trace)."""
    import math

    px, py, pz = trace["pixel_pos"]
    twotheta = math.atan2(math.sqrt(py * py + pz * pz), px)
    stol_lab = math.sin(twotheta / 2.0) / (lambda0 * 1e10)
    h, k, l = trace["hkl_frac"]
    h0, k0, l0 = (int(v) for v in trace["hkl_rounded"])
    a, b, c = trace["a_vec"], trace["b_vec"], trace["c_vec"]
    return "\n".join(
        [
            "%4d %4d : stol = %g or %g" % (fpixel, spixel, trace["stol"], stol_lab),
            "at %g %g %g" % (px, py, pz),
            "hkl= %f %f %f  hkl0= %d %d %d" % (h, k, l, h0, k0, l0),
            " F_cell=%g  F_latt=%g   I = %g" % (trace["F_cell"], trace["F_latt"], trace["I_before_scaling"]),
            "I/steps %15.10g" % trace["I_over_steps"],
            "polar   %15.10g" % trace["polar"],
            "omega   %15.10g" % trace["omega_pixel"],
            "capfrac %15.10g" % trace["capture_fraction"],
            "pixel   %15.10g" % pixel_value,
            "real-space cell vectors (Angstrom):",
            "     %-10s  %-10s  %-10s" % ("a", "b", "c"),
            "X: %11.8f %11.8f %11.8f" % (a[0], b[0], c[0]),
            "Y: %11.8f %11.8f %11.8f" % (a[1], b[1], c[1]),
            "Z: %11.8f %11.8f %11.8f" % (a[2], b[2], c[2]),
        ]
    )
