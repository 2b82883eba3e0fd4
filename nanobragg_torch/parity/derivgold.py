"""Derivative goldens: the fixed C's images at p +- h and p +- 2h for a few cases and parameters.

`golden/derivatives.toml` names the cases (base flags, small images) and, per case, the parameters: a
config path (`detector.distance`, ...) and a step in the C flag's own units. `regenerate_derivatives` runs
the C binary (NB_C_FIXED_BIN, only ever run) four times per parameter, with the flag's value moved by
-2h, -h, +h, +2h, and stores the two float32 images at -h and +h as the C wrote them
(`golden/derivatives/CASE/PARAM.npz`, 32 kB for 64 x 64); the manifest's `derivatives` object records flags,
step (flag units and SI), the C binary's and source's sha256, compiler flags, date and two error estimates
of the central difference D(h) = (I+ - I-)/2h at that step:

* truncation: |D(h) - D(2h)| / 3 (Richardson: D(h) = f' + f''' h^2/6 + ...), largest over the image
  (`truncation_abs`; `truncation_rel` relative to max |D(h)|);
* storage: the C writes float32, each image rounded by half an ulp: (ulp(I+) + ulp(I-)) / 2 / (2h),
  largest over the image, relative to max |D(h)| (`storage_rel`; the test takes it per pixel).

Steps are chosen so both are small (about 1e-4 of the derivative's scale or less; the sharper the spots,
the smaller the step). `central_difference` and `tolerance` give a test the derivative and its per-pixel
tolerance. This module never imports the simulator (parity layer); the test maps the flags to a config.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .goldens import golden_dir, load_manifest, sha256_bytes, sha256_file

VARIANT = "fixed"
BIN_ENV = "NB_C_FIXED_BIN"
SRC_ENV = "NB_C_FIXED_SRC"
CFLAGS_ENV = "NB_C_CFLAGS"
SECTION = "derivatives"  # the manifest's object of derivative goldens ("CASE/PARAM" -> entry)
OFFSETS = (-2, -1, 1, 2)  # multiples of the step the C runs at
STORED = (-1, 1)  # the offsets whose images are stored
MODEL_RTOL = 1e-5  # our render against the fixed C's, per pixel, relative to the derivative's scale

# config path -> (C flag, position of the value among the flag's values, SI units per flag unit)
FLAG_OF_PATH: dict[str, tuple[str, int, float]] = {
    "detector.distance": ("-distance", 0, 1e-3),
    "detector.Xbeam": ("-Xbeam", 0, 1e-3),
    "detector.Ybeam": ("-Ybeam", 0, 1e-3),
    "detector.rotx": ("-detector_rotx", 0, np.pi / 180),
    "detector.roty": ("-detector_roty", 0, np.pi / 180),
    "detector.rotz": ("-detector_rotz", 0, np.pi / 180),
    "detector.twotheta": ("-twotheta", 0, np.pi / 180),
    "beam.wavelength": ("-lambda", 0, 1e-10),
    **{f"crystal.cell.{i}": ("-cell", i, 1e-10) for i in range(3)},
    **{f"crystal.cell.{i}": ("-cell", i, np.pi / 180) for i in range(3, 6)},
    **{f"crystal.misset.{i}": ("-misset", i, np.pi / 180) for i in range(3)},
    "crystal.Na": ("-Na", 0, 1.0),
    "crystal.phi0": ("-phi", 0, np.pi / 180),
}


@dataclass(frozen=True)
class DerivCase:
    name: str
    flags: tuple[str, ...]
    params: tuple[tuple[str, float], ...]  # (config path, step in flag units)
    note: str = ""


def cases_path(root: Path | None = None) -> Path:
    return Path(root if root is not None else golden_dir()) / "derivatives.toml"


def load_cases(root: Path | None = None) -> list[DerivCase]:
    """The derivative cases of golden/derivatives.toml; ValueError naming the file and key when malformed."""
    path = cases_path(root)
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    out = []
    for name, body in doc.get("case", {}).items():
        where = f"{path.name}: [case.{name}]"
        flags = body.get("flags")
        if not isinstance(flags, str):
            raise ValueError(f"{where} flags: a string of C flags is required")
        params = []
        for item in body.get("params", []):
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], int | float)):
                raise ValueError(f"{where} params: [path, step] pairs expected, got {item!r}")
            if item[0] not in FLAG_OF_PATH:
                raise ValueError(f"{where} params: {item[0]!r} has no C flag (known: {', '.join(FLAG_OF_PATH)})")
            params.append((item[0], float(item[1])))
        out.append(DerivCase(name, tuple(flags.split()), tuple(params), body.get("note", "")))
    return out


def moved_flags(flags: tuple[str, ...], path: str, delta: float) -> list[str]:
    """The flags with the value of `path`'s flag moved by `delta` (flag units), written with repr (exact)."""
    flag, pos, _ = FLAG_OF_PATH[path]
    argv = list(flags)
    if flag not in argv:
        raise ValueError(f"derivative golden: {path} needs {flag} among the flags")
    i = argv.index(flag) + 1 + pos
    argv[i] = repr(float(argv[i]) + delta)
    return argv


def step_si(path: str, step: float) -> float:
    return step * FLAG_OF_PATH[path][2]


def _run_c(binary: str, argv: list[str], shape_hint: tuple[int, int] | None = None) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="nbderiv_") as tmp:
        full = [*argv, "-noprogress", "-nonoise", "-nopgm", "-floatfile", "float.bin"]
        proc = subprocess.run([binary, *full], cwd=tmp, capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"C exited with {proc.returncode} for {' '.join(full)}")
        data = np.fromfile(Path(tmp) / "float.bin", dtype="<f4")
    fp = int(_flag_value(argv, ("-detpixels_f", "-detpixels")))
    sp = int(_flag_value(argv, ("-detpixels_s", "-detpixels")))
    if data.size != fp * sp:
        raise RuntimeError(f"C wrote {data.size} floats, expected {sp} x {fp}")
    return data.reshape(sp, fp)


def _flag_value(argv: list[str], names: tuple[str, ...]) -> str:
    for n in names:
        if n in argv:
            return argv[argv.index(n) + 1]
    raise ValueError(f"derivative golden: flags need one of {', '.join(names)}")


def central_difference(minus: np.ndarray, plus: np.ndarray, h: float) -> np.ndarray:
    """(I(p + h) - I(p - h)) / 2h in float64."""
    return (plus.astype(np.float64) - minus.astype(np.float64)) / (2 * h)


def storage_error(minus: np.ndarray, plus: np.ndarray, h: float) -> np.ndarray:
    """Per pixel: the largest error of central_difference from the float32 rounding of the two images."""
    ulp = lambda a: np.spacing(np.abs(a.astype(np.float32))).astype(np.float64)  # noqa: E731
    return (ulp(plus) + ulp(minus)) / 2.0 / (2 * h)


def tolerance(minus: np.ndarray, plus: np.ndarray, h: float, truncation_abs: float) -> np.ndarray:
    """Per-pixel tolerance of a derivative image against the C's central difference at step h: three times
    the storage error (per pixel) and the truncation estimate (largest over the image), plus MODEL_RTOL of
    the derivative's largest magnitude (our render and the fixed C's agree to ~1e-6 per pixel, not bit for
    bit)."""
    scale = np.abs(central_difference(minus, plus, h)).max()
    return 3.0 * (storage_error(minus, plus, h) + truncation_abs) + MODEL_RTOL * scale


@dataclass(frozen=True)
class DerivGolden:
    case: str
    path: str
    flags: tuple[str, ...]
    step: float  # flag units
    h: float  # SI
    minus: np.ndarray  # (S, F) float32: the C's image at p - h
    plus: np.ndarray  # at p + h
    entry: dict[str, Any]

    @property
    def derivative(self) -> np.ndarray:
        return central_difference(self.minus, self.plus, self.h)

    @property
    def tolerance(self) -> np.ndarray:
        return tolerance(self.minus, self.plus, self.h, self.entry["truncation_abs"])


def entry_key(case: str, path: str) -> str:
    return f"{case}/{path}"


def load_derivative_goldens(root: Path | None = None) -> list[DerivGolden]:
    """Every committed derivative golden (sha256-checked against the manifest)."""
    root = Path(root if root is not None else golden_dir())
    out = []
    for _, entry in sorted(load_manifest(root).get(SECTION, {}).items()):
        f = root / SECTION / entry["file"]
        data = f.read_bytes()
        if sha256_bytes(data) != entry["sha256"]:
            raise RuntimeError(f"{f}: sha256 differs from the manifest (goldens change only through the regen tool)")
        arrays = np.load(io.BytesIO(data))
        out.append(DerivGolden(entry["case"], entry["param"], tuple(entry["flags"]), entry["step"],
                               entry["step_si"], arrays["minus"], arrays["plus"], entry))
    return out


def render_derivative(case: DerivCase, path: str, step: float, binary: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the C at the four offsets; the images and the manifest entry's measured part."""
    im = {m: _run_c(binary, moved_flags(case.flags, path, m * step)) for m in OFFSETS}
    h = step_si(path, step)
    d1 = central_difference(im[-1], im[1], h)
    truncation = np.abs(central_difference(im[-2], im[2], 2 * h) - d1) / 3.0
    scale = float(np.abs(d1).max())
    if scale == 0.0:
        raise RuntimeError(f"{case.name}: {path} does not change the C's image at step {step}")
    return np.stack([im[m] for m in STORED]), {
        "derivative_max_abs": scale,
        "truncation_abs": float(truncation.max()),
        "truncation_rel": float(truncation.max() / scale),
        "storage_rel": float(storage_error(im[-1], im[1], h).max() / scale),
    }


def regenerate_derivatives(root: Path | None = None, only: list[str] | None = None, update: bool = False,
                           log=print) -> int:
    """Render the derivative goldens (all, or the cases named in `only`); write new ones, and changed ones
    only with `update`. Returns the number that differ and were not written."""
    root = Path(root if root is not None else golden_dir())
    binary = os.environ.get(BIN_ENV)
    if not binary or not Path(binary).is_file():
        raise RuntimeError(f"set {BIN_ENV} to the fixed C binary")
    src = os.environ.get(SRC_ENV)
    manifest = load_manifest(root)
    section = manifest.setdefault(SECTION, {})
    refused = 0
    for case in load_cases(root):
        if only and case.name not in only:
            continue
        for path, step in case.params:
            key = entry_key(case.name, path)
            images, measured = render_derivative(case, path, step, binary)
            buf = io.BytesIO()
            np.savez_compressed(buf, minus=images[0], plus=images[1])
            data = buf.getvalue()
            rel = f"{case.name}/{path}.npz"
            old = section.get(key)
            same = old is not None and _same_images(root / SECTION / old["file"], images)
            if same and old.get("step") == step and old.get("flags") == list(case.flags):
                log(f"ok        {key}")
                continue
            if old is not None and not update:
                refused += 1
                log(f"CHANGED   {key} (not written; --update to accept)")
                continue
            target = root / SECTION / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            section[key] = {
                "case": case.name,
                "param": path,
                "flags": list(case.flags),
                "flag": FLAG_OF_PATH[path][0],
                "step": step,
                "step_si": step_si(path, step),
                "offsets_run": list(OFFSETS),
                "offsets_stored": list(STORED),
                "shape": list(images.shape[1:]),
                "file": rel,
                "sha256": sha256_bytes(data),
                **measured,
                "c_source_sha256": sha256_file(src) if src else (old or {}).get("c_source_sha256"),
                "c_binary_sha256": sha256_file(binary),
                "c_binary_env": BIN_ENV,
                "cflags": os.environ.get(CFLAGS_ENV) or (old or {}).get("cflags"),
                "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
            }
            manifest[SECTION] = dict(sorted(section.items()))
            _save(manifest, root)
            log(f"{'updated' if old else 'new':<9s} {key}: truncation {measured['truncation_rel']:.1e}, "
                f"storage {measured['storage_rel']:.1e} of max |D|")
    return refused


def _same_images(path: Path, images: np.ndarray) -> bool:
    if not path.is_file():
        return False
    old = np.load(path)
    return np.array_equal(old["minus"], images[0]) and np.array_equal(old["plus"], images[1])


def _save(manifest: dict[str, Any], root: Path) -> None:
    from .regen import _save_manifest

    _save_manifest(manifest, root)
