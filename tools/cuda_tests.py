#!/usr/bin/env python
"""Run the CUDA test selection (tox -e cuda, tools/gpu_check.sh), or say in one line why not.

    python tools/cuda_tests.py [pytest options] PATH... [-- more pytest options]

Without a CUDA device (or with a CPU-only torch) it prints one line and exits 0, installing and running
nothing. Otherwise it runs ``pytest -m "not needs_c"`` on the given paths with NB_DEVICE=cuda; a path that
does not exist is an error (exit 4, as pytest), named before anything runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
        print(f"cuda: skipped: no CUDA device visible to torch {torch.__version__} ({build})")
        return 0
    missing = [a for a in args if not a.startswith("-") and a.startswith("tests") and not Path(a).exists()]
    if missing:
        print(f"cuda: test path(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 4
    if not os.environ.get("NB_DEVICE", "").startswith("cuda"):
        os.environ["NB_DEVICE"] = "cuda"
    import pytest

    return int(pytest.main(["-m", "not needs_c", *args]))


if __name__ == "__main__":
    sys.exit(main())
