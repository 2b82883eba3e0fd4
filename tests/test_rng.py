"""The C-compatible generators: C-free checks of the recurrences and distributions, and C-parity checks."""

from __future__ import annotations

import math
import re
import subprocess

import numpy as np
import pytest

from nanobragg_torch.constants import RTD
from nanobragg_torch.rng import (
    CRandom,
    CStatics,
    gammln,
    mosaic_umats,
    random_misset,
    statics_before_noise,
    umat2misset,
)

M = 2**31 - 1


def reference_ran1(seed_idum: int, count: int) -> list[float]:
    """ran1 written from its description: x -> 16807 x mod (2^31 - 1), 32-slot shuffle, float32 output."""
    x = 1 if -seed_idum < 1 else -seed_idum
    table = [0] * 32
    for j in range(39, -1, -1):  # 8 warm-up steps, then slots 31..0
        x = (16807 * x) % M
        if j < 32:
            table[j] = x
    last = table[0]
    out = []
    for _ in range(count):
        x = (16807 * x) % M
        slot = last // (1 + (M - 1) // 32)
        last = table[slot]
        table[slot] = x
        out.append(min(float(np.float32(last / M)), float(np.float32(1.0 - 1.2e-7))))
    return out


def rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rz @ Ry @ Rx: rotate about x, then y, then z (the C's rotate())."""
    cx, sx, cy, sy, cz, sz = (
        math.cos(rx),
        math.sin(rx),
        math.cos(ry),
        math.sin(ry),
        math.cos(rz),
        math.sin(rz),
    )
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


# ---------------------------------------------------------------------------------------------- C-free


def test_minimal_standard_check_value() -> None:
    # Park & Miller's published check: x_10000 = 1043618065 from x_0 = 1 (Schrage must not overflow)
    from nanobragg_torch.rng import _schrage_step

    x = 1
    for _ in range(10000):
        x = _schrage_step(x)
    assert x == 1043618065


@pytest.mark.parametrize("seed", [1, 7, 12345678, 2**31 - 2, 0])
def test_ran1_matches_recurrence(seed: int) -> None:
    rng = CRandom.from_user_seed(seed)
    got = [rng.ran1() for _ in range(2000)]
    assert got == reference_ran1(-seed, 2000)


def test_regression_anchors() -> None:
    # values of this implementation, whose noise images are byte-identical to the C's (see test_noise.py)
    rng = CRandom.from_user_seed(1)
    assert [rng.ran1() for _ in range(3)] == [0.4159993529319763, 0.09196489304304123, 0.7564104795455933]
    assert rng.idum == 1551901393
    rng = CRandom.from_user_seed(5)
    assert [rng.poidev(3.0) for _ in range(5)] == [5.0, 3.0, 4.0, 2.0, 3.0]
    assert [rng.poidev(50.0) for _ in range(5)] == [41.0, 52.0, 44.0, 39.0, 47.0]
    assert [rng.poidev(5e6) for _ in range(3)] == [5001890.5, 4998530.0, 5001320.5]


def test_ran1_reseed_rules() -> None:
    # idum 0 and any idum > 0 on a never-used table both restart from idum = 1
    a = [CRandom(0).ran1() for _ in range(1)]
    b = [CRandom(5).ran1() for _ in range(1)]
    c = [CRandom(-1).ran1() for _ in range(1)]
    assert a == b == c
    # a positive idum on a used table continues that table (the C's shared statics)
    shared = CStatics()
    first = CRandom(-99, shared)
    [first.ran1() for _ in range(10)]
    cont = CRandom(5, shared)
    alone = CRandom(5)
    assert [cont.ran1() for _ in range(5)] != [alone.ran1() for _ in range(5)]


def test_gammln_close_to_lgamma() -> None:
    for x in (0.5, 1.0, 2.5, 13.0, 101.0, 1e5, 9.99e5):
        assert gammln(x) == pytest.approx(math.lgamma(x), rel=2e-6, abs=2e-6)
        assert gammln(x) == float(np.float32(gammln(x)))  # a float32 value


def test_gaussdev_moments_and_pairing() -> None:
    rng = CRandom.from_user_seed(3)
    z = np.array([rng.gaussdev() for _ in range(40000)])
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.02
    # deviates come in pairs from two uniforms (polar method): the second of a pair draws nothing
    rng2 = CRandom.from_user_seed(3)
    rng2.gaussdev()
    idum = rng2.idum
    rng2.gaussdev()
    assert rng2.idum == idum


def test_lorentzdev_quartiles() -> None:
    rng = CRandom.from_user_seed(11)
    x = np.array([rng.lorentzdev() for _ in range(40000)])
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    assert abs(q2) < 0.03 and abs(q1 + 1) < 0.05 and abs(q3 - 1) < 0.05  # FWHM 2: quartiles at -1, 1


@pytest.mark.parametrize("mean", [0.3, 4.0, 11.9, 12.0, 30.0, 700.0, 2.5e6])
def test_poidev_moments(mean: float) -> None:
    rng = CRandom.from_user_seed(17)
    n = 20000
    x = np.array([rng.poidev(mean) for _ in range(n)])
    assert np.all(x == np.floor(x)) or mean > 1e6  # integers except in the Gaussian branch
    se = math.sqrt(mean / n)
    assert abs(x.mean() - mean) < 5 * se
    assert x.var() == pytest.approx(mean, rel=0.06)


def test_poidev_zero_and_small() -> None:
    rng = CRandom.from_user_seed(2)
    assert {rng.poidev(0.0) for _ in range(100)} == {0.0}


def test_mosaic_umats_are_rotations() -> None:
    spread = 2.0 / RTD
    u = mosaic_umats(spread, 25)
    assert u.shape == (25, 3, 3) and u.dtype == np.float64
    assert np.array_equal(u[0], np.eye(3))
    for m in u:
        assert np.allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx(1.0, abs=1e-12)
        angle = math.acos(max(-1.0, min(1.0, (np.trace(m) - 1) / 2)))
        assert angle <= spread * (1 + 1e-6)
    assert np.array_equal(u, mosaic_umats(spread, 25, 12345678))
    assert not np.array_equal(u, mosaic_umats(spread, 25, 1))
    # the first n domains do not depend on how many follow
    assert np.array_equal(mosaic_umats(spread, 4)[:4], u[:4])


def test_umat2misset_inverts_xyz_rotation() -> None:
    for angles in [(0.1, -0.2, 0.3), (1.0, 0.5, -2.5), (0.0, 0.0, 0.0), (-3.0, 1.2, 3.1)]:
        got = umat2misset(rotation_xyz(*angles))
        assert np.allclose(got, angles, atol=1e-12)


def test_umat2misset_repairs_zero_rows() -> None:
    u = rotation_xyz(0.3, -0.1, 0.7)
    broken = u.copy()
    broken[2] = 0.0  # the z row is rebuilt as x cross y
    assert np.allclose(umat2misset(broken), umat2misset(u), atol=1e-12)
    assert umat2misset(np.zeros((3, 3))) == (0.0, -0.0, 0.0)


def test_random_misset_is_reproducible() -> None:
    a = random_misset(7)
    assert a == random_misset(7) and a != random_misset(8)
    assert random_misset(0) == random_misset(-3)  # idum 0 and idum 3 on a fresh table both restart at 1


def test_statics_before_noise_replays_mosaic() -> None:
    st = statics_before_noise(0.0, 1)
    ref = CStatics()
    mosaic_umats(0.0, 1, 12345678, ref)
    assert np.array_equal(st.table, ref.table)


# ---------------------------------------------------------------------------------------------- C parity



def _run_c(c_bin: str, tmp_path, args: list[str]) -> str:
    res = subprocess.run(
        [c_bin, *args], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120
    )
    return res.stdout


@pytest.mark.needs_c
@pytest.mark.parametrize("seed", [7, 1, 12345, 0, -3, 987654321])
def test_random_misset_matches_c(c_bin: str, tmp_path, seed: int) -> None:
    # -misset_seed must come first: the C's strstr match of "-misset" would otherwise read it as angles
    out = _run_c(
        c_bin,
        tmp_path,
        [
            "-cell",
            "50",
            "50",
            "50",
            "-N",
            "1",
            "-default_F",
            "1",
            "-detpixels",
            "4",
            "-misset_seed",
            str(seed),
            "-misset",
            "random",
            "-nonoise",
            "-nopgm",
            "-noprogress",
        ],
    )
    line = next(ln for ln in out.splitlines() if ln.startswith("random orientation misset angles"))
    ours = "random orientation misset angles: {:f} {:f} {:f} deg".format(
        *(a * RTD for a in random_misset(seed))
    )
    assert line == ours


def _cell_vectors(text: str) -> list[np.ndarray]:
    pat = r"real-space cell vectors \(Angstrom\):\n.*\nX:(.*)\nY:(.*)\nZ:(.*)\n"
    return [
        np.array([[float(v) for v in m.group(i).split()] for i in (1, 2, 3)]) for m in re.finditer(pat, text)
    ]


@pytest.mark.needs_c
@pytest.mark.parametrize(("spread_deg", "seed"), [(2.0, None), (45.0, 4242), (0.5, -5)])
def test_mosaic_umats_match_c(c_bin: str, tmp_path, spread_deg: float, seed: int | None) -> None:
    # With -printout_pixel the C prints the real-space vectors of the *last* mosaic domain (phi = 0):
    # for a 50 A cubic cell that is 50 * U[last] to 8 decimals, i.e. U to 1e-10.
    for n in (2, 3, 5, 8):
        args = [
            "-cell",
            "50",
            "50",
            "50",
            "90",
            "90",
            "90",
            "-N",
            "2",
            "-default_F",
            "100",
            "-mosaic",
            str(spread_deg),
            "-mosaic_domains",
            str(n),
            "-detpixels",
            "6",
            "-pixel",
            "0.5",
            "-distance",
            "60",
            "-oversample",
            "1",
            "-nonoise",
            "-nopgm",
            "-noprogress",
            "-printout_pixel",
            "3",
            "4",
        ]
        if seed is not None:
            args += ["-mosaic_seed", str(seed)]
        vectors = _cell_vectors(_run_c(c_bin, tmp_path, args))
        a0, last = vectors[0], vectors[-1]
        u = mosaic_umats(spread_deg / RTD, n, 12345678 if seed is None else seed)
        assert np.abs(u[-1] @ a0 - last).max() < 6e-9
