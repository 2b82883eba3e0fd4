"""Command line `nanobragg`: the C program's flags -> SimulationConfig -> render -> the C's files and stdout.

The CLI is a thin layer: `cflags` parses (strictly, then as the C does), `config_from_flags` converts the C's
variables to a SI-unit SimulationConfig (reading HKL/matrix/SMV/source files at this edge), `simulate.render`
renders, and `outputs.write_outputs` writes files and prints the C's statistics. Exit status: 0 on success, 2
on bad input (one line on stderr naming the flag or file:line; no output file left behind).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from . import quirks
from .cflags import c_defaults, c_divide, c_option_loop, own_options, strip_own_flags, validate
from .config import (
    BeamConfig,
    CrystalConfig,
    DetectorConfig,
    SimulationConfig,
    StructureFactors,
)
from .errors import InputError
from .io.fdump import read_fdump, write_fdump
from .io.hkl import read_hkl_file
from .io.mosflm import read_mosflm_matrix
from .io.smv import read_smv, smv_value
from .io.textcolumns import read_text_columns
from .validation import check_config

DEMO_ARGS = [
    "-cell",
    "100",
    "100",
    "100",
    "90",
    "90",
    "90",
    "-N",
    "5",
    "-default_F",
    "100",
    "-lambda",
    "1.0",
    "-distance",
    "100",
    "-detpixels",
    "256",
    "-pixel",
    "0.1",
    "-misset",
    "10",
    "20",
    "30",
    "-phi",
    "0",
    "-osc",
    "1",
    "-phisteps",
    "4",
    "-mosaic",
    "0.2",
    "-mosaic_domains",
    "5",
]


@dataclass
class RunOptions:
    """What to do with the render (outputs, trace, device), as opposed to the physics in SimulationConfig."""

    dtype: str
    device: str
    c_compat: bool
    trace_pixel: tuple[int, int] | None
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
    RTD = 180.0 * 0.31830988618379067154
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
    """argv (without the program name) -> (SimulationConfig in SI units, RunOptions)."""
    validate(argv)
    own = own_options(argv)
    if own["demo"]:
        argv = DEMO_ARGS + [a for a in argv if a != "-demo"]
        own = {**own_options(argv), "demo": True}
    v = parse_c_flags(argv)
    c_compat = own["c_compat"]
    notes: list[str] = []

    # fill in blanks: pixel counts from sizes (the C's ceil(detsize/pixel - 0.5))
    pixel = v["pixel_size"]
    if pixel <= 0:
        raise InputError("flag -pixel: the pixel size must be positive")
    if v["fpixels"]:
        v["detsize_f"] = pixel * v["fpixels"]
    if v["spixels"]:
        v["spixels_given"] = True
        v["detsize_s"] = pixel * v["spixels"]
    fpixels = math.ceil(v["detsize_f"] / pixel - 0.5)
    spixels = math.ceil(v["detsize_s"] / pixel - 0.5)
    if fpixels <= 0 or spixels <= 0:
        raise InputError(f"flags -detpixels/-detsize: the detector has no pixels ({fpixels} x {spixels})")
    _check_size_conflicts(argv, pixel, fpixels, spixels)

    # fluence from flux; the beam clips the sample
    fluence = v["fluence"]
    if v["flux"] != 0.0 and v["exposure"] > 0.0 and v["beamsize"] >= 0:
        fluence = c_divide(v["flux"] * v["exposure"], v["beamsize"] * v["beamsize"])
    sample_y, sample_z = v["sample_y"], v["sample_z"]
    if v["beamsize"] >= 0:
        sample_y = min(sample_y, v["beamsize"]) if sample_y > v["beamsize"] else sample_y
        sample_z = min(sample_z, v["beamsize"]) if sample_z > v["beamsize"] else sample_z

    # structure factors: -hkl, else (C-compat or -dump given) the Fdump file, else default_F alone
    sf = None
    dumpfile = None
    dump_path, read_dump = "", False
    if v["hklfilename"] is not None:
        grid, meta = read_hkl_file(v["hklfilename"], default_F=v["default_F"])
        sf = StructureFactors(grid, meta["h_min"], meta["k_min"], meta["l_min"], meta["hkls"])
        if c_compat or "-dump" in argv:
            dumpfile = v["dumpfilename"]
    else:
        dump_path = os.path.join(cwd, v["dumpfilename"]) if not os.path.isabs(v["dumpfilename"]) else v["dumpfilename"]
        read_dump = (c_compat or "-dump" in argv) and os.path.exists(dump_path)
        if read_dump:
            grid, meta = read_fdump(dump_path)
            sf = StructureFactors(grid, meta["h_min"], meta["k_min"], meta["l_min"], 1)
            notes.append(f"reading Fs from {v['dumpfilename']} (no -hkl given)")
        elif v["default_F"] == 0.0:
            raise InputError("no structure factors: give -hkl FILE or -default_F VALUE")
    if v["matfilename"] is None and not v["user_cell"]:
        raise InputError("no crystal: give -cell a b c alpha beta gamma or -mat FILE")
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

    seed = v["seed"] if v["seed"] is not None else int(time.time())
    misset_seed = v["misset_seed"] if v["misset_seed"] is not None else int(time.time())
    sources = read_text_columns(v["sourcefilename"], 5, finite=True) if v["sourcefilename"] else None
    if v["sourcefilename"] and (sources is None or len(sources) == 0):
        raise InputError(f"{v['sourcefilename']}: no source lines")

    interp = {0: False, 1: True}.get(v["interpolate"])
    curved = bool(v["curved_detector"]) if c_compat else bool(v.get("curved_detector_seen", 0))
    roi = v["roi"]
    mask = v["mask"]

    def opt(x):
        return None if (isinstance(x, float) and math.isnan(x)) else x

    pix0 = v["pix0_vector"]
    if pix0 is not None:
        pix0_m = tuple(x / 1000.0 for x in pix0) if v.get("pix0_flag") == "-pix0_vector_mm" else pix0
        if not own["pix0_override"]:
            notes.append(quirks.PIX0_IGNORED.note)
    else:
        pix0_m = None
    detector = DetectorConfig(
        fpixels=fpixels,
        spixels=spixels,
        pixel_size=pixel,
        distance=v["distance"],
        close_distance=opt(v["close_distance"]),
        convention=v["convention"],
        pivot=v["pivot"],
        Xbeam=opt(v["Xbeam"]),
        Ybeam=opt(v["Ybeam"]),
        Xclose=opt(v["Xclose"]),
        Yclose=opt(v["Yclose"]),
        ORGX=opt(v["ORGX"]),
        ORGY=opt(v["ORGY"]),
        fdet_vector=v["fdet_vector"],
        sdet_vector=v["sdet_vector"],
        odet_vector=v["odet_vector"],
        twotheta_axis=v["twotheta_axis"],
        pix0_vector=pix0_m,
        rotx=v["detector_rotx"],
        roty=v["detector_roty"],
        rotz=v["detector_rotz"],
        twotheta=v["detector_twotheta"],
        thickness=v["detector_thick"],
        thicksteps=v["detector_thicksteps"] if v["detector_thicksteps"] > 0 else None,
        mu=v["detector_mu"] if v["detector_mu"] >= 0 else None,
        curved=curved,
        point_pixel=bool(v["point_pixel"]),
        oversample=v["oversample"] if v["oversample"] > 0 else None,
        oversample_thick=bool(v["oversample_thick"]),
        oversample_polar=bool(v["oversample_polar"]),
        oversample_omega=bool(v["oversample_omega"]),
        roi=roi,
        mask=mask,
    )
    beam = BeamConfig(
        wavelength=v["lambda0"],
        fluence=fluence,
        beam_vector=v["beam_vector"],
        polar_vector=v["polar_vector"],
        polarization=v["polarization"],
        nopolar=bool(v["nopolar"]),
        hdivrange=v["hdivrange"] if v["hdivrange"] >= 0 else None,
        vdivrange=v["vdivrange"] if v["vdivrange"] >= 0 else None,
        hdivstep=v["hdivstep"] if v["hdivstep"] >= 0 else None,
        vdivstep=v["vdivstep"] if v["vdivstep"] >= 0 else None,
        hdivsteps=v["hdivsteps"] if v["hdivsteps"] > 0 else None,
        vdivsteps=v["vdivsteps"] if v["vdivsteps"] > 0 else None,
        round_div=bool(v["round_div"]),
        dispersion=v["dispersion"],
        dispsteps=v["dispsteps"] if v["dispsteps"] > 0 else None,
        sources=sources,
        water_size=v["water_size"],
    )
    crystal = CrystalConfig(
        cell=cell,
        reciprocal_matrix=matrix,
        misset=tuple(v["misset"][1:]) if v["misset"][0] > 0 else None,
        misset_random=v["misset"][0] == -1,
        misset_seed=misset_seed,
        Na=v["Na"],
        Nb=v["Nb"],
        Nc=v["Nc"],
        sample_x=v["sample_x"],
        sample_y=sample_y,
        sample_z=sample_z,
        shape=v["xtal_shape"],
        fudge=v["fudge"],
        phi0=v["phi0"],
        osc=v["osc"] if v["osc"] >= 0 else None,
        phistep=v["phistep"] if v["phistep"] >= 0 else None,
        phisteps=v["phisteps"] if v["phisteps"] >= 0 else None,
        spindle_axis=v["spindle_vector"],
        mosaic_spread=v["mosaic_spread"] if v["mosaic_spread"] >= 0 else None,
        mosaic_domains=v["mosaic_domains"] if v["mosaic_domains"] > 0 else None,
        mosaic_seed=v["mosaic_seed"],
        structure_factors=sf,
        default_F=v["default_F"],
        interpolate=interp,
        dmin=v["dmin"],
    )
    cfg = SimulationConfig(
        detector=detector, beam=beam, crystal=crystal, c_compat=c_compat, pix0_override=own["pix0_override"]
    )
    dtype = torch.float64 if own["dtype"] == "float64" else torch.float32
    files = {
        "crystal.reciprocal_matrix": v["matfilename"],
        "beam.sources": v["sourcefilename"],
        "crystal.structure_factors": v["hklfilename"] or (v["dumpfilename"] if read_dump else None),
    }
    check_config(cfg, flags=True, dtype=dtype, device=own["device"], samples_per_chunk=own["chunk"], files=files)

    asked = v.get("asked", set())
    outdir = own["outdir"]

    def out(kind: str, name: str | None) -> str | None:
        if name is None:
            return None
        path = name if (outdir is None or os.path.isabs(name)) else os.path.join(outdir, name)
        return path if (c_compat or kind in asked) else None

    if own["demo"]:
        outdir = outdir or "out"
        asked = {"float", "int", "png"}
        v["floatfilename"], v["intfilename"] = "demo_float.bin", "demo_int.img"
        own["pngfile"] = own["pngfile"] or "demo.png"
    noisefile = out("noise", v["noisefilename"]) if v["calculate_noise"] else None
    pgmfile = out("pgm", v["pgmfilename"]) if v["write_pgm"] else None
    pngfile = None
    if own["pngfile"]:
        pngfile = (
            own["pngfile"]
            if (outdir is None or os.path.isabs(own["pngfile"]))
            else os.path.join(outdir, own["pngfile"])
        )
    printout_pixel = None
    if v["printout_fpixel"] >= 0 or v["printout_spixel"] >= 0:
        printout_pixel = (v["printout_fpixel"], v["printout_spixel"])
        _check_traced(cfg, "-printout_pixel", printout_pixel[1], printout_pixel[0])
    elif v["printout"]:
        notes.append(
            "note: -printout without -printout_pixel: the C prints a block for every pixel; this program "
            "prints none (use -printout_pixel F S or -trace_pixel S F)"
        )
    if own["trace_pixel"] is not None:
        _check_traced(cfg, "-trace_pixel", *own["trace_pixel"])
    if v["stolfilename"] is not None:  # the C reads the table (then never uses it): a bad file still fails
        if len(read_text_columns(v["stolfilename"], 2)) == 0:
            raise InputError(f"{v['stolfilename']}: no data in the -stol file")
    options = RunOptions(
        dtype=own["dtype"],
        device=own["device"],
        c_compat=c_compat,
        trace_pixel=own["trace_pixel"],
        printout_pixel=printout_pixel,
        floatfile=out("float", v["floatfilename"]),
        intfile=out("int", v["intfilename"]),
        noisefile=noisefile,
        pgmfile=pgmfile,
        pngfile=pngfile,
        dumpfile=dumpfile,
        intfile_scale=v["intfile_scale"],
        pgm_scale=v["pgm_scale"],
        adc_offset=v["adc_offset"],
        seed=seed,
        chunk=own["chunk"],
        notes=notes,
        inputs=tuple(
            v[k]
            for k in ("hklfilename", "matfilename", "sourcefilename", "imginfilename", "maskfilename", "stolfilename")
            if v.get(k)
        )
        + ((dump_path,) if read_dump else ()),
    )
    return cfg, options


def _check_traced(cfg: SimulationConfig, flag: str, slow: int, fast: int) -> None:
    """A traced pixel must be one the render computes (on the detector, inside -roi, not masked)."""
    d = cfg.detector
    if not (0 <= slow < d.spixels and 0 <= fast < d.fpixels):
        raise InputError(f"flag {flag}: pixel (slow {slow}, fast {fast}) is off the {d.fpixels}x{d.spixels} detector")
    if d.roi is not None:
        xmin, xmax, ymin, ymax = d.roi
        if not (xmin <= fast <= xmax and ymin <= slow <= ymax):
            raise InputError(f"flag {flag}: pixel (slow {slow}, fast {fast}) is outside -roi")
    if d.mask is not None and d.mask[slow, fast] == 0:
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
    from .outputs import Terminated, run, signals_as_exceptions

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(
            "usage: nanobragg -cell a b c al be ga | -mat A.mat  -hkl F.hkl | -default_F F  [C flags...]\n"
            "       nanobragg -demo    (render the built-in default case into ./out)\n"
            "see docs/cli.md for every flag",
            file=sys.stderr,
        )
        return 2
    try:
        with signals_as_exceptions():
            cfg, options = config_from_flags(argv)
            run(cfg, options)
    except (KeyboardInterrupt, Terminated) as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"nanobragg: interrupted by {signal.Signals(signum).name}; no output written", file=sys.stderr)
        return 128 + signum
    except InputError as exc:
        print(f"nanobragg: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the readers and writers did not name themselves
        print(f"nanobragg: error: {exc.filename or 'file'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["main", "config_from_flags", "RunOptions", "write_fdump"]
