"""pytest plugin: one drift report per run. Not registered by installing the package: this repository's
tests/conftest.py loads it (``pytest_plugins``); another project adds
``pytest_plugins = ["nanobragg_torch.parity.drift"]`` to its top-level conftest.py (docs/golden.md).

Golden-suite tests describe what they compared through the ``drift`` fixture (case, dtype, the trace
verdict, image metrics, the two images); the plugin keeps that only for failed tests, and for intentional
snapshot updates (:meth:`DriftNote.change`). At the end of the run:

* a terminal section ``drift summary``: failures grouped by first divergent factor (cases, tests, max
  relative error, an example case and pixel, worst image metrics), at most :data:`MAX_LINES` lines;
* with ``--drift-report DIR``: ``DIR/report.md`` (the grouped table, the worst cases, what to run next:
  short enough for a PR comment), ``DIR/index.html`` (one self-contained page, :mod:`.page`: contents by
  factor; per drifted case C golden | ours | signed difference drawn by matplotlib, a blink/swipe comparer,
  the metrics and the trace table of the worst traced pixel) and ``DIR/drift.json`` (the records and the
  environment stamp, read by ``tools/review.py`` and ``tools/pr_report.py``).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import import_extra
from .compare import TraceReport

pytest = import_extra("pytest")

__all__ = ["DriftNote", "DriftRecord", "group_records", "summary_lines", "write_reports", "MAX_LINES"]

MAX_LINES = 30  # the terminal section, whatever the number of failures
MAX_GROUP_LINES = MAX_LINES - 6
UNATTRIBUTED = "(no factor named)"


@dataclass
class DriftRecord:
    """What one failed (or intentionally updated) golden test compared."""

    nodeid: str
    kind: str  # "image", "trace", "snapshot", "statistics", "path", "demo", "update"
    case: str  # "variant/name"
    dtype: str = "float64"
    factor: str | None = None  # first divergent factor, or "path: ..." for an evaluation-path verdict
    pixel: tuple[int, int] | None = None
    rel: float | None = None  # relative difference of the first divergent factor
    change: str = ""  # update records: "+1.0e-05" style signed change of the factor
    metrics: dict[str, Any] = field(default_factory=dict)
    precision: str = ""
    trace_rows: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""


@dataclass
class _Pictures:
    ref: np.ndarray
    ours: np.ndarray


class DriftNote:
    """Per-test notebook behind the ``drift`` fixture: tests say what they compare, the plugin keeps it when
    the test fails."""

    def __init__(self, nodeid: str):
        self.nodeid = nodeid
        self.record: DriftRecord | None = None
        self.pictures: _Pictures | None = None
        self.changes: list[DriftRecord] = []

    def case(self, case: str, kind: str, dtype: str = "float64") -> DriftNote:
        self.record = DriftRecord(self.nodeid, kind, case, dtype)
        return self

    def _rec(self) -> DriftRecord:
        if self.record is None:
            raise RuntimeError("drift.case(...) first")
        return self.record

    def trace(self, report: TraceReport, pixel: tuple[int, int] | None) -> None:
        """The trace verdict of the case: the first divergent factor names the group of the failure."""
        r = self._rec()
        if report.ok and r.factor is not None:
            return
        worst = report.first
        if r.factor is None or (worst is not None and r.factor == UNATTRIBUTED):
            r.factor = worst.name if worst is not None else None
            r.pixel = tuple(pixel) if pixel is not None else None
            r.rel = worst.rel_diff if worst is not None else None
            r.precision = report.precision
            r.trace_rows = [
                {
                    "factor": d.name,
                    "ref": _num(d.ref),
                    "ours": _num(d.ours),
                    "rel": d.rel_diff,
                    "tol": d.tolerance,
                    "ok": d.ok,
                }
                for d in report.rows
            ]

    def verdict(
        self, factor: str, pixel: tuple[int, int] | None = None, rel: float | None = None, change: str = ""
    ) -> None:
        """A verdict that is not a trace comparison (e.g. "path: fused kernel", a snapshot's first change)."""
        r = self._rec()
        r.factor, r.pixel, r.rel, r.change = factor, pixel, rel, change

    def image(self, metrics: Mapping[str, Any], ref: Any = None, ours: Any = None) -> None:
        r = self._rec()
        r.metrics = _plain(metrics)
        if ref is not None and ours is not None:
            self.pictures = _Pictures(np.asarray(ref, dtype=np.float64), np.asarray(ours, dtype=np.float64))

    def change(self, case: str, factor: str | None, rel: float | None, change: str = "") -> None:
        """An intentional update (snapshot or golden) of ``case``, kept whether the test passes or not."""
        self.changes.append(
            DriftRecord(self.nodeid, "update", case, factor=factor or UNATTRIBUTED, rel=rel, change=change)
        )


def _num(v: Any) -> Any:
    return [float(x) for x in v] if isinstance(v, tuple | list) else float(v)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------------------------------
# grouping and text


def _worst_corr(recs: list[DriftRecord]) -> str:
    corrs, ratios = [], []
    for r in recs:
        for m in (r.metrics, *(v for v in r.metrics.values() if isinstance(v, dict))):
            if isinstance(m, dict) and "corr" in m:
                corrs.append(m["corr"])
                ratios.append(m["sum_ratio"])
    if not corrs:
        return "-"
    k = int(np.argmax(np.abs(np.asarray(ratios) - 1.0)))
    return f"corr>={min(corrs):.9f} sum ratio {ratios[k]:.8f}"


def group_records(records: list[DriftRecord]) -> list[tuple[str, list[DriftRecord]]]:
    """Records grouped by factor (unattributed last), largest group first."""
    groups: dict[str, list[DriftRecord]] = {}
    for r in records:
        groups.setdefault(r.factor or UNATTRIBUTED, []).append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0] == UNATTRIBUTED, -len(kv[1]), kv[0]))


def _relkey(r: DriftRecord) -> float:
    return r.rel if r.rel is not None and math.isfinite(r.rel) else -1.0


def example(group: list[DriftRecord]) -> DriftRecord:
    """The record a group is shown by: the largest relative difference (the group's max rel is its)."""
    return max(group, key=_relkey)


def _fmt_rel(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.2g}"


def summary_lines(
    failures: list[DriftRecord], changes: list[DriftRecord], report_dir: str | None, noun: str = "snapshots"
) -> list[str]:
    """The ``drift summary`` section (``noun``: what the changes are): at most MAX_LINES lines."""
    out: list[str] = []
    for title, recs in (("failed golden tests", failures), ("intentional updates", changes)):
        if not recs:
            continue
        groups = group_records(recs)
        cases = {r.case for r in recs}
        if title == "intentional updates":
            head = f"{len(recs)} {noun} changed in {len(cases)} cases: " + ", ".join(
                f"{f} {_common_change(g)} in {len(g)}" for f, g in groups[:4]
            )
            out.append(head if len(groups) <= 4 else head + f", ... ({len(groups)} factors)")
        else:
            out.append(f"{len(recs)} {title} in {len(cases)} cases, by first divergent factor:")
        budget = MAX_GROUP_LINES // (2 if failures and changes else 1)
        w = max([22] + [len(f) for f, _ in groups[:budget]])
        out.append(f"  {'factor':<{w}s} {'cases':>5s} {'tests':>5s} {'max rel':>8s}  example (case, pixel); metrics")
        for f, g in groups[:budget]:
            ex = example(g)
            rels = [r.rel for r in g if r.rel is not None and math.isfinite(r.rel)]
            pix = f" {ex.pixel}" if ex.pixel is not None else ""
            # the example's own metrics (its case's records), never another case's beside its name
            out.append(
                f"  {f:<{w}s} {len({r.case for r in g}):>5d} {len(g):>5d} {_fmt_rel(max(rels) if rels else None):>8s}"
                f"  {ex.case}{pix}; {_worst_corr([r for r in g if r.case == ex.case])}"
            )
        if len(groups) > budget:
            out.append(f"  ... {len(groups) - budget} more factors (see the report)")
    if report_dir:
        out.append(f"report: {report_dir}/report.md, {report_dir}/index.html")
    return out[:MAX_LINES]


def _common_change(recs: list[DriftRecord]) -> str:
    vals = [r.change for r in recs if r.change]
    if not vals:
        return "changed"
    most = max(set(vals), key=vals.count)
    return most if vals.count(most) == len(vals) else f"{most} (and others)"


def report_markdown(failures: list[DriftRecord], changes: list[DriftRecord], worst: int = 10) -> str:
    """report.md: short enough to paste as a PR comment."""
    out = ["## Drift report", ""]
    if not failures and not changes:
        return "\n".join(out + ["No golden drift in this run.", ""])
    for title, recs in (("Failures", failures), ("Intentional updates", changes)):
        if not recs:
            continue
        out += [f"### {title}: {len(recs)} tests in {len({r.case for r in recs})} cases", ""]
        out += [
            "| first divergent factor | cases | tests | max rel diff | example case | pixel |",
            "|---|---|---|---|---|---|",
        ]
        for f, g in group_records(recs):
            ex = example(g)
            rels = [r.rel for r in g if r.rel is not None and math.isfinite(r.rel)]
            out.append(
                f"| `{f}` | {len({r.case for r in g})} | {len(g)} | {_fmt_rel(max(rels) if rels else None)} | "
                f"{ex.case} | {ex.pixel or '-'} |"
            )
        out.append("")
    if failures:
        ranked = sorted(failures, key=lambda r: -_relkey(r))
        out += [f"Worst {min(worst, len(ranked))} failures:", ""]
        for r in ranked[:worst]:
            out.append(f"- `{r.nodeid}`: {r.factor} rel {_fmt_rel(r.rel)} at {r.pixel or '-'}")
        out += [
            "",
            "Next: open `index.html` beside this file (C golden | ours | difference per case); trace one pixel "
            "with `python tools/trace_pixel.py --case CASE --pixel S F`; after an intended change, "
            "`tox -e review` lists and accepts the pending updates.",
        ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------
# HTML (the page itself: .page)


def _trace_html(r: DriftRecord) -> str:
    if not r.trace_rows:
        return "<p>No C trace comparison recorded for this case.</p>"

    def fmt(v):
        return ", ".join(f"{x:.10g}" for x in v) if isinstance(v, list) else f"{v:.10g}"

    rows = "".join(
        f"<tr class={'ok' if t['ok'] else 'bad'}><td>{html.escape(t['factor'])}</td><td>{fmt(t['ref'])}</td>"
        f"<td>{fmt(t['ours'])}</td><td>{t['rel']:.3g}</td><td>{t['tol']:.3g}</td>"
        f"<td>{'pass' if t['ok'] else 'FAIL'}</td></tr>"
        for t in r.trace_rows
    )
    return (
        f"<h3>Trace</h3><p>Trace of pixel (slow, fast) {r.pixel}; tolerances from {html.escape(r.precision)}</p>"
        "<table class=trace><tr><th>factor</th><th>C</th><th>ours</th><th>rel diff</th><th>tolerance</th>"
        f"<th>status</th></tr>{rows}</table>"
    )


def report_html(
    failures: list[DriftRecord], changes: list[DriftRecord], pictures: Mapping[str, tuple[DriftRecord, _Pictures]]
) -> str:
    """index.html: one self-contained page (:func:`.page.render_page`), drifted cases worst first."""
    from .page import PageCase, render_page

    by_case: dict[str, list[DriftRecord]] = {}
    for r in failures:
        by_case.setdefault(r.case, []).append(r)
    ranked = sorted(by_case, key=lambda c: -max(_relkey(r) for r in by_case[c]))
    cases = []
    for case in ranked:
        recs = by_case[case]
        traced = next((r for r in recs if r.trace_rows), recs[0])
        rec, pic = pictures.get(case, (traced, None))
        cases.append(PageCase(
            case=case,
            factor=traced.factor or UNATTRIBUTED,
            note="failed: " + ", ".join(r.nodeid.split("::")[-1] for r in recs),
            ref=pic.ref if pic is not None else None,
            ours=pic.ours if pic is not None else None,
            caption=f"{case} ({rec.dtype})",
            metrics=next((r.metrics for r in recs if r.metrics), {}),
            extra_html=_trace_html(traced),
        ))
    return render_page("Drift report", report_markdown(failures, changes), cases)


def write_reports(
    directory: str | Path,
    failures: list[DriftRecord],
    changes: list[DriftRecord],
    pictures: Mapping[str, tuple[DriftRecord, _Pictures]] | None = None,
) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "report.md").write_text(report_markdown(failures, changes))
    (d / "index.html").write_text(report_html(failures, changes, pictures or {}))
    from .stamp import environment

    doc = {"failures": [asdict(r) for r in failures], "changes": [asdict(r) for r in changes],
           "environment": environment()}
    (d / "drift.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------
# pytest hooks

_NOTES = pytest.StashKey[DriftNote]()
_STATE = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nanobragg drift report")
    group.addoption(
        "--drift-report",
        metavar="DIR",
        default=None,
        help="write DIR/report.md, DIR/index.html and DIR/drift.json about golden drift in this run",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = {"failures": [], "changes": [], "pictures": {}}


@pytest.fixture
def drift(request: pytest.FixtureRequest) -> DriftNote:
    """Say what a golden test compares (see :class:`DriftNote`); reported only when it fails."""
    note = DriftNote(request.node.nodeid)
    request.node.stash[_NOTES] = note
    return note


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    note = item.stash.get(_NOTES, None)
    if note is None or rep.when != "call":
        return
    state = item.config.stash[_STATE]
    state["changes"].extend(note.changes)
    if rep.failed and note.record is not None:
        rec = note.record
        rec.message = str(getattr(rep, "longreprtext", ""))[-400:]
        state["failures"].append(rec)
        if note.pictures is not None and rec.case not in state["pictures"]:
            state["pictures"][rec.case] = (rec, note.pictures)
    note.pictures = None


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    failures, changes = state["failures"], state["changes"]
    directory = config.getoption("drift_report")
    if failures or changes:
        terminalreporter.section("drift summary")
        for line in summary_lines(failures, changes, directory):
            terminalreporter.write_line(line)
    if directory:
        write_reports(directory, failures, changes, state["pictures"])
