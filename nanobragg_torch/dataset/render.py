"""Render shots through the public API: shots that share geometry go through `simulate_batch` together.

A shot's image does not depend on the batch it was rendered in (the batched path evaluates each element's
pixels independently; the test suite checks this bitwise), so `--only SHOT` reproduces it alone. The kernel
is never the compiled one here: whether a compiled package is cached must not change a dataset's bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..batch import simulate_batch
from ..config import scalar_value
from ..images import int_image
from ..noise import noise_image
from ..simulate import simulate
from .shots import ShotParameters, geometry_key, shot_config
from .spec import Experiment


@dataclass
class RenderedShot:
    params: ShotParameters
    image: np.ndarray  # float32 (spixels, fpixels), photons per pixel
    noise: np.ndarray | None  # uint16: the C's noise image (ADC offset, clipped), when noise is on

    def counts(self, experiment: Experiment) -> tuple[np.ndarray, float | None]:
        """The integer image a per-shot SMV/CBF file holds: the noise image, else the C's -intfile image."""
        if self.noise is not None:
            return self.noise, None
        img, scale = int_image(self.image, experiment.intfile_scale, experiment.adc_offset,
                               experiment.config.detector.roi)
        return img, scale


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def render_shots(experiment: Experiment, shots: list[ShotParameters], batch_size: int) -> list[RenderedShot]:
    """Render `shots` (in order), at most `batch_size` per simulate_batch call."""
    device = resolve_device(experiment.device)
    dtype = getattr(torch, experiment.dtype)
    base_fluence = scalar_value(experiment.config.beam.fluence)
    groups: dict[tuple, list[ShotParameters]] = {}
    for shot in shots:
        groups.setdefault(geometry_key(shot), []).append(shot)
    images: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for group in groups.values():
            for start in range(0, len(group), batch_size):
                part = group[start:start + batch_size]
                configs = [shot_config(experiment.config, s) for s in part]
                try:
                    batch = simulate_batch(configs, dtype=dtype, device=device, vectorize=True)
                except ValueError:  # not batchable (shape, interpolation...): one eager render per shot
                    batch = [simulate(c, dtype, device, compile=False) for c in configs]
                for shot, image in zip(part, batch, strict=True):
                    if shot.fluence != base_fluence:
                        image = image * (shot.fluence / base_fluence)
                    images[shot.index] = image.to("cpu", torch.float32).numpy()
    out = []
    for shot in shots:
        img = images[shot.index]
        noise = None
        if shot.noise_seed is not None:
            noise, _, _ = noise_image(img, shot.noise_seed, experiment.adc_offset, experiment.config.detector.roi)
        out.append(RenderedShot(shot, img, noise))
    return out
