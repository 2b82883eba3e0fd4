#!/usr/bin/env python
"""Benchmark nanobragg-torch against the C nanoBragg, side by side in one run.

    python tools/bench.py [--case NAME ...] [--dtype float32|float64|both] [--device cpu|cuda]
                          [--reps 3] [--quick] [--no-cli] [--no-api] [--c-compat] [--threads N]
                          [--json FILE] [--md FILE]
    python tools/bench.py --memory-sweep [--domains 1 10 100 1000] [--dtype ...]
    python tools/bench.py --fresh [--case NAME ...] [--dtype ...] [--reps 3] [--warm-wait 120]

Each case runs, interleaved within every repetition, through
  api     our Python API in a child process (tools/bench_runner.py): build_plan + render once after the
          other implementations ran (an idle process), and render() alone ("api render"); then K renders back
          to back, per image ("api loop": a refinement or dataset loop; "api loop, new orientation": the
          crystal's misset changed for every image, so its set-up is not reused); the first call (building or
          loading the compiled kernel included) is timed separately,
  cli     our command line as a whole process: python -m nanobragg_torch FLAGS -dtype D -device DEV, after
          one untimed warm-up run (a warm kernel cache),
  C       the serial C binary ($NB_C_BIN),
  C-omp   the OpenMP C build ($NB_C_OMP_BIN) with OMP_NUM_THREADS = the torch thread count,
all with the same C flags plus ``-nonoise -nopgm -noprogress -floatfile F`` in an empty working directory
(the C also writes its default intimage.img; ours writes only the float file). Every run is a separate
process; its peak RSS is measured by GNU time (else os.wait4, an upper bound). The table gives samples
(pixels x sub-pixels x layers x sources x phi steps x mosaic domains), min and median wall time, samples/s
(at the min time), C time / our time at the min times (> 1: we are faster), peak RSS, the first call of the
API (compile included), and the correlation of our image with the serial C image. Without a C binary the C
columns are left empty.

``--memory-sweep`` renders a 256x256 image with 1, 10, 100, 1000 mosaic domains through the API and reports
the peak RSS of each render process: memory is bounded by the chunk size, not by the number of samples.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nanobragg_torch.cli import config_from_flags  # noqa: E402
from nanobragg_torch.io.floatimage import read_float_image  # noqa: E402
from nanobragg_torch.lattice import transcendental_calls  # noqa: E402
from nanobragg_torch.plan import build_plan  # noqa: E402

RUNNER = ROOT / "tools" / "bench_runner.py"
MARK = "BENCH_JSON "
# the runner's back-to-back measurements (bench_runner.back_to_back): message field -> row name
LOOP_ROWS = (("loop_seconds", "api loop"), ("orient_seconds", "api loop, new orientation"))
OUTPUT_FLAGS = {"-floatfile": 1, "-intfile": 1, "-noisefile": 1, "-pgmfile": 1, "-nonoise": 0, "-nopgm": 0,
                "-noprogress": 0, "-printout": 0, "-printout_pixel": 2}
CUBIC = ("-cell 100 100 100 90 90 90 -N 5 -default_F 100 -lambda 1 -distance 100").split()


@dataclass(frozen=True)
class BenchCase:
    """A benchmark case: C flags (without outputs); `quick` replaces them under --quick."""

    name: str
    title: str
    flags: tuple[str, ...]
    quick: tuple[str, ...] | None = None
    quick_title: str = ""
    hidden: bool = False  # not part of the default set (select with --case)


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _pilatus_flags() -> tuple[str, ...] | None:
    """The golden case full_pilatus6m's flags without its output flags (None: shared data missing)."""
    from nanobragg_torch.parity.goldens import get_case, shared_data_dir

    case = get_case("full_pilatus6m")
    if any(not (shared_data_dir() / rel).exists() for rel in case.shared_files()):
        return None
    return tuple(strip_outputs(case.argv()))


def strip_outputs(flags: list[str] | tuple[str, ...]) -> list[str]:
    """Flags without the output/progress flags (the benchmark adds its own)."""
    out, i = [], 0
    while i < len(flags):
        n = OUTPUT_FLAGS.get(flags[i])
        if n is None:
            out.append(flags[i])
            i += 1
        else:
            i += 1 + n
    return out


MOSAIC = _split("-mosaic 0.5 -mosaic_domains 100 -phi 0 -osc 1 -phisteps 10")
CASES: list[BenchCase] = [
    BenchCase("cubic_1024", "cubic 1024^2, N=5",
              _split("-cell 100 100 100 90 90 90 -N 5 -default_F 100 -lambda 1 -distance 100 -detpixels 1024 "
                     "-pixel 0.1 -oversample 1")),
    BenchCase("triclinic_512", "triclinic 512^2, N=8, misset",
              _split("-cell 70 80 90 75 85 95 -misset 10 20 30 -N 8 -default_F 100 -lambda 1 -distance 100 "
                     "-detpixels 512 -pixel 0.1 -oversample 1")),
    BenchCase("tilted_256", "triclinic 256^2, N=8, misset, detector -twotheta 20 -detector_rotx 5",
              _split("-cell 70 80 90 75 85 95 -misset 10 20 30 -N 8 -default_F 100 -lambda 1 -distance 100 "
                     "-detpixels 256 -pixel 0.1 -oversample 1 -twotheta 20 -detector_rotx 5")),
    BenchCase("oversample_256", "triclinic 256^2, N=8, misset, -oversample 3",
              _split("-cell 70 80 90 75 85 95 -misset 10 20 30 -N 8 -default_F 100 -lambda 1 -distance 100 "
                     "-detpixels 256 -pixel 0.1 -oversample 3")),
    BenchCase("sampling_47m", "256^2, oversample 2, 3 layers, 20 divergence x 3 wavelengths",
              tuple(CUBIC) + _split("-pixel 0.1 -detpixels 256 -oversample 2 -detector_thick 100 "
                                    "-detector_thicksteps 3 -hdivrange 1 -vdivrange 1 -hdivsteps 5 -vdivsteps 4 "
                                    "-square_div -dispersion 1 -dispsteps 3")),
    BenchCase("mosaic_1g", "1024^2, 100 mosaic domains x 10 phi steps",
              tuple(CUBIC) + _split("-detpixels 1024 -pixel 0.1 -oversample 1") + MOSAIC,
              quick=tuple(CUBIC) + _split("-detpixels 256 -pixel 0.4 -oversample 1") + MOSAIC,
              quick_title="--quick: 256^2 of 0.4 mm (same detector area), 100 domains x 10 phi steps"),
    BenchCase("pilatus6m", "Pilatus 6M, A.mat + scaled.hkl, 10 phi steps (golden full_pilatus6m)", ()),
    BenchCase("tilted_xds_256", "triclinic 256^2, N=8, misset, -xds, -twotheta 20 -detector_rotx 5, -oversample 2",
              _split("-cell 70 80 90 75 85 95 -misset 10 20 30 -N 8 -default_F 100 -lambda 1 -distance 100 "
                     "-detpixels 256 -pixel 0.1 -oversample 2 -xds -twotheta 20 -detector_rotx 5"), hidden=True),
    BenchCase("tiny", "64^2, 2 phi x 2 domains (smoke test)",
              tuple(CUBIC) + _split("-detpixels 64 -pixel 0.4 -oversample 1 -mosaic 0.3 -mosaic_domains 2 "
                                    "-phi 0 -osc 1 -phisteps 2"), hidden=True),
]
SWEEP_FLAGS = tuple(CUBIC) + _split("-detpixels 256 -pixel 0.4 -oversample 1 -mosaic 0.5")


# ---------------------------------------------------------------------------------------------------
# processes


def _gnu_time() -> str | None:
    """GNU time, if present: it forks a small process, so the peak RSS it reports is the command's own.
    (os.wait4 of a child spawned by this process would include this process's RSS at the spawn: Linux
    keeps the pre-exec high-water mark.)"""
    path = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "-f", "%M", "-o", os.devnull, "true"], capture_output=True).returncode == 0
    except OSError:
        return None
    return path if ok else None


GNU_TIME = _gnu_time()


def measured(cmd: list[str], rss_file: Path) -> list[str]:
    """`cmd` wrapped so that its peak RSS (kB) lands in rss_file."""
    return [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else cmd


def read_rss(rss_file: Path, fallback_kb: int) -> int:
    try:
        return int(rss_file.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return fallback_kb


@dataclass
class ProcResult:
    seconds: float
    rss_kb: int
    code: int
    log: str
    cpu_s: float = 0.0  # user + system CPU seconds of the process (and the children it waited for)


def run_process(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> ProcResult:
    """Run a whole process: wall time and its peak RSS (GNU time, else os.wait4: an upper bound)."""
    rss_file = log.with_suffix(".rss")
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(measured(cmd, rss_file), cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcResult(seconds, read_rss(rss_file, int(usage.ru_maxrss)), proc.returncode,
                      log.read_text(errors="replace"), usage.ru_utime + usage.ru_stime)


class ApiRunner:
    """A tools/bench_runner.py child: renders on demand, so its runs interleave with the others."""

    def __init__(self, flags: list[str], dtype: str, device: str, threads: int, image: Path, env: dict[str, str],
                 stderr: Path, root: Path = ROOT) -> None:
        """`root`: the checkout whose API is measured (--before: another one, e.g. a worktree of main)."""
        if root != ROOT:
            env = dict(env, PYTHONPATH=str(root))
        cmd = [sys.executable, str(root / "tools" / "bench_runner.py"), "--dtype", dtype, "--device", device,
               "--threads", str(threads),
               "--image", str(image), "--", *flags]
        self._err: IO[bytes] = open(stderr, "wb")  # noqa: SIM115 (closed in finish)
        self.stderr_path = stderr
        self.rss_file = stderr.with_suffix(".rss")
        self.proc = subprocess.Popen(measured(cmd, self.rss_file), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env, text=True, bufsize=1, cwd=image.parent)
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self._err.flush()
        raise RuntimeError(f"bench runner died: {self.stderr_path.read_text(errors='replace')[-2000:]}")

    def render(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("render\n")
        self.proc.stdin.flush()
        return self._read()

    def finish(self) -> tuple[dict[str, Any], int]:
        """Quit; (last message, peak RSS kB of the whole process)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        last = self._read()
        self.proc.stdout.read()
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._err.close()
        return last, read_rss(self.rss_file, int(usage.ru_maxrss))


# ---------------------------------------------------------------------------------------------------
# measurement


@dataclass
class Impl:
    """Measurements of one implementation on one case."""

    impl: str  # api | cli | C | C-omp
    dtype: str
    device: str
    threads: int
    times: list[float] = field(default_factory=list)
    rss_kb: int = 0
    first_s: float | None = None
    compiled: bool | None = None
    corr_c: float | None = None
    ratio_c: float | None = None
    ratio_omp: float | None = None
    error: str | None = None

    @property
    def min_s(self) -> float | None:
        return min(self.times) if self.times else None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def as_dict(self, samples: int, limit: float | None = None) -> dict[str, Any]:
        """`limit`: the machine's samples/s ceiling for this case and dtype (None: not ours, or unknown)."""
        d = {k: v for k, v in self.__dict__.items()}
        sps = samples / self.min_s if self.min_s else None
        d.update(min_s=self.min_s, median_s=self.median_s, peak_rss_mb=self.rss_kb / 1024.0,
                 samples_per_s=sps, limit_samples_per_s=limit,
                 limit_fraction=(sps / limit) if (sps and limit) else None,
                 compile_s=(self.first_s - self.median_s) if (self.first_s and self.median_s) else None)
        return d


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def count_samples(flags: list[str]) -> tuple[int, tuple[int, int], int]:
    """(pixels x sub-pixels x layers x sources x phi x domains, (spixels, fpixels), transcendental calls per
    sample) from our plan."""
    cfg, _ = config_from_flags(flags, cwd=os.devnull)
    plan = build_plan(cfg, torch.float64, "cpu", compile=False)
    spec = plan.kernel.spec
    calls = transcendental_calls(spec.shape, spec.N_active)
    return (plan.samples_per_pixel * int(plan.pixel_order.numel()), (cfg.detector.spixels, cfg.detector.fpixels),
            calls)


def sin_throughput(dtype: torch.dtype, threads: int, n: int = 1 << 18, calls: int = 40) -> float:
    """The machine's transcendental throughput: sin evaluations per second of torch's vectorized CPU sin (the
    SLEEF routine that the compiled kernel's sin lowers to as well) on `threads` threads, over a buffer that
    stays in cache, with arguments spread like the kernel's (|N pi f| up to a few hundred); best of 5."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(n, generator=gen, dtype=torch.float64) * 600.0 - 300.0).to(dtype)
        out = torch.empty_like(x)
        torch.sin(x, out=out)
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.sin(x, out=out)
            best = min(best, time.perf_counter() - t0)
        return n * calls / best
    finally:
        torch.set_num_threads(before)


def c_binary(var: str) -> str | None:
    path = os.environ.get(var)
    return path if path and os.access(path, os.X_OK) else None


def child_env(threads: int, compile_mode: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    env.pop("NB_COMPILE", None)
    if compile_mode != "auto":
        env["NB_COMPILE"] = "1" if compile_mode == "on" else "0"
    return env


def bench_case(case: BenchCase, flags: list[str], args: argparse.Namespace, work: Path,
               log=print) -> dict[str, Any]:
    """All implementations of one case, interleaved per repetition."""
    samples, shape, calls = count_samples(flags)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    ours_extra = ["--c-compat"] if args.c_compat else []
    env = child_env(args.threads, args.compile)
    cdir = work / case.name
    cdir.mkdir(parents=True, exist_ok=True)
    out_flags = ["-nonoise", "-nopgm", "-noprogress"]

    def outputs(tag: str) -> tuple[Path, list[str]]:
        d = cdir / tag
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        return d, out_flags + ["-floatfile", str(d / "float.bin")]

    results: list[Impl] = []
    runners: dict[str, ApiRunner] = {}  # key: dtype, or "before dtype" (--before)
    api: dict[str, Impl] = {}
    api_render: dict[str, Impl] = {}
    loops: dict[str, dict[str, Impl]] = {}  # key -> runner message field -> row (LOOP_ROWS)
    cli: dict[str, Impl] = {}
    roots = [("", ROOT)] + ([("before ", Path(args.before).resolve())] if args.before else [])
    if not args.no_api:
        for tag, root in roots:
            for dt in dtypes:
                key = tag + dt
                suffix = " (before)" if tag else ""
                imp = Impl("api" + suffix, dt, args.device, args.threads)
                api[key] = imp
                api_render[key] = Impl("api render" + suffix, dt, args.device, args.threads)
                loops[key] = {field: Impl(name + suffix, dt, args.device, args.threads) for field, name in LOOP_ROWS}
                results += [imp, api_render[key], *loops[key].values()]
                d, _ = outputs(f"api_{tag.strip() or 'after'}_{dt}")
                try:
                    runners[key] = ApiRunner(flags + ours_extra, dt, args.device, args.threads, d / "image.npy",
                                             env, d / "stderr.txt", root)
                    first = runners[key].render()
                    imp.first_s, imp.compiled = first["seconds"], first["compiled"]
                    log(f"  api{suffix} {dt}: first call {imp.first_s:.2f} s (compiled={imp.compiled})")
                except RuntimeError as exc:
                    imp.error = str(exc)
                    runners.pop(key, None)
    if not args.no_cli:
        for dt in dtypes:
            cli[dt] = Impl("cli", dt, args.device, args.threads)
            results.append(cli[dt])
    c_bin, omp_bin = c_binary("NB_C_BIN"), c_binary("NB_C_OMP_BIN")
    c_impl = Impl("C", "double", "cpu", 1) if c_bin else None
    omp_impl = Impl("C-omp", "double", "cpu", args.threads) if omp_bin else None
    results += [x for x in (c_impl, omp_impl) if x is not None]
    c_image_path = None

    def whole(imp: Impl, cmd: list[str], tag: str) -> Path | None:
        d, extra = outputs(tag)
        r = run_process(cmd + extra, d, env, d / "log.txt")
        if r.code != 0:
            imp.error = f"exit {r.code}: {r.log[-500:]}"
            return None
        imp.times.append(r.seconds)
        imp.rss_kb = max(imp.rss_kb, r.rss_kb)
        log(f"  {imp.impl} {imp.dtype}: {r.seconds:.2f} s, {r.rss_kb / 1024:.0f} MB")
        return d / "float.bin"

    cli_images: dict[str, Path | None] = {}

    def cli_cmd(dt: str) -> list[str]:
        return [sys.executable, "-m", "nanobragg_torch", *flags, *ours_extra, "-dtype", dt, "-device", args.device]

    for dt in cli:  # one untimed run each: the CLI is timed with a warm kernel cache (the API may not have run)
        d, extra = outputs(f"cli_{dt}_warmup")
        r = run_process(cli_cmd(dt) + extra, d, env, d / "log.txt")
        log(f"  cli {dt}: warm-up {r.seconds:.2f} s (untimed)")
    for rep in range(args.reps):
        log(f"  rep {rep + 1}/{args.reps}")
        for dt in dtypes:
            for key in (dt, "before " + dt):
                if key in runners:
                    msg = runners[key].render()
                    api[key].times.append(msg["seconds"])
                    api_render[key].times.append(msg["render_seconds"])
                    for field, imp in loops[key].items():
                        if field in msg:  # a --before checkout's runner may not loop
                            imp.times.append(msg[field])
                    log(f"  {api[key].impl} {dt}: {msg['seconds']:.4f} s (render {msg['render_seconds']:.4f} s)")
            if dt in cli and cli[dt].error is None:
                cli_images[dt] = whole(cli[dt], cli_cmd(dt), f"cli_{dt}")
        if c_impl is not None and c_impl.error is None:
            c_image_path = whole(c_impl, [c_bin, *flags], "c")
        if omp_impl is not None and omp_impl.error is None:
            whole(omp_impl, [omp_bin, *flags], "c_omp")

    c_image = read_float_image(c_image_path, shape) if c_image_path is not None else None
    for key, runner in runners.items():
        _, rss = runner.finish()
        rows = [api[key], api_render[key], *loops[key].values()]
        for imp in rows:
            imp.rss_kb = rss
        if c_image is not None:
            tag, dt = key.split(" ") if " " in key else ("after", key)
            path = cdir / f"api_{tag}_{dt}" / "image.npy"
            if path.exists():
                corr = correlation(np.load(path), c_image)
                for imp in rows:
                    imp.corr_c = corr
    results = [r for r in results if r.times or r.error or not r.impl.startswith("api loop")]
    for dt, path in cli_images.items():
        if c_image is not None and path is not None and path.exists():
            cli[dt].corr_c = correlation(read_float_image(path, shape), c_image)
    for imp in results:
        if imp.impl.startswith(("api", "cli")) and imp.min_s:
            if c_impl is not None and c_impl.min_s:
                imp.ratio_c = c_impl.min_s / imp.min_s
            if omp_impl is not None and omp_impl.min_s:
                imp.ratio_omp = omp_impl.min_s / imp.min_s
    if omp_impl is not None and omp_impl.min_s and c_impl is not None and c_impl.min_s:
        omp_impl.ratio_c = c_impl.min_s / omp_impl.min_s
    notes = []
    if c_impl is None:
        notes.append("C serial not run (NB_C_BIN unset or not executable)")
    if omp_impl is None:
        notes.append("C OpenMP not run (NB_C_OMP_BIN unset or not executable)")
    return {"name": case.name, "title": case.quick_title if (args.quick and case.quick) else case.title,
            "flags": flags, "samples": samples, "shape": list(shape), "reps": args.reps, "notes": notes,
            "transcendentals_per_sample": calls,
            "results": [r.as_dict(samples, _limit(args, r, calls)) for r in results]}


def _limit(args: argparse.Namespace, imp: Impl, calls: int) -> float | None:
    """The machine's ceiling in samples/s for one of our rows: sin throughput / transcendental calls per sample."""
    rate = getattr(args, "sin_rate", {}).get(imp.dtype)
    if not imp.impl.startswith(("api", "cli")) or not rate or not calls:
        return None
    return rate / calls


# ---------------------------------------------------------------------------------------------------
# a fresh machine: the first renders of a new process with an empty kernel cache

FRESH_CASES = ("cubic_1024", "triclinic_512", "tilted_xds_256")
# the child: simulate() of one config in a process whose kernel cache (NB_KERNEL_CACHE) is empty, with the
# package's own default choices (no NB_COMPILE, background builds on): the first render, the next seven, then
# renders until one takes the compiled kernel (a background build finished) or the wait runs out
FRESH_CHILD = r"""
import json, os, sys, time
import torch
from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.plan import build_plan
from nanobragg_torch.engine import render
wait, dtype = float(sys.argv[1]), getattr(torch, sys.argv[2])
cfg, _ = config_from_flags(sys.argv[3:], cwd=os.devnull)
cpu = []
def one():
    t, c = time.perf_counter(), time.process_time()
    with torch.no_grad():
        plan = build_plan(cfg, dtype)
        render(plan)
    cpu.append(time.process_time() - c)
    return time.perf_counter() - t, plan.compiled
start = time.perf_counter()
times = [one()[0] for _ in range(8)]
first_cpu, next7_cpu = cpu[0], min(cpu[1:8])
warm_after = warm = None
while time.perf_counter() - start < wait:
    t, compiled = one()
    if compiled:
        warm_after = time.perf_counter() - start
        warm = min([t] + [one()[0] for _ in range(3)])
        break
    time.sleep(0.25)  # a loop of renders, not a busy spin against the build
print("FRESH_JSON " + json.dumps({"first": times[0], "next7": min(times[1:]), "warm_after": warm_after,
                                  "warm": warm, "first_cpu": first_cpu, "next7_cpu": next7_cpu}), flush=True)
"""


def fresh(args: argparse.Namespace, work: Path, log=print) -> list[dict[str, Any]]:
    """Per case of FRESH_CASES (or --case) and dtype, `args.reps` times, interleaved with the serial C: a new
    process with an empty kernel cache renders the case (FRESH_CHILD). Reports min over the repetitions of the
    C's whole run, our first render and the best of our next seven (in process, after `import torch`), their
    ratios C / ours, and when the loop first rendered with the compiled kernel (seconds after its first render
    started; None: not within --warm-wait) and that kernel's render time."""
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    c_bin = c_binary("NB_C_BIN")
    env = child_env(args.threads, "auto")
    env["NB_BACKGROUND_COMPILE"] = "1"
    rows = []
    for case in select_cases(args.case or list(FRESH_CASES)):
        flags = list(case.flags)
        for dt in dtypes:
            c_times, c_cpu, ours = [], [], []
            for rep in range(args.reps):
                d = work / f"fresh_{case.name}_{dt}_{rep}"
                d.mkdir(parents=True, exist_ok=True)
                out = ["-nonoise", "-nopgm", "-noprogress", "-floatfile", str(d / "float.bin")]
                if c_bin:
                    r = run_process([c_bin, *flags, *out], d, env, d / "c.txt")
                    c_times.append(r.seconds)
                    c_cpu.append(r.cpu_s)
                child_env_ = dict(env, NB_KERNEL_CACHE=str(d / "kernels"))
                r = subprocess.run([sys.executable, "-c", FRESH_CHILD, str(args.warm_wait), dt, *flags], cwd=d,
                                   env=child_env_, capture_output=True, text=True)
                line = [x for x in r.stdout.splitlines() if x.startswith("FRESH_JSON ")]
                if r.returncode != 0 or not line:
                    raise RuntimeError(f"fresh-cache run failed: {r.stderr[-2000:]}")
                m = json.loads(line[-1][len("FRESH_JSON "):])
                ours.append(m)
                log(f"  fresh {case.name} {dt} rep {rep + 1}: C {c_times[-1] if c_times else float('nan'):.3f} s, "
                    f"first {m['first']:.3f} s, next 7 {m['next7']:.3f} s, warm after {m['warm_after']}")
            c_min = min(c_times) if c_times else None
            first = min(m["first"] for m in ours)
            next7 = min(m["next7"] for m in ours)
            warm_after = [m["warm_after"] for m in ours if m["warm_after"] is not None]
            warm = [m["warm"] for m in ours if m["warm"] is not None]
            cpu = {"c_cpu_s": min(c_cpu) if c_cpu else None, "first_cpu_s": min(m["first_cpu"] for m in ours),
                   "next7_cpu_s": min(m["next7_cpu"] for m in ours)}
            if cpu["c_cpu_s"]:
                cpu.update(c_over_first_cpu=cpu["c_cpu_s"] / cpu["first_cpu_s"],
                           c_over_next7_cpu=cpu["c_cpu_s"] / cpu["next7_cpu_s"])
            rows.append({"case": case.name, "dtype": dt, "c_s": c_min, "first_s": first, "next7_s": next7, **cpu,
                         "c_over_first": c_min / first if c_min else None,
                         "c_over_next7": c_min / next7 if c_min else None,
                         "warm_after_s": max(warm_after) if len(warm_after) == len(ours) else None,
                         "warm_s": min(warm) if warm else None, "reps": args.reps})
    return rows


def fresh_markdown(rows: list[dict[str, Any]]) -> str:
    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = ["| case | dtype | C s | first render s | C/first | best of next 7 s | C/next 7 | C/first, CPU time | "
             "C/next 7, CPU time | compiled after s | compiled render s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['dtype']} | {f(r['c_s'], '.3f')} | {r['first_s']:.3f} | "
                     f"{f(r['c_over_first'], '.2f')} | {r['next7_s']:.3f} | {f(r['c_over_next7'], '.2f')} | "
                     f"{f(r.get('c_over_first_cpu'), '.2f')} | {f(r.get('c_over_next7_cpu'), '.2f')} | "
                     f"{f(r['warm_after_s'], '.1f')} | {f(r['warm_s'], '.4f')} |")
    lines.append("")
    lines.append("Min over the repetitions (C and ours interleaved); ours in process after `import torch`, empty "
                 "kernel cache, default choices (eager until the background build's package loads); 'CPU time': "
                 "the same ratios in process CPU seconds (the C's whole process), which a loaded machine disturbs "
                 "less than wall time; 'compiled after': the slowest repetition's seconds from its first render "
                 "to its first compiled render.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# start-up: where a small CLI run's time goes

# the child: times `import torch`, our imports, the flags -> config, build_plan, render and the rest of the
# run (statistics, files) of one `nanobragg` command (tool-side wrappers of outputs.build_plan/render)
STARTUP_CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import nanobragg_torch.cli as cli
import nanobragg_torch.outputs as outputs
t2 = time.perf_counter()
marks = {}
def timed(name, fn):
    def run(*a, **k):
        marks[name + "_start"] = time.perf_counter()
        out = fn(*a, **k)
        marks[name + "_end"] = time.perf_counter()
        return out
    return run
outputs.build_plan = timed("plan", outputs.build_plan)
outputs.render = timed("render", outputs.render)
code = cli.main(sys.argv[1:])
t3 = time.perf_counter()
print("STARTUP_JSON " + json.dumps({"code": code, "torch": t1 - t0, "ours": t2 - t1,
      "config": marks["plan_start"] - t2, "plan": marks["plan_end"] - marks["plan_start"],
      "between": marks["render_start"] - marks["plan_end"], "render": marks["render_end"] - marks["render_start"],
      "outputs": t3 - marks["render_end"], "child": t3 - t0}), file=sys.stderr)
import os, pathlib
if "os._exit" in (pathlib.Path(cli.__file__).parent / "__main__.py").read_text():
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)  # end the run as this checkout's `python -m nanobragg_torch` does
"""
STARTUP_FLAGS = tuple(CUBIC) + _split("-detpixels 64 -pixel 0.4 -oversample 1")
STARTUP_PHASES = ("interpreter", "torch", "ours", "config", "plan", "between", "render", "outputs", "exit")


def startup(args: argparse.Namespace, work: Path, log=print) -> list[dict[str, Any]]:
    """Min over `args.reps` runs of each phase of a small CLI run (64^2, 1 sample per pixel), per dtype: the
    interpreter (`python -c pass`), `import torch`, our imports, flags -> config, build_plan, render, the rest
    (advisories, statistics, files), and the process exit (whole wall time minus the rest)."""
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    rows = []
    roots = [("", ROOT)] + ([("before", Path(args.before).resolve())] if args.before else [])
    for (tag, root), dt in [(r, dt) for r in roots for dt in dtypes]:
        env = dict(child_env(args.threads, args.compile), PYTHONPATH=str(root))
        best: dict[str, float] = {}
        for rep in range(args.reps + 1):  # the first run warms the kernel cache and the page cache: untimed
            d = work / f"startup_{tag}_{dt}_{rep}"
            d.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], cwd=d, env=env, check=True)
            interp = time.perf_counter() - t0
            cmd = [sys.executable, "-c", STARTUP_CHILD, *STARTUP_FLAGS, "-nonoise", "-nopgm", "-noprogress",
                   "-floatfile", "float.bin", "-dtype", dt]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            line = [x for x in r.stderr.splitlines() if x.startswith("STARTUP_JSON ")]
            if r.returncode != 0 or not line:
                raise RuntimeError(f"start-up run failed: {r.stderr[-2000:]}")
            m = json.loads(line[-1][len("STARTUP_JSON "):])
            m.update(interpreter=interp, exit=max(0.0, wall - interp - m["child"]), wall=wall)
            if rep == 0:
                continue
            for k in (*STARTUP_PHASES, "wall"):
                best[k] = min(best.get(k, math.inf), m[k])
            log(f"  startup {tag} {dt}: wall {wall:.3f} s, torch {m['torch']:.3f} s, ours {m['ours']:.3f} s")
        best["above_torch"] = best["wall"] - best["interpreter"] - best["torch"]
        rows.append({"dtype": dt + (f" ({tag})" if tag else ""), **best})
    return rows


def startup_markdown(rows: list[dict[str, Any]]) -> str:
    head = ["dtype", *STARTUP_PHASES, "whole run", "above torch"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        vals = [f"{r[k]:.3f}" for k in (*STARTUP_PHASES, "wall", "above_torch")]
        lines.append(f"| {r['dtype']} | " + " | ".join(vals) + " |")
    lines.append("")
    lines.append(f"Seconds, min of each phase over the repetitions; flags `{' '.join(STARTUP_FLAGS)}` "
                 "(the whole run's min is its own, so the phases need not add up to it).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# reporting


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info.update(git_sha=git_sha(), sources_sha256=sources_digest())
    return info


def git_sha() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def sources_digest() -> str:
    """sha256 over the package's .py files: identifies the engine measured, committed or not."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "nanobragg_torch").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _fmt(x: float | None, spec: str) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return ""
    return format(x, spec)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f} %"


def _corr(x: float | None) -> str:
    if x is None or x != x:
        return ""
    return "1 - %.1e" % (1 - x) if x < 1 else "1"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    threads = report["options"].get("threads", m["torch_threads"])
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB; torch {m['torch']}, "
             f"{threads} threads; {m['date']}; git {str(m.get('git_sha'))[:10]}, sources sha256 "
             f"{str(m.get('sources_sha256'))[:12]}", ""]
    rates = m.get("sin_per_s") or {}
    if rates:
        lines += ["Machine limit (sin evaluations/s, torch's vectorized sin, "
                  f"{threads} threads): " + ", ".join(f"{k} {v / 1e6:.0f} M/s" for k, v in rates.items())
                  + "; a case's limit = that / its transcendental calls per sample.", ""]
    lines += ["| case | samples | impl | dtype | device | threads | min s | median s | Msamples/s | of limit "
              "| C/ours | C-omp/ours | peak RSS MB | first call s | corr vs C |",
              "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case in report["cases"]:
        for r in case["results"]:
            if r["error"] and not r["times"]:
                lines.append(f"| {case['name']} | {case['samples']:,} | {r['impl']} | {r['dtype']} | | | failed: "
                             f"{r['error'][:60]!s} | | | | | | | | |")
                continue
            sps = r["samples_per_s"] / 1e6 if r["samples_per_s"] else None
            first = _fmt(r["first_s"], ".2f") + (" (compiled)" if r["compiled"] else "")
            lines.append(
                f"| {case['name']} | {case['samples']:,} | {r['impl']} | {r['dtype']} | {r['device']} | "
                f"{r['threads']} | {_fmt(r['min_s'], '.3f')} | {_fmt(r['median_s'], '.3f')} | {_fmt(sps, '.2f')} | "
                f"{_pct(r.get('limit_fraction'))} | "
                f"{_fmt(r['ratio_c'], '.2f')} | {_fmt(r['ratio_omp'], '.2f')} | {_fmt(r['peak_rss_mb'], '.0f')} | "
                f"{first} | {_corr(r['corr_c'])} |")
    lines.append("")
    for case in report["cases"]:
        lines.append(f"- `{case['name']}`: {case['title']}; {case['reps']} reps; "
                     f"{case.get('transcendentals_per_sample', '?')} transcendental calls per sample; "
                     f"flags `{' '.join(case['flags'])}`")
        for note in case["notes"]:
            lines.append(f"  - {note}")
    return "\n".join(lines) + "\n"


def sweep_markdown(report: dict[str, Any]) -> str:
    lines = ["| mosaic domains | samples | dtype | compiled | render s | RSS before render MB | peak RSS MB | "
             "render increment MB | C peak RSS MB |", "|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in report["sweep"]:
        grow = r["peak_rss_mb"] - r["rss_before_mb"]
        lines.append(f"| {r['domains']} | {r['samples']:,} | {r['dtype']} | {r['compiled']} | {r['seconds']:.2f} | "
                     f"{r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} | {grow:.0f} | "
                     f"{_fmt(r.get('c_rss_mb'), '.0f')} |")
    return "\n".join(lines) + "\n"


def memory_sweep(args: argparse.Namespace, work: Path, log=print) -> list[dict[str, Any]]:
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    env = child_env(args.threads, args.compile)
    c_bin = c_binary("NB_C_BIN")
    rows = []
    for domains in args.domains:
        flags = list(SWEEP_FLAGS) + ["-mosaic_domains", str(domains)]
        samples, _, _ = count_samples(flags)
        c_rss = None
        if c_bin:
            d = work / f"sweep_c_{domains}"
            d.mkdir(parents=True, exist_ok=True)
            r = run_process([c_bin, *flags, "-nonoise", "-nopgm", "-noprogress", "-floatfile", "f.bin"], d, env,
                            d / "log.txt")
            c_rss = r.rss_kb / 1024.0
        for dt in dtypes:
            d = work / f"sweep_{domains}_{dt}"
            d.mkdir(parents=True, exist_ok=True)
            runner = ApiRunner(flags, dt, args.device, args.threads, d / "image.npy", env, d / "stderr.txt")
            msg = runner.render()
            _, rss = runner.finish()
            row = {"domains": domains, "samples": samples, "dtype": dt, "compiled": msg["compiled"],
                   "seconds": msg["seconds"], "rss_before_mb": runner.ready["rss_kb"] / 1024.0,
                   "peak_rss_mb": rss / 1024.0, "c_rss_mb": c_rss}
            log(f"  {domains} domains {dt}: {row['seconds']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB "
                f"(before render {row['rss_before_mb']:.0f} MB)")
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------


def select_cases(names: list[str] | None) -> list[BenchCase]:
    by_name = {c.name: c for c in CASES}
    if not names:
        return [c for c in CASES if not c.hidden]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", help="run only this case (repeatable); default: all but 'tiny'")
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per implementation (default 3)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="torch threads and OMP_NUM_THREADS of the OpenMP C (default: torch.get_num_threads())")
    ap.add_argument("--quick", action="store_true", help="shrink the 1 G-sample case (see the case list)")
    ap.add_argument("--no-cli", action="store_true", help="skip our whole-process CLI runs")
    ap.add_argument("--no-api", action="store_true", help="skip our in-process API runs")
    ap.add_argument("--c-compat", action="store_true", help="render ours with --c-compat (pinned C behaviour)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="on",
                    help="the compiled kernel (NB_COMPILE): on (default: steady state with a warm kernel cache; the "
                         "API's first call builds or loads the package), off (eager), auto (the engine's own rule)")
    ap.add_argument("--memory-sweep", action="store_true", help="peak RSS vs number of mosaic domains")
    ap.add_argument("--startup", action="store_true",
                    help="where a small CLI run's time goes: interpreter, import torch, our imports, plan, render, ...")
    ap.add_argument("--fresh", action="store_true",
                    help="a fresh machine: first renders of a new process with an empty kernel cache against the C")
    ap.add_argument("--warm-wait", type=float, default=120.0,
                    help="for --fresh: seconds a loop of renders waits for the compiled kernel (default 120)")
    ap.add_argument("--derivatives", action="store_true",
                    help="derivative images of 6 parameters against one forward render (tools/bench_derivatives.py)")
    ap.add_argument("--domains", type=int, nargs="+", default=[1, 10, 100, 1000], help="for --memory-sweep")
    ap.add_argument("--json", type=Path, help="write the full report as JSON")
    ap.add_argument("--md", type=Path, help="write the Markdown table")
    ap.add_argument("--before", type=Path,
                    help="also measure the API of this checkout (e.g. `git worktree add /tmp/before main`), "
                         "interleaved: rows 'api (before)' / 'api render (before)'")
    ap.add_argument("--workdir", type=Path, help="keep the run's files here (default: a temporary folder)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report: dict[str, Any] = {"machine": machine(), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                                 for k, v in vars(args).items()},
                              "c_bin": c_binary("NB_C_BIN"), "c_omp_bin": c_binary("NB_C_OMP_BIN")}
    with tempfile.TemporaryDirectory(prefix="nb_bench_") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.derivatives:
            import bench_derivatives

            args.dtype = "float32" if args.dtype == "both" else args.dtype
            report["derivatives"] = bench_derivatives.derivative_row(args, log)
            md = bench_derivatives.markdown(report["derivatives"])
        elif args.memory_sweep:
            report["sweep"] = memory_sweep(args, work, log)
            md = sweep_markdown(report)
        elif args.startup:
            report["startup"] = startup(args, work, log)
            md = startup_markdown(report["startup"])
        elif args.fresh:
            report["fresh"] = fresh(args, work, log)
            md = fresh_markdown(report["fresh"])
        else:
            dts = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
            if args.device == "cpu":
                args.sin_rate = {dt: sin_throughput(getattr(torch, dt), args.threads) for dt in dts}
                report["machine"]["sin_per_s"] = args.sin_rate
                log("sin throughput: " + ", ".join(f"{k} {v / 1e6:.0f} M/s" for k, v in args.sin_rate.items()))
            report["cases"] = []
            for case in select_cases(args.case):
                flags = list(case.quick if (args.quick and case.quick) else case.flags)
                if case.name == "pilatus6m":
                    pil = _pilatus_flags()
                    if pil is None:
                        log("pilatus6m: shared data missing (NB_SHARED_DATA); skipped")
                        continue
                    flags = list(pil)
                log(f"{case.name}: {' '.join(flags)}")
                report["cases"].append(bench_case(case, flags, args, work, log))
            md = markdown(report)
    sys.stdout.write(md)
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
