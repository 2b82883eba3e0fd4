"""The one table of command-line flags: every spelling, its value kind, the C variables it sets, its values and
units, default, one-line effect, status and notes.

It drives `cflags.validate` (the kinds), `cflags.strip_own_flags` (our flags), the `--help` listing
(`help_text`) and docs/cli.md, which is generated from it (`python -m nanobragg_torch.flagtable >
docs/cli.md`; tests/test_flagtable.py keeps the two equal and checks every row's C variables against the
literal emulation `cflags.c_option_loop`). The C's initial values of its variables are `cflags.c_defaults`.

Value kinds: "" none, f float, i int, s string, F3 three floats, I2/I4 two/four ints, cell 1-6 floats,
misset three angles or `random`, pivot sample|beam, abs a depth or `inf`, dtype float32|float64.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    """One row: the spellings that share a meaning."""

    section: str
    names: tuple[str, ...]
    kind: str
    c_vars: tuple[str, ...]  # the C variables the option loop sets for these spellings (ours: none)
    fields: tuple[str, ...]  # the config fields (SimulationConfig paths) or plan options these spellings set
    values: str  # values and units, as typed on the command line
    default: str
    effect: str  # one line: what it sets
    status: str = ""  # yes | no effect (C too) | gap; empty for our own flags
    notes: str = ""

    @property
    def own(self) -> bool:
        return self.section == OWN


CRYSTAL = 'Crystal and structure factors'
DETECTOR = 'Detector'
BEAM = 'Beam and background'
OUTPUTS = 'Outputs and run control'
OWN = 'Our own flags'

ARITY = {"": 0, "f": 1, "i": 1, "s": 1, "abs": 1, "pivot": 1, "dtype": 1, "F3": 3, "I2": 2, "I4": 4}

FLAGS: tuple[Flag, ...] = (
    Flag(
        CRYSTAL,
        names=('-cell',),
        fields=('crystal.cell',),
        kind='cell',
        c_vars=('user_cell', 'cell'),
        values='a b c [α β γ] (Å, deg)',
        default='none: `-cell` or `-mat` is required',
        effect='unit cell',
        status='yes',
        notes=(
            'reads up to 6 values, stops at a token starting with `-` (so no negative values); b, c default to a, '
            'angles to 90; a ≤ 0 is an error (ours)'
        ),
    ),
    Flag(
        CRYSTAL,
        names=('-mat',),
        fields=('crystal.reciprocal_matrix',),
        kind='s',
        c_vars=('matfilename',),
        values='file',
        default='none',
        effect='MOSFLM A matrix (reciprocal axes × λ)',
        status='yes',
        notes='first 9 numbers; a missing or malformed file is an error naming file:line',
    ),
    Flag(
        CRYSTAL,
        names=('-misset',),
        fields=('crystal.misset', 'crystal.misset_random'),
        kind='misset',
        c_vars=('misset',),
        values='rx ry rz (deg) \\| `random`',
        default='none',
        effect='rotation of the cell about x, y, z',
        status='yes',
        notes='`random`: see quirk *misset-random-radians*; also run by `-misset_seed` (below)',
    ),
    Flag(
        CRYSTAL,
        names=('-N',),
        fields=('crystal.Na', 'crystal.Nb', 'crystal.Nc'),
        kind='i',
        c_vars=('Na', 'Nb', 'Nc'),
        values='n',
        default='1',
        effect='Na = Nb = Nc',
        status='yes',
        notes='exact match (`strcmp`)',
    ),
    Flag(
        CRYSTAL,
        names=('-Na', '-Nb', '-Nc'),
        fields=('crystal.Na', 'crystal.Nb', 'crystal.Nc'),
        kind='i',
        c_vars=('Na', 'Nb', 'Nc'),
        values='n',
        default='1',
        effect='cells along a, b, c',
        status='yes',
        notes='branch ends the token (`continue`)',
    ),
    Flag(
        CRYSTAL,
        names=('-samplesize', '-sample_size', '-xtalsize', '-xtal_size'),
        fields=('crystal.sample_x', 'crystal.sample_y', 'crystal.sample_z'),
        kind='f',
        c_vars=('sample_x', 'sample_y', 'sample_z'),
        values='mm',
        default='0: from N × cell',
        effect='crystal size x = y = z',
        status='yes',
        notes='a size > 0 sets N = ceil(size / cell edge)',
    ),
    Flag(
        CRYSTAL,
        names=('-sample_thick', '-sample_x', '-xtal_thick', '-xtal_x'),
        fields=('crystal.sample_x',),
        kind='f',
        c_vars=('sample_x',),
        values='mm',
        default='0',
        effect='crystal size x',
        status='yes',
    ),
    Flag(
        CRYSTAL,
        names=('-sample_width', '-sample_y', '-xtal_width', '-xtal_y', '-width'),
        fields=('crystal.sample_y',),
        kind='f',
        c_vars=('sample_y',),
        values='mm',
        default='0',
        effect='crystal size y',
        status='yes',
        notes='clipped to `-beamsize`',
    ),
    Flag(
        CRYSTAL,
        names=('-sample_height', '-sample_z', '-xtal_height', '-xtal_z', '-height'),
        fields=('crystal.sample_z',),
        kind='f',
        c_vars=('sample_z',),
        values='mm',
        default='0',
        effect='crystal size z',
        status='yes',
        notes='C matches `-sample_heigh`, `-xtal_heigh`, `-heigh`; clipped to `-beamsize`',
    ),
    Flag(
        CRYSTAL,
        names=('-density', '-sample_density'),
        fields=(),
        kind='f',
        c_vars=(),
        values='g/cm³',
        default='1',
        effect='density',
        status='no effect (C too)',
        notes='overwritten before use; C matches `-sample_den`',
    ),
    Flag(
        CRYSTAL,
        names=('-MW', '-molecules'),
        fields=(),
        kind='f',
        c_vars=(),
        values='g/mol',
        default='18',
        effect='molecular weight',
        status='no effect (C too)',
        notes='recomputed before use; C matches `-MW` exactly and `-molec`',
    ),
    Flag(
        CRYSTAL,
        names=('-hkl',),
        fields=('crystal.structure_factors',),
        kind='s',
        c_vars=('hklfilename',),
        values='file',
        default='none',
        effect='h k l F table',
        status='yes',
        notes=(
            'malformed line is an error naming file:line (C stops reading there); ours also reads MTZ and mmCIF '
            '(`.mtz`, `.cif`), expanded to P1 by the space group and Friedel\'s law (`-F_column`)'
        ),
    ),
    Flag(
        CRYSTAL,
        names=('-default_F',),
        fields=('crystal.default_F',),
        kind='f',
        c_vars=('default_F',),
        values='F',
        default='0',
        effect='F of every hkl not in the table',
        status='yes',
        notes='without `-hkl` and `-default_F` (and, in `--c-compat`, no Fdump file) it is an error',
    ),
    Flag(
        CRYSTAL,
        names=('-dump',),
        fields=('crystal.structure_factors',),
        kind='s',
        c_vars=('dumpfilename',),
        values='file',
        default='`Fdump.bin`',
        effect='binary F cache: written after `-hkl`, read without `-hkl`',
        status='yes',
        notes='default mode: only when `-dump` is given; `--c-compat`: always, as the C (quirk *fdump-reuse*)',
    ),
    Flag(
        CRYSTAL,
        names=('-dmin',),
        fields=('crystal.dmin',),
        kind='f',
        c_vars=('dmin',),
        values='Å',
        default='0 (off)',
        effect='skip samples with d < dmin',
        status='yes',
    ),
    Flag(
        CRYSTAL,
        names=('-square_xtal', '-round_xtal', '-gauss_xtal', '-tophat_spots', '-binary_spots'),
        fields=('crystal.shape',),
        kind='',
        c_vars=('xtal_shape',),
        values='—',
        default='square',
        effect='lattice-transform shape: sincg, sinc3, Gaussian, top hat',
        status='yes',
    ),
    Flag(
        CRYSTAL,
        names=('-fudge',),
        fields=('crystal.fudge',),
        kind='f',
        c_vars=('fudge',),
        values='f',
        default='1',
        effect='scale of the round/Gauss/top-hat argument',
        status='yes',
    ),
    Flag(
        CRYSTAL,
        names=('-interpolate', '-nointerpolate'),
        fields=('crystal.interpolate',),
        kind='',
        c_vars=('interpolate',),
        values='—',
        default='auto: on if any N ≤ 2',
        effect='tricubic F interpolation',
        status='yes',
        notes='quirk *interpolation-one-way-switch*',
    ),
    Flag(
        CRYSTAL,
        names=('-phi',),
        fields=('crystal.phi0',),
        kind='f',
        c_vars=('phi0',),
        values='deg',
        default='0',
        effect='start of the rotation',
        status='yes',
        notes='exact length (not `-phistep(s)`)',
    ),
    Flag(
        CRYSTAL,
        names=('-osc',),
        fields=('crystal.osc',),
        kind='f',
        c_vars=('osc',),
        values='deg',
        default='auto',
        effect='rotation range',
        status='yes',
    ),
    Flag(
        CRYSTAL,
        names=('-phistep',),
        fields=('crystal.phistep',),
        kind='f',
        c_vars=('phistep',),
        values='deg',
        default='auto',
        effect='rotation step',
        status='yes',
        notes='exact length',
    ),
    Flag(
        CRYSTAL,
        names=('-phisteps',),
        fields=('crystal.phisteps',),
        kind='i',
        c_vars=('phisteps',),
        values='n',
        default='auto (1)',
        effect='rotation steps',
        status='yes',
        notes='quirk *phi0-stale-rotation* (sweep from phi = 0)',
    ),
    Flag(
        CRYSTAL,
        names=('-mosaic', '-mosaic_spread', '-mosaicity'),
        fields=('crystal.mosaic_spread',),
        kind='f',
        c_vars=('mosaic_spread',),
        values='deg',
        default='0',
        effect='isotropic mosaic spread',
        status='yes',
        notes='C matches `-mosaic` (exact), `-mosaici`, `-mosaic_spr`',
    ),
    Flag(
        CRYSTAL,
        names=('-mosaic_domains', '-mosaic_dom'),
        fields=('crystal.mosaic_domains',),
        kind='i',
        c_vars=('mosaic_domains',),
        values='n',
        default='10 if spread > 0, else 1',
        effect='mosaic domains',
        status='yes',
        notes='C matches `-mosaic_dom`',
    ),
    Flag(
        CRYSTAL,
        names=('-mosaic_seed',),
        fields=('crystal.mosaic_seed',),
        kind='i',
        c_vars=('mosaic_seed',),
        values='n',
        default='12345678',
        effect='seed of the domain orientations',
        status='yes',
        notes='does **not** set `-seed` (`_seed` has no `-` before it)',
    ),
    Flag(
        CRYSTAL,
        names=('-misset_seed',),
        fields=('crystal.misset_seed',),
        kind='i',
        c_vars=('misset_seed',),
        values='n',
        default='clock',
        effect='seed of `-misset random`',
        status='yes',
        notes=(
            'strstr: also runs `-misset` with this value and the next two tokens as angles in degrees, which '
            'replaces any earlier `-misset` (even `random`)'
        ),
    ),
    Flag(
        DETECTOR,
        names=('-mosflm', '-xds', '-adxv', '-denzo', '-dials'),
        fields=('detector.convention',),
        kind='',
        c_vars=('convention', 'pivot'),
        values='—',
        default='MOSFLM',
        effect='convention (axes, beam-centre meaning) and pivot (XDS: sample, others: beam)',
        status='yes',
        notes='resets the pivot: give `-pivot` after it',
    ),
    Flag(
        DETECTOR,
        names=('-fdet_vector', '-sdet_vector', '-odet_vector'),
        fields=('detector.fdet_vector', 'detector.sdet_vector', 'detector.odet_vector', 'detector.orientation'),
        kind='F3',
        c_vars=('convention', 'fdet_vector', 'sdet_vector', 'odet_vector'),
        values='x y z',
        default='per convention (MOSFLM: 0 0 1, 0 -1 0, 1 0 0)',
        effect='detector axes',
        status='yes',
        notes=(
            'switch to CUSTOM (quirk *vector-flags-switch-to-custom*); odet is regenerated unless \\|odet\\| = 1 '
            'exactly (quirk *odet-autogenerated*)'
        ),
    ),
    Flag(
        DETECTOR,
        names=('-beam_vector', '-polar_vector'),
        fields=('beam.beam_vector', 'beam.polar_vector', 'detector.orientation'),
        kind='F3',
        c_vars=('convention', 'beam_vector', 'polar_vector'),
        values='x y z',
        default='MOSFLM: 1 0 0, 0 0 1',
        effect='beam direction, E-vector',
        status='yes',
        notes='switch to CUSTOM',
    ),
    Flag(
        DETECTOR,
        names=('-spindle_axis',),
        fields=('crystal.spindle_axis',),
        kind='F3',
        c_vars=('convention', 'spindle_vector'),
        values='x y z',
        default='MOSFLM: 0 0 1',
        effect='phi axis',
        status='yes',
        notes='switch to CUSTOM',
    ),
    Flag(
        DETECTOR,
        names=('-twotheta_axis',),
        fields=('detector.twotheta_axis',),
        kind='F3',
        c_vars=('convention', 'twotheta_axis', 'detector_twotheta', 'pivot'),
        values='x y z',
        default='MOSFLM: 0 0 -1',
        effect='detector 2θ axis',
        status='yes',
        notes='switch to CUSTOM; strstr: also runs `-twotheta` with x (deg) and sets pivot sample',
    ),
    Flag(
        DETECTOR,
        names=('-pix0_vector', '-pix0_vector_mm'),
        fields=('detector.pix0_vector',),
        kind='F3',
        c_vars=('convention', 'pix0_vector', 'pix0_flag'),
        values='x y z (m, both spellings)',
        default='from beam centre',
        effect='—',
        status='no effect (C too)',
        notes=(
            'switches to CUSTOM; the value is overwritten by the pivot computation (quirk *pix0-overwritten*); we '
            'print a note. Ours: `-pix0_override` places pix0 by it (`_mm` then read in mm)'
        ),
    ),
    Flag(
        DETECTOR,
        names=('-distance',),
        fields=('detector.distance',),
        kind='f',
        c_vars=('distance', 'pivot'),
        values='mm',
        default='100',
        effect='sample–beam-spot distance',
        status='yes',
        notes='pivot beam',
    ),
    Flag(
        DETECTOR,
        names=('-close_distance',),
        fields=('detector.close_distance', 'detector.distance'),
        kind='f',
        c_vars=('close_distance', 'pivot'),
        values='mm',
        default='from distance',
        effect='sample–nearest-point distance',
        status='yes',
        notes='pivot sample; does not run `-distance`',
    ),
    Flag(
        DETECTOR,
        names=('-Xbeam', '-Ybeam'),
        fields=('detector.Xbeam', 'detector.Ybeam'),
        kind='f',
        c_vars=('Xbeam', 'pivot', 'Ybeam'),
        values='mm',
        default='detector centre (MOSFLM: +½ pixel)',
        effect="beam centre in the convention's frame",
        status='yes',
        notes='pivot beam',
    ),
    Flag(
        DETECTOR,
        names=('-Xclose', '-Yclose'),
        fields=('detector.Xclose', 'detector.Yclose'),
        kind='f',
        c_vars=('Xclose', 'pivot', 'Yclose'),
        values='mm',
        default='detector centre',
        effect='nearest point',
        status='yes',
        notes='pivot sample',
    ),
    Flag(
        DETECTOR,
        names=('-ORGX', '-ORGY'),
        fields=('detector.ORGX', 'detector.ORGY'),
        kind='f',
        c_vars=('ORGX', 'pivot', 'ORGY'),
        values='pixels',
        default='detector centre',
        effect='XDS origin',
        status='yes',
        notes='pivot sample',
    ),
    Flag(
        DETECTOR,
        names=('-pivot',),
        fields=('detector.pivot',),
        kind='pivot',
        c_vars=('pivot',),
        values='`sample` \\| `beam`',
        default='per convention',
        effect='rotation pivot',
        status='yes',
        notes='other words are an error (ours; C: substring test, else ignored)',
    ),
    Flag(
        DETECTOR,
        names=('-twotheta',),
        fields=('detector.twotheta', 'detector.orientation'),
        kind='f',
        c_vars=('detector_twotheta', 'pivot'),
        values='deg',
        default='0',
        effect='detector 2θ',
        status='yes',
        notes='pivot sample',
    ),
    Flag(
        DETECTOR,
        names=('-detector_rotx', '-detector_roty', '-detector_rotz'),
        fields=('detector.rotx', 'detector.roty', 'detector.rotz', 'detector.orientation'),
        kind='f',
        c_vars=('detector_rotx', 'detector_roty', 'detector_rotz'),
        values='deg',
        default='0',
        effect='detector rotations',
        status='yes',
    ),
    Flag(
        DETECTOR,
        names=('-detsize',),
        fields=('detector.fpixels', 'detector.spixels'),
        kind='f',
        c_vars=('detsize_f', 'detsize_s'),
        values='mm',
        default='102.4',
        effect='size, both axes',
        status='yes',
        notes='exact length',
    ),
    Flag(
        DETECTOR,
        names=('-detsize_f', '-detsize_s'),
        fields=('detector.fpixels', 'detector.spixels'),
        kind='f',
        c_vars=('detsize_f', 'detsize_s'),
        values='mm',
        default='102.4',
        effect='size along fast / slow',
        status='yes',
    ),
    Flag(
        DETECTOR,
        names=('-detpixels',),
        fields=('detector.fpixels', 'detector.spixels'),
        kind='i',
        c_vars=('fpixels', 'spixels'),
        values='n',
        default='from size (1024)',
        effect='pixels, both axes',
        status='yes',
        notes='exact length; 0 means "from the size"',
    ),
    Flag(
        DETECTOR,
        names=('-detpixels_f', '-detpixels_x', '-detpixels_s', '-detpixels_y'),
        fields=('detector.fpixels', 'detector.spixels'),
        kind='i',
        c_vars=('fpixels', 'spixels'),
        values='n',
        default='from size',
        effect='pixels along fast / slow',
        status='yes',
        notes='C: counts win over sizes; ours: a `-detsize*` that implies another count is an error',
    ),
    Flag(
        DETECTOR,
        names=('-pixel',),
        fields=('detector.pixel_size',),
        kind='f',
        c_vars=('pixel_size',),
        values='mm',
        default='0.1',
        effect='pixel size',
        status='yes',
        notes='≤ 0 is an error (ours)',
    ),
    Flag(
        DETECTOR,
        names=('-point_pixel',),
        fields=('detector.point_pixel',),
        kind='',
        c_vars=('point_pixel',),
        values='—',
        default='off',
        effect="solid angle 1/r² instead of the pixel's",
        status='yes',
    ),
    Flag(
        DETECTOR,
        names=('-curved_det',),
        fields=('detector.curved',),
        kind='',
        c_vars=('curved_detector_seen', 'curved_detector'),
        values='—',
        default='off',
        effect='all pixels at the same distance',
        status='yes',
        notes='`--c-compat`: ignored when it is the last argument (quirk *trailing-argument-guards*)',
    ),
    Flag(
        DETECTOR,
        names=('-detector_abs', '-detector_absorb'),
        fields=('detector.mu',),
        kind='abs',
        c_vars=('detector_mu',),
        values='µm \\| `inf`',
        default='no absorption',
        effect='attenuation depth (`inf` or 0: none, thickness 0)',
        status='yes',
        notes='C matches `-detector_abs`; a missing value is an error in both modes',
    ),
    Flag(
        DETECTOR,
        names=('-detector_thick',),
        fields=('detector.thickness',),
        kind='f',
        c_vars=('detector_thick',),
        values='µm',
        default='0',
        effect='sensor thickness',
        status='yes',
        notes='exact length',
    ),
    Flag(
        DETECTOR,
        names=('-detector_thicksteps', '-thicksteps'),
        fields=('detector.thicksteps',),
        kind='i',
        c_vars=('detector_thicksteps',),
        values='n',
        default='auto (1)',
        effect='sensor layers',
        status='yes',
        notes='quirk *last-layer-capture-fraction*',
    ),
    Flag(
        DETECTOR,
        names=('-oversample',),
        fields=('detector.oversample',),
        kind='i',
        c_vars=('oversample',),
        values='n',
        default='auto: ceil(3 × crystal size / (λ × distance / pixel))',
        effect='sub-pixels per axis',
        status='yes',
    ),
    Flag(
        DETECTOR,
        names=('-oversample_thick', '-oversample_polar', '-oversample_omega'),
        fields=('detector.oversample_thick', 'detector.oversample_polar', 'detector.oversample_omega'),
        kind='',
        c_vars=('oversample_thick', 'oversample_polar', 'oversample_omega'),
        values='—',
        default='off',
        effect='recompute the factor per sub-pixel',
        status='yes',
        notes='quirk *oversample-running-sum*; `-nopolar` + `-oversample_polar` keeps polarization (quirk)',
    ),
    Flag(
        DETECTOR,
        names=('-roi',),
        fields=('detector.roi',),
        kind='I4',
        c_vars=('roi',),
        values='xmin xmax ymin ymax (pixels, inclusive)',
        default='whole detector',
        effect='region rendered',
        status='yes',
        notes='a region with no pixel of the detector is an error (ours)',
    ),
    Flag(
        DETECTOR,
        names=('-img',),
        fields=(),
        kind='s',
        c_vars=('imginfilename',),
        values='SMV file',
        default='none',
        effect=(
            'starting values from its header (size, pixel, distance, close distance, wavelength, beam centre, '
            'ORGX/Y, phi, osc)'
        ),
        status='yes',
        notes='pre-pass and main loop; pixel data unused (C too); header TWOTHETA has no effect (C too)',
    ),
    Flag(
        DETECTOR,
        names=('-mask',),
        fields=('detector.mask',),
        kind='s',
        c_vars=('maskfilename',),
        values='SMV file',
        default='none',
        effect='skip pixels that are 0 in it; header values as `-img` (beam centre Y flipped)',
        status='yes',
        notes='pre-pass only; size must match the detector (ours)',
    ),
    Flag(
        BEAM,
        names=('-lambda', '-wave', '-wavelength'),
        fields=('beam.wavelength',),
        kind='f',
        c_vars=('lambda0',),
        values='Å',
        default='1',
        effect='wavelength',
        status='yes',
        notes='C matches `-lambda`, `-wave`',
    ),
    Flag(
        BEAM,
        names=('-energy',),
        fields=('beam.wavelength',),
        kind='f',
        c_vars=('lambda0',),
        values='eV',
        default='—',
        effect='wavelength = 12398.42 / E Å',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-fluence',),
        fields=('beam.fluence',),
        kind='f',
        c_vars=('fluence',),
        values='photons/m²',
        default='1.25932e29',
        effect='fluence',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-flux',),
        fields=('beam.fluence',),
        kind='f',
        c_vars=('flux',),
        values='photons/s',
        default='0 (unused)',
        effect='fluence = flux × exposure / beamsize² when flux ≠ 0',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-exposure',),
        fields=('beam.fluence',),
        kind='f',
        c_vars=('exposure',),
        values='s',
        default='1',
        effect='exposure',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-beamsize',),
        fields=('beam.fluence',),
        kind='f',
        c_vars=('beamsize',),
        values='mm',
        default='0.1',
        effect='beam size; also clips crystal y, z',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-polar',),
        fields=('beam.polarization',),
        kind='f',
        c_vars=('polarization', 'nopolar'),
        values='Kahn factor',
        default='0',
        effect='polarization',
        status='yes',
        notes='exact length; clears `-nopolar`',
    ),
    Flag(
        BEAM,
        names=('-nopolar',),
        fields=('beam.nopolar',),
        kind='',
        c_vars=('nopolar',),
        values='—',
        default='off',
        effect='polarization factor 1',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-dispersion',),
        fields=('beam.dispersion',),
        kind='f',
        c_vars=('dispersion',),
        values='% (Δλ/λ)',
        default='0',
        effect='spectral width',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-dispsteps',),
        fields=('beam.dispsteps',),
        kind='i',
        c_vars=('dispsteps',),
        values='n',
        default='auto',
        effect='wavelengths',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-divergence',),
        fields=('beam.hdivrange', 'beam.vdivrange'),
        kind='f',
        c_vars=('hdivrange', 'vdivrange'),
        values='mrad',
        default='0',
        effect='h and v divergence range',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-hdivrange', '-vdivrange'),
        fields=('beam.hdivrange', 'beam.vdivrange'),
        kind='f',
        c_vars=('hdivrange', 'vdivrange'),
        values='mrad',
        default='0',
        effect='divergence range',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-hdivstep', '-vdivstep'),
        fields=('beam.hdivstep', 'beam.vdivstep'),
        kind='f',
        c_vars=('hdivstep', 'vdivstep'),
        values='mrad',
        default='auto',
        effect='divergence step',
        status='yes',
        notes='exact length (not `-?divsteps`)',
    ),
    Flag(
        BEAM,
        names=('-hdivsteps', '-vdivsteps'),
        fields=('beam.hdivsteps', 'beam.vdivsteps'),
        kind='i',
        c_vars=('hdivsteps', 'vdivsteps'),
        values='n',
        default='auto',
        effect='divergence points',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-divsteps',),
        fields=('beam.hdivsteps', 'beam.vdivsteps'),
        kind='i',
        c_vars=('hdivsteps', 'vdivsteps'),
        values='n',
        default='auto',
        effect='both of the above',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-round_div', '-square_div'),
        fields=('beam.round_div',),
        kind='',
        c_vars=('round_div',),
        values='—',
        default='round',
        effect='clip the divergence grid to an ellipse, or not',
        status='yes',
    ),
    Flag(
        BEAM,
        names=('-sourcefile',),
        fields=('beam.sources',),
        kind='s',
        c_vars=('sourcefilename',),
        values='file (X Y Z I λ per line)',
        default='none',
        effect='explicit sources',
        status='yes',
        notes='the I column is ignored (C too: quirk *source-intensity-ignored*)',
    ),
    Flag(
        BEAM,
        names=('-water',),
        fields=('beam.water_size',),
        kind='f',
        c_vars=('water_size',),
        values='µm',
        default='0',
        effect='water background',
        status='yes',
        notes='quirk *water-background-scaling*',
    ),
    Flag(
        BEAM,
        names=('-stol', '-4stol', '-Q'),
        fields=(),
        kind='s',
        c_vars=('stolfilename', 'stol_file_mult'),
        values='file',
        default='none',
        effect='amorphous F(stol) table',
        status='no effect (C too)',
        notes=(
            'C reads the file (and exits if it is missing or empty) but never uses the table; we do not open it. '
            'Exact lengths'
        ),
    ),
    Flag(
        BEAM,
        names=('-stolout',),
        fields=(),
        kind='s',
        c_vars=('stoloutfilename',),
        values='file',
        default='`output.stol`',
        effect='—',
        status='no effect (C too)',
        notes='never written',
    ),
    Flag(
        BEAM,
        names=('-coherent',),
        fields=(),
        kind='',
        c_vars=('coherent',),
        values='—',
        default='off',
        effect='—',
        status='no effect (C too)',
    ),
    Flag(
        OUTPUTS,
        names=('-floatfile', '-floatimage'),
        fields=(),
        kind='s',
        c_vars=('floatfilename',),
        values='file',
        default='`floatimage.bin`',
        effect='raw float32 image',
        status='yes',
        notes='default mode writes it only when given (all image files below likewise; see next section)',
    ),
    Flag(
        OUTPUTS,
        names=('-intfile', '-intimage'),
        fields=(),
        kind='s',
        c_vars=('intfilename',),
        values='file',
        default='`intimage.img`',
        effect='noiseless SMV (uint16)',
        status='yes',
    ),
    Flag(
        OUTPUTS,
        names=('-noisefile', '-noiseimage'),
        fields=(),
        kind='s',
        c_vars=('noisefilename', 'calculate_noise'),
        values='file',
        default='`noiseimage.img`',
        effect='Poisson-noise SMV',
        status='yes',
        notes='turns noise on; the later of `-noisefile`/`-nonoise` wins',
    ),
    Flag(
        OUTPUTS,
        names=('-nonoise',),
        fields=(),
        kind='',
        c_vars=('calculate_noise',),
        values='—',
        default='noise on',
        effect='no noise image',
        status='yes',
    ),
    Flag(
        OUTPUTS,
        names=('-pgmfile', '-pgmimage'),
        fields=(),
        kind='s',
        c_vars=('pgmfilename', 'write_pgm'),
        values='file',
        default='`image.pgm`',
        effect='8-bit PGM',
        status='yes',
        notes='turns PGM on; the later of `-pgmfile`/`-nopgm` wins',
    ),
    Flag(
        OUTPUTS,
        names=('-nopgm',),
        fields=(),
        kind='',
        c_vars=('write_pgm',),
        values='—',
        default='PGM on',
        effect='no PGM',
        status='yes',
    ),
    Flag(
        OUTPUTS,
        names=('-scale',),
        fields=(),
        kind='f',
        c_vars=('intfile_scale',),
        values='f',
        default='auto: 55000 / max_I',
        effect='SMV int-image scale',
        status='yes',
    ),
    Flag(
        OUTPUTS,
        names=('-pgmscale',),
        fields=(),
        kind='f',
        c_vars=('pgm_scale', 'write_pgm'),
        values='f',
        default='auto: 250 / (5 rmsd)',
        effect='PGM scale',
        status='yes',
        notes='turns PGM on (default mode: writes `image.pgm`)',
    ),
    Flag(
        OUTPUTS,
        names=('-adc',),
        fields=(),
        kind='f',
        c_vars=('adc_offset',),
        values='counts',
        default='40',
        effect='offset added to SMV pixels',
        status='yes',
    ),
    Flag(
        OUTPUTS,
        names=('-seed',),
        fields=(),
        kind='i',
        c_vars=('seed',),
        values='n',
        default='clock',
        effect='noise seed',
        status='yes',
    ),
    Flag(
        OUTPUTS,
        names=('-printout_pixel',),
        fields=(),
        kind='I2',
        c_vars=('printout', 'printout_fpixel', 'printout_spixel'),
        values='F S (fast first)',
        default='none',
        effect="print the C's block for that pixel",
        status='yes',
        notes='strstr: also runs `-printout`',
    ),
    Flag(
        OUTPUTS,
        names=('-printout',),
        fields=(),
        kind='',
        c_vars=('printout',),
        values='—',
        default='off',
        effect="print every pixel's block",
        status='gap',
        notes='ours prints nothing without `-printout_pixel`',
    ),
    Flag(
        OUTPUTS,
        names=('-noprogress', '-progress'),
        fields=(),
        kind='',
        c_vars=('progress_meter',),
        values='—',
        default='—',
        effect='progress bar on stderr (pixels done, samples/s, time left)',
        status='yes',
        notes=(
            'default: shown on a terminal once a render passes 2 s; `-progress` forces it (any stderr, at once), '
            '`-noprogress` silences it; the C prints `N% done` lines on stdout instead'
        ),
    ),
    Flag(
        OWN,
        names=('-F_column',),
        fields=(),
        kind='s',
        c_vars=(),
        values='label',
        default='first amplitude column',
        effect=(
            'amplitude column of an MTZ / mmCIF `-hkl` file (MTZ label or `_refln` tag); an F(+)/F(-) column uses '
            'the pair without Friedel merging; intensities are refused (docs/formats.md)'
        ),
    ),
    Flag(
        OWN,
        names=('-dtype',),
        fields=('dtype',),
        kind='dtype',
        c_vars=(),
        values='`float32` \\| `float64`',
        default='`float32`',
        effect='render precision (files are float32 / uint16 either way)',
    ),
    Flag(
        OWN,
        names=('-device',),
        fields=('device',),
        kind='s',
        c_vars=(),
        values='`cpu` \\| `cuda` \\| `cuda:N`',
        default='`cpu`',
        effect='torch device; `cuda` without a device is an error',
    ),
    Flag(
        OWN,
        names=('-trace_pixel',),
        fields=(),
        kind='I2',
        c_vars=(),
        values='S F (slow first, 0-based)',
        default='none',
        effect=(
            "print `TRACE_PY: name values` lines: the engine's own factors for that pixel, full precision; "
            '`I_pixel_final` is the float-image value'
        ),
    ),
    Flag(
        OWN,
        names=('-trace_panel',),
        fields=(),
        kind='i',
        c_vars=(),
        values='P (0-based)',
        default='0',
        effect='with `-trace_pixel` on a multi-panel detector (`-expt`): the panel of the traced pixel',
    ),
    Flag(
        OWN,
        names=('--c-compat', '-c_compat'),
        fields=('c_compat',),
        kind='',
        c_vars=(),
        values='—',
        default='off',
        effect='the pinned C exactly (serial build): its default files, Fdump reuse, quirks (`docs/c_quirks.md`)',
    ),
    Flag(
        OWN,
        names=('-pix0_override',),
        fields=('pix0_override',),
        kind='',
        c_vars=(),
        values='—',
        default='off',
        effect='place the detector origin by `-pix0_vector` (m) / `-pix0_vector_mm` (mm)',
    ),
    Flag(
        OWN,
        names=('-pngfile',),
        fields=(),
        kind='s',
        c_vars=(),
        values='file',
        default='none',
        effect="8-bit PNG preview, the PGM's pixels",
    ),
    Flag(
        OWN,
        names=('-cbffile',),
        fields=(),
        kind='s',
        c_vars=(),
        values='file',
        default='none',
        effect=(
            "PILATUS-style miniCBF: the `-intfile` pixels (same `-scale`, `-adc`, 0..65535) as int32, byte-offset "
            'compressed; header: pixel size, wavelength, distance, beam centre, exposure, phi (`docs/formats.md`); '
            'one panel only'
        ),
    ),
    Flag(
        OWN,
        names=('-nxsfile',),
        fields=(),
        kind='s',
        c_vars=(),
        values='file',
        default='none',
        effect=(
            'NeXus/NXmx HDF5: the float image (photons, float32, gzip) of every panel, with the detector modules, '
            'beam and spindle in the McStas frame (`docs/formats.md`)'
        ),
    ),
    Flag(
        OWN,
        names=('-outdir',),
        fields=(),
        kind='s',
        c_vars=(),
        values='dir',
        default='none',
        effect='folder for relative output names (created)',
    ),
    Flag(
        OWN,
        names=('-demo',),
        fields=(),
        kind='',
        c_vars=(),
        values='—',
        default='off',
        effect=(
            'built-in case (cubic 100 Å, N 5, 256² pixels, 4 phi steps, 5 mosaic domains) into `./out` or '
            '`-outdir`: `demo_float.bin`, `demo_int.img`, `demo.png`; later flags override the built-in ones'
        ),
    ),
    Flag(
        OWN,
        names=('-expt',),
        fields=('detector.panels',),
        kind='s',
        c_vars=(),
        values='file',
        default='none',
        effect=(
            'detector (one panel or many), beam, goniometer, scan and crystal from a dxtbx experiment list '
            '(`.expt` JSON) or detector JSON (`docs/formats.md`); C flags for the beam, `-phi`, `-osc`, '
            '`-spindle_axis`, `-mat`/`-cell`, `-detector_thick`/`-detector_abs` override it; detector-placement '
            'flags are an error'
        ),
    ),
    Flag(
        OWN,
        names=('-expt_image',),
        fields=(),
        kind='i',
        c_vars=(),
        values='N',
        default='first',
        effect="with `-expt`: the scan's image N sets phi0 and osc",
    ),
    Flag(
        OWN,
        names=('-write_expt',),
        fields=(),
        kind='s',
        c_vars=(),
        values='file',
        default='none',
        effect='write the dxtbx experiment list of what was simulated (our lab frame, mm, Å)',
    ),
    Flag(
        OWN,
        names=('-chunk',),
        fields=('samples_per_chunk',),
        kind='i',
        c_vars=(),
        values='samples',
        default='2²⁰',
        effect='samples per render chunk (bounds memory)',
    ),
)

# config field (or plan option) -> the spellings that set it, in table order
FIELD_FLAGS: dict[str, tuple[str, ...]] = {}
for _flag in FLAGS:
    for _field in _flag.fields:
        FIELD_FLAGS.setdefault(_field, ())
        FIELD_FLAGS[_field] += _flag.names


def flags_setting(field: str) -> str | None:
    """The spellings that set a config field, "/"-joined (None: only the Python API sets it). `field` may name
    several fields of one section, "beam.hdivsteps/vdivsteps/dispsteps"."""
    first, *more = field.split("/")
    section = first.rpartition(".")[0]
    names: dict[str, None] = {}
    for f in [first] + [f"{section}.{m}" if section else m for m in more]:
        names.update(dict.fromkeys(FIELD_FLAGS.get(f, ())))
    return "/".join(names) or None


# spelling -> value kind
C_FLAGS: dict[str, str] = {n: f.kind for f in FLAGS if not f.own for n in f.names}
OWN_FLAGS: dict[str, str] = {n: f.kind for f in FLAGS if f.own for n in f.names}

INTRO = r"""# `nanobragg` command-line reference

`nanobragg` (or `python -m nanobragg_torch`) takes nanoBragg.c's flags (bl831/nanoBragg 455534a), with the
same names, units, defaults and precedence, plus a few flags of its own (last table). Code:
`nanobragg_torch/cflags.py` (validation, then the C's option loop), `cli.py` (flags to SI config),
`outputs.py` (files and statistics). Quirks, and how the default mode differs from `--c-compat`:
`docs/c_quirks.md`.

**How the C reads flags.** One pass over argv; each token is tested against every option with `strstr`, so
a token runs every branch whose name it *contains* (unless a length test or `continue` stops it), and a
later flag overrides an earlier one. A branch that takes values runs only if enough arguments follow; values
are read with `atof`/`atoi` (garbage reads as 0). Unknown tokens are ignored. `-img` and `-mask` are also
read in a pre-pass, so their header values are the starting point that explicit flags override.

**How we differ.** Every token must be a listed spelling, followed by well-formed values; otherwise exit
status 2, one line on stderr naming the flag or file(:line), and no file written. Among accepted tokens the
branch semantics are the C's, side effects included (column "strstr"). Input files that cannot be read or
parsed are errors, also where the C prints a warning and goes on.

Status: **yes** = implemented as in the C; **no effect (C too)** = accepted, changes nothing, as in the C;
**gap** = accepted, but our behaviour falls short of the C's (see the note).
"""

ENVIRONMENT = r"""
Environment: `NB_COMPILE=1` / `0` forces the compiled kernel on / off (default: on when this variant's
package is already cached, or the render has more than 2e7 samples); `NB_KERNEL_CACHE=DIR` moves the
kernel cache (default `~/.cache/nanobragg_torch/kernels`). The first compiled run of a variant (crystal shape,
polarization mode, detector thickness, ... and dtype) builds its package (10-20 s, once per machine); every
later process loads it in milliseconds. See `docs/benchmark.md`.
"""

FILES = r"""## Files written, stdout, exit status

| | default mode | `--c-compat` |
|---|---|---|
| float image | with `-floatfile` | always (`floatimage.bin`) |
| SMV int image | with `-intfile` | always (`intimage.img`) |
| PGM | with `-pgmfile` or `-pgmscale`, unless a later `-nopgm` | unless `-nopgm` (`image.pgm`) |
| noise SMV | with `-noisefile`, unless a later `-nonoise` | unless `-nonoise` (`noiseimage.img`) |
| Fdump | with `-dump FILE` only | written after `-hkl`, read without it |
| miniCBF, NeXus/NXmx (ours) | with `-cbffile`, `-nxsfile` | likewise |

Stdout carries the C's geometry summary and, in its formats, `max_I = ... at ...`, `mean= ... rms= ... rmsd=
...`, `intfile_scale = ...`, `pgm_scale = ...` (when a PGM or PNG is made) and `N photons on noise image (M
overloads)`, followed by `wrote ...` lines instead of the C's `writing ...` lines. The C's advisory `WARNING:
...` lines (a replaced odet_vector, `recommend -oversample N`, mosaic domains, detector attenuation depth) go to
stderr, to stdout (as the C) with `--c-compat`; the progress bar (`-progress`) and the one-off compiled-kernel
build notice go to stderr. `-trace_pixel` output opens with a `#` line giving the pixel in both orders and the
C's `-printout_pixel F S`, and ends with a `#` note when the pixel is nearly dark. With `-dtype float64
--c-compat` the statistics lines and every file are identical to the pinned C's on the cases of
`tests/test_cli_parity.py`. Exit status: 0 on success; 2 on bad input, with one line on stderr.
"""


def markdown() -> str:
    """docs/cli.md."""
    lines = [INTRO.rstrip("\n"), ""]
    for section in dict.fromkeys(f.section for f in FLAGS):
        rows = [f for f in FLAGS if f.section == section]
        lines += [f"## {section}", ""]
        if section == OWN:
            lines += ["| Flag | Values | Default | Effect |", "|---|---|---|---|"]
        else:
            units = " (units)" if section != "Outputs and run control" else ""
            lines += [f"| Flag | Values{units} | Default | Sets | Status | Notes, strstr |", "|---" * 6 + "|"]
        for f in rows:
            names = " ".join(f"`{n}`" for n in f.names)
            cells = [names, f.values, f.default, f.effect] + ([] if f.own else [f.status, f.notes])
            lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
        lines.append("")
        if section == OWN:
            lines.append(ENVIRONMENT.strip("\n"))
            lines.append("")
    lines.append(FILES.rstrip("\n"))
    return "\n".join(lines) + "\n"


USAGE = """usage: nanobragg -mat A.mat -hkl F.hkl [flags...]     render with the C's flags (names, units below)
       nanobragg -cell a b c al be ga -default_F F [flags...]
       nanobragg -demo [flags...]                   a small built-in case into ./out, its inputs beside it
       nanobragg -h | --help                        this listing"""


def _plain(text: str) -> str:
    """A table cell as terminal text (no Markdown escapes or backticks)."""
    return text.replace("\\|", "|").replace("`", "").replace("—", "")


def help_text() -> str:
    """The `--help` listing, grouped by section: spellings and values (units), meaning, default."""
    out = [USAGE]
    for section in dict.fromkeys(f.section for f in FLAGS):
        out += ["", section + ":"]
        for f in FLAGS:
            if f.section != section:
                continue
            head = " ".join(f.names) + (" " + _plain(f.values) if _plain(f.values) else "")
            default = _plain(f.default)
            tail = _plain(f.effect) + (f"  [default: {default}]" if default else "")
            if f.status and f.status != "yes":
                tail += f"  ({f.status})"
            out.append(f"  {head:<36} {tail}" if len(head) <= 36 else f"  {head}\n  {'':<36} {tail}")
    out += ["", "Bad input (an unknown flag, a missing or malformed value) exits with status 2 and writes nothing.",
            "Environment: NB_COMPILE=0|1 forces the compiled kernel off|on; NB_KERNEL_CACHE=DIR moves its cache",
            "(default ~/.cache/nanobragg_torch/kernels); NB_MEMORY_LIMIT caps the memory a render may plan for."]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
