"""What to do with a render (outputs, trace, device), as opposed to the physics in SimulationConfig: built by
`cli.config_from_flags`, carried out by `outputs.run`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunOptions:
    """What to do with the render (outputs, trace, device), as opposed to the physics in SimulationConfig."""

    dtype: str
    device: str
    c_compat: bool
    trace_pixel: tuple[int, ...] | None  # (slow, fast), or (panel, slow, fast) for a multi-panel detector
    printout_pixel: tuple[int, int] | None  # (fast, slow) as the C's -printout_pixel
    floatfile: str | None
    intfile: str | None
    noisefile: str | None
    pgmfile: str | None
    pngfile: str | None
    dumpfile: str | None
    intfile_scale: float
    pgm_scale: float
    adc_offset: float
    seed: int
    chunk: int | None
    notes: list[str]
    inputs: tuple[str, ...] = ()  # files read (an output may not overwrite one)
    progress: bool | None = None  # progress bar: -progress True, -noprogress False, None on a terminal only
    cbffile: str | None = None  # -cbffile: the int image as a PILATUS-style miniCBF (io/cbf.py)
    nxsfile: str | None = None  # -nxsfile: the float image and geometry as NeXus/NXmx (io/nexus.py)
    exposure_time: float = 1.0  # the C's exposure (s), for the CBF and NeXus headers
