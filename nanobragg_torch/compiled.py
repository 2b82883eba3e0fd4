"""Compiled forms of `kernel.pixel_kernel`, and the choice between them.

* ``aot``: an AOTInductor package (a shared library) per kernel variant, built once per machine and cached on
  disk. A later process loads it in milliseconds through torch's C++ loader, without importing the compiler
  stack (torch._dynamo/_inductor cost ~3 s of import per process even with a warm inductor cache). No autograd;
  CPU only (untested elsewhere). Used for renders without gradients.
* ``jit``: torch.compile of the same function (dynamic shapes): renders with gradients (of large or explicitly
  compiled plans), and other devices.
* ``eager``: the function op by op.

A variant is (KernelSpec, which sample axes have length 1, dtype, device type): the sample counts and the
image size are dynamic, so one package serves every chunk and every image of that variant. Packages live in
`cache_dir()` (env NB_KERNEL_CACHE, else ~/.cache/nanobragg_torch/kernels), in a folder named after the torch
version and a hash of the kernel's sources, so an edited kernel never loads a stale package.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
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
_SOURCES = ("kernel.py", "lattice.py", "structure_factors.py", "polarization.py", "config.py", "compiled.py")


def cache_dir() -> Path:
    """Folder of this torch version's and these kernel sources' packages."""
    root = os.environ.get("NB_KERNEL_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanobragg_torch" / "kernels"
    return base / f"torch-{torch.__version__}-{_source_digest(_SOURCES)}"


@functools.cache
def _source_digest(names: tuple[str, ...]) -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in names:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:12]


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


def package_path(spec: KernelSpec, inputs: KernelInputs) -> Path:
    dtype = str(inputs.pixel_size.dtype).replace("torch.", "")
    return cache_dir() / f"{spec.key}-unit_{_unit_axes(inputs)}-{dtype}-{inputs.pixel_size.device.type}.pt2"


class _Module(torch.nn.Module):
    def __init__(self, spec: KernelSpec) -> None:
        super().__init__()
        self.spec = spec

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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class KernelRunner:
    """`pixel_kernel` of one plan in the chosen form; call with a chunk's flat pixel indices."""

    def __init__(self, spec: KernelSpec, inputs: KernelInputs, mode: str, grad_mode: str = "eager") -> None:
        self.spec, self.inputs = spec, inputs
        self.mode = mode  # without gradients: eager | aot | jit
        self.grad_mode = grad_mode  # with gradients: eager | jit
        self._aot = None
        self._jit = None

    def __call__(self, flat_idx: Tensor) -> tuple[Tensor, Tensor]:
        flat_idx = flat_idx.to(torch.int32)  # the packages' index type (engine.Plan.pixel_order)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in self.inputs)
        mode = self.grad_mode if grad and self.mode != "eager" else self.mode
        if mode == "eager":
            return pixel_kernel(self.spec, self.inputs, flat_idx)
        if mode == "aot":
            return self._run_aot(flat_idx)
        first = self._jit is None
        if first:  # note: torch.compile has no double backward; second derivatives need compile=False
            self._jit = torch.compile(pixel_kernel, dynamic=True)
        try:
            return self._jit(self.spec, self.inputs, flat_idx)
        except Exception as exc:  # the first call compiles: no compiler / triton for this device
            if not first:
                raise
            _fall_back(self, exc)
            return pixel_kernel(self.spec, self.inputs, flat_idx)

    def _run_aot(self, flat_idx: Tensor) -> tuple[Tensor, Tensor]:
        n = flat_idx.shape[0]
        if n < 2:  # the package is compiled for chunks of two or more pixels
            flat_idx = flat_idx.repeat(2)  # contiguous: the package assumes the strides it was built with
        if self._aot is None:
            path = package_path(self.spec, self.inputs)
            try:
                if not path.exists():
                    build_package(self.spec, self.inputs, flat_idx, path)
                self._aot = load_package(path)
            except Exception as exc:  # no C++ compiler, unsupported platform...: the same kernel, eager
                _fall_back(self, exc)
                return pixel_kernel(self.spec, self.inputs, flat_idx[:n])
        value, omega_sum = self._aot.run([flat_idx, *self.inputs])
        if n < 2:
            return value[:n], omega_sum / 2
        return value, omega_sum


def _fall_back(runner: KernelRunner, exc: Exception) -> None:
    warnings.warn(f"compiled kernel unavailable ({type(exc).__name__}: {exc}); rendering eager", RuntimeWarning,
                  stacklevel=3)
    runner.mode = runner.grad_mode = "eager"


def choose_mode(
    spec: KernelSpec, inputs: KernelInputs, compile: bool | None, samples: int, threshold: int
) -> tuple[str, str]:
    """(mode without gradients: eager | aot | jit, mode with gradients: eager | jit).

    compile=None: compiled when the render is large, or (without gradients only: a package is free to load,
    a torch.compile is not) when the variant's package is already cached; env NB_COMPILE=0/1 overrides."""
    env = os.environ.get("NB_COMPILE")
    if env in ("0", "1"):
        compile = env == "1"
    cpu = inputs.pixel_size.device.type == "cpu"
    if compile is None:
        if samples > threshold:
            compile = True
        elif cpu and package_path(spec, inputs).exists():
            return "aot", "eager"
    if not compile:
        return "eager", "eager"
    return ("aot" if cpu else "jit"), "jit"
