"""The memory budget of a render or an input file: what may be allocated before anything is."""

from __future__ import annotations

import os
import time

import torch

from .errors import InputError

# bytes a render holds per sample of a chunk: an upper estimate (about 30 live float64 work tensors)
BYTES_PER_SAMPLE = 256
# bytes per image pixel: the image, its statistics copies and the pixel order (float64 upper bound)
BYTES_PER_PIXEL = 48


_MEMINFO: list[float] = [-1.0, 0.0]  # (time read, MemAvailable bytes): /proc/meminfo read at most once a second


def memory_budget(device: torch.device | str = "cpu") -> int:
    """Bytes a render may allocate: env NB_MEMORY_LIMIT, else the free memory of the device (CPU: MemAvailable,
    re-read at most once a second: a plan asks twice)."""
    env = os.environ.get("NB_MEMORY_LIMIT")
    if env:
        return int(float(env))
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    now = time.monotonic()
    if now - _MEMINFO[0] < 1.0:
        return int(_MEMINFO[1])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    _MEMINFO[:] = [now, int(line.split()[1]) * 1024]
                    return int(_MEMINFO[1])
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)


def size_text(nbytes: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def allocation_problem(nbytes: float, what: str, device: torch.device | str = "cpu") -> str | None:
    """Why an allocation of `nbytes` for `what` is refused (None: it fits the memory budget)."""
    budget = memory_budget(device)
    if nbytes > budget:
        return f"{what} would take {size_text(nbytes)} (more than the {size_text(budget)} available)"
    return None


def check_allocation(nbytes: float, what: str, where: str, device: torch.device | str = "cpu") -> None:
    """Refuse an allocation of `nbytes` that does not fit the memory budget; `where` names the flag or file:line."""
    problem = allocation_problem(nbytes, what, device)
    if problem:
        raise InputError(f"{where}: {problem}")
