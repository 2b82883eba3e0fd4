"""What a branch changed against a base revision, read from git alone (no simulator run): the pull-request
report of ``tools/pr_report.py``.

* snapshot fingerprints (``tests/**/__snapshots__/**.txt``) changed, new or deleted, each changed one
  named by its first changed factor and signed relative change (:func:`.fingerprint.fingerprint_changes`);
* C goldens (``golden/manifest.json`` entries) changed, new or deleted: which files, the C build (binary
  sha256, compiler flags), the flag tokens that changed, the first divergent factor of the printout blocks
  (:func:`.regen.printout_drift`), and for golden images the array metrics (max |d|, RMS, relative L2,
  pixels beyond tolerance, NaN/Inf, shape or dtype change) and base | head | difference figures;
* the environment stamps of the test runs' drift reports (``--drift`` for head, ``--base-drift``);
* with ``--drift``, the test run's own drift report (failures and pending updates by factor).

Outputs: ``comment.md`` (grouped table, collapsed details per factor worst first, commands; always under
:data:`COMMENT_LIMIT` characters), ``summary.md`` (every row, under :data:`SUMMARY_LIMIT` bytes),
``index.html`` (:mod:`.page`) and ``report.json`` (everything, for tools).
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .fingerprint import fingerprint_changes

__all__ = [
    "MARKER", "COMMENT_LIMIT", "SUMMARY_LIMIT", "Change", "Report", "GitError", "Git", "build_report",
    "image_metrics", "comment_markdown", "summary_markdown", "write_outputs",
]

MARKER = "<!-- nanobragg-drift-report -->"  # the posting workflow finds its one comment by this line
COMMENT_LIMIT = 60_000  # GitHub refuses comments over 65,536 characters
SUMMARY_LIMIT = 900 * 1024  # $GITHUB_STEP_SUMMARY takes 1 MiB per step
SNAPSHOT_RE = re.compile(r"(^|/)__snapshots__/.+\.txt$")
MANIFEST = "golden/manifest.json"
IMAGE_FILES = ("image.npz", "summary.npz")
REL_TOL = 1e-6  # a golden pixel "beyond tolerance": the float64 image rule (max_rel_err over pixels > 1e-3 max)
TABLE_ROWS = 25  # factors in the comment's table
DETAIL_ROWS = 10  # cases per factor in the comment's details
PAGE_CASES = 400  # cases on index.html


class GitError(RuntimeError):
    pass


class Git:
    """Read-only git access to one repository."""

    def __init__(self, repo: str | Path = "."):
        self.repo = Path(repo)

    def run(self, *args: str) -> str:
        proc = subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise GitError(proc.stderr.strip() or f"git {' '.join(args)} failed")
        return proc.stdout

    def rev(self, rev: str) -> str | None:
        try:
            return self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip() or None
        except GitError:
            return None

    def merge_base(self, a: str, b: str) -> str | None:
        try:
            return self.run("merge-base", a, b).strip() or None
        except GitError:
            return None

    def changed(self, base: str, head: str) -> dict[str, tuple[str, str | None, str | None]]:
        """path -> (status letter A/D/M/T, old blob sha, new blob sha) of every file that differs."""
        out = self.run("diff", "--raw", "--no-renames", "--abbrev=40", "-z", base, head).split("\0")
        found = {}
        for i in range(0, len(out) - 1, 2):
            _, _, old, new, status = out[i].lstrip(":").split()
            zero = set("0")
            found[out[i + 1]] = (status[0], None if set(old) == zero else old, None if set(new) == zero else new)
        return found

    def blobs(self, specs: Sequence[str]) -> dict[str, bytes | None]:
        """Contents of objects (blob shas, or ``rev:path``) in one ``git cat-file --batch`` (None: no such
        object). Blob shas are fast; ``rev:path`` walks the tree for each spec."""
        if not specs:
            return {}
        proc = subprocess.run(["git", "-C", str(self.repo), "cat-file", "--batch"],
                              input="".join(s + "\n" for s in specs).encode(), capture_output=True)
        if proc.returncode != 0:
            raise GitError(proc.stderr.decode().strip())
        data, pos, out = proc.stdout, 0, {}
        for spec in specs:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            pos = end + 1
            if len(header) < 3 or header[1] == b"missing":
                out[spec] = None
                continue
            size = int(header[2])
            out[spec] = data[pos : pos + size]
            pos += size + 1
        return out


@dataclass
class Change:
    """One changed snapshot or golden."""

    kind: str  # "snapshot" or "golden"
    case: str  # "variant/name"
    status: str  # "changed", "new", "deleted"
    factor: str  # first changed factor ("(new)", "(deleted)", "(no factor named)" ...)
    rel: float | None = None  # signed relative change of that factor
    path: str = ""  # the snapshot file, or the golden folder
    details: list[str] = field(default_factory=list)  # what else changed (factors, files, flags, build)
    metrics: dict[str, Any] = field(default_factory=dict)  # golden image metrics

    @property
    def size(self) -> float:
        """How large the change is, for ranking (unknown: 0; from or to zero: inf)."""
        if self.rel is not None and not math.isnan(self.rel):
            return abs(self.rel)
        return float(self.metrics.get("rel_l2", 0.0) or 0.0)


@dataclass
class Report:
    base: str  # as given
    head: str
    base_sha: str | None
    head_sha: str
    merge_base: str | None
    changes: list[Change] = field(default_factory=list)
    environment: dict[str, dict[str, str]] = field(default_factory=dict)  # "base"/"head" -> stamp
    run: dict[str, Any] = field(default_factory=dict)  # the test run's drift.json (failures, changes)
    notes: list[str] = field(default_factory=list)
    pictures: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)


# ---------------------------------------------------------------------------------------------------
# reading the changes


def _snapshot_case(path: str, text: str | None) -> str:
    if text:
        m = re.match(r"fingerprint v\d+: (\S+)", text)
        if m:
            return m.group(1)
    m = re.search(r"\[(\w+)-(.+)\]\.txt$", path)
    return f"{m.group(1)}/{m.group(2)}" if m else Path(path).stem


def snapshot_change(path: str, old: str | None, new: str | None) -> Change:
    """A snapshot file's change: its first changed factor and signed relative change."""
    case = _snapshot_case(path, new or old)
    if old is None:
        return Change("snapshot", case, "new", "(new)", None, path)
    if new is None:
        return Change("snapshot", case, "deleted", "(deleted)", None, path)
    found = fingerprint_changes(old, new)
    if not found:
        return Change("snapshot", case, "changed", "(layout only)", 0.0, path)
    first, rel = found[0]
    return Change("snapshot", case, "changed", first, rel, path,
                  details=[f"{n} {_fmt_rel(r)}" for n, r in found[1:6]] + (["..."] if len(found) > 6 else []))


def _npz(data: bytes | None) -> dict[str, np.ndarray] | None:
    if data is None:
        return None
    try:
        with np.load(io.BytesIO(data)) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError):
        return None


def _main_array(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    for key in ("image", "crops", "grid"):
        if key in arrays:
            return arrays[key]
    return None


def image_metrics(base: np.ndarray, head: np.ndarray, rel_tol: float = REL_TOL) -> dict[str, Any]:
    """How ``head`` differs from ``base``: max |d|, RMS, relative L2, pixels beyond the float64 image
    tolerance (|d| > rel_tol |base| over pixels above 1e-3 of the peak), NaN/Inf, shape/dtype changes."""
    out: dict[str, Any] = {}
    if base.dtype != head.dtype:
        out["dtype"] = f"{base.dtype} -> {head.dtype}"
    if base.shape != head.shape:
        out["shape"] = f"{tuple(base.shape)} -> {tuple(head.shape)}"
        return out
    a, b = base.astype(np.float64), head.astype(np.float64)
    for name, arr in (("base", a), ("head", b)):
        nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        if nan or inf:
            out[f"nan/inf {name}"] = f"{nan}/{inf}"
    ok = np.isfinite(a) & np.isfinite(b)
    d = (b - a)[ok]
    ref = a[ok]
    norm = float(np.sqrt(np.sum(ref * ref)))
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    bright = np.abs(ref) > 1e-3 * peak
    out.update(
        max_abs_diff=float(np.abs(d).max()) if d.size else 0.0,
        rms_diff=float(np.sqrt(np.mean(d * d))) if d.size else 0.0,
        rel_l2=float(np.sqrt(np.sum(d * d)) / norm) if norm > 0 else (math.inf if d.any() else 0.0),
        beyond_tol=int(np.count_nonzero(bright & (np.abs(d) > rel_tol * np.abs(ref)))),
        pixels=int(a.size),
    )
    return out


def _manifest(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return json.loads(data).get("entries", {})
    except (ValueError, AttributeError):
        return {}


def _entry_details(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    from .regen import _changed_tokens

    out = []
    files_a, files_b = old.get("files", {}), new.get("files", {})
    changed = sorted(f for f in set(files_a) | set(files_b) if files_a.get(f) != files_b.get(f))
    if changed:
        out.append("files: " + ", ".join(changed))
    for key in ("flags", "traced_pixels"):
        if old.get(key) != new.get(key):
            out.append(_changed_tokens(key, old.get(key), new.get(key)))
    for key in ("c_source_sha256",):  # the binary and its flags: the "C build" line
        if old.get(key) != new.get(key):
            a, b = str(old.get(key))[:16], str(new.get(key))[:16]
            out.append(f"{key}: {a} -> {b}")
    return out


def _build(entry: Mapping[str, Any]) -> str:
    return f"{entry.get('c_binary_env', 'C')} {str(entry.get('c_binary_sha256', '?'))[:12]}, {entry.get('cflags', '?')}"


def golden_changes(git: Git, base: str, head: str, diff: Mapping[str, tuple[str, str | None, str | None]],
                   pictures: dict[str, tuple[np.ndarray, np.ndarray]], max_pictures: int) -> list[Change]:
    """Changed manifest entries, with the printout factor and the image metrics of each."""
    from .regen import UNATTRIBUTED, printout_drift
    from .schema import order_index

    blobs = git.blobs([f"{base}:{MANIFEST}", f"{head}:{MANIFEST}"])
    old_m, new_m = _manifest(blobs[f"{base}:{MANIFEST}"]), _manifest(blobs[f"{head}:{MANIFEST}"])
    out: list[Change] = []
    keys = sorted(set(old_m) | set(new_m))
    changed = [k for k in keys if k in old_m and k in new_m and old_m[k] != new_m[k]]
    for k in keys:
        if k not in old_m:
            out.append(Change("golden", k, "new", "(new)", None, f"golden/{k}", [_build(new_m[k])]))
        elif k not in new_m:
            out.append(Change("golden", k, "deleted", "(deleted)", None, f"golden/{k}", [_build(old_m[k])]))
    # the files that changed in changed entries: printouts (for the factor) and images (for the metrics)
    wanted = [sha for path, (_, a, b) in diff.items() if path.startswith("golden/") and
              (Path(path).name.startswith("printout_") or Path(path).name in IMAGE_FILES) for sha in (a, b) if sha]
    got = git.blobs(wanted)

    def pair(k: str, name: str) -> tuple[bytes | None, bytes | None]:
        _, a, b = diff.get(f"golden/{k}/{name}", ("", None, None))
        return (got.get(a) if a else None), (got.get(b) if b else None)

    ranked: list[tuple[float, str, np.ndarray, np.ndarray]] = []
    for k in changed:
        old, new = old_m[k], new_m[k]
        fa, fb = old.get("files", {}), new.get("files", {})
        names = [n for n in fb if n in fa and fa[n] != fb[n]]
        found = []
        for n in names:
            if n.startswith("printout_"):
                a, b = pair(k, n)
                if a is not None and b is not None:
                    f = printout_drift(a, b)
                    if f is not None:
                        found.append(f)
        factor, rel = min(found, key=lambda f: order_index(f[0])) if found else (UNATTRIBUTED, None)
        details = _entry_details(old, new)
        if (old.get("c_binary_sha256"), old.get("cflags")) != (new.get("c_binary_sha256"), new.get("cflags")):
            details.append(f"C build: {_build(old)} -> {_build(new)}")
        else:
            details.append(f"C build: {_build(new)}")
        ch = Change("golden", k, "changed", factor, rel, f"golden/{k}", details)
        for n in names:
            if n in IMAGE_FILES:
                raw_a, raw_b = pair(k, n)
                a, b = _npz(raw_a), _npz(raw_b)
                if a is None or b is None:
                    ch.metrics["unreadable"] = n
                    continue
                missing = sorted(set(a) ^ set(b))
                if missing:
                    ch.metrics["arrays added/removed"] = ", ".join(missing)
                arr_a, arr_b = _main_array(a), _main_array(b)
                if arr_a is not None and arr_b is not None:
                    ch.metrics.update(image_metrics(arr_a, arr_b))
                    pic_a = arr_a if arr_a.ndim == 2 else a.get("grid", arr_a.reshape(-1, arr_a.shape[-1]))
                    pic_b = arr_b if arr_b.ndim == 2 else b.get("grid", arr_b.reshape(-1, arr_b.shape[-1]))
                    if pic_a.shape == pic_b.shape:
                        ranked.append((ch.metrics.get("rel_l2", 0.0), k, pic_a, pic_b))
        out.append(ch)
    ranked.sort(key=lambda t: -t[0] if math.isfinite(t[0]) else -math.inf)
    for _, k, a, b in ranked[:max_pictures]:
        pictures[k] = (np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out


def _drift_doc(directory: Path | None) -> dict[str, Any]:
    if directory is None:
        return {}
    path = Path(directory) / "drift.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no drift.json (a pytest --drift-report DIR writes one)")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def build_report(repo: str | Path, base: str, head: str = "HEAD", drift: Path | None = None,
                 base_drift: Path | None = None, max_pictures: int = 12) -> Report:
    """The report of ``head`` against its merge-base with ``base``. Raises GitError when ``head`` or
    ``base`` is not a revision; a missing merge-base (shallow clone, unrelated histories) is a note."""
    git = Git(repo)
    head_sha = git.rev(head)
    if head_sha is None:
        raise GitError(f"--head: {head!r} is not a revision in {repo}")
    base_sha = git.rev(base)
    if base_sha is None:
        raise GitError(f"--base: {base!r} is not a revision in {repo} (fetch it first, e.g. git fetch origin {base})")
    mb = git.merge_base(base_sha, head_sha)
    rep = Report(base, head, base_sha, head_sha, mb)
    doc, base_doc = _drift_doc(drift), _drift_doc(base_drift)
    rep.run = {k: doc.get(k, []) for k in ("failures", "changes")} if doc else {}
    for side, d in (("base", base_doc), ("head", doc)):
        if d.get("environment"):
            rep.environment[side] = d["environment"]
    if mb is None:
        rep.notes.append(f"No merge base between {base} and {head} (a shallow clone? fetch with full history).")
        return rep
    diff = git.changed(mb, head_sha)
    snaps = {p: v for p, v in diff.items() if SNAPSHOT_RE.search(p)}
    blobs = git.blobs([sha for _, a, b in snaps.values() for sha in (a, b) if sha])
    for p, (_, a, b) in snaps.items():
        old, new = (blobs.get(a) if a else None), (blobs.get(b) if b else None)
        rep.changes.append(snapshot_change(p, old.decode() if old is not None else None,
                                           new.decode() if new is not None else None))
    if MANIFEST in diff:
        rep.changes += golden_changes(git, mb, head_sha, diff, rep.pictures, max_pictures)
    return rep


# ---------------------------------------------------------------------------------------------------
# text


def _fmt_rel(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return "from/to 0" if math.isinf(x) else f"{x:+.2g}"


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _md(text: str) -> str:
    """Plain text for a Markdown table cell (case names and paths come from the pull request)."""
    return re.sub(r"([|<>`*_\[\]])", r"\\\1", str(text)).replace("\n", " ")


def _code(text: str) -> str:
    """Text for a Markdown code span."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def _groups(changes: Iterable[Change]) -> list[tuple[tuple[str, str], list[Change]]]:
    """(kind, factor) -> changes, worst first inside; groups by kind (snapshots first), then size."""
    groups: dict[tuple[str, str], list[Change]] = {}
    for c in changes:
        groups.setdefault((c.kind, c.factor), []).append(c)
    for members in groups.values():
        members.sort(key=lambda c: (-c.size, c.case))
    return sorted(groups.items(), key=lambda kv: (kv[0][0] != "snapshot", kv[0][1].startswith("("),
                                                   -len(kv[1]), kv[0][1]))


def _common_rel(members: list[Change]) -> str:
    rels = [_fmt_rel(c.rel) for c in members if c.rel is not None]
    if not rels:
        return "-"
    most = max(set(rels), key=rels.count)
    return most if rels.count(most) == len(rels) else f"{most} ({rels.count(most)} of {len(rels)})"


def _count(members: list[Change], status: str) -> int:
    return sum(1 for c in members if c.status == status)


def _table(groups, limit: int | None) -> list[str]:
    out = ["| what | first changed factor | changed | new | deleted | signed rel change | worst case |",
           "|---|---|---|---|---|---|---|"]
    for (kind, factor), members in groups[:limit]:
        worst = members[0]
        out.append(f"| {kind}s | {_code(factor)} | {_count(members, 'changed')} | {_count(members, 'new')} | "
                   f"{_count(members, 'deleted')} | {_common_rel(members)} | {_md(worst.case)} |")
    if limit is not None and len(groups) > limit:
        rest = groups[limit:]
        out.append(f"| ... | {len(rest)} more factors | {sum(len(m) for _, m in rest)} | | | | see summary.md |")
    return out


def _case_row(c: Change) -> str:
    m = c.metrics
    metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in m.items() if k != "pixels") if m else ""
    extra = "; ".join(c.details)
    return f"| {_md(c.case)} | {_fmt_rel(c.rel)} | {_md(metrics) or '-'} | {_md(extra) or '-'} |"


_CASE_HEAD = ["| case | signed rel change | image metrics | also changed |", "|---|---|---|---|"]


def _environment_lines(rep: Report) -> list[str]:
    from .stamp import STAMP_KEYS

    env = rep.environment
    if not env:
        return []
    if "base" not in env:
        head = env["head"]
        return ["Environment of the test run: " + ", ".join(f"{k} {head.get(k, '?')}" for k in STAMP_KEYS), ""]
    diff = [k for k in STAMP_KEYS if env["base"].get(k) != env.get("head", {}).get(k)]
    out = ["| environment | base | head |", "|---|---|---|"]
    out += [f"| {k} | {_md(env['base'].get(k, '?'))} | {_md(env.get('head', {}).get(k, '?'))} |" for k in STAMP_KEYS]
    if diff and (rep.changes or rep.run.get("failures")):
        out.insert(0, f"**Note:** this drift coincides with a change of {', '.join(diff)}: "
                      "check the versions before the code.\n")
    return out + [""]


def _run_lines(rep: Report, limit: int | None) -> list[str]:
    from .drift import DriftRecord, group_records

    out = []
    for key, title in (("failures", "failed golden tests"), ("changes", "snapshot updates")):
        recs = [DriftRecord(**{**d, "pixel": tuple(d["pixel"]) if d.get("pixel") else None})
                for d in rep.run.get(key, [])]
        if not recs:
            continue
        out += [f"**Test run: {len(recs)} {title}** in {len({r.case for r in recs})} cases", "",
                "| first divergent factor | cases | tests | max rel | example |", "|---|---|---|---|---|"]
        groups = group_records(recs)
        for f, g in groups[:limit]:
            rels = [abs(r.rel) for r in g if r.rel is not None and math.isfinite(r.rel)]
            ex = max(g, key=lambda r: abs(r.rel) if r.rel is not None and math.isfinite(r.rel) else -1.0)
            out.append(f"| {_code(f)} | {len({r.case for r in g})} | {len(g)} | "
                       f"{f'{max(rels):.2g}' if rels else '-'} | {_md(ex.case)} |")
        if limit is not None and len(groups) > limit:
            out.append(f"| ... {len(groups) - limit} more factors | | | | |")
        out.append("")
    return out


def _headline(rep: Report) -> str:
    mb = (rep.merge_base or "")[:10]
    if rep.merge_base is None:
        return f"**No base to compare with:** {rep.notes[0] if rep.notes else ''}"
    if not rep.changes:
        return f"**No snapshot or golden changed** against `{_md(rep.base)}` (merge base `{mb}`)."
    snaps = [c for c in rep.changes if c.kind == "snapshot"]
    golds = [c for c in rep.changes if c.kind == "golden"]
    parts = []
    for what, cs in (("snapshots", snaps), ("C goldens", golds)):
        if cs:
            counts = ", ".join(f"{n} {s}" for s in ("changed", "new", "deleted") if (n := _count(cs, s)))
            parts.append(f"{len(cs)} {what} ({counts})")
    return f"This branch changes {' and '.join(parts)} against `{_md(rep.base)}` (merge base `{mb}`)."


def _commands(rep: Report) -> list[str]:
    head, mb = rep.head_sha[:12], (rep.merge_base or rep.base_sha or rep.base)[:12]
    factors = sorted({c.factor for c in rep.changes if c.kind == "snapshot" and not c.factor.startswith("(")})
    accept = ",".join(factors[:3]) or "FACTOR"
    pending = any(d.get("kind") == "snapshot" for d in rep.run.get("failures", []))  # CI made a patch
    return [
        "<details><summary>Reproduce and accept</summary>", "",
        "Reproduce this report and the test run at this commit:", "",
        "```", f"git fetch origin && git checkout {head}",
        f"python tools/pr_report.py --base {mb} --out drift-pr      # this report, from git alone",
        "tox -e py -- tests/golden                                 # the golden tests, with the drift page",
        "```", "",
        *(["Accept what CI saw (the snapshot updates its run would make: `drift-report/snapshots.patch` in "
           "the artifact of this run):", "",
           "```", f"python tools/snapshot_patch.py apply drift-report/snapshots.patch   # checked against {head}",
           "```", "", "or re-run and accept by factor or case:", ""] if pending else
          ["Re-run and accept snapshot changes by factor or case:", ""]),
        "```", f"tox -e review -- --accept {accept}", "tox -e update-snapshots", "```", "",
        "</details>", "",
    ]


def comment_markdown(rep: Report, table_rows: int = TABLE_ROWS, detail_rows: int = DETAIL_ROWS,
                     link: str = "") -> str:
    """The PR comment: marker, headline, grouped table, collapsed details per factor (worst first, "+N
    more"), the test run's drift, the environment, commands. Shrinks until under COMMENT_LIMIT."""
    while True:
        text = _comment(rep, table_rows, detail_rows, link)
        if len(text) < COMMENT_LIMIT or (table_rows <= 1 and detail_rows <= 1):
            return text[: COMMENT_LIMIT - 1]
        table_rows, detail_rows = max(1, table_rows // 2), max(1, detail_rows // 2)


def _comment(rep: Report, table_rows: int, detail_rows: int, link: str) -> str:
    out = [MARKER, "## Drift report", "", _headline(rep), ""]
    groups = _groups(rep.changes)
    if groups:
        out += _table(groups, table_rows) + [""]
        for (kind, factor), members in groups[:table_rows]:
            out += [f"<details><summary>{kind}s at <code>{html.escape(factor)}</code>: {len(members)}, "
                    f"{_common_rel(members)}</summary>", "", *_CASE_HEAD]
            out += [_case_row(c) for c in members[:detail_rows]]
            if len(members) > detail_rows:
                out.append(f"| +{len(members) - detail_rows} more | | | |")
            out += ["", "</details>", ""]
    out += _run_lines(rep, table_rows)
    out += _environment_lines(rep)
    if link:
        out += [f"Full table, figures and the test run's drift page: {link}", ""]
    out += _commands(rep)
    return "\n".join(out)


def summary_markdown(rep: Report) -> str:
    """Every factor and every case (cut at SUMMARY_LIMIT bytes with a note; report.json has all)."""
    out = ["## Drift report", "", _headline(rep), ""]
    groups = _groups(rep.changes)
    if groups:
        out += _table(groups, None) + [""]
    out += _run_lines(rep, None)
    out += _environment_lines(rep)
    head = "\n".join(out) + "\n"
    rows, size, cut = [], len(head.encode()), 0
    for (kind, factor), members in groups:
        block = [f"### {kind}s at {_code(factor)}: {len(members)}", "", *_CASE_HEAD]
        block += [_case_row(c) for c in members] + [""]
        text = "\n".join(block) + "\n"
        if size + len(text.encode()) > SUMMARY_LIMIT - 200:
            cut += len(members)
            continue
        rows.append(text)
        size += len(text.encode())
    tail = f"\n{cut} cases left out to stay under the step summary limit: see report.json.\n" if cut else ""
    return head + "".join(rows) + tail


def page_html(rep: Report, run_page: str = "") -> str:
    from .page import PageCase, render_page

    cases = []
    for (kind, factor), members in _groups(rep.changes):
        for c in members:
            pic = rep.pictures.get(c.case) if kind == "golden" else None
            cases.append(PageCase(
                case=f"{kind}: {c.case}", factor=f"{kind}s: {factor}",
                title=f"{c.status}, {factor} {_fmt_rel(c.rel)}", note="; ".join(c.details),
                ref=pic[0] if pic else None, ours=pic[1] if pic else None, ref_label="base",
                ours_label="head", caption=f"{c.case}: base | head | head - base",
                metrics=c.metrics,
            ))
    shown = cases[:PAGE_CASES]
    text = "\n".join([_headline(rep), "", *(_table(_groups(rep.changes), None) if rep.changes else []), "",
                      *_run_lines(rep, None), *_environment_lines(rep)])
    if len(cases) > len(shown):
        text += f"\n\nThe {len(shown)} largest of {len(cases)} changes are listed below (all in summary.md)."
    footer = f"The test run's own drift page (C golden | ours per failed case): [{run_page}]({run_page})" \
        if run_page else ""
    return render_page("Drift report of a pull request", text, shown, footer_md=footer)


def write_outputs(rep: Report, out: Path, link: str = "", run_page: str = "") -> dict[str, int]:
    """comment.md, summary.md, index.html and report.json in ``out``; returns their sizes."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "comment.md": comment_markdown(rep, link=link),
        "summary.md": summary_markdown(rep),
        "index.html": page_html(rep, run_page),
    }
    doc = {f.name: getattr(rep, f.name) for f in fields(rep) if f.name not in ("changes", "pictures")}
    doc["changes"] = [asdict(c) for c in rep.changes]
    files["report.json"] = json.dumps(doc, indent=1, default=str) + "\n"
    for name, text in files.items():
        (out / name).write_text(text)
    return {name: len(text.encode()) for name, text in files.items()}
