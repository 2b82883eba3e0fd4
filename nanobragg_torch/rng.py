"""Bit-exact twins of nanoBragg.c's random generators.

The C draws every random number from one uniform generator, ``ran1``: a Park-Miller minimal-standard
congruential stream (multiplier 16807 modulo 2**31 - 1, Schrage's trick) whose outputs pass through a
32-slot Bays-Durham shuffle table, scaled to a float in (0, 1) and clipped below 1 - 1.2e-7. On top of it sit
``gaussdev`` (polar Box-Muller, keeps a spare deviate), ``poidev`` (Poisson: product of uniforms below a
mean of 12, Lorentzian rejection with ``gammln`` above, a Gaussian approximation above 1e6), ``lorentzdev``,
``mosaic_rotation_umat`` (a random rotation on a spherical cap) and ``umat2misset`` (matrix -> XYZ angles).

C statics. In the C the stream position ``idum`` is a ``long`` owned by the caller (``seed``,
``mosaic_seed``, ``misset_seed``), but the shuffle table of ``ran1`` (``iy``, ``iv[32]``), the spare deviate
of ``gaussdev`` (``iset``, ``gset``) and the cached constants of ``poidev`` (``oldm``, ``sq``, ``alxm``,
``g``) are function statics: one copy per process, shared by all three streams. ``ran1`` rebuilds the
table only when called with ``idum <= 0`` or before its first use. Here that shared state is an explicit
:class:`CStatics` object; each :class:`CRandom` stream owns its ``idum`` and points at a ``CStatics``.
The C program draws in this order: random misset (``misset_seed``), mosaic domains (``mosaic_seed``),
Poisson noise (``seed``). Every stream starts with a negative ``idum`` (the C stores ``-atoi(arg)``) and so
rebuilds the table, which makes the streams independent; only a user seed <= 0 (``idum >= 0``) makes a
stream inherit the table of the stream drawn before it. To emulate that, pass one ``CStatics`` along.

Arithmetic. The C keeps many intermediates in ``float`` and calls the double-precision libm functions;
each operation below is rounded to float32 exactly where the C does it (commented at the site). The
compiled reference uses plain SSE2 (no fused multiply-add), which numba reproduces here.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# ran1 constants (Park-Miller "minimal standard", Bays-Durham shuffle of NTAB slots)
IA = 16807
IM = 2147483647
AM = 1.0 / IM
IQ = 127773
IR = 2836
NTAB = 32
NDIV = 1 + (IM - 1) // NTAB
RNMX = 1.0 - 1.2e-7  # largest value ran1 returns (compared in double, returned as float)


#: The C's default ``mosaic_seed`` as a user would type it (the C holds ``idum = -12345678``).
DEFAULT_MOSAIC_SEED = 12345678

# Lanczos-series coefficients of gammln (Numerical Recipes' ln Gamma)
_GAMMLN_COF = (
    76.18009172947146,
    -86.50532032941677,
    24.01409824083091,
    -1.231739572450155,
    0.1208650973866179e-2,
    -0.5395239384953e-5,
)

# layout of CStatics.floats
_ISET, _GSET, _OLDM, _SQ, _ALXM, _G = range(6)

_f32 = np.float32
_f64 = np.float64


# --------------------------------------------------------------------------------------------------------
# numba cores. Pointer-style arguments: idum is int64[1] (the C's `long *idum`), tab is int64[1 + NTAB]
# (tab[0] = iy, tab[1:] = iv), fs is float32[6] (gaussdev and poidev statics, see _ISET.._G).
# --------------------------------------------------------------------------------------------------------


@njit(cache=True)
def _schrage_step(x: int) -> int:
    """One step x -> 16807*x mod (2**31 - 1) without overflow (Schrage); x > 0 here."""
    k = x // IQ
    x = IA * (x - k * IQ) - IR * k
    if x < 0:
        x += IM
    return x


@njit(cache=True)
def _ran1(idum, tab):
    """Twin of C ``ran1``: returns float32 in (0, 1)."""
    if idum[0] <= 0 or tab[0] == 0:
        # (re)seed: a non-positive idum becomes its negation, but never below 1
        if -idum[0] < 1:
            idum[0] = 1
        else:
            idum[0] = -idum[0]
        # warm up 8 steps, then fill the table from its last slot down
        for j in range(NTAB + 7, -1, -1):
            idum[0] = _schrage_step(idum[0])
            if j < NTAB:
                tab[1 + j] = idum[0]
        tab[0] = tab[1]
    idum[0] = _schrage_step(idum[0])
    j = tab[0] // NDIV
    tab[0] = tab[1 + j]
    tab[1 + j] = idum[0]
    temp = _f32(AM * _f64(tab[0]))  # double product stored in a float
    if _f64(temp) > RNMX:
        return _f32(RNMX)
    return temp


@njit(cache=True)
def _gammln(xx):
    """Twin of C ``gammln``: float32 in, float32 out, evaluated in double."""
    x = _f64(xx)
    y = x
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for c in _GAMMLN_COF:
        y += 1.0
        ser += c / y
    return _f32(-tmp + math.log(2.5066282746310005 * ser / x))


@njit(cache=True)
def _gaussdev(idum, tab, fs):
    """Twin of C ``gaussdev`` (polar Box-Muller, one spare deviate kept in the statics)."""
    if fs[_ISET] != 0:
        fs[_ISET] = 0
        return fs[_GSET]
    while True:
        v1 = _f32(2.0 * _f64(_ran1(idum, tab)) - 1.0)
        v2 = _f32(2.0 * _f64(_ran1(idum, tab)) - 1.0)
        rsq = _f32(_f32(v1 * v1) + _f32(v2 * v2))  # float arithmetic
        if not (rsq >= 1.0 or rsq == 0.0):
            break
    fac = _f32(math.sqrt(-2.0 * math.log(_f64(rsq)) / _f64(rsq)))
    fs[_GSET] = _f32(v1 * fac)
    fs[_ISET] = 1
    return _f32(v2 * fac)


@njit(cache=True)
def poidev(xm, idum, tab, fs):
    """Twin of C ``poidev``: a Poisson deviate of float32 mean ``xm``, returned as float32."""
    if xm > 1.0e6:
        # Gaussian approximation, computed in double
        return _f32(_f64(xm) + math.sqrt(_f64(xm)) * _f64(_gaussdev(idum, tab, fs)))
    if xm < 12.0:
        # multiply uniforms until the product falls to exp(-xm) or below
        if xm != fs[_OLDM]:
            fs[_OLDM] = xm
            fs[_G] = _f32(math.exp(-_f64(xm)))
        g = fs[_G]
        em = _f32(-1.0)
        t = _f32(1.0)
        while True:
            em = _f32(em + _f32(1.0))
            t = _f32(t * _ran1(idum, tab))  # float * float
            if not (t > g):
                break
        return em
    # rejection method under a Lorentzian comparison function
    if xm != fs[_OLDM]:
        fs[_OLDM] = xm
        fs[_SQ] = _f32(math.sqrt(2.0 * _f64(xm)))
        fs[_ALXM] = _f32(math.log(_f64(xm)))
        fs[_G] = _f32(_f32(xm * fs[_ALXM]) - _gammln(_f32(_f64(xm) + 1.0)))
    sq = fs[_SQ]
    alxm = fs[_ALXM]
    g = fs[_G]
    while True:
        while True:
            y = _f32(math.tan(math.pi * _f64(_ran1(idum, tab))))
            em = _f32(_f32(sq * y) + xm)  # float arithmetic
            if not (em < 0.0):
                break
        em = _f32(np.floor(_f64(em)))
        expo = _f32(_f32(_f32(em * alxm) - _gammln(_f32(_f64(em) + 1.0))) - g)  # float arithmetic
        t = _f32(0.9 * (1.0 + _f64(_f32(y * y))) * math.exp(_f64(expo)))
        if not (_f64(_ran1(idum, tab)) > _f64(t)):
            break
    return em


@njit(cache=True)
def _lorentzdev(idum, tab):
    """Twin of C ``lorentzdev``: Lorentzian deviate of FWHM 2 (float32)."""
    return _f32(math.tan(math.pi * (_f64(_ran1(idum, tab)) - 0.5)))


@njit(cache=True)
def _mosaic_rotation_umat(mosaicity, idum, tab, out):
    """Twin of C ``mosaic_rotation_umat``; ``mosaicity`` is float32 radians, ``out`` a (3, 3) float64."""
    # three uniform deviates on [-1, 1], in double
    r1 = 2.0 * _f64(_ran1(idum, tab)) - 1.0
    r2 = 2.0 * _f64(_ran1(idum, tab)) - 1.0
    r3 = 2.0 * _f64(_ran1(idum, tab)) - 1.0
    # isotropic axis (v1, v2, v3); angle from powf() and a float product, as in the C
    xyrad = math.sqrt(1.0 - r2 * r2)
    rot = _f64(_f32(mosaicity * (_f32(1.0 - r3 * r3) ** _f32(1.0 / 3.0))))
    v1 = xyrad * math.sin(math.pi * r1)
    v2 = xyrad * math.cos(math.pi * r1)
    v3 = r2
    # axis-angle (Rodrigues) matrix; the grouping of each product follows the C's rounding order
    c = math.cos(rot)
    s = math.sin(rot)
    omc = 1.0 - c
    w1 = omc * v1
    w2 = omc * v2 * v3
    out[0, 0] = c + omc * (v1 * v1)
    out[0, 1] = w1 * v2 - s * v3
    out[0, 2] = w1 * v3 + s * v2
    out[1, 0] = w1 * v2 + s * v3
    out[1, 1] = c + omc * (v2 * v2)
    out[1, 2] = w2 - s * v1
    out[2, 0] = w1 * v3 - s * v2
    out[2, 1] = w2 + s * v1
    out[2, 2] = c + omc * (v3 * v3)


@njit(cache=True)
def _mosaic_umats(mosaicity, domains, idum, tab):
    out = np.zeros((domains, 3, 3))
    for d in range(domains):
        _mosaic_rotation_umat(mosaicity, idum, tab, out[d])
    if domains > 0:
        # the C forces the first domain to be aligned (after drawing its random numbers)
        out[0, :, :] = 0.0
        for i in range(3):
            out[0, i, i] = 1.0
    return out


# --------------------------------------------------------------------------------------------------------
# Python-facing state objects
# --------------------------------------------------------------------------------------------------------


class CStatics:
    """The C generators' function-static state (one per C process, shared by all streams).

    ``table``: int64[33], ``iy`` then ``iv[32]`` of ``ran1`` (``iy == 0`` means never seeded).
    ``floats``: float32[6], ``iset, gset`` of ``gaussdev`` and ``oldm, sq, alxm, g`` of ``poidev``.
    """

    def __init__(self) -> None:
        self.table = np.zeros(1 + NTAB, dtype=np.int64)
        self.floats = np.zeros(6, dtype=np.float32)
        self.floats[_OLDM] = -1.0


class CRandom:
    """One C random stream: its ``long idum`` plus a (possibly shared) :class:`CStatics`.

    ``CRandom(idum)`` takes the C's internal value; :meth:`from_user_seed` takes what a user types after
    ``-seed``/``-mosaic_seed``/``-misset_seed`` (the C stores ``-atoi(arg)``).
    """

    def __init__(self, idum: int, statics: CStatics | None = None) -> None:
        self._idum = np.array([idum], dtype=np.int64)
        self.statics = statics if statics is not None else CStatics()

    @classmethod
    def from_user_seed(cls, seed: int, statics: CStatics | None = None) -> CRandom:
        return cls(-int(seed), statics)

    @property
    def idum(self) -> int:
        return int(self._idum[0])

    def ran1(self) -> float:
        """Uniform deviate in (0, 1) (a float32 value)."""
        return float(_ran1(self._idum, self.statics.table))

    def gaussdev(self) -> float:
        """Normal deviate, rms 1 (float32 value)."""
        return float(_gaussdev(self._idum, self.statics.table, self.statics.floats))

    def poidev(self, xm: float) -> float:
        """Poisson deviate of mean ``xm`` (rounded to float32 first, as the C's float argument)."""
        return float(poidev(np.float32(xm), self._idum, self.statics.table, self.statics.floats))

    def lorentzdev(self) -> float:
        """Lorentzian deviate with FWHM 2 (float32 value)."""
        return float(_lorentzdev(self._idum, self.statics.table))

    def mosaic_rotation_umat(self, mosaicity: float) -> np.ndarray:
        """Random rotation (3x3 float64) about an isotropic axis by up to ``mosaicity`` radians.

        The C's parameter is a float: ``mosaicity`` is rounded to float32. 90.0 (the value the C's
        ``-misset random`` passes, though radians are meant) gives an essentially random orientation.
        """
        out = np.empty((3, 3))
        _mosaic_rotation_umat(np.float32(mosaicity), self._idum, self.statics.table, out)
        return out


def gammln(xx: float) -> float:
    """ln Gamma(xx) as the C computes it (float32 argument and result, double inside)."""
    return float(_gammln(np.float32(xx)))


# --------------------------------------------------------------------------------------------------------
# program-level helpers
# --------------------------------------------------------------------------------------------------------


def mosaic_umats(
    mosaic_spread_rad: float,
    domains: int,
    mosaic_seed: int = DEFAULT_MOSAIC_SEED,
    statics: CStatics | None = None,
) -> np.ndarray:
    """Mosaic-domain rotation matrices, shape (domains, 3, 3) float64, exactly as the C builds them.

    ``mosaic_seed`` is the user's value (``-mosaic_seed 12345678``, the C default); the stream starts at
    ``idum = -mosaic_seed``. Each domain draws one ``mosaic_rotation_umat``; the first is then replaced by
    the identity. ``mosaic_spread_rad`` is the C's double ``mosaic_spread`` (``deg / RTD``), rounded to
    float32 on the way in as the C's float parameter does. The C also draws (and discards) one matrix when
    it forces a single domain with zero spread. Matrices act on column vectors: ``a = U @ a_phi``.
    """
    rng = CRandom.from_user_seed(mosaic_seed, statics)
    return _mosaic_umats(np.float32(mosaic_spread_rad), int(domains), rng._idum, rng.statics.table)


def umat2misset(umat: np.ndarray) -> tuple[float, float, float]:
    """XYZ missetting angles (radians) of a rotation matrix, as the C's ``umat2misset``.

    Rows are normalised; zero rows are rebuilt from cross products of the others (two passes, as in the
    C); rows are normalised again; then rotx = atan2(u_zy, u_zz), roty = atan2(-u_zx, |(u_zy, u_zz)|),
    rotz = atan2(u_yx, u_xx), with the C's fixed answer when |u_zx| >= 1.
    """
    rows = [[float(v) for v in r] for r in np.asarray(umat, dtype=np.float64).reshape(3, 3)]
    norms = [math.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]) for r in rows]
    for r, m in zip(rows, norms, strict=True):
        if m > 0:
            r[0] /= m
            r[1] /= m
            r[2] /= m
    # when two rows vanish the C substitutes unit rows for them before the cross-product repair
    for i in range(3):
        if norms[i] >= 0 and all(norms[j] <= 0 for j in range(3) if j != i):
            for j in range(3):
                if j != i:
                    rows[j] = [1.0 if k == j else 0.0 for k in range(3)]

    def unit_cross(p: list[float], q: list[float]) -> list[float]:
        c = [p[1] * q[2] - p[2] * q[1], p[2] * q[0] - p[0] * q[2], p[0] * q[1] - p[1] * q[0]]
        m = math.sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2])
        return [v / m for v in c] if m > 0 else c

    for _ in range(2):
        # row i is replaced by (row i+1) x (row i+2), all three computed before any replacement
        crosses = [unit_cross(rows[(i + 1) % 3], rows[(i + 2) % 3]) for i in range(3)]
        rows = [crosses[i] if norms[i] <= 0 else rows[i] for i in range(3)]
    for r in rows:
        m = math.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2])
        if m > 0:
            r[0] /= m
            r[1] /= m
            r[2] /= m
    (uxx, _uxy, _uxz), (uyx, uyy, _uyz), (uzx, uzy, uzz) = rows
    if uzx * uzx < 1.0:
        roty = math.atan2(-uzx, math.sqrt(uzy * uzy + uzz * uzz))
        return (math.atan2(uzy, uzz), roty, math.atan2(uyx, uxx))
    return (math.atan2(1, 1) * 4, math.atan2(1, 1) * 2, math.atan2(rows[0][1], -uyy))


def random_misset(misset_seed: int, statics: CStatics | None = None) -> tuple[float, float, float]:
    """The C's ``-misset random`` angles (rotx, roty, rotz) in radians.

    ``misset_seed`` is the user's value (the C stores ``-atoi(arg)``; without ``-misset_seed`` the C uses
    its time-based noise seed). Reproduces the C passing 90.0 as a *radian* cap size to
    ``mosaic_rotation_umat``, then ``umat2misset``. The C prints these angles in degrees
    (``random orientation misset angles: %f %f %f deg``, degrees = radians * RTD).
    """
    rng = CRandom.from_user_seed(misset_seed, statics)
    return umat2misset(rng.mosaic_rotation_umat(90.0))


def statics_before_noise(
    mosaic_spread_rad: float,
    mosaic_domains: int,
    mosaic_seed: int = DEFAULT_MOSAIC_SEED,
    misset_seed: int | None = None,
) -> CStatics:
    """The shared generator statics as the C leaves them when its noise loop starts.

    Replays the C's earlier draws: the random misset (only if ``misset_seed`` is given, i.e. ``-misset
    random`` was used) and the mosaic domains (always drawn, one matrix per domain, even for a single
    zero-spread domain); pass the resolved spread and domain count. Only a noise ``-seed`` <= 0 can see
    the result; every positive seed rebuilds the table.
    """
    statics = CStatics()
    if misset_seed is not None:
        random_misset(misset_seed, statics)
    mosaic_umats(mosaic_spread_rad, mosaic_domains, mosaic_seed, statics)
    return statics
