"""How much memory this process may still allocate, the guard built on it, and allocation failures as one line.

The budget of a render is the smallest of: env NB_MEMORY_LIMIT (bytes), the address-space limit of the process
(RLIMIT_AS, `ulimit -v`, less what the process has mapped already: /proc/self/status VmSize), the memory limit
of its cgroup (v2 `memory.max` less `memory.current`, v1 `memory.limit_in_bytes` less `memory.usage_in_bytes`,
the tightest of the group and its parents) and the machine's free memory (MemAvailable). On a GPU: the device's
free memory (and NB_MEMORY_LIMIT). A refusal names the limit that bound it, so a user on a batch system
(`ulimit -v`, a container's cgroup) sees which one to raise.

An allocation that fails in spite of the estimate (numpy's MemoryError, torch's OutOfMemoryError or its CPU
allocator's RuntimeError, an OSError ENOMEM) is turned into one line by `allocation_failure`: the CLI prints it
and exits 2, and the outputs of the run are removed (outputs.run writes all or nothing).
"""

from __future__ import annotations

import errno
import os
import resource
import time
from pathlib import Path

import torch

from .errors import InputError

# bytes a render holds per sample of a chunk: an upper estimate (about 30 live float64 work tensors)
BYTES_PER_SAMPLE = 256
# bytes per image pixel: the image, its statistics copies and the pixel order (float64 upper bound)
BYTES_PER_PIXEL = 48
# a cgroup limit at or above this is "no limit" (v1 writes 2^63 rounded down to a page)
_UNLIMITED = 1 << 60
_CACHE: dict[str, tuple[float, list[tuple[int, str]]]] = {}  # the limits, re-read at most once a second


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _status_bytes(key: str) -> int | None:
    """A `kB` line of /proc/self/status (VmSize: the address space this process has mapped), in bytes."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def address_space_room() -> tuple[int, str] | None:
    """RLIMIT_AS (soft) less the mapped address space: (bytes, description), None without a limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = _status_bytes("VmSize") or 0
    return max(0, soft - used), f"the address-space limit (ulimit -v) of {size_text(soft)}"


def _cgroup_dirs() -> list[tuple[Path, str, str]]:
    """(folder, limit file, usage file) of this process's memory cgroup and its parents, v2 then v1."""
    out: list[tuple[Path, str, str]] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            root, files = Path("/sys/fs/cgroup"), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            root, files = Path("/sys/fs/cgroup/memory"), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        leaf = root / rel.lstrip("/")
        if not leaf.is_dir():  # a cgroup namespace shows the group as its root
            leaf = root
        folder = leaf
        while True:
            out.append((folder, *files))
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return out


def cgroup_room() -> tuple[int, str] | None:
    """The tightest memory cgroup limit less its usage: (bytes, description), None without a limit."""
    best: tuple[int, str] | None = None
    for folder, limit_file, usage_file in _cgroup_dirs():
        limit = _read_int(folder / limit_file)
        if limit is None or limit >= _UNLIMITED:
            continue
        usage = _read_int(folder / usage_file) or 0
        room = max(0, limit - usage)
        if best is None or room < best[0]:
            best = room, f"the cgroup memory limit ({limit_file}) of {size_text(limit)}"
    return best


def available_memory() -> tuple[int, str]:
    """The machine's MemAvailable (half the physical memory where /proc/meminfo cannot be read)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "the machine's available memory"
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2, "half the machine's memory"


def _limits(device: torch.device) -> list[tuple[int, str]]:
    env = os.environ.get("NB_MEMORY_LIMIT")
    limits = [(int(float(env)), "NB_MEMORY_LIMIT")] if env else []
    if device.type == "cuda" and torch.cuda.is_available():
        return [*limits, (int(torch.cuda.mem_get_info(device)[0]), "the GPU's free memory")]
    key = "cpu"
    now = time.monotonic()
    if key in _CACHE and now - _CACHE[key][0] < 1.0:
        return [*limits, *_CACHE[key][1]]
    found = [x for x in (address_space_room(), cgroup_room(), available_memory()) if x is not None]
    _CACHE[key] = (now, found)
    return [*limits, *found]


def memory_limit(device: torch.device | str = "cpu") -> tuple[int, str]:
    """(bytes a render may still allocate, which limit that is): the smallest of the limits above."""
    return min(_limits(torch.device(device)), key=lambda x: x[0])


def memory_budget(device: torch.device | str = "cpu") -> int:
    """Bytes a render may still allocate on `device` (`memory_limit` without its name)."""
    return memory_limit(device)[0]


def size_text(nbytes: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def allocation_problem(nbytes: float, what: str, device: torch.device | str = "cpu") -> str | None:
    """Why an allocation of `nbytes` for `what` is refused (None: it fits the memory budget)."""
    budget, name = memory_limit(device)
    if nbytes > budget:
        return f"{what} would take {size_text(nbytes)} (more than the {size_text(budget)} left under {name})"
    return None


def check_allocation(nbytes: float, what: str, where: str, device: torch.device | str = "cpu") -> None:
    """Refuse an allocation of `nbytes` that does not fit the memory budget; `where` names the flag or file:line."""
    problem = allocation_problem(nbytes, what, device)
    if problem:
        raise InputError(f"{where}: {problem}")


_ALLOCATOR_MESSAGES = ("not enough memory", "DefaultCPUAllocator: can't allocate", "out of memory",
                       "Cannot allocate memory", "std::bad_alloc")


def allocation_failure(exc: BaseException) -> str | None:
    """One line for an exception that is a failed allocation (None: it is not one): the allocator's words and
    the limit this process runs under."""
    if isinstance(exc, MemoryError):  # numpy's _ArrayMemoryError included
        detail = str(exc) or "a Python allocation failed"
    elif isinstance(exc, torch.OutOfMemoryError):
        detail = str(exc)
    elif isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        detail = exc.strerror or "cannot allocate memory"
    elif isinstance(exc, RuntimeError) and any(m in str(exc) for m in _ALLOCATOR_MESSAGES):
        detail = str(exc)
    else:
        return None
    detail = " ".join(detail.split())
    if len(detail) > 200:
        detail = detail[:197] + "..."
    _CACHE.clear()
    budget, name = memory_limit("cpu")
    return (f"out of memory: {detail} ({size_text(budget)} left under {name}; a smaller -detpixels, -chunk or "
            "-oversample, or a higher limit); no output written")


__all__ = ["BYTES_PER_PIXEL", "BYTES_PER_SAMPLE", "address_space_room", "allocation_failure", "allocation_problem",
           "available_memory", "cgroup_room", "check_allocation", "memory_budget", "memory_limit", "size_text"]
