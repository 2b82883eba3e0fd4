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
