"""Run a parsed command line: render, print the C's report lines, write the requested files."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .advisories import advisories
from .config import DetectorConfig, SimulationConfig, SparseGrid, scalar_value
from .constants import RTD
from .engine import RenderResult, render
from .errors import InputError
from .images import format_statistics_lines, image_statistics, int_image, intfile_scale_rule, pgm_image
from .io.atomic import OutputGroup, output_group, sweep_stale_temporaries
from .io.cbf import CBFHeader, write_cbf
from .io.fdump import write_fdump
from .io.floatimage import write_float_image
from .io.pgm import write_pgm
from .io.png import write_png
from .io.smv import SMVHeader, write_smv
from .options import RunOptions
from .panels import rendered_stack
from .plan import Plan, build_plan, rendered_pixels
from .progress import progress_bar
from .trace import dark_note, format_c_printout, format_trace, order_note, pixel_trace


def _g(x) -> float:
    return scalar_value(x)


def geometry_report(result: RenderResult) -> list[str]:
    """The C's description of the set-up (the lines golden parsers read), in its formats."""
    p = result.plan
    g = p.geom
    lines = [
        f"{g.convention.lower()} convention selected.",
        "pivoting detector around sample" if g.pivot == "SAMPLE" else "pivoting detector around direct beam spot",
    ]
    inc = [_g(torch.dot(g.beam, ax)) for ax in (g.fdet, g.sdet, g.odet)]
    lines.append("XDS incident beam: %g %g %g" % tuple(inc))
    if p.crystal.misset_deg is not None:
        lines.append("random orientation misset angles: %f %f %f deg" % p.crystal.misset_deg)
    lines += [
        "  %d sources" % len(p.sources.wavelength),
        "  %d mosaic domains over mosaic spread of %g degrees" % (p.mosaic.domains, p.mosaic.spread * RTD),
        "  %d phi steps from %g to %g degrees" % (p.phi.steps, p.phi.phi0 * RTD, (p.phi.phi0 + p.phi.osc) * RTD),
        "  %dx%d pixel oversample steps" % (p.oversample, p.oversample),
        "  incident fluence: %g photons/m^2" % _g(p.fluence),
        "  distance=%g detsize=%gx%g  pixel=%g meters (%dx%d pixels)"
        % (
            _g(g.distance),
            _g(g.detsize_f),
            _g(g.detsize_s),
            _g(g.pixel_size),
            p.cfg.detector.fpixels,
            p.cfg.detector.spixels,
        ),
        "  Xbeam=%g Ybeam=%g" % (_g(g.Xbeam), _g(g.Ybeam)),
        "  Fbeam=%g Sbeam=%g" % (_g(g.Fbeam), _g(g.Sbeam)),
        "  Xclose=%g Yclose=%g" % (_g(g.Xclose), _g(g.Yclose)),
        "  Fclose=%g Sclose=%g" % (_g(g.Fclose), _g(g.Sclose)),
    ]
    for name, vec in (
        ("DIRECTION_OF_DETECTOR_X-AXIS", g.fdet),
        ("DIRECTION_OF_DETECTOR_Y-AXIS", g.sdet),
        ("DIRECTION_OF_DETECTOR_Z-AXIS", g.odet),
        ("INCIDENT_BEAM_DIRECTION", g.beam),
        ("spindle ROTATION_AXIS", g.spindle),
    ):
        lines.append("  %s= %g %g %g" % ((name,) + tuple(_g(c) for c in vec)))
    lines.append("  dials origin= %g %g %g" % tuple(_g(c) for c in g.dials_origin))
    lines.append(
        "solid angle subtended by detector = %g steradian ( %g%% sphere)"
        % (result.omega_sum / p.steps, 100 * result.omega_sum / p.steps / 4 / np.pi)
    )
    return lines


def smv_header(result: RenderResult) -> SMVHeader:
    p = result.plan
    g = p.geom
    return SMVHeader(
        fpixels=p.cfg.detector.fpixels,
        spixels=p.cfg.detector.spixels,
        pixel_size_m=_g(g.pixel_size),
        distance_m=_g(g.distance),
        lambda_m=_g(p.cfg.beam.wavelength),
        Xbeam=_g(g.Xbeam),
        Ybeam=_g(g.Ybeam),
        Fbeam=_g(g.Fbeam),
        Sbeam=_g(g.Sbeam),
        detsize_s=_g(g.detsize_s),
        dials_origin=tuple(_g(c) for c in g.dials_origin),
        ORGX=_g(g.ORGX),
        ORGY=_g(g.ORGY),
        close_distance_m=_g(g.close_distance),
        phi0_rad=p.phi.phi0,
        osc_rad=p.phi.osc,
        twotheta_rad=_g(g.twotheta),
    )


def cbf_header(plan: Plan, exposure_time: float = 1.0) -> CBFHeader:
    """The PILATUS header values of a single-panel plan (io/cbf.py)."""
    g = plan.geom64
    return CBFHeader(
        pixel_size=_g(g.pixel_size),
        wavelength=_g(plan.cfg.beam.wavelength),
        distance=_g(g.close_distance),
        beam_fast=_g(g.Fbeam),
        beam_slow=_g(g.Sbeam),
        exposure_time=float(exposure_time),
        phi_start=plan.phi.phi0,
        phi_range=plan.phi.osc,
        twotheta=_g(g.twotheta),
        polarization=_g(plan.cfg.beam.polarization),
        thickness=_g(plan.cfg.detector.thickness),
    )


def excluded_pixels(d: DetectorConfig) -> np.ndarray | None:
    """Pixels that the render skips (outside `-roi`, `-mask` 0): (S, F), or (P, S_max, F_max) for panels; None
    if none is."""
    ok = rendered_stack(d) if d.panels else rendered_pixels(d)
    return None if ok is None else ~ok


def write_nexus(path: str, plan: Plan, image: np.ndarray, exposure_time: float = 1.0) -> None:
    """An image of `plan` as NeXus/NXmx (io/nexus.py): the panels of `DetectorConfig.panels` when given, else
    the plan's single panel; beam and spindle from the plan; skipped pixels in the pixel mask."""
    from .io.nexus import (  # h5py: imported only when a NeXus file is wanted (start-up time)
        BeamGeometry,
        GoniometerGeometry,
        panels_from_geometry,
        write_nxmx,
    )

    g = plan.geom64
    d = plan.cfg.detector
    if d.panels:
        panels = d.panels
    else:
        panels = panels_from_geometry(g, d.fpixels, d.spixels, _g(d.thickness))
    vec = [tuple(_g(c) for c in v) for v in (g.beam, g.polar_vector, g.spindle)]
    beam = BeamGeometry(_g(plan.cfg.beam.wavelength), vec[0], vec[1], _g(plan.cfg.beam.polarization))
    write_nxmx(path, image, panels, beam, GoniometerGeometry(vec[2], plan.phi.phi0, plan.phi.osc),
               exposure_time=exposure_time, excluded=excluded_pixels(d))


def _as_numpy(image) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu", torch.float32).numpy()
    return np.asarray(image, dtype=np.float32)


def save_cbf(path: str, cfg: SimulationConfig, image, scale: float | None = None, adc_offset: float = 40.0,
             exposure_time: float = 1.0) -> float:
    """API twin of ``-cbffile``: write `image` (the float image of `simulate(cfg)`, photons) as the C's int
    image in a PILATUS miniCBF, with the `-scale` rule (None or <= 0: 55000 / max) and `-adc` offset; returns
    the scale used. Single panel only."""
    if cfg.detector.panels:
        raise InputError(f"output {path}: a CBF holds one panel; a multi-panel detector needs save_nxmx")
    img = _as_numpy(image)
    roi = cfg.detector.roi
    stats = image_statistics(img, roi, cfg.detector.mask, 1, _g(cfg.detector.pixel_size))
    used = intfile_scale_rule(scale, stats["max_I"])
    ints, _ = int_image(img, used, adc_offset, roi)
    write_cbf(path, ints.astype(np.int32), cbf_header(build_plan(cfg, torch.float64, compile=False), exposure_time))
    return used


def save_nxmx(path: str, cfg: SimulationConfig, image, exposure_time: float = 1.0) -> None:
    """API twin of ``-nxsfile``: write `image` ((S, F), or (P, S, F) for `DetectorConfig.panels`; photons) with
    the geometry, beam and spindle of `cfg` as NeXus/NXmx."""
    write_nexus(path, build_plan(cfg, torch.float64, compile=False), _as_numpy(image), exposure_time)


def output_paths(options: RunOptions) -> list[str]:
    return [
        p
        for p in (
            options.floatfile,
            options.intfile,
            options.pgmfile,
            options.pngfile,
            options.noisefile,
            options.dumpfile,
            options.cbffile,
            options.nxsfile,
        )
        if p is not None
    ]


# room a temporary name takes beyond the output's own name (atomic_write: ".NAME.PID.XXXXXXXX.nbtmp")
_TEMP_NAME_EXTRA = 40


# a multi-panel noise image is NeXus/NXmx: -noisefile names ending so (any case)
NEXUS_SUFFIXES = (".nxs", ".nx5", ".nexus", ".h5", ".hdf5")


def check_output_paths(options: RunOptions, cfg: SimulationConfig | None = None) -> None:
    """Refuse, before rendering, outputs that cannot be written or would clobber: an empty name, a folder, a
    parent that is a file or unwritable, a name too long, the same file twice, an output that is an input; a
    single-image format (SMV, PGM, PNG, CBF) of a multi-panel detector (its noise image is NeXus)."""
    if cfg is not None and cfg.detector.panels:
        for flag in ("intfile", "noisefile", "pgmfile", "pngfile", "cbffile"):
            path = getattr(options, flag)
            if flag == "noisefile" and path is not None and path.lower().endswith(NEXUS_SUFFIXES):
                continue
            if path is not None:
                extra = "; its noise image is NeXus: -noisefile NAME.nxs" if flag == "noisefile" else ""
                raise InputError(f"output {path}: -{flag} holds one panel; a multi-panel detector writes -nxsfile "
                                 f"(every panel) or -floatfile (the (panel, slow, fast) stack){extra}")
    seen: dict[str, str] = {}
    inputs = {os.path.realpath(p): p for p in options.inputs}
    for path in output_paths(options):
        if path == "":
            raise InputError("output: empty file name")
        if os.path.isdir(path) or path.endswith(os.sep):
            raise InputError(f"output {path}: is a folder")
        real = os.path.realpath(path)
        if real in seen:
            raise InputError(f"output {path}: the same file as output {seen[real]}")
        seen[real] = path
        if real in inputs:
            raise InputError(f"output {path}: would overwrite the input {inputs[real]}")
        folder = Path(os.path.abspath(path)).parent
        while not folder.exists() and not folder.is_symlink():
            folder = folder.parent
        if not folder.is_dir():
            raise InputError(f"output {path}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"output {path}: folder {folder} is not writable")
        limit = _name_max(folder)
        if len(os.fsencode(os.path.basename(path))) + _TEMP_NAME_EXTRA > limit:
            raise InputError(f"output {path}: file name too long (at most {limit - _TEMP_NAME_EXTRA} bytes here)")


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    """An OS error while writing `path` (disk full, quota, permissions) as one line naming it."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"output {path}: {exc.strerror or exc}") from exc


def run(cfg: SimulationConfig, options: RunOptions) -> RenderResult:
    """Render and write the outputs, all or none: every file goes to a temporary name, all are renamed at the
    end; on any failure (errors, SIGINT, SIGTERM via `signals_as_exceptions`) the temporaries and the folders
    made for the outputs are removed."""
    check_output_paths(options, cfg)
    for path in output_paths(options):
        sweep_stale_temporaries(path)
    with output_group() as group:
        return _run(cfg, options, group)


class Terminated(BaseException):  # noqa: N818 (a signal, like KeyboardInterrupt)
    """SIGTERM/SIGHUP received: unwinds like KeyboardInterrupt so that clean-up runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated, SIGINT KeyboardInterrupt, while the block runs (a signal the parent
    set to be ignored, as nohup and background jobs do, stays ignored)."""

    def handler(signum, frame):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    previous = {
        sig: signal.signal(sig, handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(cfg: SimulationConfig, options: RunOptions, group: OutputGroup) -> RenderResult:
    """Render, print the C's report, statistics and traces, write the files asked for (in the C's order of its
    stdout lines), then commit them together."""
    result, image = _render(cfg, options)
    d = cfg.detector
    roi, mask = (None, rendered_stack(d)) if d.panels else (d.roi, d.mask)  # panels: the rendered pixels
    stats = image_statistics(image, roi, mask, result.plan.oversample, _g(result.plan.geom.pixel_size))
    print("\n".join(format_statistics_lines(stats)))
    header = smv_header(result)

    def write(path: str | None, what: str | None, writer: Callable[[str], None]) -> None:
        """One output file: written in the group (temporary, then renamed at commit); `what` for the C's line."""
        if not path:
            return
        with _writing(path):
            group.makedirs(Path(path).parent)
            writer(path)
        if what:
            print(f"wrote {what} {path}")

    write(options.floatfile, "float image", lambda p: write_float_image(p, image))
    int_scale = intfile_scale_rule(options.intfile_scale, stats["max_I"])
    print(format_statistics_lines(stats, intfile_scale=int_scale)[-1])
    if options.intfile or options.cbffile:
        ints, _ = int_image(image, int_scale, options.adc_offset, d.roi)
        write(options.intfile, "SMV image", lambda p: write_smv(p, ints, header, "int", options.c_compat))
        write(options.cbffile, "CBF image",
              lambda p: write_cbf(p, ints.astype(np.int32), cbf_header(result.plan, options.exposure_time)))
    write(options.nxsfile, "NeXus image", lambda p: write_nexus(p, result.plan, image, options.exposure_time))
    if options.pgmfile or options.pngfile:
        pgm, pgm_scale = pgm_image(image, options.pgm_scale, stats["rmsd"], int_scale, d.roi)
        print(format_statistics_lines(stats, pgm_scale=pgm_scale)[-1])
        write(options.pgmfile, None, lambda p: write_pgm(p, pgm, pgm_scale))  # the C says nothing here
        write(options.pngfile, "PNG preview", lambda p: write_png(p, pgm))
    if options.noisefile:
        from .noise import noise_image  # numba: imported only when a noise image is wanted (start-up time)

        if d.panels:  # one stream through the panels (noise.noise_stack), written as NeXus
            from .noise import noise_stack

            panels = result.plan.panels
            noisy, photons, overloads = noise_stack(image, panels.spixels, panels.fpixels, options.seed,
                                                    options.adc_offset, d.roi)
        else:
            noisy, photons, overloads = noise_image(image, options.seed, options.adc_offset, d.roi)
        print(format_statistics_lines(stats, photons=photons, overloads=overloads)[-1])
        if d.panels:
            write(options.noisefile, "noise image",
                  lambda p: write_nexus(p, result.plan, noisy, options.exposure_time))
        else:
            write(options.noisefile, "noise image",
                  lambda p: write_smv(p, noisy, header, "noise", options.c_compat))
    sf = cfg.crystal.structure_factors
    if sf is not None:
        # a sparse grid is made dense for the C's Fdump (cli checked that it fits)
        dense = sf.grid.dense if isinstance(sf.grid, SparseGrid) else lambda: np.asarray(sf.grid)
        write(options.dumpfile, None, lambda p: write_fdump(p, dense(), _fdump_meta(sf)))
    with _writing(", ".join(output_paths(options))):
        group.commit()
    return result


def _render(cfg: SimulationConfig, options: RunOptions) -> tuple[RenderResult, np.ndarray]:
    """The plan and its render, with the C's advisories, geometry report and traced pixels printed; the image
    as float32 numpy (refused when a value overflowed the render dtype)."""
    dtype = torch.float64 if options.dtype == "float64" else torch.float32
    for note in options.notes:
        print(note)
    plan = build_plan(cfg, dtype, torch.device(options.device))
    for line in advisories(plan):  # the C's WARNING lines: where the C prints them (stdout) in --c-compat
        print(line, file=sys.stdout if cfg.c_compat else sys.stderr)
    trace_at = options.trace_pixel
    if trace_at is None and options.printout_pixel is not None:
        trace_at = (options.printout_pixel[1], options.printout_pixel[0])
    with torch.no_grad(), progress_bar(plan.pixel_order.numel(), plan.samples_per_pixel, options.progress) as progress:
        result = render(plan, options.chunk, trace_pixel=trace_at, progress=progress)
    for line in geometry_report(result):
        print(line)
    image = result.image.detach().to("cpu", torch.float32).numpy()
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:  # validation refuses what the C renders as NaN; this catches overflow of the render dtype
        raise InputError(
            f"the render has {bad} non-finite pixels (a value overflows {options.dtype}: check the magnitudes "
            "given, or use -dtype float64); no output written"
        )
    if result.trace is not None:
        trace = pixel_trace(result)
        if options.printout_pixel is not None:
            fp, sp = options.printout_pixel
            print(format_c_printout(trace, fp, sp, float(image[sp, fp]), _g(cfg.beam.wavelength)))
        if options.trace_pixel is not None:
            if len(options.trace_pixel) == 3:
                print(f"# panel {options.trace_pixel[0]} of {len(cfg.detector.panels)} (-trace_panel)")
            print(order_note(*options.trace_pixel[-2:]))
            print(format_trace(trace, plan.dtype, plan.device))
            dark = dark_note(float(image[options.trace_pixel]), float(image.max()))
            if dark:
                print(dark)
    return result, image


def _fdump_meta(sf) -> dict:
    """The Fdump header of a structure-factor grid (io/fdump.py)."""
    shape = np.shape(sf.grid)
    return dict(h_min=sf.h_min, h_max=sf.h_max, k_min=sf.k_min, k_max=sf.k_max, l_min=sf.l_min, l_max=sf.l_max,
                h_range=shape[0], k_range=shape[1], l_range=shape[2], hkls=sf.hkls)
