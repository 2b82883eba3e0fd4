"""The dataset SPEC: a TOML file naming the base experiment (C flags), the shots and what varies per shot.

    [experiment]
    flags = "-cell 100 100 100 90 90 90 -default_F 100 -lambda 1 -distance 100 -detpixels 256 -N 5"

    [shots]
    count = 200          # number of shots
    seed = 2026          # base seed: shot i's parameters are a function of (seed, i) alone
    shard_size = 20      # shots per shard (one HDF5 file, one task)
    batch_size = 10      # shots per simulate_batch call (memory bound); default: shard_size

    [vary]
    orientation = "random"   # "random" (uniform over rotations), "fixed", or [[rx, ry, rz], ...] degrees
    N = [3, 8]               # crystal size: an int, [low, high] (uniform integer, inclusive) or {choice = [...]}
    fluence_jitter = 0.1     # relative rms of a mean-preserving log-normal factor
    wavelength_jitter = 0.001  # relative rms of a Gaussian factor on the wavelength
    noise = true             # the C's Poisson noise image, seeded per shot

    [output]
    format = "hdf5"          # "hdf5" (one file per shard), "smv" or "cbf" (one file per shot)
    compression = 4          # gzip level of the HDF5 images (0: none)

Everything is validated here: a bad SPEC is a one-line InputError naming `file: [table] key`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shlex
import tomllib
from dataclasses import dataclass
from typing import Any

from ..cli import config_from_flags
from ..config import SimulationConfig
from ..errors import InputError
from ..options import RunOptions

FORMATS = ("hdf5", "smv", "cbf")
_TABLES: dict[str, set[str]] = {
    "experiment": {"flags"},
    "shots": {"count", "seed", "shard_size", "batch_size"},
    "vary": {"orientation", "N", "fluence_jitter", "wavelength_jitter", "noise"},
    "output": {"format", "compression"},
}
# flags that name files the CLI would write: a dataset's outputs come from [output]
_OUTPUT_FIELDS = ("floatfile", "intfile", "noisefile", "pgmfile", "pngfile", "dumpfile", "trace_pixel",
                  "printout_pixel")


@dataclass(frozen=True)
class NSpec:
    """Crystal size N (Na = Nb = Nc) per shot: fixed, a uniform integer range or a uniform choice."""

    kind: str  # "base" (the flags' -N), "fixed", "range", "choice"
    values: tuple[int, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    path: str  # the SPEC file (relative input paths in the flags resolve against its folder)
    text_sha256: str  # of the SPEC file's bytes: --resume refuses a changed SPEC
    flags: tuple[str, ...]
    count: int
    seed: int
    shard_size: int
    batch_size: int
    orientation: str | tuple[tuple[float, float, float], ...]  # "random", "fixed" or misset list (degrees)
    N: NSpec
    fluence_jitter: float
    wavelength_jitter: float
    noise: bool
    format: str
    compression: int

    @property
    def shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_range(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.count, (shard + 1) * self.shard_size))


@dataclass(frozen=True)
class Experiment:
    """The base experiment, parsed once by the driver and shipped to the workers (no file access there)."""

    config: SimulationConfig
    dtype: str
    device: str  # "auto": CUDA where the worker has it, else CPU
    adc_offset: float
    intfile_scale: float


def experiment_from_flags(flags: list[str], folder: str) -> tuple[SimulationConfig, RunOptions]:
    """The one adapter from C flags to a config (cli.config_from_flags today); relative paths from `folder`."""
    with contextlib.chdir(folder):
        return config_from_flags(list(flags), cwd=folder)


def _err(path: str, where: str, msg: str) -> InputError:
    return InputError(f"{path}: {where}: {msg}")


def _int(path: str, where: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(path, where, f"expected an integer, got {value!r}")
    if value < low:
        raise _err(path, where, f"must be >= {low}, got {value}")
    return value


def _fraction(path: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _err(path, where, f"expected a number, got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise _err(path, where, f"must be in [0, 1), got {value}")
    return float(value)


def _orientation(path: str, value: Any) -> str | tuple[tuple[float, float, float], ...]:
    where = "[vary] orientation"
    if value in ("random", "fixed"):
        return value
    if isinstance(value, list) and value:
        rows = []
        for i, row in enumerate(value):
            if (not isinstance(row, list) or len(row) != 3
                    or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row)):
                raise _err(path, f"{where}[{i}]", f"expected [rx, ry, rz] in degrees, got {row!r}")
            rows.append((float(row[0]), float(row[1]), float(row[2])))
        return tuple(rows)
    raise _err(path, where, f"expected \"random\", \"fixed\" or a list of [rx, ry, rz] degrees, got {value!r}")


def _n_spec(path: str, value: Any) -> NSpec:
    where = "[vary] N"
    if value is None:
        return NSpec("base")
    if isinstance(value, int) and not isinstance(value, bool):
        return NSpec("fixed", (_int(path, where, value, 1),))
    if isinstance(value, list) and len(value) == 2:
        lo, hi = (_int(path, where, v, 1) for v in value)
        if lo > hi:
            raise _err(path, where, f"range [{lo}, {hi}] is empty")
        return NSpec("range", (lo, hi))
    if isinstance(value, dict) and set(value) == {"choice"} and isinstance(value["choice"], list) and value["choice"]:
        return NSpec("choice", tuple(_int(path, where, v, 1) for v in value["choice"]))
    raise _err(path, where, f"expected an integer, [low, high] or {{choice = [...]}}, got {value!r}")


def load_spec(path: str) -> DatasetSpec:
    """Read and check a SPEC file (see the module docstring)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        doc = tomllib.loads(raw.decode("utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    for table, body in doc.items():
        if table not in _TABLES or not isinstance(body, dict):
            raise _err(path, f"[{table}]", f"unknown table (expected {', '.join(_TABLES)})")
        for key in body:
            if key not in _TABLES[table]:
                raise _err(path, f"[{table}] {key}", f"unknown key (expected {', '.join(sorted(_TABLES[table]))})")
    exp, shots, vary, out = (doc.get(t, {}) for t in ("experiment", "shots", "vary", "output"))

    flags = exp.get("flags")
    if isinstance(flags, str):
        flags = shlex.split(flags)
    if not isinstance(flags, list) or not flags or not all(isinstance(f, str) for f in flags):
        raise _err(path, "[experiment] flags", "expected the C flags as a string or a list of strings")
    if "count" not in shots:
        raise _err(path, "[shots] count", "missing")
    count = _int(path, "[shots] count", shots["count"], 1)
    seed = _int(path, "[shots] seed", shots.get("seed", 0), 0)
    shard_size = _int(path, "[shots] shard_size", shots.get("shard_size", min(count, 100)), 1)
    batch_size = _int(path, "[shots] batch_size", shots.get("batch_size", shard_size), 1)
    noise = vary.get("noise", False)
    if not isinstance(noise, bool):
        raise _err(path, "[vary] noise", f"expected true or false, got {noise!r}")
    fmt = out.get("format", "hdf5")
    if fmt not in FORMATS:
        raise _err(path, "[output] format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    compression = _int(path, "[output] compression", out.get("compression", 4), 0)
    if compression > 9:
        raise _err(path, "[output] compression", f"gzip level must be 0..9, got {compression}")
    return DatasetSpec(
        path=os.path.abspath(path),
        text_sha256=hashlib.sha256(raw).hexdigest(),
        flags=tuple(flags),
        count=count,
        seed=seed,
        shard_size=shard_size,
        batch_size=batch_size,
        orientation=_orientation(path, vary.get("orientation", "fixed")),
        N=_n_spec(path, vary.get("N")),
        fluence_jitter=_fraction(path, "[vary] fluence_jitter", vary.get("fluence_jitter", 0.0)),
        wavelength_jitter=_fraction(path, "[vary] wavelength_jitter", vary.get("wavelength_jitter", 0.0)),
        noise=noise,
        format=fmt,
        compression=compression,
    )


def load_experiment(spec: DatasetSpec) -> Experiment:
    """Parse the SPEC's flags (the same parser as `nanobragg`); refuse flags that ask for output files."""
    try:
        cfg, opts = experiment_from_flags(list(spec.flags), os.path.dirname(spec.path))
    except InputError as exc:
        raise InputError(f"{spec.path}: [experiment] flags: {exc}") from None
    except FileNotFoundError as exc:
        raise InputError(f"{spec.path}: [experiment] flags: {exc.filename}: no such file") from None
    for name in _OUTPUT_FIELDS:
        if getattr(opts, name) is not None:
            raise InputError(f"{spec.path}: [experiment] flags: the {name} output is not for datasets "
                             "(outputs come from [output])")
    if spec.orientation == "random" or isinstance(spec.orientation, tuple):
        # the per-shot misset replaces the flags' misset (and -misset random's C draw)
        cfg = dataclasses.replace(cfg, crystal=dataclasses.replace(cfg.crystal, misset=None, misset_random=False))
    device = opts.device if "-device" in spec.flags else "auto"
    return Experiment(cfg, opts.dtype, device, float(opts.adc_offset), float(opts.intfile_scale))
