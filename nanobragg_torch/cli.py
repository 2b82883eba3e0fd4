"""Command line `nanobragg`: the C program's flags -> SimulationConfig -> render -> the C's files and stdout.

The CLI is a thin layer: `cflags` parses (strictly, by the kinds of `flagtable.FLAGS`, then as the C does),
`config_from_flags` converts the C's variables to a SI-unit SimulationConfig, one builder per config object
(reading HKL/matrix/SMV/source files at this edge), and `outputs.run` renders (plan.build_plan, render),
writes the files and prints the C's statistics (images.format_statistics_lines). Exit status: 0 on success, 2
on bad input (one line on stderr naming the flag or file:line; no output file left behind).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time

import numpy as np
import torch

from . import demo, quirks
from .cflags import c_defaults, c_divide, c_option_loop, own_options, strip_own_flags, validate, walk
from .config import (
    BeamConfig,
    CrystalConfig,
    DetectorConfig,
    SimulationConfig,
    SparseGrid,
    StructureFactors,
    scalar_value,
)
from .constants import RTD
from .errors import ConfigError, InputError
from .flagtable import USAGE, help_text
from .io.dxtbx_models import Experiment, read_experiments, write_experiments
from .io.fdump import read_fdump, write_fdump
from .io.mosflm import read_mosflm_matrix
from .io.reflections import file_kind, read_structure_factors
from .io.smv import read_smv, smv_value
from .io.textcolumns import read_text_columns
from .memory import allocation_failure, check_allocation
from .options import RunOptions
from .outputs import Terminated, run, signals_as_exceptions
from .panels import check_panels
from .validation import check_config


def _header_values(path: str, for_mask: bool, v: dict) -> np.ndarray:
    """The C's -img / -mask pre-pass: detector values from an SMV header (GetFrame/ValueOf)."""
    header, image, _ = read_smv(path, honor_byte_order=False)
    text = "".join(f"{k}={val};\n" for k, val in header.items())
    v["fpixels"], v["spixels"] = image.shape[1], image.shape[0]

    def val(key):
        x = smv_value(text, key)
        if math.isinf(x) or (x <= 0 and key in ("PIXEL_SIZE", "WAVELENGTH")) or (x == 0 and "DISTANCE" in key):
            raise InputError(f"{path}: header {key}={x:g} is not a usable value (the C renders NaN or zeros)")
        return x

    x = val("PIXEL_SIZE")
    if not math.isnan(x):
        v["pixel_size"] = x / 1000.0
    v["detsize_f"] = v["pixel_size"] * v["fpixels"]
    v["detsize_s"] = v["pixel_size"] * v["spixels"]
    for key, var, scale in (
        ("DISTANCE", "distance", 1000.0),
        ("CLOSE_DISTANCE", "close_distance", 1000.0),
        ("WAVELENGTH", "lambda0", 1e10),
        ("BEAM_CENTER_X", "Xbeam", 1000.0),
    ):
        x = val(key)
        if not math.isnan(x):
            v[var] = x / scale
    x = val("BEAM_CENTER_Y")
    if not math.isnan(x):
        v["Ybeam"] = (v["detsize_s"] - x / 1000.0) if for_mask else x / 1000.0
    for key in ("ORGX", "ORGY"):
        x = val(key)
        if not math.isnan(x):
            v[key] = x
    for key, var in (("PHI", "phi0"), ("OSC_RANGE", "osc")):
        x = val(key)
        if not math.isnan(x):
            v[var] = x / RTD
    return image


def parse_c_flags(argv: list[str]) -> dict:
    """Validate argv and run the C's option handling (the -img/-mask pre-pass, then the option loop)."""
    validate(argv)
    c_argv = strip_own_flags(argv)
    v = c_defaults()
    mask = None
    for flag, for_mask in (("-mask", True), ("-img", False)):  # the C reads the mask header first
        for i, a in enumerate(c_argv[:-1]):
            if flag in a:
                v["maskfilename" if for_mask else "imginfilename"] = c_argv[i + 1]
        path = v["maskfilename" if for_mask else "imginfilename"]
        if path is not None:
            image = _header_values(path, for_mask, v)
            if for_mask:
                mask = image
    c_option_loop(c_argv, v)
    v["mask"] = mask
    return v


def config_from_flags(argv: list[str], cwd: str = ".") -> tuple[SimulationConfig, RunOptions]:
    """argv (without the program name) -> (SimulationConfig in SI units, RunOptions).

    The C's variables (`parse_c_flags`) go through one builder per config object; the C's "not given"
    values (-1, NaN) become None here, once."""
    validate(argv)
    own = own_options(argv)
    if own["demo"]:  # the demo writes its inputs into the output folder first, then reads them as -mat/-hkl
        outdir = own["outdir"] or "out"
        demo.write_inputs(outdir)
        argv = demo.demo_args(outdir) + [a for a in argv if a != "-demo"]
        own = {**own_options(argv), "demo": True}
    v = parse_c_flags(argv)
    c_compat = own["c_compat"]
    notes: list[str] = []
    expt = _read_expt(own) if own["expt"] else None
    if expt is not None:
        notes.extend(expt.ignored)  # what the file holds and the simulation does not use (io/dxtbx_models.py)
    detector = detector_config(v, argv, c_compat, own["pix0_override"], notes)
    crystal, dumpfile, dump_read = crystal_config(v, argv, c_compat, cwd, notes,
                                                  expt_crystal=expt is not None and expt.real_space is not None)
    cfg = SimulationConfig(
        detector=detector, beam=beam_config(v), crystal=crystal, c_compat=c_compat,
        pix0_override=own["pix0_override"],
    )
    files = {  # config fields read from files: refusals name the file (validation.py)
        "crystal.reciprocal_matrix": v["matfilename"],
        "beam.sources": v["sourcefilename"],
        "crystal.structure_factors": v["hklfilename"] or dump_read,
    }
    if expt is not None:
        cfg = experiment_config(cfg, expt, argv, own["expt"], v["maskfilename"])
        files["detector.panels"] = own["expt"]
        if v["matfilename"] is None and not v["user_cell"]:
            files["crystal.reciprocal_matrix"] = own["expt"]
    dtype = torch.float64 if own["dtype"] == "float64" else torch.float32
    check_config(cfg, flags=True, dtype=dtype, device=own["device"], samples_per_chunk=own["chunk"], files=files)
    if cfg.detector.panels:  # -roi and -mask of the panels (panels.check_panels), named by their flags
        try:
            check_panels(cfg)
        except ConfigError as exc:
            raise ConfigError(exc.field, exc.detail, flags=True, files=files) from None
    inputs = tuple(v[k] for k in ("hklfilename", "matfilename", "sourcefilename", "imginfilename", "maskfilename",
                                  "stolfilename") if v.get(k)) + ((dump_read,) if dump_read else ())
    options = run_options(v, own, cfg, dumpfile, notes, inputs)
    if own["demo"]:  # where the demo put its inputs and where its outputs go (the next command reuses them)
        written = [f for f in (options.floatfile, options.intfile, options.pngfile) if f]
        options.notes.insert(0, demo.announcement(own["outdir"] or "out", written))
    shown = [a for a in argv if a in ("-progress", "-noprogress")]  # the last one wins, as in the C
    options.progress = None if not shown else shown[-1] == "-progress"
    return cfg, options


def _given(x, ok=lambda x: x >= 0):
    """The C's value, or None where it still holds the C's "not given" marker (NaN, or failing `ok`)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    return x if ok(x) else None


def _positive(x) -> bool:
    return x > 0


def _any(x) -> bool:  # only NaN means "not given"
    return True


def detector_config(v: dict, argv: list[str], c_compat: bool, pix0_override: bool, notes: list[str]) -> DetectorConfig:
    """The detector: pixel counts from sizes (the C's ceil(detsize/pixel - 0.5)), geometry, thickness, ROI, mask."""
    pixel = v["pixel_size"]
    if pixel <= 0:
        raise InputError("flag -pixel: the pixel size must be positive")
    if v["fpixels"]:
        v["detsize_f"] = pixel * v["fpixels"]
    if v["spixels"]:
        v["detsize_s"] = pixel * v["spixels"]
    fpixels = math.ceil(v["detsize_f"] / pixel - 0.5)
    spixels = math.ceil(v["detsize_s"] / pixel - 0.5)
    if fpixels <= 0 or spixels <= 0:
        raise InputError(f"flags -detpixels/-detsize: the detector has no pixels ({fpixels} x {spixels})")
    _check_size_conflicts(argv, pixel, fpixels, spixels)
    roi = v["roi"]  # -roi and -mask are checked against the detector in validation.py
    mask = v["mask"]
    pix0 = v["pix0_vector"]
    if pix0 is not None:
        pix0 = tuple(x / 1000.0 for x in pix0) if v["pix0_flag"] == "-pix0_vector_mm" else pix0
        if not pix0_override:
            notes.append(quirks.PIX0_IGNORED.note)
    return DetectorConfig(
        fpixels=fpixels,
        spixels=spixels,
        pixel_size=pixel,
        distance=v["distance"],
        close_distance=_given(v["close_distance"], _any),
        convention=v["convention"],
        pivot=v["pivot"],
        Xbeam=_given(v["Xbeam"], _any),
        Ybeam=_given(v["Ybeam"], _any),
        Xclose=_given(v["Xclose"], _any),
        Yclose=_given(v["Yclose"], _any),
        ORGX=_given(v["ORGX"], _any),
        ORGY=_given(v["ORGY"], _any),
        fdet_vector=v["fdet_vector"],
        sdet_vector=v["sdet_vector"],
        odet_vector=v["odet_vector"],
        twotheta_axis=v["twotheta_axis"],
        pix0_vector=pix0,
        rotx=v["detector_rotx"],
        roty=v["detector_roty"],
        rotz=v["detector_rotz"],
        twotheta=v["detector_twotheta"],
        thickness=v["detector_thick"],
        thicksteps=_given(v["detector_thicksteps"], _positive),
        mu=_given(v["detector_mu"]),
        curved=bool(v["curved_detector"]) if c_compat else bool(v["curved_detector_seen"]),
        point_pixel=bool(v["point_pixel"]),
        oversample=_given(v["oversample"], _positive),
        oversample_thick=bool(v["oversample_thick"]),
        oversample_polar=bool(v["oversample_polar"]),
        oversample_omega=bool(v["oversample_omega"]),
        roi=roi,
        mask=mask,
    )


def beam_config(v: dict) -> BeamConfig:
    """The beam: wavelength, fluence (from flux when given), polarization, divergence, dispersion, sources."""
    fluence = v["fluence"]
    if v["flux"] != 0.0 and v["exposure"] > 0.0 and v["beamsize"] >= 0:
        fluence = c_divide(v["flux"] * v["exposure"], v["beamsize"] * v["beamsize"])
    sources = read_text_columns(v["sourcefilename"], 5, finite=True) if v["sourcefilename"] else None
    if v["sourcefilename"] and (sources is None or len(sources) == 0):
        raise InputError(f"{v['sourcefilename']}: no source lines")
    return BeamConfig(
        wavelength=v["lambda0"],
        fluence=fluence,
        beam_vector=v["beam_vector"],
        polar_vector=v["polar_vector"],
        polarization=v["polarization"],
        nopolar=bool(v["nopolar"]),
        hdivrange=_given(v["hdivrange"]),
        vdivrange=_given(v["vdivrange"]),
        hdivstep=_given(v["hdivstep"]),
        vdivstep=_given(v["vdivstep"]),
        hdivsteps=_given(v["hdivsteps"], _positive),
        vdivsteps=_given(v["vdivsteps"], _positive),
        round_div=bool(v["round_div"]),
        dispersion=v["dispersion"],
        dispsteps=_given(v["dispsteps"], _positive),
        sources=sources,
        water_size=v["water_size"],
    )


def crystal_config(v: dict, argv: list[str], c_compat: bool, cwd: str, notes: list[str],
                   expt_crystal: bool = False) -> tuple[CrystalConfig, str | None, str | None]:
    """The crystal (cell or matrix, misset, size, shape, rotation, mosaic, structure factors), the Fdump file
    to write and the Fdump file read (None: none). `expt_crystal`: `-expt` supplies the orientation."""
    # structure factors: -hkl, else (C-compat or -dump given) the Fdump file, else default_F alone
    sf = None
    dumpfile = dump_read = None
    column = own_options(argv)["F_column"]  # ours: the amplitude column of an MTZ / mmCIF -hkl file
    if column is not None and (v["hklfilename"] is None or file_kind(v["hklfilename"]) == "text"):
        raise InputError("flag -F_column: picks a column of an MTZ or mmCIF -hkl file"
                         + (f"; {v['hklfilename']} is a text HKL file" if v["hklfilename"] else "; no -hkl given"))
    if v["hklfilename"] is not None:
        grid, meta = read_structure_factors(v["hklfilename"], column=column, default_F=v["default_F"],
                                            notes=notes)
        sf = StructureFactors(grid, meta["h_min"], meta["k_min"], meta["l_min"], meta["hkls"])
        if c_compat or "-dump" in argv:
            dumpfile = v["dumpfilename"]
            if isinstance(grid, SparseGrid):  # the Fdump file is the C's dense grid, padded, made in memory
                padded = math.prod(n + 1 for n in grid.shape)
                check_allocation(8.0 * grid.cells + 24.0 * padded,
                                 f"{dumpfile} (the dense {'x'.join(map(str, grid.shape))} F grid)",
                                 "flag -dump" if "-dump" in argv else "--c-compat (writes Fdump.bin)")
    else:
        dump_path = os.path.join(cwd, v["dumpfilename"]) if not os.path.isabs(v["dumpfilename"]) else v["dumpfilename"]
        if (c_compat or "-dump" in argv) and os.path.exists(dump_path):
            grid, meta = read_fdump(dump_path)
            dump_read = dump_path
            sf = StructureFactors(grid, meta["h_min"], meta["k_min"], meta["l_min"], 1)
            notes.append(f"reading Fs from {v['dumpfilename']} (no -hkl given)")
        elif v["default_F"] == 0.0:
            raise InputError("no structure factors: give -hkl FILE or -default_F VALUE")
    if v["matfilename"] is None and not v["user_cell"] and not expt_crystal:
        raise InputError("no crystal: give -cell a b c alpha beta gamma or -mat FILE (or -expt with a crystal)")
    if v["user_cell"] and v["cell"][0] <= 0 and v["matfilename"] is None:
        raise InputError("flag -cell: the a axis must be positive")
    matrix = read_mosflm_matrix(v["matfilename"]) if v["matfilename"] is not None else None
    cell = None
    if v["user_cell"]:
        a, b, c, al, be, ga = v["cell"]
        half_pi = math.pi / 2
        cell = (
            a * 1e-10,
            (b if b > 0 else a) * 1e-10,
            (c if c > 0 else a) * 1e-10,
            al if al > 0 else half_pi,
            be if be > 0 else half_pi,
            ga if ga > 0 else half_pi,
        )
    # the beam clips the sample
    sample_y, sample_z = v["sample_y"], v["sample_z"]
    if v["beamsize"] >= 0:
        sample_y = min(sample_y, v["beamsize"]) if sample_y > v["beamsize"] else sample_y
        sample_z = min(sample_z, v["beamsize"]) if sample_z > v["beamsize"] else sample_z
    crystal = CrystalConfig(
        cell=cell,
        reciprocal_matrix=matrix,
        misset=tuple(v["misset"][1:]) if v["misset"][0] > 0 else None,
        misset_random=v["misset"][0] == -1,
        misset_seed=v["misset_seed"] if v["misset_seed"] is not None else int(time.time()),
        Na=v["Na"],
        Nb=v["Nb"],
        Nc=v["Nc"],
        sample_x=v["sample_x"],
        sample_y=sample_y,
        sample_z=sample_z,
        shape=v["xtal_shape"],
        fudge=v["fudge"],
        phi0=v["phi0"],
        osc=_given(v["osc"]),
        phistep=_given(v["phistep"]),
        phisteps=_given(v["phisteps"]),
        spindle_axis=v["spindle_vector"],
        mosaic_spread=_given(v["mosaic_spread"]),
        mosaic_domains=_given(v["mosaic_domains"], _positive),
        mosaic_seed=v["mosaic_seed"],
        structure_factors=sf,
        default_F=v["default_F"],
        interpolate={0: False, 1: True}.get(v["interpolate"]),
        dmin=v["dmin"],
    )
    return crystal, dumpfile, dump_read


# C flags that place or size the detector: with -expt the file does that, so they are an error
EXPT_DETECTOR_FLAGS = (
    "-mosflm", "-xds", "-adxv", "-denzo", "-dials", "-fdet_vector", "-sdet_vector", "-odet_vector",
    "-twotheta_axis", "-pix0_vector", "-pix0_vector_mm", "-pix0_override", "-distance", "-close_distance",
    "-Xbeam", "-Ybeam", "-Xclose", "-Yclose", "-ORGX", "-ORGY", "-pivot", "-twotheta", "-detector_rotx",
    "-detector_roty", "-detector_rotz", "-detsize", "-detsize_f", "-detsize_s", "-detpixels", "-detpixels_f",
    "-detpixels_x", "-detpixels_s", "-detpixels_y", "-pixel", "-img",
)
WAVELENGTH_FLAGS = ("-lambda", "-wave", "-wavelength", "-energy")


def _read_expt(own: dict) -> Experiment:
    """-expt FILE (with -expt_image N): it must describe a detector (a bare detector JSON takes its beam from
    the flags: -beam_vector, -polar_vector, -lambda)."""
    exp = read_experiments(own["expt"], image=own["expt_image"])
    if exp.panels is None:
        raise InputError(f"{own['expt']}: flag -expt needs an experiment with a detector")
    for i, p in enumerate(exp.panels):  # the C's odet = fdet x sdet must point away from the sample
        if float(np.dot(p.origin, np.cross(p.fast_axis, p.slow_axis))) <= 0.0:
            raise InputError(f"{own['expt']}: panel {i} ({p.name or 'unnamed'}) faces the sample (origin . (fast x "
                             "slow) <= 0); nanoBragg needs fast x slow pointing away from it")
    return exp


def experiment_config(cfg: SimulationConfig, exp: Experiment, argv: list[str], path: str,
                      mask_file: str | None = None) -> SimulationConfig:
    """cfg (from the C's flags) with what -expt describes, except where a C flag names the same quantity:
    the beam (-lambda/-energy, -dispersion, -beam_vector, -polar_vector, -polar), -spindle_axis, -phi, -osc, the crystal
    (-mat, -cell) and the sensor (-detector_thick, -detector_abs). Detector-placement flags are an error."""
    given = {a for _, a, _ in walk(argv)}
    clash = [f for f in EXPT_DETECTOR_FLAGS if f in given]
    if clash:
        raise InputError(f"flag {clash[0]}: the detector comes from -expt {path}; edit the file instead")
    if exp.beam_vector is None and "-beam_vector" not in given:
        raise InputError(f"{path}: no beam in the file: give -beam_vector (with -lambda, -polar_vector)")
    beam: dict = {}
    for key, flag in (("beam_vector", "-beam_vector"), ("polar_vector", "-polar_vector"), ("polarization", "-polar")):
        if getattr(exp, key) is not None and flag not in given:
            beam[key] = getattr(exp, key)
    if exp.wavelength is not None and not given.intersection(WAVELENGTH_FLAGS):
        beam["wavelength"] = exp.wavelength
    if exp.dispersion is not None and "-dispersion" not in given:  # a polychromatic beam's band
        beam["dispersion"] = exp.dispersion
    new_beam = dataclasses.replace(cfg.beam, **beam)
    crystal: dict = {}
    for key, flag in (("spindle_axis", "-spindle_axis"), ("phi0", "-phi"), ("osc", "-osc")):
        if getattr(exp, key) is not None and flag not in given:
            crystal[key] = getattr(exp, key)
    if exp.real_space is not None and not given.intersection(("-mat", "-cell")):
        crystal["reciprocal_matrix"] = exp.reciprocal_matrix(scalar_value(new_beam.wavelength))
    d = cfg.detector
    detector = exp.detector_config(d)
    sensor = {}
    if "-detector_thick" in given:
        sensor["thickness"] = d.thickness
    if given.intersection(("-detector_abs", "-detector_absorb")):
        sensor["mu"] = d.mu
    if sensor:
        panels = detector.panels and tuple(dataclasses.replace(p, **sensor) for p in detector.panels)
        detector = dataclasses.replace(detector, panels=panels, **sensor)
    if detector.panels and d.mask is not None:  # -mask: the panels stacked along slow, as -floatfile writes them
        P, S, F = (len(detector.panels), max(p.spixels for p in detector.panels),
                   max(p.fpixels for p in detector.panels))
        if np.shape(d.mask) != (P * S, F):
            raise InputError(f"{mask_file}: a {np.shape(d.mask)[1]}x{np.shape(d.mask)[0]} mask; the {P} panels of "
                             f"{path} stacked along slow are {F}x{P * S} (the -floatfile layout)")
        detector = dataclasses.replace(detector, mask=np.asarray(d.mask).reshape(P, S, F))
    return dataclasses.replace(cfg, detector=detector, beam=new_beam,
                               crystal=dataclasses.replace(cfg.crystal, **crystal))


def expt_output(argv: list[str], cfg: SimulationConfig) -> tuple[str, dict] | None:
    """-write_expt FILE (relative to -outdir): its path and the experiment list of what is simulated, made
    before the render so that a set-up dxtbx cannot describe fails first; a detector read from -expt keeps
    its hierarchy when its panels are unchanged."""
    own = own_options(argv)
    path = own["write_expt"]
    if path is None:
        return None
    if own["outdir"] is not None and not os.path.isabs(path):
        path = os.path.join(own["outdir"], path)
    hierarchy = None
    if own["expt"] is not None and cfg.detector.panels is not None:
        source = read_experiments(own["expt"], image=own["expt_image"])

        def placed(panels):  # the panels' geometry (a -detector_thick override keeps the groups)
            return [(p.origin, p.fast_axis, p.slow_axis, p.pixel_size, p.fpixels, p.spixels) for p in panels]

        if source.panels is not None and placed(source.panels) == placed(cfg.detector.panels):
            hierarchy = source.hierarchy
    try:
        return path, write_experiments(cfg, None, hierarchy=hierarchy)
    except ValueError as exc:
        raise InputError(f"flag -write_expt: {exc}") from None


def run_options(v: dict, own: dict, cfg: SimulationConfig, dumpfile: str | None, notes: list[str],
                inputs: tuple[str, ...] = ()) -> RunOptions:
    """What to write and print: output paths (default mode: only the files asked for), traces, device."""
    c_compat = cfg.c_compat
    asked = v["asked"]
    outdir = own["outdir"]

    def out(kind: str, name: str | None) -> str | None:
        if name is None:
            return None
        path = name if (outdir is None or os.path.isabs(name)) else os.path.join(outdir, name)
        # the C's unrequested default files (c_compat) are single-panel images: none for a multi-panel detector
        return path if (kind in asked or (c_compat and not cfg.detector.panels)) else None

    if own["demo"]:
        outdir = outdir or "out"
        asked = {"float", "int", "png"}
        v["floatfilename"], v["intfilename"] = "demo_float.bin", "demo_int.img"
        own["pngfile"] = own["pngfile"] or "demo.png"
    pngfile = own["pngfile"]
    if pngfile and outdir is not None and not os.path.isabs(pngfile):
        pngfile = os.path.join(outdir, pngfile)
    def own_out(name: str | None) -> str | None:  # our output flags: written when given
        if not name or outdir is None or os.path.isabs(name):
            return name
        return os.path.join(outdir, name)

    printout_pixel = None
    if v["printout_fpixel"] >= 0 or v["printout_spixel"] >= 0:
        printout_pixel = (v["printout_fpixel"], v["printout_spixel"])
        if cfg.detector.panels:
            raise InputError("flag -printout_pixel: the C's printout is of a one-panel detector; use "
                             "-trace_pixel S F -trace_panel P")
        _check_traced(cfg, "-printout_pixel", printout_pixel[1], printout_pixel[0])
    elif v["printout"]:
        notes.append(
            "note: -printout without -printout_pixel: the C prints a block for every pixel; this program "
            "prints none (use -printout_pixel F S or -trace_pixel S F)"
        )
    trace_pixel = own["trace_pixel"]
    if own["trace_panel"] is not None and (trace_pixel is None or not cfg.detector.panels):
        raise InputError("flag -trace_panel: needs -trace_pixel S F and a multi-panel detector (-expt)")
    if trace_pixel is not None:
        if cfg.detector.panels:
            trace_pixel = (own["trace_panel"] or 0, *trace_pixel)
        _check_traced(cfg, "-trace_pixel", *trace_pixel)
    if v["stolfilename"] is not None:  # the C reads the table (then never uses it): a bad file still fails
        if len(read_text_columns(v["stolfilename"], 2)) == 0:
            raise InputError(f"{v['stolfilename']}: no data in the -stol file")
    return RunOptions(
        dtype=own["dtype"],
        device=own["device"],
        c_compat=c_compat,
        trace_pixel=trace_pixel,
        printout_pixel=printout_pixel,
        floatfile=out("float", v["floatfilename"]),
        intfile=out("int", v["intfilename"]),
        noisefile=out("noise", v["noisefilename"]) if v["calculate_noise"] else None,
        pgmfile=out("pgm", v["pgmfilename"]) if v["write_pgm"] else None,
        pngfile=pngfile or None,
        dumpfile=dumpfile,
        intfile_scale=v["intfile_scale"],
        pgm_scale=v["pgm_scale"],
        adc_offset=v["adc_offset"],
        seed=v["seed"] if v["seed"] is not None else int(time.time()),
        chunk=own["chunk"],
        notes=notes,
        inputs=inputs,
        cbffile=own_out(own["cbffile"]),
        nxsfile=own_out(own["nxsfile"]),
        exposure_time=v["exposure"],
    )


def _check_traced(cfg: SimulationConfig, flag: str, *pixel: int) -> None:
    """A traced pixel, (slow, fast) or (panel, slow, fast) of a multi-panel detector, must be one the render
    computes (on the detector, inside -roi, not masked)."""
    d = cfg.detector
    if d.panels:
        panel, slow, fast = pixel
        if not 0 <= panel < len(d.panels):
            raise InputError(f"flag -trace_panel: panel {panel} is not one of the {len(d.panels)} panels")
        p = d.panels[panel]
        if not (0 <= slow < p.spixels and 0 <= fast < p.fpixels):
            raise InputError(f"flag {flag}: pixel (slow {slow}, fast {fast}) is off panel {panel} "
                             f"({p.fpixels}x{p.spixels})")
        mask = None if d.mask is None else np.asarray(d.mask)[panel]
    else:
        slow, fast = pixel
        if not (0 <= slow < d.spixels and 0 <= fast < d.fpixels):
            raise InputError(f"flag {flag}: pixel (slow {slow}, fast {fast}) is off the {d.fpixels}x{d.spixels} "
                             "detector")
        mask = d.mask
    if d.roi is not None:
        xmin, xmax, ymin, ymax = d.roi
        if not (xmin <= fast <= xmax and ymin <= slow <= ymax):
            raise InputError(f"flag {flag}: pixel (slow {slow}, fast {fast}) is outside -roi")
    if mask is not None and mask[slow, fast] == 0:
        raise InputError(f"flag {flag}: pixel (slow {slow}, fast {fast}) is masked")


def _check_size_conflicts(argv: list[str], pixel: float, fpixels: int, spixels: int) -> None:
    """Unlike the C (pixel counts silently win), -detsize and -detpixels that disagree are an error."""

    def last(flags):
        val = None
        for i, a in enumerate(argv[:-1]):
            if a in flags:
                val = argv[i + 1]
        return val

    for axis, size_flags, pix_flags, npix in (
        ("fast", ("-detsize", "-detsize_f"), ("-detpixels", "-detpixels_f", "-detpixels_x"), fpixels),
        ("slow", ("-detsize", "-detsize_s"), ("-detpixels", "-detpixels_s", "-detpixels_y"), spixels),
    ):
        size, pix = last(size_flags), last(pix_flags)
        if size is not None and pix is not None:
            implied = math.ceil(float(size) / 1000.0 / pixel - 0.5)
            if implied != npix:
                raise InputError(
                    f"conflicting sizes on the {axis} axis: -detsize {size} mm with -pixel "
                    f"{pixel * 1000:g} mm is {implied} pixels, but -detpixels says {npix}"
                )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE + "\n\nnanobragg --help lists every flag with its units, default and meaning.", file=sys.stderr)
        return 2
    if "-h" in argv or "--help" in argv:
        with contextlib.suppress(BrokenPipeError):  # `nanobragg --help | head`
            print(help_text(), flush=True)
        return 0
    try:
        with signals_as_exceptions():
            cfg, options = config_from_flags(argv)
            expt = expt_output(argv, cfg)
            run(cfg, options)
            if expt is not None:
                write_experiments(expt[1], expt[0])
                print(f"wrote {expt[0]}")
    except (KeyboardInterrupt, Terminated) as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"nanobragg: interrupted by {signal.Signals(signum).name}; no output written", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # stdout's reader left (`| head`): stop as the C does on SIGPIPE, nothing written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 128 + signal.SIGPIPE
    except InputError as exc:
        print(f"nanobragg: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError, OSError) as exc:
        why = allocation_failure(exc)  # a failed allocation anywhere (memory.py); the outputs are removed
        if why is not None:
            print(f"nanobragg: error: {why}", file=sys.stderr)
            return 2
        if not isinstance(exc, OSError):
            raise
        # a file the readers and writers did not name themselves
        print(f"nanobragg: error: {exc.filename or 'file'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["main", "config_from_flags", "RunOptions", "write_fdump"]


def console_main() -> None:
    """The `nanobragg` command (and `python -m nanobragg_torch`): `main`, then the process ends without the
    interpreter's teardown of torch's modules and thread pools (0.1-0.5 s of a small run; tools/bench.py
    --startup, "exit"). Every output file is written and closed by then."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # stdout's reader left (`| head`): nothing more to say
        pass
    os._exit(code)
