"""The golden suite: case definitions (``golden/cases.toml``) and verified access to the C outputs.

Layout of ``golden/``::

    cases.toml                     the case matrix (hand-edited; see docs/golden.md)
    manifest.json                  provenance + sha256 of every golden file, keyed "<variant>/<case>"
    inputs/                        small inputs written by our own code (tools/golden_inputs.py)
    <variant>/<case>/image.npz     float image (small cases), key "image", float32 (slow, fast)
    <variant>/<case>/summary.npz   full-size cases: crops, crop origins, block-sum grid (float64)
    <variant>/<case>/stdout.txt    C stdout (heap pointers normalised, see cstdout.normalize_stdout)
    <variant>/<case>/printout_s<S>_f<F>.txt   the C -printout_pixel block of each traced pixel
    <variant>/<case>/int.img | noise.img | image.pgm   kept C outputs, byte for byte

``variant`` is "pinned" (upstream 455534a) or "fixed" (pinned + upstream's fix branches).
:func:`load_golden` checks every file against the manifest sha256 before returning anything.
Goldens are written only by ``tools/regen_goldens.py`` (:mod:`nanobragg_torch.parity.regen`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .compare import ImageTolerance, block_sums, check_image, image_metrics
from .cstdout import parse_stdout, stdout_trace
from .printout import Trace, parse_printout

__all__ = [
    "PINNED_C_SHA256",
    "VARIANTS",
    "Case",
    "Golden",
    "FullSummary",
    "GoldenIntegrityError",
    "repo_root",
    "golden_dir",
    "shared_data_dir",
    "load_cases",
    "get_case",
    "load_manifest",
    "load_golden",
    "has_golden",
    "sha256_bytes",
    "sha256_file",
    "npz_bytes",
    "summarize_full",
    "image_stats",
]

PINNED_C_SHA256 = "ff65983e2e527f171c08142c9e34e0558d43c0c5579e4e73f2757796520a3343"
VARIANTS = ("pinned", "fixed")
OUTPUT_KINDS = ("float", "int", "noise", "pgm")
# output kind -> (C flags that name it, C default file name, name kept in the golden)
OUTPUT_FILES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "float": (("-floatfile", "-floatimage"), "floatimage.bin", ""),
    "int": (("-intfile", "-intimage"), "intimage.img", "int.img"),
    "noise": (("-noisefile", "-noiseimage"), "noiseimage.img", "noise.img"),
    "pgm": (("-pgmfile", "-pgmimage"), "image.pgm", "image.pgm"),
}
TRACE_KEYWORDS = ("max", "max2")
MAX2_EXCLUSION = 8  # "max2": brightest pixel more than this many pixels (Chebyshev) from "max"


class GoldenIntegrityError(RuntimeError):
    """A golden file is missing, or its content does not match the manifest sha256."""


REPO_ROOT_ENV = "NB_REPO_ROOT"


def _is_checkout(path: Path) -> bool:
    return (path / "golden" / "cases.toml").is_file() and (path / "pyproject.toml").is_file()


def repo_root() -> Path:
    """The checkout that holds golden/, tools/ and tests/: ``$NB_REPO_ROOT`` (tox passes {toxinidir}), else
    the source tree of an editable install, else the nearest checkout above the working directory. Never
    site-packages: a non-editable install (tox) has no golden/ beside the package."""
    env = os.environ.get(REPO_ROOT_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]
    if _is_checkout(here):
        return here
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if _is_checkout(d):
            return d
    raise FileNotFoundError(
        f"no nanobragg-torch checkout found (golden/cases.toml beside pyproject.toml) above {cwd}; "
        f"set {REPO_ROOT_ENV} to the checkout"
    )


def golden_dir() -> Path:
    """``$NB_GOLDEN_DIR`` or ``<repo>/golden``."""
    env = os.environ.get("NB_GOLDEN_DIR")
    return Path(env) if env else repo_root() / "golden"


def shared_data_dir() -> Path:
    """``$NB_SHARED_DATA`` or ``<repo>/../shared/data`` (reference inputs; never copied into the repo)."""
    env = os.environ.get("NB_SHARED_DATA")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A compressed .npz with fixed zip timestamps, so equal arrays give equal bytes (and sha256)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            arr = io.BytesIO()
            a = np.asarray(arrays[name])
            np.lib.format.write_array(
                arr, a if a.flags.c_contiguous else a.copy(order="C"), allow_pickle=False
            )
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, arr.getvalue())
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# cases

TraceSpec = tuple[int, int] | str


@dataclass(frozen=True)
class Case:
    """One golden case.

    flags: C argv tokens (without the program name). ``{inputs}/x`` names golden/inputs/x and
        ``{shared}/x`` names a file of the shared reference data; :meth:`argv` substitutes them.
    trace: pixels to trace, each (slow, fast) or "max" (brightest pixel) or "max2" (brightest pixel more
        than 8 pixels from "max"); resolved once by the regen tool (see Golden.traced_pixels).
    variants: which C builds make goldens for it ("pinned", "fixed").
    outputs: kinds kept besides the float image: "int", "noise", "pgm".
    size: "small" (whole float image kept) or "full" (crops + block grid + statistics kept).
    tolerance: per dtype ("float64", "float32") :class:`ImageTolerance`.
    """

    name: str
    flags: tuple[str, ...]
    trace: tuple[TraceSpec, ...]
    variants: tuple[str, ...]
    outputs: tuple[str, ...]
    tags: tuple[str, ...]
    size: str
    tolerance: Mapping[str, ImageTolerance]
    description: str = ""
    crop: int = 64
    block: int = 32

    @property
    def full(self) -> bool:
        return self.size == "full"

    def argv(self, inputs: str | Path | None = None, shared: str | Path | None = None) -> list[str]:
        """Flags with ``{inputs}``/``{shared}`` replaced (defaults: golden/inputs and the shared data dir)."""
        inp = str(inputs if inputs is not None else golden_dir() / "inputs")
        shr = str(shared if shared is not None else shared_data_dir())
        return [t.replace("{inputs}", inp).replace("{shared}", shr) for t in self.flags]

    def input_files(self) -> list[str]:
        """Names of golden/inputs files the flags use."""
        return [t.split("{inputs}/", 1)[1] for t in self.flags if "{inputs}/" in t]

    def shared_files(self) -> list[str]:
        """Paths, relative to the shared data dir, of the shared files the flags use."""
        return [t.split("{shared}/", 1)[1] for t in self.flags if "{shared}/" in t]

    def output_name(self, kind: str) -> str:
        """File name the C writes for output ``kind`` (last naming flag wins, as in the C's option loop)."""
        flags, default, _ = OUTPUT_FILES[kind]
        name = default
        for i, tok in enumerate(self.flags[:-1]):
            if tok.startswith("-") and any(f in tok for f in flags):
                name = self.flags[i + 1]
        return name

    def tolerance_for(self, dtype: str) -> ImageTolerance:
        return self.tolerance[dtype]


_DEFAULT_TOL = {
    "float64": ImageTolerance(corr_min=0.9999999, sum_ratio_tol=1e-7, max_rel_err=1e-6, significant=1e-3),
    "float32": ImageTolerance(corr_min=0.9999, sum_ratio_tol=1e-3, max_rel_err=None, significant=1e-3),
}
_CASE_KEYS = {
    "name",
    "flags",
    "trace",
    "variants",
    "outputs",
    "tags",
    "size",
    "tolerance",
    "description",
    "crop",
    "block",
}


def _parse_trace(spec: Any, where: str) -> TraceSpec:
    if isinstance(spec, str):
        if spec not in TRACE_KEYWORDS:
            raise ValueError(f"{where}: trace keyword {spec!r} not in {TRACE_KEYWORDS}")
        return spec
    if isinstance(spec, list | tuple) and len(spec) == 2 and all(isinstance(v, int) for v in spec):
        return (int(spec[0]), int(spec[1]))
    raise ValueError(f"{where}: trace entry {spec!r} must be [slow, fast] or one of {TRACE_KEYWORDS}")


def load_cases(path: str | Path | None = None) -> list[Case]:
    """All cases of ``cases.toml`` (default golden/cases.toml), with ``[defaults]`` applied."""
    path = Path(path) if path is not None else golden_dir() / "cases.toml"
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    defaults = doc.get("defaults", {})
    dtol = defaults.get("tolerance", {})
    base_tol = {k: ImageTolerance.from_dict(dtol.get(k, {}), v) for k, v in _DEFAULT_TOL.items()}
    cases: list[Case] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc.get("case", [])):
        where = f"{path.name} case #{i + 1} ({raw.get('name', '?')})"
        unknown = set(raw) - _CASE_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        name = raw["name"]
        if name in seen:
            raise ValueError(f"{where}: duplicate case name")
        seen.add(name)
        merged = {**{k: v for k, v in defaults.items() if k != "tolerance"}, **raw}
        tol_over = raw.get("tolerance", {})
        tol = {k: ImageTolerance.from_dict(tol_over.get(k, {}), v) for k, v in base_tol.items()}
        variants = tuple(merged.get("variants", ["pinned"]))
        outputs = tuple(merged.get("outputs", []))
        bad = [v for v in variants if v not in VARIANTS] + [o for o in outputs if o not in OUTPUT_KINDS]
        if bad:
            raise ValueError(f"{where}: unknown variant/output {bad}")
        flags = tuple(str(t) for t in merged["flags"])
        if "-noprogress" not in flags:
            raise ValueError(f"{where}: flags must include -noprogress")
        cases.append(
            Case(
                name=name,
                flags=flags,
                trace=tuple(_parse_trace(t, where) for t in merged.get("trace", ["max"])),
                variants=variants,
                outputs=tuple(o for o in outputs if o != "float"),
                tags=tuple(merged.get("tags", [])),
                size=merged.get("size", "small"),
                tolerance=tol,
                description=merged.get("description", ""),
                crop=int(merged.get("crop", 64)),
                block=int(merged.get("block", 32)),
            )
        )
    return cases


def get_case(name: str, path: str | Path | None = None) -> Case:
    for c in load_cases(path):
        if c.name == name:
            return c
    raise KeyError(f"no golden case named {name!r}")


# ---------------------------------------------------------------------------------------------------
# image summaries (full-size cases)


def image_stats(image: np.ndarray) -> dict[str, Any]:
    """Global float64 statistics: sum, max, argmax (slow, fast), min, mean, nonzero, percentiles."""
    a = np.asarray(image, dtype=np.float64)
    flat = a.ravel()
    am = np.unravel_index(int(np.argmax(flat)), a.shape)
    p = np.percentile(flat, [50, 90, 99, 99.9])
    return {
        "shape": [int(s) for s in a.shape],
        "sum": float(flat.sum()),
        "max": float(flat.max()),
        "argmax": [int(am[0]), int(am[1])],
        "min": float(flat.min()),
        "mean": float(flat.mean()),
        "nonzero": int(np.count_nonzero(flat)),
        "p50": float(p[0]),
        "p90": float(p[1]),
        "p99": float(p[2]),
        "p99.9": float(p[3]),
    }


def _crop_origin(center: Sequence[int], shape: Sequence[int], size: int) -> tuple[int, int]:
    return tuple(
        int(min(max(c - size // 2, 0), max(n - size, 0))) for c, n in zip(center, shape, strict=True)
    )


def brightest_spots(image: np.ndarray, count: int, separation: int) -> list[tuple[int, int]]:
    """Up to ``count`` local brightest pixels, pairwise more than ``separation`` apart (Chebyshev)."""
    flat = image.ravel()
    k = min(flat.size, max(4096, 400 * count))
    idx = np.argpartition(flat, -k)[-k:]
    idx = idx[np.argsort(-flat[idx], kind="stable")]
    picked: list[tuple[int, int]] = []
    for i in idx:
        if flat[i] <= 0:
            break
        s, f = divmod(int(i), image.shape[1])
        if all(max(abs(s - ps), abs(f - pf)) > separation for ps, pf in picked):
            picked.append((s, f))
            if len(picked) == count:
                break
    return picked


@dataclass
class FullSummary:
    """What a full-size golden keeps: full-resolution crops, a block-sum grid of the whole image, stats.

    crops: (n, crop, crop) float32; origins: (n, 2) (slow, fast) of each crop's first pixel;
    labels: why each crop exists ("trace S F" or "spot K"); grid: float64 sums over block x block tiles.
    """

    shape: tuple[int, int]
    block: int
    grid: np.ndarray
    crops: np.ndarray
    origins: np.ndarray
    labels: list[str]
    stats: dict[str, Any] = field(default_factory=dict)

    def crops_of(self, image: Any) -> np.ndarray:
        """The same windows cut from another image of the same shape."""
        a = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
        n = self.crops.shape[1]
        return np.stack([a[s : s + n, f : f + n] for s, f in self.origins])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "grid": self.grid,
            "crops": self.crops,
            "origins": self.origins,
            "shape": np.asarray(self.shape, dtype=np.int64),
            "block": np.asarray(self.block),
        }


def summarize_full(
    image: np.ndarray, traced: Sequence[tuple[int, int]], crop: int = 64, block: int = 32, spots: int = 10
) -> FullSummary:
    """Summarise a full-size image: crops around ``traced`` pixels and the ``spots`` brightest spots."""
    img = np.asarray(image, dtype=np.float32)
    centers = [(tuple(p), f"trace {p[0]} {p[1]}") for p in traced]
    centers += [(p, f"spot {i}") for i, p in enumerate(brightest_spots(img, spots, crop // 2))]
    origins = [_crop_origin(c, img.shape, crop) for c, _ in centers]
    crops = np.stack([img[s : s + crop, f : f + crop] for s, f in origins])
    return FullSummary(
        shape=(int(img.shape[0]), int(img.shape[1])),
        block=block,
        grid=block_sums(img, block),
        crops=crops,
        origins=np.asarray(origins, dtype=np.int64),
        labels=[lbl for _, lbl in centers],
        stats=image_stats(img),
    )


# ---------------------------------------------------------------------------------------------------
# loading verified goldens


def load_manifest(root: str | Path | None = None) -> dict[str, Any]:
    """manifest.json of the golden directory ({} entries when absent); GoldenIntegrityError naming the file
    and line when it cannot be read."""
    path = Path(root if root is not None else golden_dir()) / "manifest.json"
    if not path.exists():
        return {"format": 1, "entries": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GoldenIntegrityError(
            f"{path}:{exc.lineno}:{exc.colno}: manifest is not valid JSON ({exc.msg}); restore it from git "
            "(goldens change only through tools/regen_goldens.py)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GoldenIntegrityError(f"{path}: manifest unreadable ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries", {}), dict):
        raise GoldenIntegrityError(f"{path}: manifest has no 'entries' object")
    return doc


def entry_key(case: str, variant: str) -> str:
    return f"{variant}/{case}"


@dataclass
class Golden:
    """A verified golden: the C outputs of one case and variant.

    image: the float image (small cases) or None; summary: crops/grid/stats (full-size cases) or None.
    stdout: parsed C stdout (:func:`~.cstdout.parse_stdout`); printouts: (slow, fast) -> C Trace.
    """

    case: Case
    variant: str
    directory: Path
    entry: dict[str, Any]
    image: np.ndarray | None
    summary: FullSummary | None
    stdout_text: str
    stdout: dict[str, Any]
    printouts: dict[tuple[int, int], Trace]

    @property
    def traced_pixels(self) -> list[tuple[int, int]]:
        return [tuple(p) for p in self.entry["traced_pixels"]]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.entry["shape"])

    def file(self, kind: str) -> Path | None:
        """Path of a kept C output ("int", "noise", "pgm"), or None if the case does not keep it."""
        name = OUTPUT_FILES[kind][2]
        return self.directory / name if name in self.entry["files"] else None

    def c_trace(self, pixel: tuple[int, int]) -> Trace:
        """The C printout of ``pixel`` merged with the geometry the C stdout reveals."""
        try:
            block = self.printouts[tuple(pixel)]
        except KeyError:
            raise KeyError(
                f"{self.case.name}/{self.variant}: pixel {pixel} not traced; traced: {self.traced_pixels}"
            ) from None
        return block.merged(stdout_trace(self.stdout))

    def check_image(self, ours: Any, dtype: str = "float64") -> tuple[list[str], dict[str, Any]]:
        """(failures, metrics) of our float image against this golden, with the case tolerance."""
        tol = self.case.tolerance_for(dtype)
        a = np.asarray(ours.detach().cpu().numpy() if hasattr(ours, "detach") else ours, dtype=np.float64)
        if a.shape != self.shape:
            return [f"shape {a.shape} != golden {self.shape}"], {}
        if self.summary is None:
            m = image_metrics(a, self.image, tol.significant)
            return check_image(m, tol), m
        crops = image_metrics(self.summary.crops_of(a), self.summary.crops, tol.significant)
        grid = image_metrics(block_sums(a, self.summary.block), self.summary.grid, tol.significant)
        fails = [f"crops: {f}" for f in check_image(crops, tol)] + [
            f"grid: {f}" for f in check_image(grid, tol)
        ]
        return fails, {"crops": crops, "grid": grid}


def has_golden(case: Case | str, variant: str = "pinned", root: str | Path | None = None) -> bool:
    name = case.name if isinstance(case, Case) else case
    return entry_key(name, variant) in load_manifest(root).get("entries", {})


def verify_entry_files(entry: Mapping[str, Any], directory: Path) -> dict[str, bytes]:
    """Read every file of a manifest entry, checking its sha256; returns name -> bytes."""
    out = {}
    for name, digest in entry["files"].items():
        path = directory / name
        if not path.is_file():
            raise GoldenIntegrityError(f"golden file missing: {path}")
        data = path.read_bytes()
        got = sha256_bytes(data)
        if got != digest:
            raise GoldenIntegrityError(
                f"golden file {path} does not match manifest.json (sha256 {got[:16]}..., expected "
                f"{digest[:16]}...): goldens change only through tools/regen_goldens.py --update"
            )
        out[name] = data
    return out


def load_golden(
    case: Case | str,
    variant: str = "pinned",
    root: str | Path | None = None,
    cases_path: str | Path | None = None,
) -> Golden:
    """Load and verify the golden of ``case`` (a Case or a name) for ``variant``.

    root: golden directory (default golden/). Raises KeyError when there is no such golden and
    GoldenIntegrityError when any file is missing or differs from its manifest sha256.
    """
    root = Path(root) if root is not None else golden_dir()
    if isinstance(case, str):
        case = get_case(case, cases_path if cases_path is not None else root / "cases.toml")
    entries = load_manifest(root).get("entries", {})
    key = entry_key(case.name, variant)
    if key not in entries:
        raise KeyError(f"no golden {key} in {root / 'manifest.json'}")
    entry = entries[key]
    directory = root / variant / case.name
    data = verify_entry_files(entry, directory)
    image = summary = None
    if "image.npz" in data:
        with np.load(io.BytesIO(data["image.npz"])) as z:
            image = z["image"]
    if "summary.npz" in data:
        with np.load(io.BytesIO(data["summary.npz"])) as z:
            summary = FullSummary(
                shape=tuple(int(v) for v in z["shape"]),
                block=int(z["block"].reshape(-1)[0]),
                grid=z["grid"],
                crops=z["crops"],
                origins=z["origins"],
                labels=list(entry.get("crop_labels", [])),
                stats=dict(entry.get("image_stats", {})),
            )
    stdout_text = data["stdout.txt"].decode()
    printouts: dict[tuple[int, int], Trace] = {}
    for name, blob in data.items():
        if name.startswith("printout_"):
            for block in parse_printout(blob.decode()):
                if block.pixel is not None:
                    printouts[block.pixel] = block
    return Golden(
        case=case,
        variant=variant,
        directory=directory,
        entry=entry,
        image=image,
        summary=summary,
        stdout_text=stdout_text,
        stdout=parse_stdout(stdout_text),
        printouts=printouts,
    )
