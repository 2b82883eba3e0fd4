"""Canonical per-pixel trace schema: the factors of one pixel, in pipeline order.

A trace is a mapping ``factor name -> float | tuple[float, ...]``. Both our engine (``-trace_pixel``,
lines ``TRACE_PY: <name> <values>``) and the C reference (``-printout_pixel`` block plus the derived
geometry it prints on stdout) are mapped onto these names, so the two can be compared factor by factor.
"Pipeline order" is the order in which nanoBragg.c computes the factors for a pixel: the first factor
that drifts is usually the cause of every later drift. The solid angle and capture fraction come with the
pixel position, polarization after the scattering vector, and the rotated cell before the Miller
indices: all before the sum that uses them (with -oversample_* they multiply inside it).

Units follow the C variables they mirror (SI unless noted): metres, m^-1 for ``scattering`` and ``stol``,
Angstrom for the rotated cell vectors (as the C printout prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Factor",
    "SCHEMA",
    "EXTRA",
    "FACTORS",
    "GROUPS",
    "factor",
    "order_index",
    "ordered_names",
]


@dataclass(frozen=True)
class Factor:
    """One traced quantity.

    name: trace name (``TRACE_PY: <name> ...``).
    arity: 1 for scalars, 3 for vectors, 0 for lists whose length is the case's (one entry per source).
    group: pipeline stage (geometry, pixel, incident, q, rotation, hkl, lattice, cell, sum, scale,
        corrections, final).
    c_key: label of the value in the C ``-printout_pixel`` block, or None.
    stdout_key: key of the value in :func:`nanobragg_torch.parity.cstdout.parse_stdout`, or None.
    rtol, atol: default tolerance between two full-precision (float64) traces. For vectors the relative
        part scales with the vector norm, so near-zero components of a unit vector do not demand
        relative precision.
    units, description: documentation.
    ulps: round-off budget: how many units of the traces' machine epsilon the arithmetic up to this
        factor may accumulate (added to rtol by compare_traces; matters for float32 traces only).
    """

    name: str
    arity: int
    group: str
    c_key: str | None
    stdout_key: str | None
    rtol: float
    atol: float
    units: str
    description: str
    ulps: float = 16.0


def _f(name, arity, group, c_key, stdout_key, rtol, atol, units, description, ulps=16.0) -> Factor:
    return Factor(name, arity, group, c_key, stdout_key, rtol, atol, units, description, ulps)


# rtol 1e-9 is far above float64 round-off for a different summation order, far below any physics change.
# ulps (round-off budget, float32 traces): 16 for well-conditioned factors (a 1e-5 drift stays visible);
# scattering, stol and hkl_frac are computed by cancellation: compare_traces scales their round-off by the
# operands (2/lambda; |a| |S|), not by the result; the lattice transform and the sums built on it amplify
# the error of h near the slopes of sincg (65536 ulps, ~1.6e-2 relative): in float32 a drift of those is
# only resolved against a float64 trace. Budgets measured on every small golden (docs/golden.md).
SCHEMA: tuple[Factor, ...] = (
    # geometry (computed once, before the pixel loop)
    _f(
        "pix0_vector",
        3,
        "geometry",
        None,
        "pix0_vector",
        1e-9,
        1e-15,
        "m",
        "vector from the sample to the first pixel's corner (C pix0_vector after the pivot)",
    ),
    _f(
        "fdet_vector",
        3,
        "geometry",
        None,
        "fdet_vector",
        1e-9,
        1e-12,
        "1",
        "fast detector axis after rotations (DIRECTION_OF_DETECTOR_X-AXIS)",
    ),
    _f(
        "sdet_vector",
        3,
        "geometry",
        None,
        "sdet_vector",
        1e-9,
        1e-12,
        "1",
        "slow detector axis after rotations (DIRECTION_OF_DETECTOR_Y-AXIS)",
    ),
    _f(
        "odet_vector",
        3,
        "geometry",
        None,
        "odet_vector",
        1e-9,
        1e-12,
        "1",
        "detector normal after rotations (DIRECTION_OF_DETECTOR_Z-AXIS)",
    ),
    _f(
        "beam_vector",
        3,
        "geometry",
        None,
        "beam_vector",
        1e-9,
        1e-12,
        "1",
        "unit incident beam direction (INCIDENT_BEAM_DIRECTION)",
    ),
    _f(
        "distance",
        1,
        "geometry",
        None,
        "distance",
        1e-9,
        1e-15,
        "m",
        "sample to detector distance along the beam (C distance = close_distance/ratio)",
    ),
    _f(
        "close_distance",
        1,
        "geometry",
        None,
        None,
        1e-9,
        1e-15,
        "m",
        "distance of closest approach, pix0 . odet (C close_distance)",
    ),
    _f("Fbeam", 1, "geometry", None, "Fbeam", 1e-9, 1e-15, "m", "direct-beam position along the fast axis"),
    _f("Sbeam", 1, "geometry", None, "Sbeam", 1e-9, 1e-15, "m", "direct-beam position along the slow axis"),
    _f("Fclose", 1, "geometry", None, "Fclose", 1e-9, 1e-15, "m", "closest point along the fast axis"),
    _f("Sclose", 1, "geometry", None, "Sclose", 1e-9, 1e-15, "m", "closest point along the slow axis"),
    # the source list (set up before the pixel loop; the C prints it): a change in which divergence sources
    # are kept (the round-divergence trim), their directions, weights or wavelengths is named here
    _f("sources", 1, "sources", None, "sources_created", 0.0, 0.0, "1", "number of sources (C sources)"),
    _f(
        "source_directions",
        0,
        "sources",
        None,
        "sources",
        1e-9,
        1e-12,
        "1",
        "unit vector towards each source, x y z per source (C source_X/Y/Z after unitize)",
    ),
    _f("source_weights", 0, "sources", None, "sources", 1e-9, 0.0, "1",
       "each source's source_I (1/sources, or the -sourcefile column): printed by the C, unused in the sum"),
    _f("source_wavelengths", 0, "sources", None, "sources", 1e-9, 1e-22, "m",
       "each source's wavelength (C source_lambda)"),
    # pixel (last sub-pixel / detector layer visited)
    _f(
        "pixel_pos",
        3,
        "pixel",
        "at",
        None,
        1e-9,
        1e-15,
        "m",
        "lab-frame position of the last sub-pixel and layer visited (C pixel_pos)",
    ),
    _f("airpath", 1, "pixel", None, None, 1e-9, 1e-15, "m", "|pixel_pos| (C airpath)"),
    _f("diffracted", 3, "pixel", None, None, 1e-9, 1e-12, "1", "unit diffracted direction (C diffracted)"),
    # per-pixel corrections computed with the pixel position (the C's omega_pixel, capture_fraction)
    _f(
        "omega_pixel", 1, "corrections", "omega", None, 1e-9, 1e-24, "sr", "pixel solid angle (last computed)"
    ),
    _f(
        "capture_fraction",
        1,
        "corrections",
        "capfrac",
        None,
        1e-9,
        1e-15,
        "1",
        "fraction absorbed by the sensor (last layer visited; 1 without thickness)",
    ),
    # incident (last source visited)
    _f(
        "incident",
        3,
        "incident",
        None,
        None,
        1e-9,
        1e-12,
        "1",
        "unit incident direction of the last source (C incident = -source)",
    ),
    _f(
        "lambda",
        1,
        "incident",
        None,
        "lambda",
        1e-9,
        1e-22,
        "m",
        "wavelength of the last source (C lambda; the C prints every source's in its source list)",
    ),
    # scattering vector
    _f("scattering", 3, "q", None, None, 1e-9, 1e-3, "m^-1", "(diffracted - incident)/lambda (C scattering)"),
    _f(
        "stol",
        1,
        "q",
        "stol",
        None,
        1e-9,
        1e-3,
        "m^-1",
        "sin(theta)/lambda = |scattering|/2, in m^-1 as the C prints it"),
    # polarization: computed per source after the scattering vector (or cached from the first source)
    _f("polar", 1, "corrections", "polar", None, 1e-9, 1e-15, "1", "polarization factor (last computed)"),
    _f("cos_2theta", 1, "corrections", None, None, 1e-9, 1e-12, "1", "cos(2 theta) of the last sub-pixel"),
    # rotated cell (phi step, then mosaic domain): what the Miller indices are computed from, so a rotation
    # error is named here and not at hkl_frac
    _f("a_vec", 3, "rotation", "a", None, 1e-9, 1e-12, "Angstrom", "rotated real-space a (last phi step/domain)"),
    _f("b_vec", 3, "rotation", "b", None, 1e-9, 1e-12, "Angstrom", "rotated real-space b (last phi step/domain)"),
    _f("c_vec", 3, "rotation", "c", None, 1e-9, 1e-12, "Angstrom", "rotated real-space c (last phi step/domain)"),
    # Miller indices
    _f("hkl_frac", 3, "hkl", "hkl", None, 1e-9, 1e-9, "1", "fractional h, k, l (C h, k, l)"),
    _f("hkl_rounded", 3, "hkl", "hkl0", None, 0.0, 0.0, "1", "nearest integer h0, k0, l0 (ceil(h-0.5))"),
    # lattice transform
    _f("F_latt_a", 1, "lattice", None, None, 1e-8, 1e-12, "1", "sincg(pi h, Na) (or 1 when Na <= 1)", ulps=65536),
    _f("F_latt_b", 1, "lattice", None, None, 1e-8, 1e-12, "1", "sincg(pi k, Nb)", ulps=65536),
    _f("F_latt_c", 1, "lattice", None, None, 1e-8, 1e-12, "1", "sincg(pi l, Nc)", ulps=65536),
    _f("F_latt", 1, "lattice", "F_latt", None, 1e-8, 1e-12, "1", "lattice transform for the crystal shape", ulps=65536),
    # unit cell
    _f(
        "F_cell",
        1,
        "cell",
        "F_cell",
        None,
        1e-9,
        1e-12,
        "electrons",
        "structure factor (nearest or tricubic)",
        ulps=64,  # tricubic interpolation: 16 products of float32 weights
    ),
    # accumulated sum
    _f(
        "I_before_scaling",
        1,
        "sum",
        "I",
        None,
        1e-7,  # sincg near a Bragg peak turns a 1-ulp difference in h into ~1e-8 of the sum
        1e-30,
        "electrons^2",
        "the C's accumulated I for the pixel (including I_bg), before r_e^2*fluence/steps", ulps=65536),
    # scale
    _f("r_e_sqr", 1, "scale", None, None, 1e-12, 0.0, "m^2", "Thomson cross-section r_e^2"),
    _f("fluence", 1, "scale", None, "fluence", 1e-9, 0.0, "photons/m^2", "incident fluence"),
    _f(
        "steps",
        1,
        "scale",
        None,
        "steps",
        0.0,
        0.0,
        "1",
        "sources * mosaic_domains * phisteps * oversample^2",
    ),
    _f(
        "I_over_steps",
        1,
        "scale",
        "I/steps",
        None,
        1e-7,
        1e-30,
        "electrons^2",
        "I / steps (see I_before_scaling)", ulps=65536),
    # final
    _f(
        "I_pixel_final",
        1,
        "final",
        "pixel",
        None,
        2e-7,
        1e-30,
        "photons",
        "the pixel value as stored in the float image (float32 in the C)", ulps=65536),
)

# Quantities the C prints that are not part of the pipeline order.
EXTRA: tuple[Factor, ...] = (
    _f(
        "stol_lab",
        1,
        "q",
        "stol (lab)",
        None,
        1e-9,
        1e-12,
        "Angstrom^-1",
        "second stol in the C printout: sin(atan2(sqrt(y^2+z^2), x)/2)/lambda0, assumes a beam along +x",
    ),
)

FACTORS: dict[str, Factor] = {f.name: f for f in SCHEMA + EXTRA}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(f.group for f in SCHEMA))
_ORDER: dict[str, float] = {f.name: float(i) for i, f in enumerate(SCHEMA)}
# extras sort right after the pipeline factor they belong next to
_ORDER["stol_lab"] = _ORDER["stol"] + 0.5


def factor(name: str) -> Factor:
    """The schema record for ``name`` (KeyError with the known names if unknown)."""
    try:
        return FACTORS[name]
    except KeyError:
        raise KeyError(f"unknown trace factor {name!r}; known: {', '.join(FACTORS)}") from None


def order_index(name: str) -> float:
    """Position of ``name`` in pipeline order; unknown names sort last."""
    return _ORDER.get(name, float(len(SCHEMA) + 1))


def ordered_names(names) -> list[str]:
    """``names`` sorted in pipeline order (stable for unknown names)."""
    return sorted(names, key=order_index)
