"""Many-shot datasets: a SPEC (TOML) of a base experiment in C flags and per-shot variations, rendered in
shards by a local process pool or on a Ray cluster, resumable, each shot a pure function of (seed, index).

Public entry points: `load_spec`, `shot_parameters`, `make_dataset`, `render_only`; console script
`nanobragg-dataset` (nanobragg_torch.dataset.cli). See docs/datasets.md.
"""

from .run import Summary, make_dataset, render_only
from .shots import ShotParameters, shot_parameters
from .spec import DatasetSpec, load_experiment, load_spec

__all__ = ["DatasetSpec", "ShotParameters", "Summary", "load_experiment", "load_spec", "make_dataset",
           "render_only", "shot_parameters"]
