"""PGM and raw float images: exact bytes, round trips, size checks."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from nanobragg_torch.errors import InputError
from nanobragg_torch.io import pgm_bytes, read_float_image, read_pgm, write_float_image, write_pgm


def test_pgm_exact_bytes(tmp_path):
    image = np.array([[0, 1, 255], [10, 32, 200]], dtype=np.uint8)
    path = tmp_path / "p.pgm"
    write_pgm(path, image, 1131.8631)
    assert path.read_bytes() == b"P5\n3 2\n# pixels scaled by 1131.86\n255\n" + image.tobytes()
    np.testing.assert_array_equal(read_pgm(path), image)
    assert pgm_bytes(image, 2.0e-7).split(b"\n")[2] == b"# pixels scaled by 2e-07"


def test_pgm_errors(tmp_path):
    with pytest.raises(ValueError):
        pgm_bytes(np.zeros((2, 2), dtype=np.uint16), 1.0)
    path = tmp_path / "bad.pgm"
    path.write_bytes(b"P5\n3 2\n255\n\x00")
    with pytest.raises(InputError, match="truncated"):
        read_pgm(path)
    path.write_bytes(b"P2\n1 1\n255\n0")
    with pytest.raises(InputError, match=rf"^{path}:1: not a binary PGM"):
        read_pgm(path)


def test_float_round_trip(tmp_path):
    image = np.linspace(-1, 1e6, 12, dtype=np.float64).reshape(3, 4)
    path = tmp_path / "f.bin"
    write_float_image(path, image)
    assert path.read_bytes() == image.astype("<f4").tobytes()
    back = read_float_image(path, (3, 4))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, image.astype(np.float32))
    assert read_float_image(path, 12).shape == (12,)


def test_float_size_mismatch(tmp_path):
    path = tmp_path / "f.bin"
    write_float_image(path, np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(InputError, match="expected 52 bytes|expected 52"):
        read_float_image(path, (13,))


# ---- parity with the C binary (NB_C_BIN) ----

NB_C_BIN = os.environ.get("NB_C_BIN")


@pytest.mark.needs_c
@pytest.mark.parametrize("extra", ["", "-xds -twotheta 10 -detpixels_x 20 -detpixels_y 12"])
def test_float_and_pgm_identical_to_c(tmp_path, extra):
    flags = (
        "-cell 50 50 50 -N 3 -default_F 10 -detpixels 16 -pixel 0.1 -distance 50 -noprogress -nonoise "
        "-floatfile f.bin -pgmfile p.pgm -intfile i.img " + extra
    ).split()
    subprocess.run([NB_C_BIN, *flags], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    spixels, fpixels = (12, 20) if extra else (16, 16)
    c_float = (tmp_path / "f.bin").read_bytes()
    image = read_float_image(tmp_path / "f.bin", (spixels, fpixels))
    write_float_image(tmp_path / "ours.bin", image)
    assert (tmp_path / "ours.bin").read_bytes() == c_float

    c_pgm = (tmp_path / "p.pgm").read_bytes()
    scale = float(c_pgm.split(b"\n")[2].rsplit(b" ", 1)[1])
    pixels = read_pgm(tmp_path / "p.pgm")
    assert pixels.shape == (spixels, fpixels)
    assert pgm_bytes(pixels, scale) == c_pgm
    # the C's conversion (clip at 255, truncate), from the float image and the printed scale
    np.testing.assert_array_equal(np.minimum(image * np.float64(scale), 255.0).astype(np.uint8), pixels)


def test_png_preview_holds_the_pgm_pixels(tmp_path, monkeypatch):
    """-pngfile: Pillow decodes an 8-bit greyscale image equal to the -pgmfile pixels of the same run."""
    from PIL import Image

    from nanobragg_torch.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["-cell", "70", "80", "90", "90", "90", "90", "-N", "3", "-default_F", "100", "-misset", "10", "20", "30",
            "-detpixels_f", "24", "-detpixels_s", "20", "-pgmfile", "p.pgm", "-pngfile", "p.png", "-noprogress"]
    assert main(argv) == 0
    with Image.open(tmp_path / "p.png") as png:
        assert png.mode == "L" and png.size == (24, 20)
        np.testing.assert_array_equal(np.asarray(png), read_pgm(tmp_path / "p.pgm"))
