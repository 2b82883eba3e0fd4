"""Drift reports: trace against trace (factor by factor, in pipeline order) and image against image.

Trace comparison runs DeepDiff over ``{factor: tuple of floats}`` with a custom operator that applies a
per-factor numeric tolerance, so DeepDiff does the bookkeeping (missing factors, changed values) while
the tolerance logic stays here. For component i of a factor the allowed difference is::

    atol + rtol * scale_i + printed_i(reference) + printed_i(ours) + ulps * (eps(ref) + eps(ours)) * scale_i

where rtol/atol come from the schema (times ``rtol_scale``, or an override), ``scale_i`` is |ref_i| for
scalars and the vector norm for 3-vectors, ``printed_i`` is half a unit in the last printed digit
for values read from C text (0 for full-precision traces), and the last term is the round-off a trace
computed in a given precision carries: ``eps`` is the machine epsilon of the dtype the trace was computed
in (the C computes in double) and ``ulps`` the factor's round-off budget in the schema (how many ulps the
arithmetic up to that factor may accumulate). A float64 trace adds ~1e-14 (below every rtol); a float32
trace adds its own round-off without hiding a 1e-5 drift. The report header states both precisions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import import_extra
from .printout import Trace, Value, as_trace
from .schema import FACTORS, factor, order_index

__all__ = [
    "FactorDiff",
    "TraceReport",
    "compare_traces",
    "ImageTolerance",
    "image_metrics",
    "check_image",
    "block_sums",
    "format_value",
    "dtype_name",
]


@dataclass(frozen=True)
class FactorDiff:
    """Comparison of one factor. ``abs_diff``/``rel_diff``/``tolerance`` refer to the worst component
    (largest diff/tolerance); for vectors ``rel_diff`` is relative to the vector norm."""

    name: str
    group: str
    ref: Value
    ours: Value
    abs_diff: float
    rel_diff: float
    tolerance: float
    ok: bool
    printed: str = ""

    def line(self) -> str:
        return (
            f"{self.name}: ref={format_value(self.ref)} ours={format_value(self.ours)} "
            f"abs={self.abs_diff:.3g} rel={self.rel_diff:.3g} tol={self.tolerance:.3g}"
        )


@dataclass
class TraceReport:
    """Every compared factor (``rows``) and the out-of-tolerance ones (``drifts``), in pipeline order.
    ``precision``: the precisions of the two traces the tolerances were derived from."""

    rows: list[FactorDiff] = field(default_factory=list)
    drifts: list[FactorDiff] = field(default_factory=list)
    first_divergent: str | None = None
    only_ref: list[str] = field(default_factory=list)
    only_ours: list[str] = field(default_factory=list)
    precision: str = ""

    @property
    def ok(self) -> bool:
        return not self.drifts

    def __bool__(self) -> bool:  # truthy when the traces agree
        return self.ok

    def summary(self) -> str:
        tail = f" [{self.precision}]" if self.precision else ""
        if self.ok:
            return f"traces agree on {len(self.rows)} factors{tail}"
        head = (
            f"first divergent factor: {self.first_divergent} ({len(self.drifts)} of {len(self.rows)} drifted)"
            + tail
        )
        return "\n".join([head] + ["  " + d.line() for d in self.drifts])

    @property
    def first(self) -> FactorDiff | None:
        """The first divergent factor's row (None when the traces agree)."""
        return self.drifts[0] if self.drifts else None

    def to_markdown(self, ref_label: str = "C", ours_label: str = "PyTorch", title: str | None = None) -> str:
        out = [f"# {title}" if title else "# Trace comparison", ""]
        if self.ok:
            out.append(f"**All {len(self.rows)} compared factors within tolerance.**")
        else:
            out.append(
                f"**First divergent factor: `{self.first_divergent}`** "
                f"({len(self.drifts)} of {len(self.rows)} factors out of tolerance)"
            )
        if self.precision:
            out += ["", f"Tolerances derived from the trace precisions: {self.precision}."]
        out += [
            "",
            f"| factor | group | {ref_label} | {ours_label} | rel diff | abs diff | tolerance | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            status = "pass" if r.ok else "**FAIL**"
            ref = format_value(r.ref) + (f" ({r.printed})" if r.printed else "")
            out.append(
                f"| {r.name} | {r.group} | {ref} | {format_value(r.ours)} | {r.rel_diff:.3g} | "
                f"{r.abs_diff:.3g} | {r.tolerance:.3g} | {status} |"
            )
        if self.only_ref or self.only_ours:
            out.append("")
            if self.only_ref:
                out.append(f"Only in {ref_label}: {', '.join(self.only_ref)}")
            if self.only_ours:
                out.append(f"Only in {ours_label}: {', '.join(self.only_ours)}")
        return "\n".join(out) + "\n"


def format_value(v: Value) -> str:
    """Full-precision text of a value (repr of each component)."""
    if isinstance(v, tuple):
        return ", ".join(repr(float(x)) for x in v)
    return repr(float(v))


def _comps(v: Value) -> tuple[float, ...]:
    return tuple(float(x) for x in v) if isinstance(v, tuple) else (float(v),)


_EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}


def dtype_name(dtype: Any) -> str:
    """"float64" or "float32" from a torch/numpy dtype or its name (float64 for anything else)."""
    text = str(dtype).rsplit(".", 1)[-1]
    return "float32" if text in ("float32", "float", "single") else "float64"


def _operand_scale(name: str, ref: Trace, ours: Trace) -> float | None:
    """Magnitude of the operands of a factor computed by cancellation (None: its own magnitude is the scale).

    scattering and stol: (diffracted - incident) / lambda, operands of size 2/lambda; hkl_frac: a . S, whose
    error is |a| times that of S (Angstrom x m^-1 x 1e-10), much larger than h near the direct beam."""
    t = ref if "lambda" in ref.values else ours
    if name in ("scattering", "stol") and "lambda" in t.values and float(t.values["lambda"]) > 0:
        return 2.0 / float(t.values["lambda"])
    if name == "hkl_frac":
        cells = [ref.values.get(k, ours.values.get(k)) for k in ("a_vec", "b_vec", "c_vec")]
        if "lambda" in t.values and float(t.values["lambda"]) > 0 and all(c is not None for c in cells):
            a = max(math.sqrt(sum(float(x) ** 2 for x in c)) for c in cells)
            return a * 1e-10 * 2.0 / float(t.values["lambda"])  # |a| times the operands of S
    return None


def _judge(
    name: str,
    ref: Trace,
    ours: Trace,
    rtol_scale: float,
    overrides: Mapping[str, tuple[float, float]],
    eps: float = 0.0,
) -> FactorDiff:
    f = factor(name)
    rtol, atol = overrides.get(name, (f.rtol * rtol_scale, f.atol))
    r, o = _comps(ref.values[name]), _comps(ours.values[name])
    operand = _operand_scale(name, ref, ours)
    if operand is not None:  # cancellation: round-off follows the operands, not the result
        atol = atol + f.ulps * eps * operand
    else:
        rtol = rtol + f.ulps * eps
    ur, uo = ref.uncertainty(name), ours.uncertainty(name)
    if len(r) != len(o):
        return FactorDiff(name, f.group, ref.values[name], ours.values[name], math.inf, math.inf, 0.0, False)
    norm = math.sqrt(sum(x * x for x in r if math.isfinite(x))) if len(r) > 1 else None
    worst = (-1.0, 0.0, 0.0, 0.0)  # (ratio, abs, rel, tol)
    ok = True
    for i, (a, b) in enumerate(zip(r, o, strict=True)):
        if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
            same = (math.isnan(a) and math.isnan(b)) or a == b
            d, rel, tol, ratio = (0.0, 0.0, 0.0, 0.0) if same else (math.inf, math.inf, 0.0, math.inf)
        else:
            scale = norm if norm is not None else abs(a)
            tol = atol + rtol * scale + ur[i] + uo[i]
            d = abs(b - a)
            rel = d / scale if scale > 0 else (0.0 if d == 0 else math.inf)
            ratio = d / tol if tol > 0 else (0.0 if d == 0 else math.inf)
        if ratio > 1.0:
            ok = False
        if ratio > worst[0]:
            worst = (ratio, d, rel, tol)
    printed = str(ref.precision[name]) if name in ref.precision else ""
    if name in ours.precision:
        printed = (printed + "/" if printed else "ours ") + str(ours.precision[name])
    return FactorDiff(
        name, f.group, ref.values[name], ours.values[name], worst[1], worst[2], worst[3], ok, printed
    )


@functools.cache
def _tolerance_operator() -> type:
    """The DeepDiff operator class (deepdiff is imported here, where it is used)."""
    BaseOperator = import_extra("deepdiff.operator").BaseOperator

    class ToleranceOperator(BaseOperator):
        """DeepDiff operator: one top-level key = one factor; judged by :func:`_judge`."""

        def __init__(self, ref: Trace, ours: Trace, rtol_scale: float, overrides, eps: float):
            super().__init__(regex_paths=[r"^root\['[^']+'\]$"])
            self.ref, self.ours, self.rtol_scale, self.overrides = ref, ours, rtol_scale, overrides
            self.eps = eps
            self.judged: dict[str, FactorDiff] = {}

        def give_up_diffing(self, level, diff_instance) -> bool:
            name = level.path(output_format="list")[0]
            res = _judge(name, self.ref, self.ours, self.rtol_scale, self.overrides, self.eps)
            self.judged[name] = res
            if not res.ok:
                diff_instance.custom_report_result("values_changed", level, {"factor": name})
            return True

    return ToleranceOperator


def compare_traces(
    ref: Trace | Mapping[str, Any],
    ours: Trace | Mapping[str, Any],
    *,
    rtol_scale: float = 1.0,
    overrides: Mapping[str, tuple[float, float]] | None = None,
    factors: Iterable[str] | None = None,
    ref_dtype: Any = None,
    ours_dtype: Any = None,
) -> TraceReport:
    """Compare two traces factor by factor.

    ref, ours: :class:`Trace` (e.g. a parsed C printout) or plain mappings factor -> number/sequence.
    rtol_scale: multiplies every schema rtol. overrides: factor -> (rtol, atol). factors: restrict to these.
    ref_dtype, ours_dtype: the precision each trace was computed in (torch/numpy dtype or name); None: what
    the trace records (``Trace.dtype``, a ``TRACE_PY: dtype`` line), else float64 (the C computes in double).
    Each factor's tolerance grows by its schema ``ulps`` times both epsilons.
    Only factors present in both are compared; the rest are listed in ``only_ref``/``only_ours``.
    """
    r, o = as_trace(ref), as_trace(ours)
    dr = dtype_name(r.computed_in if ref_dtype is None else ref_dtype)
    do = dtype_name(o.computed_in if ours_dtype is None else ours_dtype)
    eps = _EPS[dr] + _EPS[do]
    precision = f"{r.origin} {dr}" + (f" on {r.device}" if r.device else "")
    precision += " (printed digits)" if r.precision else ""
    precision += f" vs {o.origin} {do}" + (f" on {o.device}" if o.device else "")
    precision += " (printed digits)" if o.precision else ""
    precision += f"; round-off term ulps x {eps:.2g}"
    wanted = set(factors) if factors is not None else None
    t1 = {k: _comps(v) for k, v in r.values.items() if k in FACTORS and (wanted is None or k in wanted)}
    t2 = {k: _comps(v) for k, v in o.values.items() if k in FACTORS and (wanted is None or k in wanted)}
    op = _tolerance_operator()(r, o, rtol_scale, dict(overrides or {}), eps)
    diff = import_extra("deepdiff").DeepDiff(t1, t2, custom_operators=[op], verbose_level=2)
    report = TraceReport(precision=precision)
    report.only_ref = sorted(
        (p.path(output_format="list")[0] for p in diff.tree.get("dictionary_item_removed", [])),
        key=order_index,
    )
    report.only_ours = sorted(
        (p.path(output_format="list")[0] for p in diff.tree.get("dictionary_item_added", [])), key=order_index
    )
    # DeepDiff skips identical values without asking the operator; judge those as exact passes
    for name in t1.keys() & t2.keys():
        if name not in op.judged:
            op.judged[name] = _judge(name, r, o, rtol_scale, dict(overrides or {}), eps)
    report.rows = sorted(op.judged.values(), key=lambda d: order_index(d.name))
    drifted = {p.path(output_format="list")[0] for p in diff.tree.get("values_changed", [])}
    report.drifts = [d for d in report.rows if not d.ok]
    assert {d.name for d in report.drifts} == drifted, "DeepDiff and tolerance judge disagree"
    report.first_divergent = report.drifts[0].name if report.drifts else None
    return report


# ---------------------------------------------------------------------------------------------------
# images


@dataclass(frozen=True)
class ImageTolerance:
    """Pass criteria for an image against its golden. ``max_rel_err`` None = not checked."""

    corr_min: float = 0.9999999
    sum_ratio_tol: float = 1e-7
    max_rel_err: float | None = 1e-6
    significant: float = 1e-3

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: ImageTolerance | None = None) -> ImageTolerance:
        b = base or cls()
        keys = ("corr_min", "sum_ratio_tol", "max_rel_err", "significant")
        unknown = set(d) - set(keys)
        if unknown:
            raise ValueError(f"unknown tolerance keys {sorted(unknown)}; known: {keys}")
        vals = {k: d.get(k, getattr(b, k)) for k in keys}
        if vals["max_rel_err"] is not None and vals["max_rel_err"] < 0:  # -1 in TOML = unchecked
            vals["max_rel_err"] = None
        return cls(**vals)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def image_metrics(ours: Any, ref: Any, significant: float = 1e-3) -> dict[str, Any]:
    """Agreement of two images (numpy arrays or tensors of the same shape), computed in float64.

    corr: Pearson correlation; sum_ratio: sum(ours)/sum(ref); max_rel_err / mean_rel_err over the
    n_significant pixels with ref > significant * max(ref); max_abs_err; argmax positions (slow, fast).
    """
    o, r = _np(ours), _np(ref)
    if o.shape != r.shape:
        raise ValueError(f"image shapes differ: ours {o.shape} vs ref {r.shape}")
    of, rf = o.ravel(), r.ravel()
    so, sr = float(of.sum()), float(rf.sum())
    if sr != 0.0:
        sum_ratio = so / sr
    else:
        sum_ratio = 1.0 if so == 0.0 else math.inf
    do, dr = of - of.mean(), rf - rf.mean()
    den = math.sqrt(float(do @ do) * float(dr @ dr))
    if den > 0:
        corr = float(do @ dr) / den
    else:
        corr = 1.0 if np.array_equal(of, rf) else 0.0
    max_ref = float(rf.max()) if rf.size else 0.0
    sig = rf > significant * max_ref if max_ref > 0 else np.zeros(rf.shape, dtype=bool)
    n_sig = int(sig.sum())
    if n_sig:
        rel = np.abs(of[sig] - rf[sig]) / np.abs(rf[sig])
        k = int(np.argmax(rel))
        max_rel, mean_rel = float(rel[k]), float(rel.mean())
        worst = np.unravel_index(np.flatnonzero(sig)[k], r.shape)
    else:
        max_rel, mean_rel, worst = 0.0, 0.0, None
    am_o = np.unravel_index(int(np.argmax(of)), o.shape) if of.size else None
    am_r = np.unravel_index(int(np.argmax(rf)), r.shape) if rf.size else None
    return {
        "shape": tuple(int(s) for s in r.shape),
        "corr": corr,
        "sum_ours": so,
        "sum_ref": sr,
        "sum_ratio": sum_ratio,
        "max_ref": max_ref,
        "max_ours": float(of.max()) if of.size else 0.0,
        "n_significant": n_sig,
        "max_rel_err": max_rel,
        "mean_rel_err": mean_rel,
        "worst_pixel": tuple(int(i) for i in worst) if worst is not None else None,
        "max_abs_err": float(np.abs(of - rf).max()) if of.size else 0.0,
        "argmax_ours": tuple(int(i) for i in am_o) if am_o is not None else None,
        "argmax_ref": tuple(int(i) for i in am_r) if am_r is not None else None,
    }


def check_image(metrics: Mapping[str, Any], tol: ImageTolerance) -> list[str]:
    """Failed criteria of ``metrics`` (from :func:`image_metrics`) against ``tol``; empty when it passes."""
    fails = []
    if not metrics["corr"] >= tol.corr_min:
        fails.append(f"corr {metrics['corr']:.10f} < {tol.corr_min}")
    if not abs(metrics["sum_ratio"] - 1.0) <= tol.sum_ratio_tol:
        fails.append(f"sum ratio {metrics['sum_ratio']:.10f} off by more than {tol.sum_ratio_tol:g}")
    if tol.max_rel_err is not None and not metrics["max_rel_err"] <= tol.max_rel_err:
        fails.append(
            f"max rel err {metrics['max_rel_err']:.3g} > {tol.max_rel_err:g} "
            f"at (slow, fast) {metrics['worst_pixel']} over {metrics['n_significant']} pixels"
        )
    return fails


def block_sums(image: Any, block: int = 32) -> np.ndarray:
    """float64 sums over ``block`` x ``block`` tiles (edge tiles partial), shape ceil(S/b) x ceil(F/b)."""
    a = _np(image)
    s, f = a.shape
    ns, nf = -(-s // block), -(-f // block)
    padded = np.zeros((ns * block, nf * block), dtype=np.float64)
    padded[:s, :f] = a
    return padded.reshape(ns, block, nf, block).sum(axis=(1, 3))
