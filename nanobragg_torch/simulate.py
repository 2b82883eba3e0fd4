"""The Python API: build a SimulationConfig in code, render it, get a tensor (the CLI is a layer over this)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import SimulationConfig
from .engine import RenderResult, render
from .plan import build_plan
from .trace import TraceValue, pixel_trace


def simulate(
    config: SimulationConfig,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    samples_per_chunk: int | None = None,
    compile: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Render the float image (photons per pixel), shape (spixels, fpixels), on `device` in `dtype`; with
    `detector.panels`, the stack (P, S_max, F_max), zero where a smaller panel has no pixel (one image per
    panel: `render(build_plan(config)).panel_images()`).

    Gradients flow to every tensor in `config` that requires grad (cell, misset, distance, beam centre,
    rotations, wavelength, fluence, N, structure factors, ...). `compile`: run the fused kernel compiled
    (see nanobragg_torch.compiled; None: when its package is cached or the render is large). `progress`: called
    after each chunk with (pixels done, pixels in the render); `progress.progress_bar` yields a tqdm one."""
    return render(build_plan(config, dtype, device, compile=compile), samples_per_chunk, progress=progress).image


def simulate_with_trace(
    config: SimulationConfig,
    pixel: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    samples_per_chunk: int | None = None,
) -> tuple[torch.Tensor, dict[str, TraceValue], RenderResult]:
    """Render and trace one pixel (slow, fast), or (panel, slow, fast) of a multi-panel detector: (image, trace
    factors, full result)."""
    result = render(build_plan(config, dtype, device), samples_per_chunk, trace_pixel=pixel)
    return result.image, pixel_trace(result), result
