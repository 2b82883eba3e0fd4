"""The golden suite's verdict on a failed comparison: the first divergent factor, or the evaluation path.

One function, :func:`verdict`, used by every golden test that fails (tests/golden/test_golden_parity.py)
and by the self-check of the naming (tests/golden/test_naming_self_check.py):

1. the traced pixels, our general path (engine.evaluate_chunk) against the C printouts: the first factor
   out of tolerance is the verdict, unless the only one is ``I_pixel_final``, which the trace takes from the
   image: then every factor the general path computes agrees with the C and the image does not, so the
   verdict is the path's (step 3) at that pixel;
2. the traces agree: the image pixel that disagrees most with the C (only a pixel the render computes: one
   outside -roi or masked is reported, not traced);
3. the path verdict: the fused kernel's own factors for that pixel (trace.kernel_trace, the kernel's debug
   entry) against the general path's; the first that differs is named, with the kernel's mode. When they all
   agree and only the stored value differs, the compiled form (or the combination in kernel.pixel_kernel).
"""

from __future__ import annotations

import torch

from nanobragg_torch.engine import render
from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.trace import LOCATION_KEYS, is_rendered, kernel_trace, pixel_trace

IMAGE_ONLY = {"I_pixel_final"}  # trace factors taken from the image, not from the general path


def verdict(golden, plan, result, drift, worst_pixel=None) -> str:
    """The verdict text of a failed golden comparison (and the drift record's factor); ``result`` is the
    float64 render with the golden's traced pixels traced, ``worst_pixel`` the image's worst pixel or None."""
    for pixel in golden.traced_pixels:
        report = compare_traces(golden.c_trace(pixel), pixel_trace(result, pixel))
        if not report.ok and {d.name for d in report.drifts} <= IMAGE_ONLY:
            return path_verdict(golden, plan, result, drift, pixel, "every traced factor agrees with the C")
        drift.trace(report, pixel)
        if not report.ok:
            first = report.first
            return (
                f"trace verdict: first divergent factor {first.name} at pixel {pixel} "
                f"(C {first.ref!r}, ours {first.ours!r}, rel {first.rel_diff:.2g}, tol {first.tolerance:.2g})"
            )
    if worst_pixel is None or golden.image is None:
        return f"trace verdict: traces agree with the C at {golden.traced_pixels}; the drift is elsewhere"
    p = tuple(int(v) for v in worst_pixel)
    if not is_rendered(plan, p):
        drift.verdict("pixel not rendered", p)
        return (
            f"trace verdict: traces agree with the C at {golden.traced_pixels}; the worst pixel {p} (ours "
            f"{float(result.image[p])!r}, C {float(golden.image[p])!r}) is outside -roi or masked: the render does "
            "not compute it, so it is not traced"
        )
    return path_verdict(golden, plan, result, drift, p, f"traces agree with the C at {golden.traced_pixels}")


def path_verdict(golden, plan, result, drift, pixel, context: str) -> str:
    """Fused kernel against general path at ``pixel``: the first factor in which they differ, named."""
    p = tuple(int(v) for v in pixel)
    mode = plan.kernel.mode
    with torch.no_grad():
        general = pixel_trace(result if p in result.traces else render(plan, trace_pixels=[p]), p)
        kernel = kernel_trace(plan, p)
    factors = [k for k in general if k not in LOCATION_KEYS and k not in IMAGE_ONLY and k in kernel]
    report = compare_traces(general, kernel, factors=factors)
    c_value = float(golden.image[p]) if golden.image is not None else None
    image_value = float(result.image[p].double())
    c_text = f", C {c_value!r}" if c_value is not None else ""
    if not report.ok:
        first = report.first
        drift.verdict(f"{first.name} (fused kernel)", p, first.rel_diff)
        return (
            f"path verdict: {context}; at pixel {p} the fused kernel ({mode}) gets {first.name} wrong: kernel "
            f"{first.ours!r}, general path {first.ref!r} (rel {first.rel_diff:.2g}); image {image_value!r}{c_text} "
            "(kernel.py pixel_kernel / fused_pixels)"
        )
    kernel_value = kernel["I_pixel_final"]
    if kernel_value != image_value:
        where = f"its compiled form ({mode}, compiled.py)" if mode != "eager" else "the chunking of engine.render"
        drift.verdict(f"path: fused kernel ({mode})", p)
        return (
            f"path verdict: {context}; at pixel {p} the fused kernel's factors agree with the general path and its "
            f"eager value is {kernel_value!r}, but the image holds {image_value!r}{c_text}: suspect {where}"
        )
    drift.verdict("path: fused kernel", p)
    return (
        f"path verdict: {context}; at pixel {p} the fused kernel's factors agree with the general path, and its "
        f"value {image_value!r} is the image's{c_text}: the factors combine differently from the C (kernel.photons, "
        "engine.evaluate_chunk); trace the pixel (tools/trace_pixel.py)"
    )
