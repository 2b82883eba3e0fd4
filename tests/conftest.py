"""Shared test options: the device (env NB_DEVICE, default cpu; cuda tests skip cleanly without a GPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# compiled kernels used by the tests live in the checkout, not in the user's cache: whether a render runs
# compiled (a cached package is used whatever the render size) must not depend on what the user ran before
os.environ["NB_KERNEL_CACHE"] = str(Path(__file__).resolve().parents[1] / ".kernel_cache" / "tests")
os.environ.pop("NB_COMPILE", None)


def test_device() -> torch.device:
    name = os.environ.get("NB_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("NB_DEVICE=cuda but no CUDA device is available")
    return torch.device(name)


@pytest.fixture
def device() -> torch.device:
    return test_device()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tiny renders: faster, and immune to OpenMP spin-waits when the CPU is shared
    (2 threads on a loaded 2-core runner made the refinement tests 10x slower). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- test-side seams into the per-pixel pipeline (production code has no test hooks) -------------------------

# factor name (parity.schema) -> the pipeline functions whose results carry it: (module attribute path)
PERTURBABLE = {
    "omega_pixel": ("kernel.solid_angle",),
    "capture_fraction": ("kernel.capture_fraction",),
    "polar": ("kernel.polarization",),
    "F_latt": ("kernel.lattice_factor",),
    "F_cell": ("kernel.structure_factor", "structure_factors.FGrid.tricubic"),
    "I_before_scaling": ("kernel.sample_sum", "kernel.running_product_sum"),
}


@pytest.fixture
def perturb(monkeypatch):
    """perturb(factor, k): multiply one factor of the pipeline by k for the rest of the test (drift demos).
    Renders run eager (a compiled package would not see the wrapper)."""
    import importlib

    monkeypatch.setenv("NB_COMPILE", "0")

    def scaled(fn, k):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            if isinstance(out, tuple):
                return tuple(None if v is None else v * k for v in out)
            return out * k

        return wrapper

    def apply(factor: str, k: float) -> None:
        for path in PERTURBABLE[factor]:
            module, *attrs = path.split(".")
            owner = importlib.import_module(f"nanobragg_torch.{module}")
            for a in attrs[:-1]:
                owner = getattr(owner, a)
            monkeypatch.setattr(owner, attrs[-1], scaled(getattr(owner, attrs[-1]), k))

    return apply


@pytest.fixture
def stateful_path(monkeypatch):
    """Every chunk through engine.evaluate_chunk (the per-sample-state path) instead of the fused kernel."""
    from nanobragg_torch import engine

    monkeypatch.setattr(engine, "needs_state", lambda plan, state: True)
