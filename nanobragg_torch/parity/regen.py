"""Render goldens by running a C binary, and write / check them (the engine of tools/regen_goldens.py).

Each case+variant is rendered in a fresh scratch directory holding ``inputs/`` (a copy of golden/inputs)
and ``shared`` (a link to the shared data), so the argv and the C stdout never contain machine paths:

1. one plain run: float image, kept outputs, stdout;
2. the trace specs are resolved on that image ("max", "max2");
3. one full-image run per traced pixel with ``-printout_pixel F S`` put FIRST in argv (so a quirk that
   depends on the last argument, like ``-curved_det``, is untouched) and no ``-roi`` (the pinned C's
   phi = 0 quirk depends on the previous pixel); each run's image must equal the plain run's image.

The binary path comes only from the environment (NB_C_BIN / NB_C_FIXED_BIN); the C source path
(NB_C_SRC / NB_C_FIXED_SRC) is used only to record its sha256, NB_C_CFLAGS is recorded as given.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cstdout import normalize_stdout, parse_stdout
from .goldens import (
    MAX2_EXCLUSION,
    OUTPUT_FILES,
    PINNED_C_SHA256,
    Case,
    GoldenIntegrityError,
    entry_key,
    golden_dir,
    image_stats,
    load_manifest,
    npz_bytes,
    sha256_bytes,
    sha256_file,
    shared_data_dir,
    summarize_full,
    verify_entry_files,
)
from .printout import parse_printout
from .schema import order_index

__all__ = [
    "BIN_ENV",
    "SRC_ENV",
    "Rendered",
    "RenderError",
    "Provenance",
    "render_case",
    "resolve_trace",
    "diff_rendered",
    "regenerate",
]

BIN_ENV = {"pinned": "NB_C_BIN", "fixed": "NB_C_FIXED_BIN"}
UNATTRIBUTED = "(no factor named)"
SRC_ENV = {"pinned": "NB_C_SRC", "fixed": "NB_C_FIXED_SRC"}
CFLAGS_ENV = "NB_C_CFLAGS"


class RenderError(RuntimeError):
    """The C binary failed or produced something unexpected for a case."""


@dataclass(frozen=True)
class Provenance:
    """What made a golden: binary (from env), its source's sha256, compiler flags as given."""

    variant: str
    binary: str
    binary_sha256: str
    source_sha256: str | None
    cflags: str | None

    @classmethod
    def from_env(cls, variant: str, require_source: bool = True) -> Provenance:
        binary = os.environ.get(BIN_ENV[variant])
        if not binary:
            raise RenderError(f"set {BIN_ENV[variant]} to the {variant} C binary")
        if not Path(binary).is_file():
            raise RenderError(f"{BIN_ENV[variant]}={binary} is not a file")
        src = os.environ.get(SRC_ENV[variant])
        if not src and require_source:
            raise RenderError(
                f"set {SRC_ENV[variant]} to the C source the {variant} binary was built from "
                "(only its sha256 is recorded)"
            )
        return cls(
            variant=variant,
            binary=str(binary),
            binary_sha256=sha256_file(binary),
            source_sha256=sha256_file(src) if src else None,
            cflags=os.environ.get(CFLAGS_ENV),
        )


@dataclass
class Rendered:
    """One case+variant rendered: golden files (name -> bytes) and the manifest entry describing them."""

    case: Case
    variant: str
    files: dict[str, bytes]
    entry: dict[str, Any]
    image: np.ndarray
    warnings: list[str] = field(default_factory=list)


def _run(binary: str, argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    dump = cwd / "Fdump.bin"  # the C silently reads ./Fdump.bin when -hkl is absent: never leave one
    if dump.exists():
        dump.unlink()
    try:
        proc = subprocess.run([binary, *argv], cwd=cwd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"C run timed out after {timeout:g} s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        tail = proc.stdout.decode(errors="replace")[-600:]
        raise RenderError(f"C exited with {proc.returncode} for {' '.join(argv)}\n{tail}")
    return proc


def _read_float(path: Path, shape: tuple[int, int]) -> np.ndarray:
    data = np.fromfile(path, dtype="<f4")
    if data.size != shape[0] * shape[1]:
        raise RenderError(f"{path.name}: {data.size} floats, expected {shape[0]} x {shape[1]}")
    return data.reshape(shape)


def resolve_trace(case: Case, image: np.ndarray) -> list[tuple[int, int]]:
    """Resolve the case's trace specs on ``image`` into distinct (slow, fast) pixels, in spec order."""
    out: list[tuple[int, int]] = []
    amax = np.unravel_index(int(np.argmax(image)), image.shape)
    for spec in case.trace:
        if spec == "max":
            p = (int(amax[0]), int(amax[1]))
        elif spec == "max2":
            masked = np.array(image, dtype=np.float64, copy=True)
            s0, f0, r = int(amax[0]), int(amax[1]), MAX2_EXCLUSION
            masked[max(s0 - r, 0) : s0 + r + 1, max(f0 - r, 0) : f0 + r + 1] = -np.inf
            m2 = np.unravel_index(int(np.argmax(masked)), image.shape)
            p = (int(m2[0]), int(m2[1]))
        else:
            p = (int(spec[0]), int(spec[1]))
            if not (0 <= p[0] < image.shape[0] and 0 <= p[1] < image.shape[1]):
                raise RenderError(f"{case.name}: traced pixel {p} outside image {image.shape}")
        if p not in out:
            out.append(p)
    return out


def _extract_block(stdout: str, pixel: tuple[int, int]) -> str:
    lines = stdout.splitlines()
    tag = f"{pixel[1]:4d} {pixel[0]:4d} : stol = "
    for i, line in enumerate(lines):
        if tag in line:
            start = line.index(tag)
            block = [line[start:]]
            for nxt in lines[i + 1 :]:
                block.append(nxt)
                if nxt.startswith("Z:"):
                    break
            return "\n".join(block) + "\n"
    raise RenderError(f"no -printout_pixel block for (slow, fast) = {pixel} in the C stdout")


def _prepare_scratch(case: Case, scratch: Path, root: Path, shared: Path) -> None:
    inputs = root / "inputs"
    if case.input_files():
        shutil.copytree(inputs, scratch / "inputs")
        for name in case.input_files():
            if not (scratch / "inputs" / name).is_file():
                raise RenderError(f"{case.name}: input {name} missing from {inputs}")
    if case.shared_files():
        for rel in case.shared_files():
            if not (shared / rel).is_file():
                raise RenderError(f"{case.name}: shared input {shared / rel} missing (set NB_SHARED_DATA)")
        (scratch / "shared").symlink_to(shared.resolve(), target_is_directory=True)


def render_case(
    case: Case,
    variant: str,
    prov: Provenance,
    *,
    root: Path | None = None,
    shared: Path | None = None,
    timeout: float = 900.0,
) -> Rendered:
    """Run the binary for ``case`` and build its golden files and manifest entry (nothing is written)."""
    root = Path(root) if root is not None else golden_dir()
    shared = Path(shared) if shared is not None else shared_data_dir()
    argv = case.argv(inputs="inputs", shared="shared")
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"nbgold_{case.name}_") as tmp:
        scratch = Path(tmp)
        _prepare_scratch(case, scratch, root, shared)
        proc = _run(prov.binary, argv, scratch, timeout)
        stdout = normalize_stdout(proc.stdout.decode())
        parsed = parse_stdout(stdout)
        if "pixels" not in parsed:
            raise RenderError(f"{case.name}: could not find the detector size in the C stdout")
        shape = (parsed["pixels"][1], parsed["pixels"][0])
        image = _read_float(scratch / case.output_name("float"), shape)
        kept = {}
        for kind in case.outputs:
            src = scratch / case.output_name(kind)
            if not src.is_file():
                raise RenderError(f"{case.name}: the C did not write its {kind} output {src.name}")
            kept[OUTPUT_FILES[kind][2]] = src.read_bytes()
        traced = resolve_trace(case, image)
        printouts: dict[str, bytes] = {}
        for s, f in traced:
            p = _run(prov.binary, ["-printout_pixel", str(f), str(s), *argv], scratch, timeout)
            block = _extract_block(p.stdout.decode(), (s, f))
            parsed_block = parse_printout(block)
            if len(parsed_block) != 1 or len(parsed_block[0].values) < 13:
                raise RenderError(f"{case.name}: unparseable printout block for {(s, f)}:\n{block}")
            printouts[f"printout_s{s}_f{f}.txt"] = block.encode()
            again = _read_float(scratch / case.output_name("float"), shape)
            if not np.array_equal(again, image, equal_nan=True):
                warnings.append(f"printout run for {(s, f)} gave a different image than the plain run")
    if proc.stderr:
        warnings.append("C wrote to stderr: " + proc.stderr.decode(errors="replace").strip()[:300])

    files: dict[str, bytes] = {}
    entry: dict[str, Any] = {
        "case": case.name,
        "variant": variant,
        "flags": list(case.flags),
        "argv": argv,
        "trace_spec": [s if isinstance(s, str) else list(s) for s in case.trace],
        "traced_pixels": [list(p) for p in traced],
        "shape": list(shape),
        "size": case.size,
        "outputs": ["float", *case.outputs],
    }
    if case.full:
        summary = summarize_full(image, traced, crop=case.crop, block=case.block)
        files["summary.npz"] = npz_bytes(summary.to_arrays())
        entry["storage"] = f"crops {case.crop}x{case.crop} + {case.block}-pixel block grid + stats"
        entry["crop_labels"] = summary.labels
    else:
        files["image.npz"] = npz_bytes({"image": image})
        entry["storage"] = "full float32 image"
    entry["image_stats"] = image_stats(image)
    files["stdout.txt"] = stdout.encode()
    if proc.stderr:
        files["stderr.txt"] = proc.stderr
    files.update(printouts)
    files.update(kept)
    entry["files"] = {name: sha256_bytes(data) for name, data in sorted(files.items())}
    entry["inputs"] = {
        f"inputs/{n}": sha256_file(root / "inputs" / n) for n in sorted(set(case.input_files()))
    }
    entry["shared_inputs"] = {n: sha256_file(shared / n) for n in sorted(set(case.shared_files()))}
    entry["c_source_sha256"] = prov.source_sha256
    entry["c_binary_sha256"] = prov.binary_sha256
    entry["c_binary_env"] = BIN_ENV[variant]
    entry["cflags"] = prov.cflags
    entry["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d")
    if warnings:
        entry["warnings"] = warnings
    return Rendered(case=case, variant=variant, files=files, entry=entry, image=image, warnings=warnings)


_CONTENT_KEYS = ("flags", "traced_pixels", "shape", "outputs")


def _npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


def _changed_tokens(key: str, old: Any, new: Any) -> str:
    """``key: old -> new`` for the changed items of two lists only (a flag list: the tokens that changed)."""
    if not (isinstance(old, list) and isinstance(new, list)):
        return f"{key}: {old} -> {new}"
    a, b = [json.dumps(x) for x in old], [json.dumps(x) for x in new]  # hashable (traced pixels are lists)
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        was = " ".join(str(x) for x in old[i1:i2]) or "(nothing)"
        now = " ".join(str(x) for x in new[j1:j2]) or "(nothing)"
        parts.append(f"[{i1}] {was} -> {now}")
    return f"{key}: " + "; ".join(parts)


def printout_drift(old: bytes, new: bytes) -> tuple[str, float] | None:
    """(first divergent factor, its signed relative change) between two printout blocks of one pixel."""
    from .compare import compare_traces

    a, b = parse_printout(old.decode()), parse_printout(new.decode())
    if len(a) != 1 or len(b) != 1:
        return ("(printout layout)", math.inf)
    report = compare_traces(a[0], b[0])
    if report.ok:
        return None
    first = report.first
    ref, ours = first.ref, first.ours
    if isinstance(ref, tuple) or isinstance(ours, tuple) or ref == 0:
        return first.name, first.rel_diff
    return first.name, (float(ours) - float(ref)) / abs(float(ref))


def drift_of(new: Rendered, old_entry: dict[str, Any] | None, directory: Path) -> tuple[str, float] | None:
    """The first divergent factor of a changed golden (from its printout blocks), or None."""
    if old_entry is None:
        return None
    try:
        old_files = verify_entry_files(old_entry, directory)
    except GoldenIntegrityError:
        return None
    found = [
        printout_drift(old_files[name], new.files[name])
        for name in sorted(new.files)
        if name.startswith("printout_") and name in old_files and old_files[name] != new.files[name]
    ]
    found = [f for f in found if f is not None]
    return min(found, key=lambda f: order_index(f[0])) if found else None


def diff_rendered(new: Rendered, old_entry: dict[str, Any] | None, directory: Path) -> list[str]:
    """How a fresh rendering differs from the committed golden (empty list: it reproduces it).

    Files are compared by content: .npz by array values, everything else byte for byte.
    """
    if old_entry is None:
        return ["no committed golden"]
    diffs = [
        _changed_tokens(k, old_entry.get(k), new.entry.get(k))
        for k in _CONTENT_KEYS
        if old_entry.get(k) != new.entry.get(k)
    ]
    try:
        old_files = verify_entry_files(old_entry, directory)
    except GoldenIntegrityError as exc:
        return diffs + [str(exc)]
    for name in sorted(set(old_files) | set(new.files)):
        if name not in new.files:
            diffs.append(f"{name}: no longer produced")
        elif name not in old_files:
            diffs.append(f"{name}: new file")
        elif name.endswith(".npz"):
            a, b = _npz_arrays(old_files[name]), _npz_arrays(new.files[name])
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b or a[key].shape != b[key].shape:
                    diffs.append(f"{name}[{key}]: shape/keys differ")
                elif not np.array_equal(a[key], b[key], equal_nan=True):
                    d = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))
                    diffs.append(
                        f"{name}[{key}]: {int(np.count_nonzero(d))} values differ, max abs {d.max():.4g}"
                    )
        elif old_files[name] != new.files[name]:
            diffs.append(f"{name}: content differs")
    return diffs


def _write(new: Rendered, directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, data in new.files.items():
        (directory / name).write_bytes(data)
    from .previews import write_preview

    write_preview(directory.parent.parent, directory.parent.name, directory.name)  # the PNG GitHub shows


def _dumps(obj: Any, indent: int = 0) -> str:
    """JSON with one key per line but short lists of scalars kept on one line (readable diffs)."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        if all(isinstance(v, list) and not any(isinstance(x, dict | list) for x in v) for v in obj):
            return "[" + ", ".join(json.dumps(v) for v in obj) + "]"
        return "[\n" + ",\n".join(pad + _dumps(v, indent + 1) for v in obj) + "\n" + " " * indent + "]"
    return json.dumps(obj)


def _save_manifest(manifest: dict[str, Any], root: Path) -> None:
    manifest["entries"] = dict(sorted(manifest["entries"].items()))
    tmp = root / "manifest.json.tmp"
    tmp.write_text(_dumps(manifest) + "\n")
    tmp.replace(root / "manifest.json")


def regenerate(
    cases: Iterable[Case],
    variants: Iterable[str] | None = None,
    *,
    update: bool = False,
    check: bool = False,
    root: Path | None = None,
    shared: Path | None = None,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, list[str]]:
    """Render every case (x variant) and write new goldens, or only compare (``check``).

    A golden that exists and differs in content is rewritten only with ``update``; an identical one is
    left untouched (its manifest entry and date too). Returns status -> list of "variant/case" with
    status in new, updated, unchanged, changed (differs, not written), missing (check: no golden), error;
    and under "drift" the changed goldens as "variant/case factor rel" (first divergent factor of their
    printout blocks). Without NB_C_CFLAGS an existing entry keeps its recorded compiler flags; a golden
    folder that has no manifest entry is replaced only with ``update``.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = Path(root) if root is not None else golden_dir()
    manifest = load_manifest(root)
    manifest.setdefault("format", 1)
    manifest.setdefault("entries", {})
    wanted = set(variants) if variants is not None else None
    jobs_list = [(c, v) for c in cases for v in c.variants if wanted is None or v in wanted]
    provs: dict[str, Provenance] = {}
    for v in sorted({v for _, v in jobs_list}):
        provs[v] = Provenance.from_env(v, require_source=not check)
        if v == "pinned" and provs[v].source_sha256 not in (None, PINNED_C_SHA256):
            log(
                f"WARNING: {SRC_ENV[v]} sha256 {provs[v].source_sha256} is not the pinned source "
                f"{PINNED_C_SHA256}"
            )
    status: dict[str, list[str]] = {
        k: [] for k in ("new", "updated", "unchanged", "changed", "missing", "error")
    }
    drifts: dict[str, tuple[str, float]] = {}  # changed goldens: variant/case -> (first divergent factor, rel)

    def work(item):
        case, variant = item
        try:
            return item, render_case(case, variant, provs[variant], root=root, shared=shared), None
        except (RenderError, OSError) as exc:
            return item, None, exc

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for (case, variant), new, err in pool.map(work, jobs_list):
            key = entry_key(case.name, variant)
            if err is not None:
                status["error"].append(key)
                log(f"ERROR     {key}: {err}")
                continue
            for w in new.warnings:
                log(f"WARNING   {key}: {w}")
            old = manifest["entries"].get(key)
            directory = root / variant / case.name
            if old is not None and new.entry.get("cflags") is None and old.get("cflags") is not None:
                new.entry["cflags"] = old["cflags"]  # NB_C_CFLAGS unset: keep the recorded compiler flags
            diffs = diff_rendered(new, old, directory) if old is not None else None
            if diffs:
                found = drift_of(new, old, directory)
                drifts[key] = found if found is not None else (UNATTRIBUTED, math.nan)
            if old is not None and not diffs:
                status["unchanged"].append(key)
                log(f"ok        {key}")
                continue
            if check:
                status["changed" if old is not None else "missing"].append(key)
                log(f"DIFFERS   {key}: " + ("; ".join(diffs) if diffs else "no committed golden"))
                continue
            if old is not None and not update:
                status["changed"].append(key)
                log(f"CHANGED   {key} (not written; rerun with --update to accept): " + "; ".join(diffs))
                continue
            if old is None and directory.exists() and not update:
                status["changed"].append(key)
                log(f"REFUSED   {key}: {directory} exists without a manifest entry; --update replaces it")
                continue
            _write(new, directory)
            manifest["entries"][key] = new.entry
            _save_manifest(manifest, root)
            status["updated" if old is not None else "new"].append(key)
            log(
                f"{'updated' if old is not None else 'new':<9s} {key}"
                + (": " + "; ".join(diffs) if old else "")
            )
    status["drift"] = [f"{k} {f} {r!r}" for k, (f, r) in sorted(drifts.items())]
    return status


def orphans(cases: Iterable[Case], root: Path | None = None) -> list[str]:
    """Manifest entries and golden directories that no case (x variant) accounts for."""
    root = Path(root) if root is not None else golden_dir()
    known = {entry_key(c.name, v) for c in cases for v in c.variants}
    found = set(load_manifest(root).get("entries", {}))
    for v in ("pinned", "fixed"):
        if (root / v).is_dir():
            found |= {entry_key(d.name, v) for d in (root / v).iterdir() if d.is_dir()}
    return sorted(found - known)
