"""Compiled forms of `kernel.pixel_kernel`, and the choice between them.

* ``aot``: an AOTInductor package (a shared library) per kernel variant, built once per machine and cached on
  disk. A later process loads it in milliseconds through torch's C++ loader, without importing the compiler
  stack (torch._dynamo/_inductor cost ~3 s of import per process even with a warm inductor cache). No autograd;
  CPU only (untested elsewhere). Used for renders without gradients.
* ``jit``: torch.compile of the same function (dynamic shapes): renders with gradients (of large or explicitly
  compiled plans), and other devices.
* ``triton``: on a CUDA device with `triton` installed (the `gpu` extra), the hand-written fused kernel of
  `gpu_kernel.py` (every sample loop inside one launch) for renders without gradients; with gradients the plan
  takes its ``grad_mode`` (torch.compile or eager: the autograd-capable forms of the same function).
* ``eager``: the function op by op.

A variant is (KernelSpec, which sample axes have length 1, dtype, device type): the sample counts and the
image size are dynamic, so one package serves every chunk and every image of that variant. Packages live in
`cache_dir()` (env NB_KERNEL_CACHE, else ~/.cache/nanobragg_torch/kernels), in a folder named after the torch
version and a hash of the kernel's sources: every module the kernel's code reaches, found by walking the
imports (`kernel_modules`), so an edited helper never loads a stale package. Each package has a record
(NAME.json: variant, source hash, torch version, the package's sha256) checked before it is loaded: a package
of another variant, or damaged, is rebuilt once, never run.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .kernel import KernelInputs, KernelSpec, pixel_kernel

Tensor = torch.Tensor

# the sample axes of KernelInputs: field -> {dim: axis name}; an axis of length 1 is compiled as a constant
_AXES = {
    "sub_f": {0: "O2"},
    "sub_s": {0: "O2"},
    "layer_t": {0: "T"},
    "incident": {0: "S"},
    "wavelength": {0: "S"},
    "cells": {0: "R"},
    "F_table": {0: "F"},
}
BUILD_EXPECTED = "20 s to 2 min on CPU"  # the one-off export + AOT compile of a variant (announced on stderr)
_PACKAGE = Path(__file__).resolve().parent
_ENTRY_MODULES = ("compiled.py", "kernel.py")  # the kernel's code starts here; the rest is found by imports


def kernel_modules(root: Path = _PACKAGE) -> list[Path]:
    """Every module of the package (under `root`) that the kernel's code reaches, by walking the imports of
    compiled.py and kernel.py transitively (relative and absolute imports of the package, and the __init__ of
    a subpackage they enter; stdlib and torch are covered by the torch version in the key; the package's own
    __init__ only re-exports the API)."""
    seen: set[Path] = set()
    todo = [root / name for name in _ENTRY_MODULES]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        package = path.parent
        for node in _import_nodes(path):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package
                    for _ in range(node.level - 1):
                        base = base.parent
                    parts = node.module.split(".") if node.module else []
                elif node.module and node.module.split(".")[0] == root.name:
                    base, parts = root, node.module.split(".")[1:]
                else:
                    continue
                target = base.joinpath(*parts)
                todo += [_module_file(target)] + [_module_file(target / alias.name) for alias in node.names]
                todo += [d / "__init__.py" for d in target.parents if d != root and root in d.parents]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == root.name:
                        target = root.joinpath(*parts[1:])
                        todo.append(_module_file(target))
                        todo += [d / "__init__.py" for d in target.parents if d != root and root in d.parents]
    return sorted(seen)


# an import statement at the start of a line (any indentation), a parenthesized name list included
_IMPORT_LINE = re.compile(r"^[ \t]*((?:from[ \t]+[\w.]+[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*))|(?:import[ \t]+[^\n]*))",
                          re.M)


def _import_nodes(path: Path) -> list[ast.AST]:
    """The Import/ImportFrom nodes of a module. Parsing only its import lines is ~10x cheaper than the whole
    module (the first plan of every process computes the key); any line that does not parse alone (a
    continuation, a docstring that starts with "import") falls back to parsing the whole module. An import
    line quoted in a docstring may add a module to the key: conservative."""
    text = path.read_text()
    nodes: list[ast.AST] = []
    for match in _IMPORT_LINE.finditer(text):
        try:
            nodes += ast.parse(match.group(1)).body
        except SyntaxError:
            tree = ast.parse(text, filename=str(path))
            return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    return nodes


def _module_file(target: Path) -> Path:
    return target / "__init__.py" if target.is_dir() else target.with_suffix(".py")


def source_digest(root: Path = _PACKAGE) -> str:
    """sha256 (12 hex digits) over the path and bytes of every module in `kernel_modules(root)`."""
    digest = hashlib.sha256()
    for path in kernel_modules(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


_DIGEST = functools.cache(source_digest)  # sources do not change under a running process


def cache_dir() -> Path:
    """Folder of this torch version's and these kernel sources' packages."""
    root = os.environ.get("NB_KERNEL_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanobragg_torch" / "kernels"
    return base / f"torch-{torch.__version__}-{_DIGEST()}"


_LOADED: dict[Path, object] = {}  # packages loaded by this process


def load_package(path: Path):
    """The package's runner (loaded once per process)."""
    if path not in _LOADED:
        _LOADED[path] = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    return _LOADED[path]


def _unit_axes(inputs: KernelInputs) -> str:
    """Which sample axes have length 1 (compiled as constants: their loops vanish)."""
    seen = {}
    for field, dims in _AXES.items():
        for d, name in dims.items():
            seen[name] = getattr(inputs, field).shape[d] == 1
    return "".join(name for name, unit in seen.items() if unit) or "none"


def variant(spec: KernelSpec, inputs: KernelInputs) -> str:
    """The variant a package is built for: spec, unit sample axes, dtype, device type."""
    dtype = str(inputs.pixel_size.dtype).replace("torch.", "")
    return f"{spec.key}-unit_{_unit_axes(inputs)}-{dtype}-{inputs.pixel_size.device.type}"


def package_path(spec: KernelSpec, inputs: KernelInputs) -> Path:
    return cache_dir() / f"{variant(spec, inputs)}.pt2"


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _record(path: Path, name: str) -> dict:
    """What a package records about itself: its variant, the sources and torch it was built from, its bytes."""
    return {
        "variant": name,
        "sources": _DIGEST(),
        "torch": torch.__version__,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


# packages this process verified, by path: the (inode, size, mtime) of the package and its record at the time;
# a file replaced or touched since (a rebuild, a copy) is verified again. Only files older than RACY_S when
# verified are remembered: a file rewritten within the clock tick of its verification keeps its mtime (git's
# "racily clean" index entries), so a young file is hashed every time.
_VERIFIED: dict[Path, tuple] = {}
RACY_S = 2.0


def package_matches(path: Path, name: str) -> bool:
    """True when the package at `path` records variant `name`, this source digest and torch, and its bytes are
    the ones recorded (a package copied or renamed from another variant, or damaged, does not match). The
    bytes are hashed once per process and file version (2 ms for a 2 MB package: as much as a small render)."""
    try:
        stats = (path.stat(), _record_path(path).stat())
        signature = (name, *((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats))
        if _VERIFIED.get(path) == signature:
            return True
        recorded = json.loads(_record_path(path).read_text())
        if recorded != _record(path, name):
            return False
    except (OSError, ValueError):
        return False
    if time.time() - max(st.st_mtime for st in stats) > RACY_S:
        _VERIFIED[path] = signature
    return True


def fused_spec(spec: KernelSpec) -> KernelSpec:
    """The switches of a compiled form: the lattice sines as polynomials (lattice.sincg_pi), which a fused
    loop evaluates as multiply-adds faster than two library sin calls per axis."""
    return dataclasses.replace(spec, poly_sin=True)


class _Module(torch.nn.Module):
    def __init__(self, spec: KernelSpec) -> None:
        super().__init__()
        self.spec = fused_spec(spec)

    def forward(self, flat_idx: Tensor, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        return pixel_kernel(self.spec, KernelInputs(*tensors), flat_idx)


def build_package(spec: KernelSpec, inputs: KernelInputs, flat_idx: Tensor, path: Path) -> None:
    """Export and AOT-compile the kernel for this variant (tens of seconds), written atomically to `path`."""
    from torch.export import Dim

    axes: dict[str, Dim] = {}
    shapes = []
    for field in KernelInputs._fields:
        dims = {}
        for d, name in _AXES.get(field, {}).items():
            if getattr(inputs, field).shape[d] > 1:
                dims[d] = axes.setdefault(name, Dim(name, min=2))
        shapes.append(dims or None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):  # torch's own deprecations inside export
                warnings.simplefilter("ignore", category)
            program = torch.export.export(
                _Module(spec), (flat_idx, *inputs), dynamic_shapes=({0: Dim("C", min=2)}, tuple(shapes)),
                strict=False,
            )
            torch._inductor.aoti_compile_and_package(program, package_path=tmp)
        os.chmod(tmp, 0o644)
        record = _record(Path(tmp), variant(spec, inputs))
        Path(tmp + ".json").write_text(json.dumps(record))
        os.replace(tmp + ".json", _record_path(path))
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp + ".json"):
            if os.path.exists(leftover):
                os.unlink(leftover)


class KernelRunner:
    """`pixel_kernel` of one plan in the chosen form; call with a chunk's flat pixel indices."""

    def __init__(self, spec: KernelSpec, inputs: KernelInputs, mode: str, grad_mode: str = "eager") -> None:
        self.spec, self.inputs = spec, inputs
        self._fused = fused_spec(spec)  # one object: torch.compile guards on it
        self.mode = mode  # without gradients: eager | aot | jit
        self.grad_mode = grad_mode  # with gradients: eager | jit
        self._aot = None
        self._jit = None
        self._gpu_params = None  # gpu_kernel.packed(inputs), once per plan
        self.gpu_sin = "poly"  # the Triton kernel's lattice sines (gpu_kernel.SIN_MODES; a benchmark switch)

    def __call__(self, flat_idx: Tensor) -> tuple[Tensor, Tensor]:
        flat_idx = flat_idx.to(torch.int32)  # the packages' index type (plan.Plan.pixel_order)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in self.inputs)
        mode = self.grad_mode if grad and self.mode != "eager" else self.mode
        if mode == "eager":
            with one_thread():
                return pixel_kernel(self.spec, self.inputs, flat_idx)
        if mode == "aot":
            return self._run_aot(flat_idx)
        if mode == "triton":
            return self.run_triton(flat_idx, self.inputs.cells)
        first = self._jit is None
        if first:  # note: torch.compile has no double backward; second derivatives need compile=False
            self._jit = torch.compile(pixel_kernel, dynamic=True)
        try:
            return self._jit(self._fused, self.inputs, flat_idx)
        except Exception as exc:  # the first call compiles: no compiler / triton for this device
            if not first:
                raise
            _fall_back(self, exc)
            return pixel_kernel(self.spec, self.inputs, flat_idx)

    def run_triton(self, flat_idx: Tensor, cells: Tensor) -> tuple[Tensor, Tensor]:
        """The Triton kernel for these cells ((R, 3, 3), or (B, R, 3, 3): batch.py); a first call that fails
        (no compiler for this device) falls back to eager with a warning, as the other compiled forms."""
        from .gpu_kernel import packed, pixel_kernel_triton  # (not `from . import`: see kernel_modules)

        first = self._gpu_params is None
        if first:
            self._gpu_params = packed(self.inputs)
        try:
            return pixel_kernel_triton(self.spec, self.inputs._replace(cells=cells), flat_idx,
                                                  self._gpu_params, self.gpu_sin)
        except Exception as exc:
            if not first:
                raise
            _fall_back(self, exc)
            return pixel_kernel(self.spec, self.inputs._replace(cells=cells), flat_idx)

    def _run_aot(self, flat_idx: Tensor) -> tuple[Tensor, Tensor]:
        n = flat_idx.shape[0]
        if n < 2:  # the package is compiled for chunks of two or more pixels
            flat_idx = flat_idx.repeat(2)  # contiguous: the package assumes the strides it was built with
        if self._aot is None:
            try:
                self._aot = self._load_or_build(flat_idx)
            except Exception as exc:  # no C++ compiler, unsupported platform...: the same kernel, eager
                _fall_back(self, exc)
                return pixel_kernel(self.spec, self.inputs, flat_idx[:n])
        value, omega_sum = self._aot.run([flat_idx, *self.inputs])
        if n < 2:
            return value[:n], omega_sum / 2
        return value, omega_sum


    def _load_or_build(self, flat_idx: Tensor):
        """The variant's package: loaded when it records this variant and these sources, else (missing, another
        variant's, damaged, or failing to load) rebuilt once; never run unchecked."""
        path = package_path(self.spec, self.inputs)
        if package_matches(path, variant(self.spec, self.inputs)):
            try:
                return load_package(path)
            except Exception as exc:  # damaged in a way the record cannot see: rebuilt below
                warnings.warn(f"kernel package {path.name} failed to load ({exc}); rebuilding", RuntimeWarning,
                              stacklevel=4)
        _LOADED.pop(path, None)
        _VERIFIED.pop(path, None)
        # the one-off build says so on stderr (tqdm.write: above a progress bar, if one is drawn)
        from tqdm import tqdm

        tqdm.write(f"nanobragg: building the compiled kernel for this variant, once per machine (expect "
                   f"{BUILD_EXPECTED}; cache {path.parent})...", file=sys.stderr)
        started = time.perf_counter()
        build_package(self.spec, self.inputs, flat_idx, path)
        tqdm.write(f"nanobragg: compiled kernel built in {time.perf_counter() - started:.1f} s; later runs load it",
                   file=sys.stderr)
        return load_package(path)


@contextlib.contextmanager
def one_thread():
    """torch's intra-op threads set to one for the block: the eager kernel's ops are chunk-sized (engine.chunk_pixels,
    ~10-100 us each), too small to gain from a second thread, and on a loaded machine every parallel op waits at
    its OpenMP barrier for a descheduled worker: measured on the 2-core VM under load, the eager render of
    tilted_xds_256 took 0.95 s (0.67 s CPU, spinning) on two threads, 0.03 s on one."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fall_back(runner: KernelRunner, exc: Exception) -> None:
    warnings.warn(f"compiled kernel unavailable ({type(exc).__name__}: {exc}); rendering eager", RuntimeWarning,
                  stacklevel=3)
    runner.mode = runner.grad_mode = "eager"


def choose_mode(
    spec: KernelSpec, inputs: KernelInputs, compile: bool | None, samples: int, threshold: int
) -> tuple[str, str]:
    """(mode without gradients: eager | aot | jit | triton, mode with gradients: eager | jit).

    compile=None: compiled when the render is large, or (without gradients only: a package is free to load,
    a torch.compile is not) when the variant's package is already cached; env NB_COMPILE=0/1 overrides. On a
    CUDA device with triton, renders without gradients take the Triton kernel unless compile is False."""
    if spec.sparse_F:  # a sparse F store (a binary search per sample) renders eager, on any device
        return "eager", "eager"
    env = os.environ.get("NB_COMPILE")
    if env in ("0", "1"):
        compile = env == "1"
    cpu = inputs.pixel_size.device.type == "cpu"
    if compile is None:
        if samples > threshold:
            compile = True
        elif cpu and package_path(spec, inputs).exists():
            return "aot", "eager"
        elif cpu and not any(t.requires_grad for t in inputs):
            _note_eager(spec, inputs)
    if compile is not False and _triton_ready(spec, inputs):
        return "triton", ("jit" if compile else "eager")
    if not compile:
        return "eager", "eager"
    return ("aot" if cpu else "jit"), "jit"


def _triton_ready(spec: KernelSpec, inputs: KernelInputs) -> bool:
    """A CUDA plan that the Triton kernel renders (gpu_kernel.unsupported), with triton installed."""
    if inputs.pixel_size.device.type != "cuda":
        return False
    from .gpu_kernel import unsupported

    return unsupported(spec, inputs) is None


# ---- background builds: a variant rendered eager again and again gets its package without a wait ---------

# eager plans of one variant in this process before its package is built in the background: the first, so that a
# one-off script or CLI run on a fresh machine leaves the package for its next run (the build is detached,
# niced and locked to one per variant per machine; the render does not wait for it)
BACKGROUND_AFTER = 1
STALE_LOCK_S = 3600.0  # a build lock older than this is from a build that died
_EAGER_PLANS: dict[str, int] = {}


def _note_eager(spec: KernelSpec, inputs: KernelInputs) -> None:
    """Default policy for small CPU renders without gradients and without a cached package: eager; the
    BACKGROUND_AFTER-th such plan of one variant in a process starts `start_background_build`, and the plans
    after it finishes (in this process or a later one) load the package. Env NB_BACKGROUND_COMPILE=0 turns
    this off (the test suite does)."""
    if os.environ.get("NB_BACKGROUND_COMPILE", "1") == "0":
        return
    name = variant(spec, inputs)
    count = _EAGER_PLANS[name] = _EAGER_PLANS.get(name, 0) + 1
    if count == BACKGROUND_AFTER:
        try:
            start_background_build(spec, inputs)
        except OSError as exc:  # an unwritable cache: stay eager
            warnings.warn(f"no background kernel build ({exc})", RuntimeWarning, stacklevel=3)


def start_background_build(spec: KernelSpec, inputs: KernelInputs):
    """Build the variant's package in a detached, low-priority process (the inputs' shapes and dtypes are
    what matters; they travel in a job file). A lock file (NAME.building) keeps one build per variant
    across processes. Returns the process, or None when a build is already running."""
    import subprocess

    path = package_path(spec, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".building")
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    job = path.with_suffix(".job.pt")
    torch.save({"spec": dataclasses.asdict(spec), "inputs": [t.detach().cpu() for t in inputs]}, job)
    # niced before anything is imported (import torch is seconds of CPU beside the render that started it)
    code = ("import os; os.nice(10); import sys; from nanobragg_torch.compiled import build_job; "
            "build_job(sys.argv[1], sys.argv[2])")
    return subprocess.Popen([sys.executable, "-c", code, str(job), str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def build_job(job: str, path: str) -> None:
    """The background build process (niced by its command line): the package of the job's variant, then the lock
    and job files removed."""
    target = Path(path)
    try:
        data = torch.load(job, weights_only=True)
        spec = KernelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["spec"].items()})
        inputs = KernelInputs(*data["inputs"])
        if not package_matches(target, variant(spec, inputs)):
            build_package(spec, inputs, torch.arange(2, dtype=torch.int32), target)
    finally:
        for leftover in (job, target.with_suffix(".building")):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
