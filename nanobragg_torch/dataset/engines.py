"""Where shards run: `local` (this process, or a pool of processes) or `ray` (a Ray cluster, or a local
Ray instance). Both hand out one shard per task as workers free up (dynamic scheduling: no static split of
shots over workers, so no ragged tail of idle ranks), and retry a shard whose worker died.

Retries are the driver's: a shard whose worker process or node is lost is submitted again, up to `retries`
times, and counted; an error raised by the render itself (bad input) is not retried. A shard retried after
its files were renamed into place rewrites the same bytes under the same names, so every shot appears
exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import ModuleType

import torch

from ..errors import InputError
from .render import render_shots, resolve_device
from .shots import shot_parameters
from .spec import DatasetSpec, Experiment
from .store import write_shard


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for any shard (picklable; the experiment is parsed by the driver)."""

    out: str
    spec: DatasetSpec
    experiment: Experiment
    threads: int  # torch intra-op threads per worker


def run_shard(job: Job, shard: int) -> list[dict]:
    """Render and write one shard; return its manifest lines."""
    spec = job.spec
    shots = [shot_parameters(spec, job.experiment.config, i) for i in spec.shard_range(shard)]
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        rendered = render_shots(job.experiment, shots, spec.batch_size)
    finally:
        torch.set_num_threads(threads)
    device = resolve_device(job.experiment.device).type
    return write_shard(job.out, spec, job.experiment, shard, rendered, device)


Done = Callable[[int, list[dict]], None]
_worker_job: Job | None = None  # a pool process's job, sent once when the process starts


def _init_worker(job: Job) -> None:
    global _worker_job
    _worker_job = job


def _run_pool_shard(shard: int) -> list[dict]:
    assert _worker_job is not None
    return run_shard(_worker_job, shard)


@dataclass
class EngineReport:
    workers: int
    retried: int


def run_local(job: Job, shards: list[int], workers: int, retries: int, done: Done) -> EngineReport:
    """One worker: shards in this process. More: a process pool (spawned, so no forked torch state)."""
    if workers <= 1:
        for shard in shards:
            done(shard, run_shard(job, shard))
        return EngineReport(1, 0)
    attempts = dict.fromkeys(shards, 0)
    todo = list(shards)
    retried = 0
    while todo:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(job,)) as pool:
            futures = {pool.submit(_run_pool_shard, s): s for s in todo}
            todo = []
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    shard = futures.pop(fut)
                    try:
                        done(shard, fut.result())
                    except BrokenProcessPool:  # a worker died: every unfinished shard goes again
                        attempts[shard] += 1
                        if attempts[shard] > retries:
                            raise RuntimeError(f"shard {shard}: its worker died {attempts[shard]} times") from None
                        todo.append(shard)
                        retried += 1
    return EngineReport(workers, retried)


def require_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise InputError('--engine ray: Ray is not installed (pip install -e ".[ray]")') from None
    return ray


def run_ray(job: Job, shards: list[int], address: str | None, workers: int, gpus_per_task: float | None,
            retries: int, done: Done) -> EngineReport:
    """Shards as Ray tasks. `address`: None starts a local Ray instance of `workers` CPUs; "auto" or
    "HOST:PORT" joins an existing cluster. `gpus_per_task`: None asks for one GPU per task when the cluster
    has GPUs (a fraction shares a GPU between tasks)."""
    ray = require_ray()
    if address is None:
        # a local instance stays on loopback (Ray would otherwise advertise the host's own address)
        ray.init(address="local", num_cpus=workers * max(1, job.threads), include_dashboard=False,
                 log_to_driver=False, _node_ip_address="127.0.0.1")
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        if gpus_per_task is None:
            gpus_per_task = 1.0 if resources.get("GPU", 0) > 0 else 0.0
        task = ray.remote(run_shard).options(num_cpus=max(1, job.threads), num_gpus=gpus_per_task, max_retries=0)
        job_ref = ray.put(job)
        attempts = dict.fromkeys(shards, 0)
        pending = {task.remote(job_ref, s): s for s in shards}
        retried = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            shard = pending.pop(ref)
            try:
                lines = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the render raised: not a lost worker
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayError as exc:  # worker, node or object lost: run the shard again
                attempts[shard] += 1
                if attempts[shard] > retries:
                    raise RuntimeError(f"shard {shard}: lost {attempts[shard]} times ({type(exc).__name__})") from None
                retried += 1
                pending[task.remote(job_ref, shard)] = shard
                continue
            done(shard, lines)
        n_workers = int(resources.get("CPU", 1) // max(1, job.threads))
        if gpus_per_task:
            n_workers = int(resources.get("GPU", 0) // gpus_per_task)
        return EngineReport(max(1, n_workers), retried)
    finally:
        ray.shutdown()


def default_threads(workers: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // max(1, workers))
