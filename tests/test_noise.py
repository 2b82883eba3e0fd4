"""The C's Poisson-noise image: C-free properties, speed, and byte parity with the C binary."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from nanobragg_torch.noise import noise_image
from nanobragg_torch.rng import CRandom, statics_before_noise

# ---------------------------------------------------------------------------------------------- C-free


def test_zero_image_gives_adc_offset() -> None:
    out, photons, overloads = noise_image(np.zeros((5, 7), np.float32), seed=3)
    assert out.dtype == np.uint16 and out.shape == (5, 7)
    assert np.all(out == 40) and photons == 0.0 and overloads == 0
    out, _, _ = noise_image(np.zeros((2, 2), np.float32), seed=3, adc_offset=0.0)
    assert np.all(out == 0)


def test_draw_order_is_raster_order() -> None:
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 40, (6, 9)).astype(np.float32)
    out, photons, _ = noise_image(img, seed=21, adc_offset=0.0)
    stream = CRandom.from_user_seed(21)
    expected = np.array([stream.poidev(v) for v in img.ravel()]).reshape(img.shape)
    assert np.array_equal(out, expected.astype(np.uint16))
    assert photons == expected.sum()


def test_roi_is_inclusive_and_leaves_zeros() -> None:
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 40, (10, 12)).astype(np.float32)
    roi = (3, 8, 2, 5)  # fast 3..8, slow 2..5 inclusive
    out, photons, _ = noise_image(img, seed=8, roi=roi)
    inside = np.zeros(img.shape, bool)
    inside[2:6, 3:9] = True
    assert np.all(out[~inside] == 0) and np.all(out[inside] >= 40)
    # the ROI draws exactly the stream of the cropped image
    crop, crop_photons, _ = noise_image(img[2:6, 3:9], seed=8)
    assert np.array_equal(out[2:6, 3:9], crop) and photons == crop_photons


def test_overloads_and_casts() -> None:
    img = np.array([[1e7, 0.0, 65500.0, np.nan]], np.float32)
    out, _, overloads = noise_image(img, seed=4)
    assert out[0, 0] == 65535 and out[0, 1] == 40 and out[0, 3] == 0  # NaN -> 0 as the C's cast
    assert overloads == 1 + int(out[0, 2] == 65535)
    # a negative ADC offset wraps modulo 2^16 as the C's (unsigned short) cast of an int32
    out, _, _ = noise_image(np.zeros((1, 2), np.float32), seed=4, adc_offset=-1.0)
    assert np.all(out == 65535)


def test_means_of_the_three_branches() -> None:
    for mean in (2.0, 300.0, 2e6):
        img = np.full((100, 100), mean, np.float32)
        out, photons, _ = noise_image(img, seed=5, adc_offset=0.0)
        assert abs(photons / img.size - mean) < 5 * np.sqrt(mean / img.size)


def test_seed_defaults_and_shared_statics() -> None:
    img = np.full((8, 8), 5.0, np.float32)
    a, _, _ = noise_image(img, seed=0)
    b, _, _ = noise_image(img, seed=-7)  # idum 7 on a fresh table: restarts at 1 like seed 0
    assert np.array_equal(a, b)
    c, _, _ = noise_image(img, seed=-7, statics=statics_before_noise(0.0, 1))
    assert not np.array_equal(a, c)


def test_full_detector_takes_seconds() -> None:
    rng = np.random.default_rng(0)
    img = (rng.exponential(3.0, (2527, 2463)) + 0.1).astype(np.float32)
    img[rng.random(img.shape) < 0.01] = 5000.0
    img[rng.random(img.shape) < 1e-4] = 3e6
    noise_image(img[:4, :4], seed=1)  # compile (or load the numba cache)
    t0 = time.perf_counter()
    out, _, overloads = noise_image(img, seed=1)
    assert time.perf_counter() - t0 < 30.0
    assert overloads > 0 and out.shape == img.shape


# ---------------------------------------------------------------------------------------------- C parity



BASE = ["-cell", "50", "50", "50", "-N", "5", "-default_F", "100", "-detpixels", "48", "-pixel", "0.3",
        "-distance", "60", "-lambda", "1.0", "-oversample", "1", "-nointerpolate", "-nopgm", "-noprogress",
        "-floatfile", "f.bin", "-noisefile", "n.img"]  # fmt: skip

CASES = {
    "low": ["-seed", "1"],  # mostly < 12 photons
    "low-adc0": ["-seed", "77", "-adc", "0"],
    "medium": ["-seed", "5", "-fluence", "1e32"],  # rejection branch, some > 1e6
    "high": ["-seed", "6", "-fluence", "1e36"],  # many Gaussian-branch pixels, overloads
    "roi": ["-seed", "9", "-fluence", "1e33", "-roi", "10", "40", "5", "30"],
    "adc-negative": ["-seed", "11", "-fluence", "1e31", "-adc", "-20"],
    "seed-zero": ["-seed", "0", "-fluence", "1e33"],
}


@pytest.mark.needs_c
@pytest.mark.parametrize("name", sorted(CASES))
def test_noise_matches_c_bytes(c_bin: str, tmp_path, name: str) -> None:
    extra = CASES[name]
    out = subprocess.run([c_bin, *BASE, *extra], cwd=tmp_path, capture_output=True, text=True, check=True,
                         timeout=120).stdout  # fmt: skip
    c_line = next(ln for ln in out.splitlines() if "photons on noise image" in ln)
    float_image = np.fromfile(tmp_path / "f.bin", np.float32).reshape(48, 48)
    c_pixels = np.frombuffer((tmp_path / "n.img").read_bytes()[512:], "<u2").reshape(48, 48)
    opts = dict(zip(extra[::2], extra[1::2], strict=False))
    roi = None
    if "-roi" in extra:
        i = extra.index("-roi")
        roi = tuple(int(v) for v in extra[i + 1 : i + 5])
    ours, photons, overloads = noise_image(
        float_image, int(opts["-seed"]), float(opts.get("-adc", 40.0)), roi
    )
    assert np.array_equal(ours, c_pixels)
    assert f"{photons:.0f} photons on noise image ({overloads} overloads)" == c_line


@pytest.mark.needs_c
def test_negative_seed_continues_mosaic_table(c_bin: str, tmp_path) -> None:
    # -seed -4 gives idum = +4: the C keeps the shuffle table left by the mosaic-domain draws
    subprocess.run([c_bin, *BASE, "-seed", "-4", "-fluence", "1e33"], cwd=tmp_path, capture_output=True,
                   check=True, timeout=120)  # fmt: skip
    float_image = np.fromfile(tmp_path / "f.bin", np.float32).reshape(48, 48)
    c_pixels = np.frombuffer((tmp_path / "n.img").read_bytes()[512:], "<u2").reshape(48, 48)
    ours, _, _ = noise_image(float_image, -4, statics=statics_before_noise(0.0, 1))
    assert np.array_equal(ours, c_pixels)
