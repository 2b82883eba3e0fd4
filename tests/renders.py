"""One render per golden case, variant, dtype and device for the whole test session: the golden suite
(tests/golden/test_golden_parity.py) and the quirk tests (tests/test_quirks.py) render the same cases, the
full-size detectors included. Imported by name (the tests folder is on sys.path through its conftest.py)."""

from __future__ import annotations

import os
from functools import cache

import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.parity.goldens import golden_dir, load_cases, load_golden, shared_data_dir
from nanobragg_torch.plan import build_plan


@cache
def _cases() -> dict:
    return {c.name: c for c in load_cases()}


@cache
def golden_render(name: str, variant: str, dtype_name: str, device_name: str):
    """(golden, plan, result) of the case as its golden's C build rendered it: "pinned" with --c-compat,
    "fixed" without; float64 renders keep the traces of the golden's traced pixels (the image is the same
    with or without them: engine.render evaluates traced pixels once more, apart)."""
    case = _cases()[name]
    golden = load_golden(case, variant)
    argv = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
    if variant == "pinned":
        argv = argv + ["--c-compat"]
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    dtype = torch.float64 if dtype_name == "float64" else torch.float32
    plan = build_plan(cfg, dtype, torch.device(device_name))
    with torch.no_grad():
        result = render(plan, trace_pixels=golden.traced_pixels if dtype_name == "float64" else None)
    return golden, plan, result
