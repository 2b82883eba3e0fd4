"""nanoBragg.c's command line: strict validation, then a literal emulation of the C's option loop.

The C matches options with `strstr`, so one token can trigger several branches (`-pix0_vector_mm` runs the
`-pix0_vector` branch, `-mosaic_seed` also sets `-seed`, `-twotheta_axis` also sets `-twotheta`, ...). To give
the same physics from the same argv, `c_option_loop` applies every branch the C would, in the C's order, with
C `atof`/`atoi` semantics, into a dict named after the C variables. Unlike the C, `validate` first rejects
unknown flags, missing and malformed values (InputError naming the flag). `quirks.py` lists the
consequences.
"""

from __future__ import annotations

import difflib
import math
import re

import numpy as np

from .constants import DEFAULT_FLUENCE, RTD
from .errors import InputError
from .flagtable import ARITY, C_FLAGS, OWN_FLAGS
from .io.textcolumns import c_atof

ALL_FLAGS = {**C_FLAGS, **OWN_FLAGS}

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.IGNORECASE)
_INT = re.compile(r"^[+-]?\d+$")


def _is_float(tok: str) -> bool:
    return bool(_FLOAT.match(tok))


def did_you_mean(flag: str) -> str:
    """"; did you mean -x?" for the listed spellings closest to an unknown flag (difflib), else ""."""
    close = difflib.get_close_matches(flag, ALL_FLAGS, n=3, cutoff=0.75)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def walk(argv: list[str]) -> list[tuple[int, str, list[str]]]:
    """argv by arity: (position, flag, values) for every flag; a token is a flag only at a flag position.

    Rejects unknown flags, missing and malformed values, and NaN/infinite numbers (the C's atof takes them and
    renders NaN or zeros; see quirks NON_FINITE_VALUES): one-line InputError naming the flag."""
    out: list[tuple[int, str, list[str]]] = []
    i = 0
    n = len(argv)
    while i < n:
        flag = argv[i]
        if flag not in ALL_FLAGS:
            if flag.startswith("-"):
                raise InputError(f"unknown flag {flag}{did_you_mean(flag)}")
            raise InputError(f"unexpected argument {flag!r} (values must follow their flag)")
        kind = ALL_FLAGS[flag]
        if kind == "cell":
            vals = []
            while i + 1 + len(vals) < n and len(vals) < 6 and _is_float(argv[i + 1 + len(vals)]):
                vals.append(argv[i + 1 + len(vals)])
            if not vals:
                raise InputError(f"flag {flag}: expected 1 to 6 numbers (a b c alpha beta gamma)")
            if any(x.startswith("-") for x in vals):  # the C stops reading the cell at a '-' and ignores the rest
                raise InputError(f"flag {flag}: cell lengths and angles must be positive, got {' '.join(vals)}")
        elif kind == "misset" and i + 1 < n and argv[i + 1].startswith("rand"):
            vals = [argv[i + 1]]
        elif kind == "misset":
            vals = argv[i + 1 : i + 4]
            if len(vals) < 3 or not all(_is_float(v) for v in vals):
                raise InputError(f"flag {flag}: expected three angles in degrees or 'random'")
        else:
            arity = ARITY[kind]
            vals = argv[i + 1 : i + 1 + arity]
            if len(vals) < arity:
                raise InputError(f"flag {flag}: missing value ({arity} expected)")
            _check_values(flag, kind, vals)
        if kind in ("f", "F3", "cell", "misset") and not (kind == "misset" and vals[0].startswith("rand")):
            for v in vals:
                if not math.isfinite(float(v)):
                    raise InputError(f"flag {flag}: {v!r} is not a finite number")
        out.append((i, flag, list(vals)))
        i += 1 + len(vals)
    return out


def _check_values(flag: str, kind: str, vals: list[str]) -> None:
    for v in vals:
        if kind in ("f", "F3") and not _is_float(v):
            raise InputError(f"flag {flag}: expected a number, got {v!r}")
        if kind in ("i", "I2", "I4") and not _INT.match(v):
            raise InputError(f"flag {flag}: expected an integer, got {v!r}")
    if kind == "abs" and not (_is_float(vals[0]) or "inf" in vals[0]):
        raise InputError(f"flag {flag}: expected an attenuation depth in microns or 'inf', got {vals[0]!r}")
    if kind == "abs" and _is_float(vals[0]) and math.isnan(float(vals[0])):
        raise InputError(f"flag {flag}: {vals[0]!r} is not a number")
    if kind == "pivot" and vals[0] not in ("sample", "beam"):
        raise InputError(f"flag {flag}: expected 'sample' or 'beam', got {vals[0]!r}")
    if kind == "dtype" and vals[0] not in ("float32", "float64"):
        raise InputError(f"flag {flag}: expected float32 or float64, got {vals[0]!r}")
    if kind == "s" and vals[0] == "":
        raise InputError(f"flag {flag}: empty value")


def validate(argv: list[str]) -> None:
    """Reject unknown flags, missing or malformed values: one-line InputError naming the flag."""
    walk(argv)


def c_divide(a: float, b: float) -> float:
    """a / b with IEEE rules, as C doubles divide (x / 0 is +-inf, 0 / 0 NaN) instead of ZeroDivisionError."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return float(np.float64(a) / np.float64(b))


def c_atoi(tok: str) -> int:
    m = re.match(r"^\s*[+-]?\d+", tok)
    return int(m.group(0)) if m else 0


def c_defaults() -> dict:
    """The C's variables that the option loop can set, with their initial values."""
    nan = math.nan
    return dict(
        Na=1.0,
        Nb=1.0,
        Nc=1.0,
        user_cell=0,
        cell=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        misset=[0.0, 0.0, 0.0, 0.0],
        sample_x=0.0,
        sample_y=0.0,
        sample_z=0.0,
        Xbeam=nan,
        Ybeam=nan,
        Xclose=nan,
        Yclose=nan,
        ORGX=nan,
        ORGY=nan,
        pivot="BEAM",
        convention="MOSFLM",
        fdet_vector=None,
        sdet_vector=None,
        odet_vector=None,
        beam_vector=None,
        polar_vector=None,
        spindle_vector=None,
        twotheta_axis=None,
        pix0_vector=None,
        distance=100.0e-3,
        close_distance=nan,
        detector_mu=-1.0,
        detector_thick=0.0,
        detector_thicksteps=-1,
        detector_twotheta=0.0,
        detector_rotx=0.0,
        detector_roty=0.0,
        detector_rotz=0.0,
        detsize_f=102.4e-3,
        detsize_s=102.4e-3,
        fpixels=0,
        spixels=0,
        curved_detector=0,
        pixel_size=0.1e-3,
        point_pixel=0,
        polarization=0.0,
        nopolar=0,
        oversample_thick=0,
        oversample_polar=0,
        oversample_omega=0,
        oversample=-1,
        roi=None,
        lambda0=1.0e-10,
        fluence=DEFAULT_FLUENCE,
        flux=0.0,
        exposure=1.0,
        beamsize=1e-4,
        mosaic_spread=-1.0,
        mosaic_domains=-1,
        dispersion=0.0,
        dispsteps=-1,
        hdivrange=-1.0,
        vdivrange=-1.0,
        hdivstep=-1.0,
        hdivsteps=-1,
        vdivstep=-1.0,
        vdivsteps=-1,
        round_div=1,
        adc_offset=40.0,
        phi0=0.0,
        osc=-1.0,
        phistep=-1.0,
        phisteps=-1,
        dmin=0.0,
        matfilename=None,
        hklfilename=None,
        default_F=0.0,
        dumpfilename="Fdump.bin",
        imginfilename=None,
        maskfilename=None,
        stoloutfilename="output.stol",
        stolfilename=None,
        stol_file_mult=1e10,
        sourcefilename=None,
        floatfilename="floatimage.bin",
        intfilename="intimage.img",
        pgmfilename="image.pgm",
        noisefilename="noiseimage.img",
        calculate_noise=1,
        write_pgm=1,
        intfile_scale=0.0,
        pgm_scale=0.0,
        coherent=0,
        printout=0,
        progress_meter=1,
        interpolate=2,
        xtal_shape="SQUARE",
        fudge=1.0,
        printout_fpixel=-1,
        printout_spixel=-1,
        seed=None,
        mosaic_seed=12345678,
        misset_seed=None,
        water_size=0.0,
        header_twotheta=None,
        # ours, not the C's: image files asked for by name, the -pix0_vector spelling, -curved_det anywhere
        asked=set(),
        pix0_flag=None,
        curved_detector_seen=0,
    )


def c_option_loop(argv: list[str], v: dict) -> None:
    """Apply every branch of the C's main option loop that each token triggers (argv excludes argv[0])."""
    args = ["nanoBragg", *argv]
    argc = len(args)

    def f(k: int) -> float:
        return c_atof(args[k])

    def n(k: int) -> int:
        return c_atoi(args[k])

    for i in range(1, argc):
        a = args[i]
        if not a.startswith("-"):
            continue
        has = a.__contains__  # strstr(argv[i], ...)
        more = argc > i + 1
        if has("-Na") and more:
            v["Na"] = float(n(i + 1))
            continue
        if has("-Nb") and more:
            v["Nb"] = float(n(i + 1))
            continue
        if has("-Nc") and more:
            v["Nc"] = float(n(i + 1))
            continue
        if a == "-N" and more:
            v["Na"] = v["Nb"] = v["Nc"] = float(n(i + 1))
            continue
        if has("-cell") and more:
            v["user_cell"] = 1
            for j in range(6):
                if argc <= i + 1 + j or args[i + 1 + j].startswith("-"):
                    break
                v["cell"][j] = f(i + 1 + j) if j < 3 else f(i + 1 + j) / RTD
        if has("-misset") and more and "rand" in args[i + 1]:
            v["misset"][0] = -1
            continue
        if has("-misset") and argc > i + 3:
            v["misset"] = [1, f(i + 1) / RTD, f(i + 2) / RTD, f(i + 3) / RTD]
        if (has("-samplesize") or has("-sample_size")) and more:
            v["sample_x"] = v["sample_y"] = v["sample_z"] = f(i + 1) / 1000
        if (has("-sample_thick") or has("-sample_x")) and more:
            v["sample_x"] = f(i + 1) / 1000
        if (has("-sample_width") or has("-sample_y") or has("-width")) and more:
            v["sample_y"] = f(i + 1) / 1000
        if (has("-sample_heigh") or has("-sample_z") or has("-heigh")) and more:
            v["sample_z"] = f(i + 1) / 1000
        if (has("-xtalsize") or has("-xtal_size")) and more:
            v["sample_x"] = v["sample_y"] = v["sample_z"] = f(i + 1) / 1000
        if (has("-xtal_thick") or has("-xtal_x")) and more:
            v["sample_x"] = f(i + 1) / 1000
        if (has("-xtal_width") or has("-xtal_y") or has("-width")) and more:
            v["sample_y"] = f(i + 1) / 1000
        if (has("-xtal_heigh") or has("-xtal_z") or has("-heigh")) and more:
            v["sample_z"] = f(i + 1) / 1000
        for key, conv, piv in (
            ("-Xbeam", 1000.0, "BEAM"),
            ("-Ybeam", 1000.0, "BEAM"),
            ("-Xclose", 1000.0, "SAMPLE"),
            ("-Yclose", 1000.0, "SAMPLE"),
            ("-ORGX", 1.0, "SAMPLE"),
            ("-ORGY", 1.0, "SAMPLE"),
        ):
            if has(key) and more:
                v[key[1:]] = f(i + 1) / conv
                v["pivot"] = piv
        if has("-pivot") and more:
            if "sample" in args[i + 1]:
                v["pivot"] = "SAMPLE"
            if "beam" in args[i + 1]:
                v["pivot"] = "BEAM"
        for key, conv, piv in (
            ("-mosflm", "MOSFLM", "BEAM"),
            ("-xds", "XDS", "SAMPLE"),
            ("-adxv", "ADXV", "BEAM"),
            ("-denzo", "DENZO", "BEAM"),
            ("-dials", "DIALS", "BEAM"),
        ):
            if has(key):
                v["convention"] = conv
                v["pivot"] = piv
        for key, var in (
            ("-fdet_vector", "fdet_vector"),
            ("-sdet_vector", "sdet_vector"),
            ("-odet_vector", "odet_vector"),
            ("-beam_vector", "beam_vector"),
            ("-polar_vector", "polar_vector"),
            ("-spindle_axis", "spindle_vector"),
            ("-twotheta_axis", "twotheta_axis"),
            ("-pix0_vector", "pix0_vector"),
        ):
            if has(key) and argc > i + 3:
                v["convention"] = "CUSTOM"
                v[var] = (f(i + 1), f(i + 2), f(i + 3))
                if var == "pix0_vector":
                    v["pix0_flag"] = a  # -pix0_vector or -pix0_vector_mm: the C reads both in metres
        if has("-distance") and more:
            v["distance"] = f(i + 1) / 1000.0
            v["pivot"] = "BEAM"
        if has("-close_distance") and more:
            v["close_distance"] = f(i + 1) / 1000.0
            v["pivot"] = "SAMPLE"
        if has("-detector_abs") and argc >= i + 1 and more:  # pinned C tests argc >= i+1 (see quirks)
            if "inf" in args[i + 1] or f(i + 1) == 0.0:
                v["detector_thick"] = 0.0
                v["detector_mu"] = 0.0
            else:
                v["detector_mu"] = 1.0 / (f(i + 1) * 1e-6)
        if has("-detector_thick") and len(a) == 15 and more:
            v["detector_thick"] = f(i + 1) * 1e-6
        if has("-detector_thicksteps") and more:
            v["detector_thicksteps"] = n(i + 1)
        if has("-thicksteps") and more:
            v["detector_thicksteps"] = n(i + 1)
        if has("-twotheta") and more:
            v["detector_twotheta"] = f(i + 1) / RTD
            v["pivot"] = "SAMPLE"
        for ax in "xyz":
            if has(f"-detector_rot{ax}") and more:
                v[f"detector_rot{ax}"] = f(i + 1) / RTD
        if has("-detsize") and len(a) == 8 and more:
            v["detsize_f"] = v["detsize_s"] = f(i + 1) / 1000.0
        if has("-detsize_f") and more:
            v["detsize_f"] = f(i + 1) / 1000.0
        if has("-detsize_s") and more:
            v["detsize_s"] = f(i + 1) / 1000.0
        if has("-detpixels") and len(a) == 10 and more:
            v["fpixels"] = v["spixels"] = n(i + 1)
        if (has("-detpixels_f") or has("-detpixels_x")) and more:
            v["fpixels"] = n(i + 1)
        if (has("-detpixels_s") or has("-detpixels_y")) and more:
            v["spixels"] = n(i + 1)
        if has("-curved_det"):
            v["curved_detector_seen"] = 1
            if more:  # pinned C: ignored when it is the last argument (see quirks)
                v["curved_detector"] = 1
        if has("-pixel") and more:
            v["pixel_size"] = f(i + 1) / 1000.0
        if has("-point_pixel"):
            v["point_pixel"] = 1
        if has("-polar") and len(a) == 6 and more:
            v["polarization"] = f(i + 1)
            v["nopolar"] = 0
        if has("-nopolar"):
            v["nopolar"] = 1
        if has("-oversample_thick"):
            v["oversample_thick"] = 1
            continue
        if has("-oversample_polar"):
            v["oversample_polar"] = 1
            continue
        if has("-oversample_omega"):
            v["oversample_omega"] = 1
            continue
        if has("-oversample") and more:
            v["oversample"] = n(i + 1)
        if has("-roi") and argc > i + 4:
            v["roi"] = (n(i + 1), n(i + 2), n(i + 3), n(i + 4))
        if (has("-lambda") or has("-wave")) and more:
            v["lambda0"] = f(i + 1) / 1.0e10
        if has("-energy") and more:
            v["lambda0"] = c_divide(12398.42, f(i + 1)) / 1.0e10
        for key in ("fluence", "flux", "exposure"):
            if has("-" + key) and more:
                v[key] = f(i + 1)
        if has("-beamsize") and more:
            v["beamsize"] = f(i + 1) / 1000
        if ((has("-mosaic") and len(a) == 7) or has("-mosaici") or has("-mosaic_spr")) and more:
            v["mosaic_spread"] = f(i + 1) / RTD
        if has("-mosaic_dom") and more:
            v["mosaic_domains"] = n(i + 1)
        if has("-dispersion") and more:
            v["dispersion"] = f(i + 1) / 100.0
        if has("-dispsteps") and more:
            v["dispsteps"] = n(i + 1)
        if has("-divergence") and more:
            v["hdivrange"] = v["vdivrange"] = f(i + 1) / 1000.0
        if has("-hdivrange") and more:
            v["hdivrange"] = f(i + 1) / 1000.0
        if has("-vdivrange") and more:
            v["vdivrange"] = f(i + 1) / 1000.0
        if has("-hdivstep") and len(a) == 9 and more:
            v["hdivstep"] = f(i + 1) / 1000.0
        if has("-hdivsteps") and more:
            v["hdivsteps"] = n(i + 1)
        if has("-vdivstep") and len(a) == 9 and more:
            v["vdivstep"] = f(i + 1) / 1000.0
        if has("-vdivsteps") and more:
            v["vdivsteps"] = n(i + 1)
        if has("-divsteps") and more:
            v["hdivsteps"] = v["vdivsteps"] = n(i + 1)
        if has("-round_div"):
            v["round_div"] = 1
        if has("-square_div"):
            v["round_div"] = 0
        if has("-adc") and more:
            v["adc_offset"] = f(i + 1)
        if has("-phi") and len(a) == 4 and more:
            v["phi0"] = f(i + 1) / RTD
        if has("-osc") and more:
            v["osc"] = f(i + 1) / RTD
        if has("-phistep") and len(a) == 8 and more:
            v["phistep"] = f(i + 1) / RTD
        if has("-phisteps") and more:
            v["phisteps"] = n(i + 1)
        if has("-dmin") and more:
            v["dmin"] = f(i + 1) * 1e-10
        for key, var in (
            ("-mat", "matfilename"),
            ("-hkl", "hklfilename"),
            ("-dump", "dumpfilename"),
            ("-img", "imginfilename"),
        ):
            if has(key) and more:
                v[var] = args[i + 1]
        if has("-default_F") and more:
            v["default_F"] = f(i + 1)
        if has("-stolout") and len(a) > 7 and more:
            v["stoloutfilename"] = args[i + 1]
        for key, mult in (("-stol", 1e10), ("-4stol", 1e10 / 4), ("-Q", 1e10 / math.pi / 4)):
            if has(key) and len(a) == len(key) and more:
                v["stolfilename"] = args[i + 1]
                v["stol_file_mult"] = mult
        if has("-sourcefile") and more:
            v["sourcefilename"] = args[i + 1]
        if (has("-floatfile") or has("-floatimage")) and more:
            v["floatfilename"] = args[i + 1]
            v["asked"].add("float")
        if (has("-intfile") or has("-intimage")) and more:
            v["intfilename"] = args[i + 1]
            v["asked"].add("int")
        if (has("-pgmfile") or has("-pgmimage")) and more:
            v["pgmfilename"] = args[i + 1]
            v["write_pgm"] = 1
            v["asked"].add("pgm")
        if (has("-noisefile") or has("-noiseimage")) and more:
            v["noisefilename"] = args[i + 1]
            v["calculate_noise"] = 1
            v["asked"].add("noise")
        if has("-nonoise"):
            v["calculate_noise"] = 0
        if has("-nopgm"):
            v["write_pgm"] = 0
        if has("-scale") and more:
            v["intfile_scale"] = f(i + 1)
        if has("-pgmscale") and more:
            v["pgm_scale"] = f(i + 1)
            v["write_pgm"] = 1
            v["asked"].add("pgm")
        if has("-coherent"):
            v["coherent"] = 1
        if has("-printout"):
            v["printout"] = 1
        if has("-noprogress"):
            v["progress_meter"] = 0
        if has("-progress"):
            v["progress_meter"] = 1
        if has("-interpolate"):
            v["interpolate"] = 1
        if has("-nointerpolate"):
            v["interpolate"] = 0
        for key, shape in (("-round_xtal", "ROUND"), ("-square_xtal", "SQUARE"), ("-gauss_xtal", "GAUSS")):
            if has(key):
                v["xtal_shape"] = shape
        if has("-binary_spots") or has("-tophat_spots"):
            v["xtal_shape"] = "TOPHAT"
        if has("-fudge") and more:
            v["fudge"] = f(i + 1)
        if has("-printout_pixel") and argc > i + 2:
            v["printout_fpixel"] = n(i + 1)
            v["printout_spixel"] = n(i + 2)
        if has("-seed") and more:
            v["seed"] = n(i + 1)
        if has("-mosaic_seed") and more:
            v["mosaic_seed"] = n(i + 1)
        if has("-misset_seed") and more:
            v["misset_seed"] = n(i + 1)
        if has("-water") and more:
            v["water_size"] = f(i + 1) / 1e6


def own_options(argv: list[str]) -> dict:
    """Our flags (not the C's): dtype, device, trace pixel, C-compat, pix0 override, PNG preview, demo, F column."""
    o: dict = {
        "dtype": "float32",
        "device": "cpu",
        "trace_pixel": None,
        "trace_panel": None,
        "c_compat": False,
        "pix0_override": False,
        "pngfile": None,
        "cbffile": None,
        "nxsfile": None,
        "demo": False,
        "chunk": None,
        "outdir": None,
        "F_column": None,
        "expt": None,
        "expt_image": None,
        "write_expt": None,
    }
    for _, a, vals in walk(argv):
        if a == "-dtype":
            o["dtype"] = vals[0]
        elif a == "-device":
            o["device"] = vals[0]
        elif a == "-trace_pixel":
            o["trace_pixel"] = (int(vals[0]), int(vals[1]))
        elif a == "-trace_panel":
            o["trace_panel"] = int(vals[0])
        elif a in ("-c_compat", "--c-compat"):
            o["c_compat"] = True
        elif a == "-pix0_override":
            o["pix0_override"] = True
        elif a == "-pngfile":
            o["pngfile"] = vals[0]
        elif a == "-cbffile":
            o["cbffile"] = vals[0]
        elif a == "-nxsfile":
            o["nxsfile"] = vals[0]
        elif a == "-outdir":
            o["outdir"] = vals[0]
        elif a == "-demo":
            o["demo"] = True
        elif a == "-chunk":
            o["chunk"] = int(vals[0])
        elif a == "-F_column":
            o["F_column"] = vals[0]
        elif a == "-expt":
            o["expt"] = vals[0]
        elif a == "-expt_image":
            o["expt_image"] = int(vals[0])
        elif a == "-write_expt":
            o["write_expt"] = vals[0]
    return o


def strip_own_flags(argv: list[str]) -> list[str]:
    """argv without our own flags and their values (the C never sees them)."""
    out: list[str] = []
    for i, a, vals in walk(argv):
        if a not in OWN_FLAGS:
            out += argv[i : i + 1 + len(vals)]
    return out
