"""The one registry of nanoBragg.c quirks: what the C does, what our default does, what --c-compat does.

Each switch lives where the registry says (`where`); docs/c_quirks.md is generated from this list
(`python -m nanobragg_torch.quirks > docs/c_quirks.md`) and tests/test_quirks.py checks both variants.
Default behaviour = the pinned C plus upstream's three fix branches ("fixed C"); `c_compat=True` (CLI
`--c-compat`) = the pinned C exactly, serial build.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quirk:
    key: str
    c_behaviour: str
    why_it_matters: str
    default: str
    c_compat: str
    where: str
    golden_cases: tuple[str, ...]
    differs: bool  # does the default differ from --c-compat?
    note: str = ""  # one line printed when the triggering flag is used
    scope: str = "image"  # what the quirk changes: "image" (the float image), "files" (which files appear) or
    # "streams" (what goes to stdout / stderr)


PHI0_STALE_ROTATION = Quirk(
    "phi0-stale-rotation",
    "In the phi loop the cell is rotated only `if(phi != 0.0)`; at phi == 0 the rotated vectors keep the last "
    "rotation computed (serial: the previous pixel's last phi step; the very first evaluation of the image uses "
    "the unrotated cell). With OpenMP the result depends on thread scheduling.",
    "A sweep that starts at phi = 0 with several steps renders its first step at the last step's orientation.",
    "Unrotated cell at phi = 0 (upstream fix/phi0-stale-rotation).",
    "Reproduced: the phi = 0 step reuses the previous step's rotation (cyclically the last step), the first "
    "evaluation of the image the unrotated cell.",
    "crystal.stale_phi_rotations, engine._first_evaluation",
    ("quirk_phi0_multistep", "quirk_phi_crosses_zero", "quirk_mosaic_x_phi0", "quirk_dmin_x_phi0", "full_pilatus6m"),
    True,
)
OVERSAMPLE_RUNNING_SUM = Quirk(
    "oversample-running-sum",
    "With -oversample_thick/-oversample_polar/-oversample_omega the factor multiplies the running sum I after "
    "every sample (`I += term; I *= factor`), so earlier samples are multiplied again and again.",
    "Images with these flags are wrong by orders of magnitude (each factor is applied once per later sample).",
    "Each sample is weighted by its own factors (upstream fix/subpixel-oversampling).",
    "Reproduced as I = I_bg*prod(f) + sum_k term_k prod_{j>=k} f_j; samples the C skips do not multiply.",
    "kernel.running_product_sum, engine.evaluate_chunk",
    ("quirk_oversample_omega", "quirk_oversample_thick", "quirk_oversample_polar", "quirk_oversample_all_water"),
    True,
)
TRAILING_ARGUMENT_GUARDS = Quirk(
    "trailing-argument-guards",
    "`-curved_det` is honoured only when another argument follows it (`argc > i+1`); -detector_abs, "
    "-detector_thick, -detector_thicksteps and -thicksteps test `argc >= i+1` and read past argv when last.",
    "A trailing -curved_det is silently ignored; a trailing thickness flag dereferences NULL.",
    "-curved_det works anywhere (upstream fix/curved-det-flag-guard).",
    "A trailing -curved_det is ignored. Both variants reject a thickness flag without its value (exit 2).",
    "cflags.c_option_loop (curved_detector_seen), cli.config_from_flags",
    ("quirk_curved_det_last",),
    True,
)
STRSTR_MATCHING = Quirk(
    "strstr-flag-matching",
    "Options are matched with strstr, so a token runs every branch whose name (with its leading dash) it "
    "contains: -pix0_vector_mm runs -pix0_vector (values read in metres), -twotheta_axis also sets -twotheta "
    "(its first component, in degrees, and pivot SAMPLE), -printout_pixel also sets -printout, -misset_seed runs "
    "the -misset angle branch (so after -misset random it replaces the random orientation by fixed angles), "
    "-detector_absorb runs -detector_abs. (-mosaic_seed does not match -seed: its dash is not before 'seed'.) "
    "Unknown flags are ignored.",
    "The same argv must give the same physics; typos are silently ignored by the C.",
    "Same branch semantics as the C for known flags; unknown or malformed flags are an error (exit 2).",
    "Same.",
    "cflags.c_option_loop, cflags.validate",
    ("quirk_twotheta_axis_resets_twotheta", "quirk_pix0_vector_mm", "quirk_misset_seed_after_random"),
    False,
)
PIX0_IGNORED = Quirk(
    "pix0-overwritten",
    "A user -pix0_vector/-pix0_vector_mm is overwritten by the pivot computation (SAMPLE: from Fclose/Sclose; "
    "BEAM: from Fbeam/Sbeam); its only effect is switching to the CUSTOM convention.",
    "Users expect the detector origin they gave; the C ignores it.",
    "Same as the C (both C builds ignore it); a note is printed. -pix0_override opts in to placing the "
    "detector by the vector (-pix0_vector_mm in millimetres, -pix0_vector in metres).",
    "Same as the C.",
    "detector.resolve_geometry (cfg.pix0_override)",
    ("pix0_vector_custom", "quirk_pix0_vector_mm", "full_pilatus6m"),
    False,
    note="note: -pix0_vector is ignored by nanoBragg.c (pix0 comes from the beam centre and pivot); "
    "add -pix0_override to place the detector by it",
)
CUSTOM_CONVENTION_SWITCH = Quirk(
    "vector-flags-switch-to-custom",
    "Any of -fdet_vector -sdet_vector -odet_vector -beam_vector -polar_vector -spindle_axis -twotheta_axis "
    "-pix0_vector switches to the CUSTOM convention: the beam centre becomes Fbeam=Xbeam, Sbeam=Ybeam with no "
    "MOSFLM half-pixel offset and the pivot is the user's (default BEAM).",
    "Giving only a spindle axis moves the beam centre by half a pixel.",
    "Same as the C.",
    "Same as the C.",
    "detector.resolve_geometry",
    ("spindle_axis_phi", "custom_mosflm_axes"),
    False,
)
ODET_AUTOGENERATED = Quirk(
    "odet-autogenerated",
    "If |odet_vector| != 1.0 exactly after parsing, the C replaces it by fdet x sdet (WARNING: auto-generating "
    "odet_vector), whatever direction the user gave.",
    "A custom odet given to 6 decimals (e.g. the Pilatus command) is silently replaced.",
    "Same as the C.",
    "Same as the C.",
    "detector.resolve_geometry",
    ("full_pilatus6m",),
    False,
)
MISSET_RANDOM_DEGREES = Quirk(
    "misset-random-radians",
    "-misset random passes 90.0 to mosaic_rotation_umat, which takes radians; without -misset_seed the seed is "
    "the clock (not -seed).",
    "The random orientation is not uniform over the sphere as intended.",
    "Same as the C (the orientation stream is part of the reference).",
    "Same as the C.",
    "rng.random_misset",
    ("misset_random",),
    False,
)
FDUMP_REUSE = Quirk(
    "fdump-reuse",
    "Without -hkl the C silently reads Fdump.bin from the working directory, and with -hkl it writes Fdump.bin there.",
    "A stale Fdump.bin from another run changes the image without a word.",
    "Never reads or writes Fdump.bin unless -dump FILE is given; without -hkl and -default_F it is an error.",
    "Reads ./Fdump.bin (or -dump) when -hkl is absent and writes it after reading -hkl, as the C.",
    "cli.config_from_flags",
    (),
    True,
    scope="files",
)
UNREQUESTED_FILES = Quirk(
    "unrequested-output-files",
    "The C always writes floatimage.bin and intimage.img, image.pgm unless -nopgm, and noiseimage.img unless "
    "-nonoise, whether asked for or not. -nonoise and -noisefile act in argv order.",
    "Runs litter the working directory and overwrite earlier results.",
    "Writes only the files asked for (-floatfile, -intfile, -noisefile, -pgmfile/-pgmscale, -pngfile); "
    "-nonoise/-noisefile keep the C's order rule.",
    "Writes the C's default files with the C's default names.",
    "cli.config_from_flags (out)",
    ("quirk_nonoise_after_noisefile", "noisefile_after_nonoise"),
    True,
    scope="files",
)
LAST_LAYER_CAPTURE = Quirk(
    "last-layer-capture-fraction",
    "Without -oversample_thick the C sums all detector layers and multiplies the sum by the capture fraction of "
    "the last layer only (computed at the first sub-pixel).",
    "Thick-detector images are scaled by the deepest layer's absorption rather than each layer's.",
    "Same as the C (neither C build changes it).",
    "Same as the C.",
    "kernel.pixel_factors (capture_last)",
    ("detector_thick", "oversample_x_thick"),
    False,
)
INTERPOLATION_ONE_WAY = Quirk(
    "interpolation-one-way-switch",
    "With interpolation on, the first sample whose 4-point stencil leaves the HKL grid clears the global "
    "`interpolate` flag: that sample and every later one in the image use nearest-neighbour F.",
    "Pixels rendered before and after the switch use different F models; with OpenMP the switch point varies.",
    "Same as the (serial) C, in raster order.",
    "Same as the C.",
    "engine.evaluate_chunk (ChunkState.interpolate)",
    ("interpolate_out_of_range",),
    False,
)
SOURCE_INTENSITY_IGNORED = Quirk(
    "source-intensity-ignored",
    "The I column of -sourcefile is read but never used: every source counts 1/sources. -stol/-4stol/-Q files "
    "are read but the table never enters the image. -coherent is parsed and ignored.",
    "Weighted spectra and amorphous backgrounds from files have no effect.",
    "Same as the C.",
    "Same as the C.",
    "beam.build_sources",
    ("sourcefile",),
    False,
)
WATER_DOUBLE_SCALED = Quirk(
    "water-background-scaling",
    "The -water background I_bg already contains r_e^2*fluence but is added to the unscaled sum, so it is "
    "multiplied by r_e^2*fluence/steps again.",
    "The water background is tiny compared with its intended size.",
    "Same as the C.",
    "Same as the C.",
    "plan.build_plan (I_bg)",
    ("water",),
    False,
)
NOPOLAR_OVERSAMPLE_POLAR = Quirk(
    "nopolar-with-oversample-polar",
    "-nopolar only presets the cached polar = 1; -oversample_polar recomputes it per sample, so polarization "
    "comes back.",
    "The two flags together do not disable polarization.",
    "Same as the C.",
    "Same as the C.",
    "kernel.polarization",
    (),
    False,
)

ADVISORIES_ON_STDOUT = Quirk(
    "advisories-on-stdout",
    "The C prints its advisory WARNING lines (auto-generating odet_vector, recommend -oversample N, mosaic "
    "domains, detector attenuation depth) and its `N% done` progress lines with printf, on stdout, between "
    "its report lines.",
    "Scripts that parse stdout see warnings and progress mixed into the report.",
    "The same WARNING strings on stderr; progress is a bar on stderr (a terminal, renders over 2 s, "
    "-progress forces, -noprogress silences).",
    "The WARNING lines on stdout, where the C prints them; progress stays a bar on stderr (no `% done` lines: "
    "the goldens run with -noprogress).",
    "advisories.advisories, outputs._run, progress.progress_bar",
    ("full_pilatus6m",),
    True,
    scope="streams",
)

SMV_LONG_HEADER = Quirk(
    "smv-long-header",
    "The SMV writers pad the header with spaces only up to 512 bytes; a longer header (long %g values, e.g. the "
    "Pilatus 6M geometry: 518 bytes) is written unpadded while it still declares HEADER_BYTES=512.",
    "Every SMV reader then takes 6 header bytes as pixels and shifts the image.",
    "HEADER_BYTES becomes the next multiple of 512 (1024) and the header is padded to it.",
    "Reproduced: unpadded header declaring 512.",
    "io.smv.smv_header_text (c_compat)",
    (),
    True,
    scope="files",
)

INVALID_VALUES_C_RULES = Quirk(
    "invalid-values-c-rules",
    "For several out-of-range values the C quietly applies its auto rule instead: a step of 0 (-hdivstep 0, "
    "-vdivstep 0) means auto (step = range: -hdivrange 1 -hdivstep 0 puts the sources at -0.5 and +0.5 mrad); "
    "-phisteps 0, -mosaic_domains 0, -oversample 0 or negative, -hdivsteps/-vdivsteps/-dispsteps 0 select the "
    "automatic count; -osc/-mosaic/-dispersion/-detector_thick/-xtalsize negative mean 'not given'; N <= 1 on an "
    "axis (also 0 and negative) renders one cell on it (no sincg); a negative -lambda or -distance gives the same "
    "image as its magnitude; a 0 cell angle is 90 degrees; -exposure 0 ignores -flux; -detpixels 0 keeps the "
    "default detector size.",
    "An invalid value silently renders something else than was asked for.",
    "Same as the C (validation.check_config accepts these values; beam/crystal/detector apply the C's rule).",
    "Same as the C.",
    "validation.check_config, sampling.auto_steps, crystal.resolve_phi, crystal.resolve_mosaic",
    ("div_hstep_zero", "div_vstep_zero"),
    False,
)
INVALID_VALUES_REFUSED = Quirk(
    "invalid-values-refused",
    "The C renders NaN or all-zero images (exit 0) for: -lambda 0 or -energy 0, -distance 0, -pixel 0, a cell "
    "whose angles make it flat (e.g. gamma 180), -flux with -beamsize 0, -fluence 0, a zero -beam_vector, a "
    "zero detector or spindle axis, a detector edge-on to the beam (-twotheta 90) or more than 1e12 pixels "
    "away, an angle beyond 1e6 radians, a singular or overflowing -mat, NaN/inf flag values (its atof takes "
    "them), "
    "a -cell value with a "
    "leading '-' (the C stops reading the cell there and keeps the previous one), "
    "an inf/nan or zero-wavelength line in -sourcefile, a non-finite F in Fdump.bin or -hkl. It allocates "
    "whatever an index range or a step count asks for.",
    "Exit 0 with a NaN or empty image hides the mistake; the statistics print max_I = 0.",
    "Refused before rendering, in both modes: exit 2 with one line naming the flag or file:line (CLI), "
    "ValueError subclass errors.ConfigError naming the config field (API). Renders, HKL/Fdump grids that "
    "would not fit in memory (memory.memory_budget: ulimit -v, cgroup, free memory, env NB_MEMORY_LIMIT) are "
    "refused with their size; an allocation that fails anyway is one line, exit 2, no output. A "
    "UTF-8 byte-order mark at the start of a text input is skipped (the C would misread the first value).",
    "Same as the default (refused). What still overflows the render dtype (e.g. -fluence 1e300 in float32) "
    "is refused after rendering: exit 2, 'the render has N non-finite pixels', nothing written.",
    "validation.check_config, cflags.walk, io.textcolumns.read_text_columns(finite), io.fdump.read_fdump",
    (),
    False,
)

ROUND_DIVERGENCE_CUTOFF = Quirk(
    "round-divergence-cutoff",
    "-round_div (the default) keeps a divergence grid point when its normalised squared radius, times 4, is "
    "at most 1.1 (`if( round_div && test*4.0 > 1.1) continue;`), not 1.0: points just outside the "
    "ellipse are kept.",
    "Source count and weights: on a 9 x 9 grid 57 sources, not 49; a re-implementation cutting at 1.0 loses "
    "the outer ring's edge.",
    "Reproduced (both C builds cut at 1.1).",
    "Reproduced.",
    "beam.build_sources",
    ("div_round_9", "div_round"),
    False,
)
REGISTRY: tuple[Quirk, ...] = (
    PHI0_STALE_ROTATION,
    OVERSAMPLE_RUNNING_SUM,
    TRAILING_ARGUMENT_GUARDS,
    STRSTR_MATCHING,
    PIX0_IGNORED,
    CUSTOM_CONVENTION_SWITCH,
    ODET_AUTOGENERATED,
    MISSET_RANDOM_DEGREES,
    FDUMP_REUSE,
    UNREQUESTED_FILES,
    LAST_LAYER_CAPTURE,
    INTERPOLATION_ONE_WAY,
    SOURCE_INTENSITY_IGNORED,
    WATER_DOUBLE_SCALED,
    NOPOLAR_OVERSAMPLE_POLAR,
    SMV_LONG_HEADER,
    INVALID_VALUES_C_RULES,
    INVALID_VALUES_REFUSED,
    ROUND_DIVERGENCE_CUTOFF,
    ADVISORIES_ON_STDOUT,
)


def markdown() -> str:
    lines = [
        "# Registry of nanoBragg.c quirks",
        "",
        "Generated from `nanobragg_torch/quirks.py` (`python -m nanobragg_torch.quirks`). Default behaviour "
        "is the pinned C (bl831/nanoBragg 455534a) plus upstream's three `fix/` branches; `--c-compat` "
        "(API `c_compat=True`) is the pinned C exactly, serial build. The default follows the fixed C "
        "because its maintainers treat main + the three fixes as the reference physics, and the fixed "
        "behaviours do not depend on thread scheduling.",
        "",
    ]
    for q in REGISTRY:
        lines += [
            f"## {q.key}",
            "",
            f"- **C does:** {q.c_behaviour}",
            f"- **Why it matters:** {q.why_it_matters}",
            f"- **Default:** {q.default}",
            f"- **--c-compat:** {q.c_compat}",
            f"- **Default differs from --c-compat:** {'yes' if q.differs else 'no'}",
            f"- **Code:** `{q.where}`",
            f"- **Golden cases:** {', '.join(f'`{c}`' for c in q.golden_cases) or '(CLI tests only)'}",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
