"""End statistics, integer and PGM images: C-free rules, and parity with the C's stdout and pixel bytes."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest

from nanobragg_torch.images import (
    format_statistics_lines,
    image_statistics,
    int_image,
    intfile_scale_rule,
    pgm_image,
    pgm_scale_rule,
)
from nanobragg_torch.noise import noise_image

# ---------------------------------------------------------------------------------------------- C-free


def test_statistics_formulas() -> None:
    img = np.array([[1.0, 2.0, 3.0], [4.0, 0.5, 6.0]], np.float32)
    st = image_statistics(img)
    v = img.astype(np.float64).ravel()
    assert st["max_I"] == 6.0 and st["max_pixel"] == (2, 1) and st["n"] == 6
    assert st["mean"] == pytest.approx(v.mean(), rel=1e-15)
    assert st["rms"] == pytest.approx(math.sqrt((v**2).sum() / 5), rel=1e-15)
    assert st["rmsd"] == pytest.approx(math.sqrt(((v - v.mean()) ** 2).sum() / 5), rel=1e-15)
    # position: Fdet/Sdet of the last sub-pixel of the max pixel
    st = image_statistics(img, oversample=3, pixel_size=0.3e-3)
    sub = 0.3e-3 / 3
    assert st["max_I_x"] == sub * (2 * 3 + 2) + sub / 2 and st["max_I_y"] == sub * (1 * 3 + 2) + sub / 2


def test_statistics_mask_and_roi_semantics() -> None:
    img = np.array([[9.0, 1.0, 2.0], [0.0, 3.0, 4.0]], np.float32)
    mask = np.array([[1, 1, 1], [0, 1, 1]], np.uint16)  # masked pixel holds 0 as in the C
    st = image_statistics(img, mask=mask)
    kept = np.array([9.0, 1.0, 2.0, 3.0, 4.0])
    assert st["n"] == 5 and st["mean"] == pytest.approx(kept.mean())
    # rmsd runs over every pixel, masked ones included, about the mean of the kept ones
    allv = img.astype(np.float64).ravel()
    assert st["rmsd"] == pytest.approx(math.sqrt(((allv - kept.mean()) ** 2).sum() / 5))
    st = image_statistics(img, roi=(1, 2, 0, 1))  # fast 1..2, slow 0..1
    assert st["max_I"] == 4.0 and st["n"] == 4 and st["max_pixel"] == (2, 1)


def test_statistics_edge_cases() -> None:
    st = image_statistics(np.zeros((3, 3), np.float32))
    assert st["max_I"] == 0.0 and st["max_pixel"] is None and st["max_I_x"] == 0.0
    st = image_statistics(np.full((1, 1), 2.0, np.float32))  # a single pixel: divide by (2 - 1)
    assert st["rms"] == 2.0 and st["rmsd"] == 0.0
    # equal maxima: the first one in raster order wins (strict >)
    st = image_statistics(np.array([[5.0, 5.0]], np.float32))
    assert st["max_pixel"] == (0, 0)


def test_sum_of_squares_is_float32_per_pixel() -> None:
    v = np.float32(4097.0001)
    img = np.full((1, 3), v, np.float32)
    st = image_statistics(img)
    sq = float(np.float32(v * v))
    assert st["rms"] == math.sqrt(3 * sq / 2)


def test_int_image_rules() -> None:
    img = np.array([[0.0, 1.0, 2.0, 1000.0]], np.float32)
    out, used = int_image(img)  # auto: 55000 / max
    assert used == 55.0 and out.dtype == np.uint16
    assert list(out[0]) == [40, 95, 150, 55040]
    out, used = int_image(img, scale=100.0, adc_offset=0.0)
    assert used == 100.0 and list(out[0]) == [0, 100, 200, 65535]
    # floorf() rounds test + 0.5 to float32 first: 100.499999 + 0.5 becomes 101.0f, so 101 (not 100)
    out, _ = int_image(np.zeros((1, 1), np.float32), scale=1.0, adc_offset=100.499999)
    assert out[0, 0] == 101
    out, _ = int_image(np.array([[-5.0, np.nan]], np.float32), scale=1.0, adc_offset=0.0)
    assert list(out[0]) == [0, 0]
    out, _ = int_image(img, scale=1.0, roi=(1, 2, 0, 0))
    assert list(out[0]) == [0, 41, 42, 0]
    assert intfile_scale_rule(None, 0.0) == 1.0 and intfile_scale_rule(-1.0, 2.0) == 27500.0


def test_pgm_image_rules() -> None:
    img = np.array([[0.0, 0.99, 10.6, 1e6, -1.5]], np.float32)
    out, used = pgm_image(img, pgm_scale=1.0, rmsd=3.0, intfile_scale=2.0)
    assert used == 1.0 and out.dtype == np.uint8
    assert list(out[0]) == [0, 0, 10, 255, 255]  # truncation; a negative wraps like the C's cast
    assert pgm_scale_rule(None, 5.0, 7.0) == 10.0 and pgm_scale_rule(0.0, 0.0, 7.0) == 7.0
    out, _ = pgm_image(img, 1.0, 0.0, 1.0, roi=(2, 3, 0, 0))
    assert list(out[0]) == [0, 0, 10, 255, 0]


def test_format_statistics_lines() -> None:
    st = {"max_I": 2042.3, "max_I_x": 0.00746429, "max_I_y": 0.0075, "mean": 87.8214, "rms": 263.165,
          "rmsd": 248.064}  # fmt: skip
    assert format_statistics_lines(st, 26.9304, 0.2, 81377.4, 3) == [
        "max_I = 2042.3  at 0.00746429 0.0075",
        "mean= 87.8214 rms= 263.165 rmsd= 248.064",
        "intfile_scale = 26.9304",
        "pgm_scale = 0.2",
        "81377 photons on noise image (3 overloads)",
    ]
    assert len(format_statistics_lines(st)) == 2


# ---------------------------------------------------------------------------------------------- C parity



W, H = 40, 36
BASE = ["-cell", "50", "50", "50", "-N", "5", "-default_F", "100", "-detpixels_f", str(W), "-detpixels_s",
        str(H), "-detsize", "12", "-pixel", "0.3", "-distance", "60", "-lambda", "1.0", "-nointerpolate",
        "-noprogress", "-floatfile", "f.bin", "-intfile", "i.img", "-pgmfile", "p.pgm", "-noisefile", "n.img",
        "-seed", "3"]  # fmt: skip

CASES = {
    "plain": [],
    "oversample3": ["-oversample", "3"],
    "roi": ["-roi", "5", "30", "7", "33", "-oversample", "2"],
    "scale-adc": ["-scale", "0.37", "-adc", "10"],
    "pgmscale": ["-pgmscale", "2.5", "-adc", "0"],
    "bright": ["-fluence", "1e34", "-scale", "1e-3"],
    "mask": ["-mask", "mask.img", "-oversample", "2"],
    "mask-roi-auto": ["-mask", "mask.img", "-roi", "3", "35", "2", "30", "-pgmscale", "-1", "-scale", "0"],
}


def _flag(extra: list[str], name: str, cast=float, default=None):
    return cast(extra[extra.index(name) + 1]) if name in extra else default


@pytest.mark.needs_c
@pytest.mark.parametrize("name", list(CASES))
def test_outputs_match_c(c_bin: str, tmp_path, name: str) -> None:
    extra = CASES[name]
    mask = None
    if "-mask" in extra:
        # a mask file: the C's own int-image header (same geometry) with our 0/1 pixels
        subprocess.run([c_bin, *BASE, "-oversample", "1"], cwd=tmp_path, capture_output=True, check=True)
        header = (tmp_path / "i.img").read_bytes()[:512]
        mask = (np.random.default_rng(0).random((H, W)) > 0.2).astype("<u2")
        (tmp_path / "mask.img").write_bytes(header + mask.tobytes())
    out = subprocess.run([c_bin, *BASE, *extra], cwd=tmp_path, capture_output=True, text=True, check=True,
                         timeout=120).stdout.splitlines()  # fmt: skip
    c_lines = [ln for ln in out if ln.startswith(("max_I =", "mean=", "intfile_scale =", "pgm_scale ="))]
    c_lines += [ln for ln in out if "photons on noise image" in ln]
    oversample = _flag(extra, "-oversample", int)
    if oversample is None:
        oversample = int(next(ln for ln in out if "pixel oversample steps" in ln).split("x")[0])
    roi = tuple(extra[extra.index("-roi") + 1 : extra.index("-roi") + 5]) if "-roi" in extra else None
    roi = tuple(int(v) for v in roi) if roi else None
    adc = _flag(extra, "-adc", float, 40.0)

    img = np.fromfile(tmp_path / "f.bin", np.float32).reshape(H, W)
    st = image_statistics(img, roi, mask, oversample, 0.3e-3)
    ints, int_scale = int_image(img, _flag(extra, "-scale"), adc, roi, st["max_I"])
    pgm, pgm_scale = pgm_image(img, _flag(extra, "-pgmscale"), st["rmsd"], int_scale, roi)
    noisy, photons, overloads = noise_image(img, 3, adc, roi)

    assert format_statistics_lines(st, int_scale, pgm_scale, photons, overloads) == c_lines
    assert np.array_equal(ints, np.frombuffer((tmp_path / "i.img").read_bytes()[512:], "<u2").reshape(H, W))
    assert np.array_equal(
        pgm, np.frombuffer((tmp_path / "p.pgm").read_bytes()[-H * W :], np.uint8).reshape(H, W)
    )
    assert np.array_equal(noisy, np.frombuffer((tmp_path / "n.img").read_bytes()[512:], "<u2").reshape(H, W))
