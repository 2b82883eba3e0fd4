"""The compiled-kernel packages the slow tests render with, built ahead in one background process.

A clean checkout (CI) has no package: each variant is an AOTInductor build of 20-60 s of one core, and the
suite needs seven of them (the full-size golden detectors in float64 and float32, the compiled-kernel tests'
four variants, the unedited sources of the stale-kernel reproduction). conftest.py starts this module as a
process of its own when a run selects those tests, moves them to the end of the run, and makes each wait for
its own group of packages: the builds use the second core while the rest of the suite runs on the first. A
package that is already cached (same torch, same kernel sources, same variant) is loaded, not rebuilt, so a
warm run costs the process a few seconds. Nothing here changes what a test asserts: a test finding no package
(the process failed or was not started) builds it itself, as before.

Groups (the tests waiting on them): golden64 / golden32 (the full-size golden cases, tests/renders.py),
kernel (tests/test_kernel.py), stale (tests/test_compiled_cache.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".kernel_cache"
TESTS_CACHE = CACHE / "tests"  # the suite's own (conftest.py sets NB_KERNEL_CACHE to it)
KERNEL_TESTS_CACHE = CACHE / "test_kernel"  # tests/test_kernel.py's compiled tests
STALE_CACHE = CACHE / "stale_reproduction"  # tests/test_compiled_cache.py: the unedited sources' package

# test module -> the groups its slow tests wait for (golden parity: float32 items wait for golden32 only)
WAITS = {
    "test_golden_parity.py": ("golden64",),
    "test_quirks.py": ("golden64",),
    "test_docs.py": ("golden64", "golden32"),
    "test_kernel.py": ("kernel",),
    "test_compiled_cache.py": ("stale",),
}
ORDER = ("golden64", "golden32", "stale", "kernel")  # build order: the order the late tests run in


def groups_for(module: str, nodeid: str) -> tuple[str, ...]:
    """The package groups a slow test of `module` renders with."""
    if module == "test_golden_parity.py" and "float32" in nodeid:
        return ("golden32",)
    return WAITS.get(module, ())


def _build(plan) -> None:
    """The plan's package, built if not cached (a two-pixel chunk through the runner loads or builds it)."""
    import torch

    if plan.kernel is not None and plan.kernel.mode == "aot":
        with torch.no_grad():
            plan.kernel(plan.pixel_order[:2])


def _golden(dtype_name: str) -> None:
    import torch

    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.parity.goldens import golden_dir, has_golden, load_cases, shared_data_dir
    from nanobragg_torch.plan import build_plan

    os.environ["NB_KERNEL_CACHE"] = str(TESTS_CACHE)
    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    for case in load_cases():
        if not case.full or any(not (shared_data_dir() / rel).exists() for rel in case.shared_files()):
            continue
        for variant in ("fixed", "pinned"):
            if has_golden(case.name, variant):
                argv = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
                cfg, _ = config_from_flags(argv + (["--c-compat"] if variant == "pinned" else []), cwd=os.devnull)
                _build(build_plan(cfg, dtype, "cpu"))


def _kernel() -> None:
    import torch
    from test_kernel import AOT_CASES, aot_flags, plan_for

    os.environ["NB_KERNEL_CACHE"] = str(KERNEL_TESTS_CACHE)
    for name in sorted(AOT_CASES):
        for dtype in (torch.float64, torch.float32):
            _build(plan_for(aot_flags(name), dtype, compile=True))


def _stale() -> None:
    import torch
    from test_compiled_cache import STALE_FLAGS, _plan

    os.environ["NB_KERNEL_CACHE"] = str(STALE_CACHE)
    _build(_plan(STALE_FLAGS, torch.float64))


BUILDERS = {"golden64": lambda: _golden("float64"), "golden32": lambda: _golden("float32"), "kernel": _kernel,
            "stale": _stale}


def main(status: str, groups: list[str]) -> None:
    """Build each group's packages in turn; `status`/GROUP.done marks a group finished (built, or failed: the
    tests then build for themselves)."""
    os.environ["OMP_NUM_THREADS"] = "1"  # not niced: the run waits for these builds at its end
    os.environ.pop("NB_COMPILE", None)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    torch.set_num_threads(1)
    for group in groups:
        try:
            BUILDERS[group]()
        except Exception as exc:  # noqa: BLE001 (reported; the waiting tests build for themselves)
            print(f"prebuild {group}: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            (Path(status) / f"{group}.done").touch()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
