"""Shared test options.

Skipping is driven by markers, here only (`pytest_runtest_setup`):
  needs_c[(ENV_VAR, ...)]      the C binaries named by those variables (default NB_C_BIN) are set and executable,
  needs_shared[(REL_PATH, ...)] the shared reference inputs exist (default: the folder ../shared/data itself),
  cuda                         a CUDA device is present.
The device under test is env NB_DEVICE (default cpu); the `c_bin` fixture is the pinned C binary (NB_C_BIN)
and marks its users needs_c.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import packages
import pytest
import torch

# the drift report (fixture `drift`, option --drift-report): loaded by this suite only, never by installing the
# package (docs/golden.md gives the line another project adds); pytester: tests that run pytest inside (the
# naming self-check, snapshot housekeeping)
pytest_plugins = ["nanobragg_torch.parity.drift", "pytester"]

# compiled kernels used by the tests live in the checkout, not in the user's cache: whether a render runs
# compiled (a cached package is used whatever the render size) must not depend on what the user ran before
os.environ["NB_KERNEL_CACHE"] = str(Path(__file__).resolve().parents[1] / ".kernel_cache" / "tests")
os.environ.pop("NB_COMPILE", None)
os.environ["NB_BACKGROUND_COMPILE"] = "0"  # no kernel builds behind the tests' back (tests that want one opt in)


def partial_run(config) -> bool:
    """Whether this run selects part of the suite (-k, -m, --deselect, node ids, -x/--maxfail, --lf/--ff,
    --collect-only): then a snapshot it did not use is not thereby unused."""
    o = config.option
    return bool(
        getattr(o, "keyword", "") or getattr(o, "markexpr", "") or getattr(o, "deselect", None)
        or getattr(o, "collectonly", False) or getattr(o, "maxfail", 0) or getattr(o, "lf", False)
        or getattr(o, "failedfirst", False) or any("::" in str(a) for a in config.args)
    )


def pytest_configure(config) -> None:
    # syrupy calls every snapshot that a run did not use "unused" and advises --snapshot-update to delete them
    # (which it then does): on a partial run that would delete valid snapshots, so detection is off there
    if partial_run(config) and hasattr(config.option, "disable_unused_snapshots"):
        config.option.disable_unused_snapshots = True


def _executable(var: str) -> bool:
    path = os.environ.get(var)
    return bool(path) and os.access(path, os.X_OK)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "c_bin" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.needs_c)
        if os.environ.get("NB_DEVICE", "cpu").startswith("cuda") and "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


# ---- compiled-kernel packages built ahead (tests/packages.py) ------------------------------------------------


def _package_groups(item) -> tuple[str, ...]:
    if item.get_closest_marker("slow") is None or os.environ.get("NB_DEVICE", "cpu") != "cpu":
        return ()
    return packages.groups_for(item.path.name, item.nodeid)


def pytest_collection_finish(session) -> None:
    """The slow tests that render with compiled packages run last (in their order; test_docs' stay, its blocks
    share a folder per file), and a background process builds the packages they need meanwhile. The golden
    parity module goes with them, all of it: a small golden of a full-size case's kernel variant renders with
    that case's package once it exists (a cached package is used whatever the render size), as it did when
    the full-size goldens came first."""
    items = session.items
    late = [it for it in items if it.path.name != "test_docs.py"
            and (_package_groups(it) or it.path.name == "test_golden_parity.py")]
    if late:
        ids = {id(it) for it in late}
        items[:] = [it for it in items if id(it) not in ids] + late
    wanted = {g for it in items for g in _package_groups(it)}
    if not wanted or session.config.option.collectonly:
        return
    status = tempfile.mkdtemp(prefix="nb_prebuild_")
    groups = [g for g in packages.ORDER if g in wanted]
    proc = subprocess.Popen([sys.executable, packages.__file__, status, *groups], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(status, "log"), "w"))  # noqa: SIM115
    _PREBUILD.update(proc=proc, status=Path(status))


_PREBUILD: dict = {}


def _wait_for_packages(item) -> None:
    """A slow compiled test waits for its groups' packages (or for the builder to end, whatever happened)."""
    proc, status = _PREBUILD.get("proc"), _PREBUILD.get("status")
    if proc is None:
        return
    for group in _package_groups(item):
        while not (status / f"{group}.done").exists() and proc.poll() is None:
            time.sleep(0.2)


def pytest_sessionfinish(session) -> None:
    proc = _PREBUILD.pop("proc", None)
    if proc is not None and proc.poll() is None:  # an aborted run: the builder stops (its temp files go)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if "status" in _PREBUILD:
        shutil.rmtree(_PREBUILD.pop("status"), ignore_errors=True)


def pytest_runtest_setup(item) -> None:
    _wait_for_packages(item)
    for mark in item.iter_markers("needs_c"):
        missing = [var for var in (mark.args or ("NB_C_BIN",)) if not _executable(var)]
        if missing:
            pytest.skip(f"needs the C binary: {', '.join(missing)} not set to an executable")
    for mark in item.iter_markers("needs_shared"):
        from nanobragg_torch.parity.goldens import shared_data_dir

        root = shared_data_dir()
        missing = [rel for rel in mark.args if not (root / rel).exists()] if mark.args else []
        if not root.is_dir() or missing:
            pytest.skip(f"shared reference input {', '.join(missing) or root} not found (set NB_SHARED_DATA)")
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture
def device() -> torch.device:
    """The device under test: env NB_DEVICE (default cpu)."""
    return torch.device(os.environ.get("NB_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def c_bin() -> str:
    """The pinned C binary (NB_C_BIN); its users are marked needs_c, so they skip without it."""
    return os.environ["NB_C_BIN"]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tiny renders: faster, and immune to OpenMP spin-waits when the CPU is shared
    (2 threads on a loaded 2-core runner made the refinement tests 10x slower). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
