"""Shard files, the manifest and their verification.

Layout of an output folder:
    spec.toml                    the SPEC the dataset was made from (--resume refuses another one)
    shards/shard-000003.h5       HDF5 format: the shard's images, noise images and per-shot parameters
    shots/shot-000061.img|.cbf   SMV/CBF formats: one file per shot
    shards/shard-000003.jsonl    the shard's manifest lines, written last: its presence marks the shard done
    manifest.jsonl               every shot's line, by index (written when all shards are done)

Every file is written under a temporary name and renamed into place when complete, so a killed worker
leaves no partial shard under a final name; a shard is done only when its .jsonl is in place and every
sha256 it lists matches the file it names.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import uuid
from collections.abc import Iterator

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write
from .render import RenderedShot
from .spec import DatasetSpec, Experiment

_EXT = {"hdf5": ".h5", "smv": ".img", "cbf": ".cbf"}


def image_sha256(image: np.ndarray) -> str:
    """sha256 of an image's pixel bytes: C order, little-endian, in its stored dtype."""
    arr = np.ascontiguousarray(image)
    return hashlib.sha256(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def shard_part(out: str, shard: int) -> str:
    return os.path.join(out, "shards", f"shard-{shard:06d}.jsonl")


def shard_file(out: str, shard: int) -> str:
    return os.path.join(out, "shards", f"shard-{shard:06d}.h5")


def shot_file(out: str, spec: DatasetSpec, index: int) -> str:
    return os.path.join(out, "shots", f"shot-{index:06d}{_EXT[spec.format]}")


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
    """A temporary name beside `path` for a library that writes by file name (h5py, fabio): renamed to `path`
    when the block succeeds, removed when it fails (remove_temporaries sweeps what a killed run left)."""
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_hdf5(path: str, shots: list[RenderedShot], spec: DatasetSpec, device: str, dtype: str) -> None:
    """One shard: images (n, S, F) float32 chunked per image and gzip-compressed, noise (uint16) when on,
    and the parameters of each shot as datasets (SI units; NaN / -1 where the base value applies)."""
    import h5py

    with _replacing(path) as tmp, h5py.File(tmp, "w") as h5:
        S, F = shots[0].image.shape
        opts = {"compression": "gzip", "compression_opts": spec.compression, "shuffle": True} \
            if spec.compression else {}
        h5.create_dataset("images", data=np.stack([s.image for s in shots]), chunks=(1, S, F), **opts)
        if spec.noise:
            h5.create_dataset("noise", data=np.stack([s.noise for s in shots]), chunks=(1, S, F), **opts)
        p = [s.params for s in shots]
        h5["shot_index"] = np.array([q.index for q in p], dtype=np.int64)
        h5["misset"] = np.array([q.misset if q.misset is not None else (np.nan,) * 3 for q in p])
        h5["N"] = np.array([q.N if q.N is not None else -1 for q in p], dtype=np.int64)
        h5["fluence"] = np.array([q.fluence for q in p])
        h5["wavelength"] = np.array([q.wavelength for q in p])
        h5["noise_seed"] = np.array([q.noise_seed if q.noise_seed is not None else -1 for q in p], dtype=np.int64)
        h5.attrs.update({"spec_sha256": spec.text_sha256, "seed": spec.seed, "device": device, "dtype": dtype,
                         "units": "misset rad, fluence photons/m^2, wavelength m, images photons/pixel"})


def _header(experiment: Experiment, shot: RenderedShot) -> dict:
    d = experiment.config.detector
    S, F = shot.image.shape
    return {"SIZE1": F, "SIZE2": S, "PIXEL_SIZE": float(d.pixel_size) * 1e3, "DISTANCE": float(d.distance) * 1e3,
            "WAVELENGTH": shot.params.wavelength * 1e10, "SHOT_INDEX": shot.params.index}


def write_per_shot(path: str, counts: np.ndarray, fmt: str, header: dict) -> None:
    """One shot as SMV (ADSC, unsigned short) or CBF (byte-offset, int32), through fabio."""
    import fabio.adscimage
    import fabio.cbfimage

    cls = fabio.adscimage.AdscImage if fmt == "smv" else fabio.cbfimage.CbfImage
    img = cls(data=counts, header={k: str(v) for k, v in header.items()})
    with _replacing(path) as tmp:
        img.write(tmp)


def read_stored(out: str, line: dict) -> np.ndarray:
    """The image a manifest line names, as stored."""
    path = os.path.join(out, line["file"])
    if line["dataset"]:
        import h5py

        with h5py.File(path, "r") as h5:
            return h5[line["dataset"]][line["row"]]
    import fabio

    return fabio.open(path).data


def hdf5_lines(shots: list[RenderedShot], file: str, device: str, dtype: str) -> list[dict]:
    """Manifest lines of the shots of one HDF5 file (`file` relative to the output folder)."""
    lines = []
    for row, s in enumerate(shots):
        line = manifest_line(s, file, "/images", row, image_sha256(s.image), device, dtype)
        if s.noise is not None:
            line["noise_sha256"] = image_sha256(s.noise)
        lines.append(line)
    return lines


def store_per_shot(out: str, file: str, shot: RenderedShot, spec: DatasetSpec, experiment: Experiment,
                   device: str) -> dict:
    """Write one shot's SMV/CBF file (`file` relative to `out`); return its manifest line."""
    counts, scale = shot.counts(experiment)
    counts = counts.astype(np.uint16 if spec.format == "smv" else np.int32)
    write_per_shot(os.path.join(out, file), counts, spec.format, _header(experiment, shot))
    line = manifest_line(shot, file, "", 0, image_sha256(counts), device, experiment.dtype)
    line["float_sha256"] = image_sha256(shot.image)
    if scale is not None:
        line["int_scale"] = scale
    return line


def write_shard(out: str, spec: DatasetSpec, experiment: Experiment, shard: int, shots: list[RenderedShot],
                device: str) -> list[dict]:
    """Write a rendered shard, then its manifest part (the mark that it is done); return its manifest lines."""
    if spec.format == "hdf5":
        path = shard_file(out, shard)
        write_hdf5(path, shots, spec, device, experiment.dtype)
        lines = hdf5_lines(shots, os.path.relpath(path, out), device, experiment.dtype)
    else:
        lines = [store_per_shot(out, os.path.relpath(shot_file(out, spec, s.params.index), out), s, spec,
                                experiment, device) for s in shots]
    with atomic_write(shard_part(out, shard), "w") as handle:
        handle.writelines(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    return lines


def manifest_line(shot: RenderedShot, file: str, dataset: str, row: int, sha: str, device: str, dtype: str) -> dict:
    return {"index": shot.params.index, "params": shot.params.as_dict(), "file": file, "dataset": dataset,
            "row": row, "sha256": sha, "device": device, "dtype": dtype}


def verified_shard(out: str, spec: DatasetSpec, shard: int) -> list[dict] | None:
    """The manifest lines of a finished shard whose files match their sha256, else None."""
    try:
        with open(shard_part(out, shard)) as handle:
            lines = [json.loads(t) for t in handle if t.strip()]
        if [x["index"] for x in lines] != list(spec.shard_range(shard)):
            return None
        for line in lines:
            if image_sha256(read_stored(out, line)) != line["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return lines


def prepare_output(out: str, spec: DatasetSpec, resume: bool) -> None:
    """Create the folders and record the SPEC; an existing dataset needs --resume, and the same SPEC."""
    record = os.path.join(out, "spec.toml")
    if os.path.exists(record):
        with open(record, "rb") as handle:
            same = hashlib.sha256(handle.read()).hexdigest() == spec.text_sha256
        if not resume:
            raise InputError(f"--out {out}: already holds a dataset (use --resume, or another folder)")
        if not same:
            raise InputError(f"--resume: {spec.path} differs from the SPEC {record} was made from")
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    if spec.format != "hdf5":
        os.makedirs(os.path.join(out, "shots"), exist_ok=True)
    if not os.path.exists(record):
        with open(spec.path, "rb") as src, atomic_write(record, "wb") as dst:
            dst.write(src.read())


def remove_temporaries(out: str) -> None:
    """Temporary files of killed writers (never under a final name)."""
    for folder in ("shards", "shots"):
        for path in glob.glob(os.path.join(out, folder, ".*.tmp")):
            os.unlink(path)


def write_manifest(out: str, spec: DatasetSpec, lines: list[dict]) -> str:
    """manifest.jsonl: one line per shot by index; every shot exactly once (checked)."""
    lines = sorted(lines, key=lambda x: x["index"])
    if [x["index"] for x in lines] != list(range(spec.count)):
        raise RuntimeError("internal: the shards do not cover every shot exactly once")
    path = os.path.join(out, "manifest.jsonl")
    with atomic_write(path, "w") as handle:
        handle.writelines(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    return path
