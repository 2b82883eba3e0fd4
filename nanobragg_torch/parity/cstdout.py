"""Parse the stdout of nanoBragg.c into a plain dict of derived values.

The C prints (main(), before and after the pixel loop) the convention and pivot it chose, the derived
detector geometry (Xbeam/Ybeam, Fbeam/Sbeam, Xclose/Yclose, Fclose/Sclose, axes, DIALS origin), the cell,
the sources, mosaic domains, phi steps, sampling, and after the loop the image statistics. Numbers are
printed with ``%g`` (6 significant digits) unless noted. Lengths stay in the units the C prints
(metres for the geometry block, mm for the DIALS origin, Angstrom for the cell).

:func:`parse_stdout` returns a dict; keys are present only when the corresponding line was printed.
:func:`stdout_trace` turns the geometry part into a :class:`~.printout.Trace` with 6-digit precision.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .printout import G6, Precision, Trace

__all__ = ["parse_stdout", "stdout_trace", "normalize_stdout"]

_N = r"([-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))"
_V3 = rf"{_N}\s+{_N}\s+{_N}"
_NO_NEWLINE_WARNING = "WARNING: further warnings will not be printed! "
_POINTER = re.compile(r"^(mmap\(.*\) = ).*$", re.MULTILINE)


def normalize_stdout(text: str) -> str:
    """Make a C stdout reproducible: the ``mmap(file) = %p`` lines print a heap address; replace it."""
    return _POINTER.sub(r"\1<pointer>", text)


def _f(x: str) -> float:
    return float(x)


def _v(groups) -> tuple[float, ...]:
    return tuple(float(g) for g in groups)


Rule = tuple[re.Pattern[str], Callable[[dict[str, Any], re.Match[str]], None]]
_RULES: list[Rule] = []


def _rule(pattern: str):
    def deco(fn):
        _RULES.append((re.compile(pattern), fn))
        return fn

    return deco


@_rule(r"^(adxv|mosflm|xds|dials|denzo|custom) convention selected\.$")
def _conv(d, m):
    d["convention"] = m.group(1)


@_rule(r"^pivoting detector around (sample|direct beam spot)$")
def _pivot(d, m):
    d["pivot"] = "sample" if m.group(1) == "sample" else "beam"


@_rule(rf"^XDS incident beam: {_V3}$")
def _xds_beam(d, m):
    d["xds_incident_beam"] = _v(m.groups())


@_rule(r"^auto-selected (tricubic|no) interpolation")
def _interp(d, m):
    d["auto_interpolation"] = m.group(1) == "tricubic"


@_rule(r"^reading (.+)$")
def _reading(d, m):
    d.setdefault("files_read", []).append(m.group(1))


@_rule(rf"^random orientation misset angles: {_V3} deg$")
def _misset(d, m):
    d["random_misset_deg"] = _v(m.groups())


@_rule(rf"^Unit Cell: {_V3}\s+{_V3}$")
def _cell(d, m):
    d["unit_cell"] = _v(m.groups())


@_rule(rf"^Recp Cell: {_V3}\s+{_V3}$")
def _rcell(d, m):
    d["recip_cell"] = _v(m.groups())


@_rule(rf"^volume = {_N} A\^3$")
def _volume(d, m):
    d["volume_A3"] = _f(m.group(1))


@_rule(r"^real-space cell vectors \(Angstrom\):$")
def _real_hdr(d, m):
    d["_matrix"] = "real" if "real_cell_vectors" not in d else None


@_rule(r"^reciprocal-space cell vectors \(Angstrom\^-1\):$")
def _recip_hdr(d, m):
    d["_matrix"] = "recip" if "recip_cell_vectors" not in d else None


@_rule(rf"^([XYZ]):\s+{_V3}$")
def _row(d, m):
    kind = d.get("_matrix")
    if kind is None:
        return
    rows = d.setdefault(f"_{kind}_rows", {})
    rows[m.group(1)] = _v(m.groups()[1:])
    if len(rows) == 3:
        names = ("a", "b", "c") if kind == "real" else ("a_star", "b_star", "c_star")
        d[f"{kind}_cell_vectors"] = {n: tuple(rows[ax][i] for ax in "XYZ") for i, n in enumerate(names)}
        d["_matrix"] = None
        del d[f"_{kind}_rows"]


@_rule(rf"^crystal is {_N} x {_N} x {_N} microns$")
def _xtal(d, m):
    d["crystal_size_um"] = _v(m.groups())


@_rule(r"^auto-selected (\d+)-fold oversampling$")
def _auto_os(d, m):
    d["auto_oversample"] = int(m.group(1))


@_rule(r"^\s*recommend -oversample (\d+) to work around this$")
def _rec_os(d, m):
    d["recommended_oversample"] = int(m.group(1))


@_rule(rf"^approximate MW = {_N}$")
def _mw(d, m):
    d["approximate_MW"] = _f(m.group(1))


@_rule(r"^counting entries in (.+)$")
def _hkl_file(d, m):
    d["hkl_file"] = m.group(1)


@_rule(r"^writing dump file for next time: (.+)$")
def _dump(d, m):
    d["dump_file"] = m.group(1)


@_rule(rf"^thick(\d+) = {_N} um$")
def _thick(d, m):
    d.setdefault("thick_layers_um", []).append(_f(m.group(2)))


@_rule(rf"^phi(\d+) = {_N}$")
def _phi(d, m):
    d.setdefault("phi_values_deg", []).append(_f(m.group(2)))


@_rule(rf"^divergence deviation: {_N} {_N}$")
def _div(d, m):
    d.setdefault("divergence_deviations", []).append(_v(m.groups()))


@_rule(rf"^lambda(\d+) = {_N}$")
def _lam(d, m):
    d.setdefault("lambdas_m", []).append(_f(m.group(2)))


@_rule(r"^\s*created a total of (\d+) sources:$")
def _nsrc(d, m):
    d["sources_created"] = int(m.group(1))
    d["sources"] = []


@_rule(rf"^{_V3}\s+{_N}\s+{_N}$")
def _src(d, m):
    if "sources" in d and len(d["sources"]) < d.get("sources_created", 0):
        d["sources"].append(_v(m.groups()))


@_rule(r"^\s*created a total of (\d+) mosaic domains$")
def _ndom(d, m):
    d["mosaic_domains_created"] = int(m.group(1))


@_rule(rf"^\s*(\d+) initialized hkls \(all others ={_N}\)$")
def _hkls(d, m):
    d["hkls"] = int(m.group(1))
    d["default_F"] = _f(m.group(2))


@_rule(r"^\s*(ellipsoidal|parallelpiped|gaussian|tophat-spot) xtal: (\d+)x(\d+)x(\d+) cells$")
def _shape(d, m):
    d["xtal_shape"] = {
        "ellipsoidal": "round",
        "parallelpiped": "square",
        "gaussian": "gauss",
        "tophat-spot": "tophat",
    }[m.group(1)]
    d["N_cells"] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))


@_rule(rf"^\s*wave={_N} meters \+/- {_N}% in (\d+) steps$")
def _wave(d, m):
    d["lambda0_m"] = _f(m.group(1))
    d["dispersion_percent"] = _f(m.group(2))
    d["dispsteps"] = int(m.group(3))


@_rule(r"^\s*polarization effect disabled$")
def _nopolar(d, m):
    d["nopolar"] = True


@_rule(rf"^\s*Kahn polarization factor: {_N}$")
def _kahn(d, m):
    d["nopolar"] = False
    d["kahn_factor"] = _f(m.group(1))


@_rule(r"^\s*curved detector: all pixels same distance from origin$")
def _curved(d, m):
    d["curved_detector"] = True


@_rule(r"^\s*pixel obliquity effect disabled$")
def _point(d, m):
    d["point_pixel"] = True


@_rule(rf"^\s*incident fluence: {_N} photons/m\^2$")
def _fluence(d, m):
    d["fluence"] = _f(m.group(1))


@_rule(rf"^\s*distance={_N} detsize={_N}x{_N}\s+pixel={_N} meters \((\d+)x(\d+) pixels\)$")
def _det(d, m):
    d["distance"] = _f(m.group(1))
    d["detsize"] = (_f(m.group(2)), _f(m.group(3)))
    d["pixel_size"] = _f(m.group(4))
    d["pixels"] = (int(m.group(5)), int(m.group(6)))  # (fast, slow)


@_rule(rf"^\s*sensor is {_N} m thick in (\d+) layers with mu= {_N}$")
def _sensor(d, m):
    d["sensor_thickness"] = _f(m.group(1))
    d["sensor_layers"] = int(m.group(2))
    d["sensor_mu"] = _f(m.group(3))


@_rule(rf"^\s*(X|F)(beam|close)={_N} (Y|S)(beam|close)={_N}$")
def _pair(d, m):
    d[m.group(1) + m.group(2)] = _f(m.group(3))
    d[m.group(4) + m.group(5)] = _f(m.group(6))


_AXES = {
    "DIRECTION_OF_DETECTOR_X-AXIS": "fdet_vector",
    "DIRECTION_OF_DETECTOR_Y-AXIS": "sdet_vector",
    "DIRECTION_OF_DETECTOR_Z-AXIS": "odet_vector",
    "INCIDENT_BEAM_DIRECTION": "beam_vector",
    "spindle ROTATION_AXIS": "spindle_axis",
    "POLARIZATION_PLANE_NORMAL": "polarization_plane_normal",
    "dials origin": "dials_origin_mm",
}


@_rule(rf"^\s*({'|'.join(re.escape(k) for k in _AXES)})= {_V3}$")
def _axis(d, m):
    d[_AXES[m.group(1)]] = _v(m.groups()[1:])


@_rule(r"^\s*roi: (-?\d+) < x < (-?\d+) && (-?\d+) < y < (-?\d+)$")
def _roi(d, m):
    d["roi"] = tuple(int(g) for g in m.groups())


@_rule(rf"^\s*(h|v)divrange={_N} (?:h|v)divstep={_N}\s+radians$")
def _divr(d, m):
    d[f"{m.group(1)}divrange"] = _f(m.group(2))
    d[f"{m.group(1)}divstep"] = _f(m.group(3))


@_rule(r"^\s*(-?\d+) divergence steps$")
def _divsteps(d, m):
    d["divergence_steps"] = int(m.group(1))


@_rule(r"^\s*(\d+) sources$")
def _sources(d, m):
    d["source_count"] = int(m.group(1))


@_rule(rf"^\s*(\d+) mosaic domains over mosaic spread of {_N} degrees$")
def _mosaic(d, m):
    d["mosaic_domains"] = int(m.group(1))
    d["mosaic_spread_deg"] = _f(m.group(2))


@_rule(rf"^\s*(\d+) phi steps from {_N} to {_N} degrees$")
def _phis(d, m):
    d["phisteps"] = int(m.group(1))
    d["phi_start_deg"] = _f(m.group(2))
    d["phi_end_deg"] = _f(m.group(3))


@_rule(r"^\s*(\d+)x(\d+) pixel oversample steps((?: \+\w+)*)$")
def _os(d, m):
    d["oversample"] = int(m.group(1))
    toggles = m.group(3).split()
    for t in ("thick", "polar", "omega"):
        d[f"oversample_{t}"] = f"+{t}" in toggles


@_rule(r"^\s*skipping zero-flagged pixels in (.+)$")
def _mask(d, m):
    d["mask_file"] = m.group(1)


@_rule(r"^\s*seed: (-?\d+)$")
def _seed(d, m):
    d["noise_seed"] = int(m.group(1))


@_rule(rf"^\s*water droplet size: {_N} m$")
def _water(d, m):
    d["water_size"] = _f(m.group(1))


@_rule(rf"^solid angle subtended by detector = {_N} steradian \( {_N}% sphere\)$")
def _omega(d, m):
    d["solid_angle_sr"] = _f(m.group(1))
    d["solid_angle_percent"] = _f(m.group(2))


@_rule(r"^writing (.+) as (\d+) (\d+)-byte floats$")
def _wfloat(d, m):
    d["floatfile"] = m.group(1)
    d["float_pixels"] = int(m.group(2))


@_rule(r"^writing (.+) as (\d+)-byte integers$")
def _wint(d, m):
    d.setdefault("files_written", []).append(m.group(1))


@_rule(rf"^max_I = {_N}\s+at {_N} {_N}$")
def _maxi(d, m):
    d["max_I"] = _f(m.group(1))
    d["max_I_x"], d["max_I_y"] = _f(m.group(2)), _f(m.group(3))


@_rule(rf"^mean= {_N} rms= {_N} rmsd= {_N}$")
def _stats(d, m):
    d["mean"], d["rms"], d["rmsd"] = _v(m.groups())


@_rule(rf"^intfile_scale = {_N}$")
def _iscale(d, m):
    d["intfile_scale"] = _f(m.group(1))


@_rule(rf"^pgm_scale = {_N}$")
def _pscale(d, m):
    d["pgm_scale"] = _f(m.group(1))


@_rule(r"^(\d+) photons on noise image \((\d+) overloads\)$")
def _noise(d, m):
    d["noise_photons"] = int(m.group(1))
    d["overloads"] = int(m.group(2))


@_rule(r"^(WARNING|ERROR)\b.*$")
def _warn(d, m):
    d.setdefault("warnings" if m.group(1) == "WARNING" else "errors", []).append(m.group(0).strip())


def parse_stdout(text: str) -> dict[str, Any]:
    """Parse a nanoBragg.c stdout. Unrecognised lines are listed under ``unparsed``.

    Keys (present when printed): convention, pivot, xds_incident_beam, auto_interpolation, files_read,
    random_misset_deg, unit_cell (a b c alpha beta gamma), recip_cell, volume_A3, real_cell_vectors and
    recip_cell_vectors ({a|a_star: (x, y, z)}), crystal_size_um, auto_oversample, recommended_oversample,
    approximate_MW, hkl_file, dump_file, thick_layers_um, phi_values_deg, divergence_deviations, lambdas_m,
    sources_created, sources [(X, Y, Z, I, lambda)], mosaic_domains_created, hkls, default_F, xtal_shape,
    N_cells, lambda0_m, dispersion_percent, dispsteps, nopolar, kahn_factor, curved_detector, point_pixel,
    fluence, distance, detsize (f, s), pixel_size, pixels (fast, slow), sensor_thickness, sensor_layers,
    sensor_mu, Xbeam, Ybeam, Fbeam, Sbeam, Xclose, Yclose, Fclose, Sclose, fdet_vector, sdet_vector,
    odet_vector, beam_vector, spindle_axis, polarization_plane_normal, dials_origin_mm, roi, hdivrange,
    hdivstep, vdivrange, vdivstep, divergence_steps, source_count, mosaic_domains, mosaic_spread_deg,
    phisteps, phi_start_deg, phi_end_deg, oversample, oversample_thick/_polar/_omega, mask_file,
    noise_seed, water_size, solid_angle_sr, solid_angle_percent, floatfile, float_pixels, files_written,
    max_I, max_I_x, max_I_y, mean, rms, rmsd, intfile_scale, pgm_scale, noise_photons, overloads,
    warnings, errors, steps (derived: sources * domains * phisteps * oversample^2), printout_pixels.
    """
    d: dict[str, Any] = {}
    unparsed: list[str] = []
    text = text.replace(_NO_NEWLINE_WARNING, _NO_NEWLINE_WARNING.rstrip() + "\n")
    in_block = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        # printout blocks belong to printout.parse_printout; skip them here
        if re.search(r"\d+\s+\d+ : stol = ", line):
            d.setdefault("printout_pixels", []).append(
                tuple(int(x) for x in line.split(":")[0].split()[::-1])
            )
            in_block = True
            continue
        if in_block:
            if line.startswith("Z:"):
                in_block = False
            continue
        for pattern, handler in _RULES:
            m = pattern.match(line)
            if m:
                handler(d, m)
                break
        else:
            if not line.startswith(
                (
                    "     a",
                    "nanoBragg nanocrystal",
                    "mmap(",
                    "re-reading",
                    "         ",
                    "sin",
                    "cos",
                    "h: ",
                    "k: ",
                    "l: ",
                    "initializing",
                    "done initializing",
                    "  noise image paramters:",
                )
            ):
                unparsed.append(line)
    for key in [k for k in d if k.startswith("_")]:
        del d[key]
    if unparsed:
        d["unparsed"] = unparsed
    if all(k in d for k in ("source_count", "mosaic_domains", "phisteps", "oversample")):
        d["steps"] = d["source_count"] * d["mosaic_domains"] * d["phisteps"] * d["oversample"] ** 2
    return d


def stdout_trace(parsed: dict[str, Any]) -> Trace:
    """The geometry factors the C stdout reveals, as a 6-significant-digit Trace (origin "c-stdout").

    pix0_vector is recovered from the DIALS origin (mm, in the frame z, y, -x of the lab): the C computes
    dials_origin = 1000 * (pix0.z, pix0.y, -pix0.x).
    """
    t = Trace(origin="c-stdout")
    for name in (
        "fdet_vector",
        "sdet_vector",
        "odet_vector",
        "beam_vector",
        "distance",
        "Fbeam",
        "Sbeam",
        "Fclose",
        "Sclose",
        "fluence",
    ):
        if name in parsed:
            t.values[name] = parsed[name]
            t.precision[name] = G6
    if "dials_origin_mm" in parsed:
        dz, dy, mdx = parsed["dials_origin_mm"]
        t.values["pix0_vector"] = (-mdx / 1000.0, dy / 1000.0, dz / 1000.0)
        t.precision["pix0_vector"] = G6
    if "steps" in parsed:
        t.values["steps"] = float(parsed["steps"])
    if parsed.get("sources"):  # x y z weight lambda of each source: the last one is the traced lambda
        t.values["lambda"] = float(parsed["sources"][-1][4])
        t.precision["lambda"] = G6
        rows = parsed["sources"]
        t.values["sources"] = float(parsed.get("sources_created", len(rows)))
        directions = []
        for x, y, z, _, _ in rows:  # the C prints the positions before it unitizes them
            n = (x * x + y * y + z * z) ** 0.5
            directions += [c / n if n > 0 else c for c in (x, y, z)]
        t.values["source_directions"] = tuple(directions)
        t.values["source_weights"] = tuple(float(r[3]) for r in rows)
        t.values["source_wavelengths"] = tuple(float(r[4]) for r in rows)
        t.precision["source_weights"] = t.precision["source_wavelengths"] = G6
        # unitizing spreads the %g rounding of all three printed components over each: one digit less
        t.precision["source_directions"] = Precision("sig", 5)
    return t
