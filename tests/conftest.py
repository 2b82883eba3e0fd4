"""Shared test options: the device (env NB_DEVICE, default cpu; cuda tests skip cleanly without a GPU)."""

from __future__ import annotations

import os

import pytest
import torch


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
