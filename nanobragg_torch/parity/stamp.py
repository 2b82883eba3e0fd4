"""The environment stamp of a test run (written into ``drift.json``; compared by ``tools/pr_report.py``):
the versions a drift may coincide with."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

__all__ = ["environment", "STAMP_KEYS"]

STAMP_KEYS = ("nanobragg-torch", "torch", "numpy", "python", "platform")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """Package versions, Python and platform of this process (torch read from the imported module when
    loaded: an editable or local build reports what actually ran)."""
    torch = sys.modules.get("torch")
    return {
        "nanobragg-torch": _version("nanobragg-torch"),
        "torch": getattr(torch, "__version__", None) or _version("torch"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
    }
