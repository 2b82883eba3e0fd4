"""Make a dataset: check the SPEC, find the shards still to do, run them on an engine with a progress bar,
write the manifest and print a summary. `render_only` re-renders one shot alone (`--only SHOT`)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

from tqdm import tqdm

from ..errors import InputError
from .engines import EngineReport, Job, default_threads, require_ray, run_local, run_ray
from .render import render_shots, resolve_device
from .shots import shot_parameters
from .spec import load_experiment, load_spec
from .store import (
    hdf5_lines,
    prepare_output,
    remove_temporaries,
    shot_file,
    store_per_shot,
    verified_shard,
    write_hdf5,
    write_manifest,
)


@dataclass
class Summary:
    shots: int  # rendered in this run
    skipped: int  # already done (--resume)
    seconds: float
    workers: int
    retried: int
    manifest: str

    @property
    def shots_per_second(self) -> float:
        return self.shots / self.seconds if self.seconds > 0 else float("inf")

    def line(self, engine: str) -> str:
        return (f"nanobragg-dataset: {self.shots} shots in {self.seconds:.1f} s ({self.shots_per_second:.2f} shots/s), "
                f"{self.workers} worker(s) ({engine}), {self.retried} failure(s) retried"
                + (f", {self.skipped} shots already done" if self.skipped else "") + f"; manifest {self.manifest}")


def make_dataset(spec_path: str, out: str, engine: str = "local", workers: int = 1, address: str | None = None,
                 threads: int | None = None, gpus_per_task: float | None = None, retries: int = 3,
                 resume: bool = False, progress: bool = True) -> Summary:
    """Render every shot of the SPEC not yet done into `out` (see nanobragg_torch.dataset)."""
    t0 = time.perf_counter()
    spec = load_spec(spec_path)
    experiment = load_experiment(spec)
    if engine == "ray":
        require_ray()  # before anything is written
    prepare_output(out, spec, resume)
    remove_temporaries(out)
    lines: list[dict] = []
    todo = []
    for shard in range(spec.shards):
        found = verified_shard(out, spec, shard) if resume else None
        if found is None:
            todo.append(shard)
        else:
            lines += found
    skipped = len(lines)
    job = Job(os.path.abspath(out), spec, experiment, threads or default_threads(workers))
    bar = tqdm(total=spec.count, initial=skipped, unit="shot", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)

    def done(shard: int, shard_lines: list[dict]) -> None:
        lines.extend(shard_lines)
        bar.update(len(shard_lines))

    try:
        if not todo:
            report = EngineReport(0, 0)
        elif engine == "local":
            report = run_local(job, todo, workers, retries, done)
        else:
            report = run_ray(job, todo, address, workers, gpus_per_task, retries, done)
    finally:
        bar.close()
    remove_temporaries(out)
    manifest = write_manifest(out, spec, lines)
    return Summary(spec.count - skipped, skipped, time.perf_counter() - t0, report.workers, report.retried, manifest)


def render_only(spec_path: str, out: str, index: int) -> dict:
    """Render shot `index` alone into `out` (shot-NNNNNN.h5/.img/.cbf); return its manifest line."""
    spec = load_spec(spec_path)
    experiment = load_experiment(spec)
    if not 0 <= index < spec.count:
        raise InputError(f"--only {index}: the SPEC has shots 0..{spec.count - 1}")
    os.makedirs(out, exist_ok=True)
    shot = render_shots(experiment, [shot_parameters(spec, experiment.config, index)], 1)[0]
    device = resolve_device(experiment.device).type
    if spec.format == "hdf5":
        file = f"shot-{index:06d}.h5"
        write_hdf5(os.path.join(out, file), [shot], spec, device, experiment.dtype)
        return hdf5_lines([shot], file, device, experiment.dtype)[0]
    return store_per_shot(out, os.path.basename(shot_file(out, spec, index)), shot, spec, experiment, device)


def print_line(line: dict) -> None:
    print(json.dumps(line, sort_keys=True))
