"""SMV: header bytes as nanoBragg.c writes them, the int/noise difference, ValueOf/GetFrame reading, fabio."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.errors import InputError
from nanobragg_torch.io import SMVHeader, read_smv, smv_header_text, smv_value, write_smv

_NAMES = ("fpixels spixels pixel_size_m distance_m lambda_m Xbeam Ybeam Fbeam Sbeam detsize_s d1 d2 d3 "
          "ORGX ORGY close_distance_m phi0_rad osc_rad twotheta_rad").split()  # fmt: skip

# The C's own doubles (printed with %a from a scratch build) for
# `-cell 50 50 50 -N 3 -default_F 10 -detpixels 16 -pixel 0.1 -distance 50` plus the extra flags.
C_FIELDS_HEX = {
    "default": (
        "16 16 0x1.a36e2eb1c432dp-14 0x1.999999999999ap-5 0x1.b7cdfd9d7bdbbp-34 0x1.bda5119ce076p-11 "
        "0x1.bda5119ce076p-11 0x1.d7dbf487fcb93p-11 0x1.d7dbf487fcb93p-11 0x1.a36e2eb1c432dp-10 "
        "-0x1.ccccccccccccep-1 0x1.ccccccccccccep-1 -0x1.9p+5 0x1.3p+3 0x1.3p+3 0x1.999999999999ap-5 "
        "0x0p+0 0x0p+0 0x0p+0"
    ),
    "-twotheta 10": (
        "16 16 0x1.a36e2eb1c432dp-14 0x1.936093d341679p-5 0x1.b7cdfd9d7bdbbp-34 0x1.bda5119ce076p-11 "
        "0x1.bda5119ce076p-11 0x1.d7dbf487fcb93p-11 0x1.0e81fe115afe5p-10 0x1.a36e2eb1c432dp-10 "
        "-0x1.ccccccccccccep-1 0x1.c5cca64da9948p-1 -0x1.9140117d7d71bp+5 0x1.3p+3 "
        "0x1.814bddf172ed3p+6 0x1.936093d341679p-5 0x0p+0 0x0p+0 0x1.657184ae74487p-3"
    ),
    "-xds -twotheta 10 -phi 3 -osc 1": (
        "16 16 0x1.a36e2eb1c432dp-14 0x1.9999999999999p-5 0x1.b7cdfd9d7bdbbp-34 0x1.a36e2eb1c432dp-11 "
        "0x1.a36e2eb1c432dp-11 0x1.a36e2eb1c432dp-11 0x1.36b8360548706p-7 0x1.a36e2eb1c432dp-10 "
        "0x1.88cfcf0933b3p+5 -0x1.2f0c5464c33aap+3 0x1.999999999999ap-1 0x1.1p+3 0x1.0fffffffffff8p+3 "
        "0x1.9999999999999p-5 0x1.acee9f37bebd5p-5 0x1.1df46a2529d39p-6 0x1.657184ae74487p-3"
    ),
    "-dials -twotheta -30 -Xbeam 0.3 -Ybeam 1.2": (
        "16 16 0x1.a36e2eb1c432dp-14 0x1.999999999999ap-5 0x1.b7cdfd9d7bdbbp-34 0x1.3a92a30553261p-12 "
        "0x1.3a92a30553261p-10 0x1.a6b50b0f27bb2p-6 0x1.a36e2eb1c432dp-11 0x1.a36e2eb1c432dp-10 "
        "0x1.5735cd251c8b3p+5 -0x1.999999999999ap-1 0x1.9b15cac35685p+4 0x1.0fffffffffff8p+3 0x1.1p+3 "
        "0x1.999999999999ap-5 0x0p+0 0x0p+0 -0x1.0c152382d7365p-1"
    ),
}


def c_fields(key: str) -> dict:
    words = C_FIELDS_HEX[key].split()
    values = [int(words[0]), int(words[1])] + [float.fromhex(w) for w in words[2:]]
    fields = dict(zip(_NAMES, values, strict=True))
    fields["dials_origin"] = (fields.pop("d1"), fields.pop("d2"), fields.pop("d3"))
    return fields


# C output (pinned binary, intimage.img and noiseimage.img alike) for "-twotheta 10", spaces stripped.
C_HEADER_TWOTHETA10 = (
    b"{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=16;\nSIZE2=16;\n"
    b"PIXEL_SIZE=0.1;\nDISTANCE=49.2404;\nWAVELENGTH=1;\nBEAM_CENTER_X=0.85;\nBEAM_CENTER_Y=0.85;\n"
    b"ADXV_CENTER_X=0.9;\nADXV_CENTER_Y=0.568095;\nMOSFLM_CENTER_X=0.981905;\nMOSFLM_CENTER_Y=0.85;\n"
    b"DENZO_X_BEAM=1.03191;\nDENZO_Y_BEAM=0.9;\nDIALS_ORIGIN=-0.9,0.886327,-50.1563\nXDS_ORGX=9.5;\n"
    b"XDS_ORGY=96.3241;\nCLOSE_DISTANCE=49.2404;\nPHI=0;\nOSC_START=0;\nOSC_RANGE=0;\nTWOTHETA=10;\n"
    b"DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f"
)


@pytest.mark.parametrize("variant", ["int", "noise"])
def test_header_matches_c_output(variant):
    text = smv_header_text(c_fields("-twotheta 10"), variant)
    assert len(text) == 512
    assert text == C_HEADER_TWOTHETA10 + b" " * (512 - len(C_HEADER_TWOTHETA10))


def test_header_dataclass_and_mapping_agree():
    fields = c_fields("default")
    assert smv_header_text(SMVHeader.from_mapping(fields)) == smv_header_text(fields)
    assert SMVHeader.from_mapping(fields).as_dict()["dials_origin"] == fields["dials_origin"]


def test_negative_zero_differs_between_int_and_noise():
    fields = {**c_fields("default"), "Sbeam": -0.0, "Fbeam": -0.0}
    int_lines = smv_header_text(fields, "int").split(b"\n")
    noise_lines = smv_header_text(fields, "noise").split(b"\n")
    assert b"DENZO_X_BEAM=-0;" in int_lines and b"DENZO_Y_BEAM=-0;" in int_lines
    assert b"DENZO_X_BEAM=0;" in noise_lines and b"DENZO_Y_BEAM=0;" in noise_lines
    assert b"ADXV_CENTER_X=-0;" in int_lines and b"ADXV_CENTER_X=-0;" in noise_lines
    assert len(int_lines[-1]) == len(noise_lines[-1]) - 2  # two characters fewer, two more spaces of padding
    assert [a for a, b in zip(int_lines[:-1], noise_lines[:-1], strict=True) if a != b] == [
        b"DENZO_X_BEAM=-0;",
        b"DENZO_Y_BEAM=-0;",
    ]


def test_header_field_errors():
    fields = c_fields("default")
    with pytest.raises(ValueError, match="variant"):
        smv_header_text(fields, "float")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing: ORGX"):
        smv_header_text({k: v for k, v in fields.items() if k != "ORGX"})


def test_write_read_round_trip(tmp_path):
    fields = {**c_fields("default"), "fpixels": 5, "spixels": 3}
    image = np.arange(15, dtype=np.uint16).reshape(3, 5) * 4000
    path = tmp_path / "x.img"
    write_smv(path, image, fields, "noise")
    raw = path.read_bytes()
    assert len(raw) == 512 + 2 * 15
    assert raw[512:] == image.astype("<u2").tobytes()
    header, back, header_bytes = read_smv(path)
    np.testing.assert_array_equal(back, image)
    assert back.dtype == np.uint16 and header_bytes == 512
    assert header["SIZE1"] == "5" and header["SIZE2"] == "3" and header["DIALS_ORIGIN"] == "-0.9,0.9,-50"
    assert header["BEAMLINE"] == "fake"


@pytest.mark.parametrize(
    "image",
    [np.zeros((3, 4), dtype=np.uint16), np.full((4, 5), 70000, dtype=np.int64), np.zeros((4, 5), np.float32)],
)
def test_write_refuses_bad_pixels(tmp_path, image):
    fields = {**c_fields("default"), "fpixels": 5, "spixels": 4}
    with pytest.raises(ValueError):
        write_smv(tmp_path / "x.img", image, fields)
    assert not (tmp_path / "x.img").exists()


def test_smv_value_mimics_valueof():
    header = (
        "{\nDISTANCE=100;\nCLOSE_DISTANCE=80;\nPIXEL_SIZE=0.3;\nPIXEL_SIZE=0.2;\nWAVELENGTH=1.5abc;\n"
        "PHI 7;\nOSC=2;\n}"
    )
    assert smv_value(header, "PIXEL_SIZE") == 0.2  # last instance wins
    assert smv_value(header, "DISTANCE") == 80.0  # substring: found inside CLOSE_DISTANCE
    assert smv_value(header, "WAVELENGTH") == 1.5  # atof stops at junk
    assert smv_value(header, "PHI") == 2.0  # no '=' on its line: the next '=' anywhere after it
    assert math.isnan(smv_value(header, "TWOTHETA"))
    assert smv_value("{\nFOO;\n}", "FOO") == 0.0  # no '=' at all after it
    assert smv_value(b"X=1;\0Y=2;", "Y") != smv_value(b"X=1;\0Y=2;", "X")  # text ends at a NUL
    assert math.isnan(smv_value(b"X=1;\0Y=2;", "Y"))


def _smv(header: str, pixels: bytes, header_bytes: int = 512) -> bytes:
    return header.encode().ljust(header_bytes, b" ") + pixels


def test_read_header_bytes_1024_and_duplicates(tmp_path):
    header = ("{\nHEADER_BYTES=  1024;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=3;\n"
              "SIZE2=2;\nSIZE1=4;\n}\f")  # fmt: skip
    path = tmp_path / "a.img"
    path.write_bytes(_smv(header, np.arange(8, dtype="<u2").tobytes(), 1024))
    hdr, image, header_bytes = read_smv(path)
    assert header_bytes == 1024 and image.shape == (2, 4) and hdr["SIZE1"] == "4"
    np.testing.assert_array_equal(image.ravel(), np.arange(8))


def test_read_big_endian_and_detector_dimensions(tmp_path):
    header = "{\nHEADER_BYTES=512;\nDIM=2;\nBYTE_ORDER=big_endian;\nTYPE=unsigned_short;\nSIZE1=0;\n"
    header += "DETECTOR_DIMENSIONS=2;\n}\f"  # SIZE1 = 0 (not absent) selects the fallback, as in GetFrame
    path = tmp_path / "b.img"
    path.write_bytes(_smv(header, np.array([1, 2, 3, 258], dtype=">u2").tobytes()))
    _, image, _ = read_smv(path)
    np.testing.assert_array_equal(image, [[1, 2], [3, 258]])
    _, as_c, _ = read_smv(path, honor_byte_order=False)  # the C never swaps
    np.testing.assert_array_equal(as_c, [[256, 512], [768, 513]])


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"{\nHEADER", "shorter than"),
        (_smv("P5 not smv", b""), "not an SMV"),
        (_smv("{\nHEADER_BYTES=512;\nSIZE1=4;\nSIZE2=4;\n}\f", b"\0" * 30), "truncated"),
        (_smv("{\nHEADER_BYTES=512;\nSIZE1=x;\nSIZE2=4;\n}\f", b""), "image size"),
        (_smv("{\nHEADER_BYTES=4096;\n}\f", b""), "HEADER_BYTES=4096"),
    ],
)
def test_read_errors(tmp_path, content, what):
    path = tmp_path / "bad.img"
    path.write_bytes(content)
    with pytest.raises(InputError, match=what) as info:
        read_smv(path)
    assert str(info.value).startswith(str(path))


def test_fabio_reads_our_smv(tmp_path):
    fabio = pytest.importorskip("fabio")
    fields = {**c_fields("-twotheta 10"), "fpixels": 6, "spixels": 4}
    image = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 2711).astype(np.uint16)
    path = tmp_path / "interop.img"
    write_smv(path, image, fields, "int")
    img = fabio.open(str(path))
    assert img.data.shape == (4, 6)
    np.testing.assert_array_equal(img.data, image)
    h = img.header
    assert float(h["PIXEL_SIZE"]) == pytest.approx(0.1)
    assert float(h["DISTANCE"]) == pytest.approx(49.2404)
    assert float(h["WAVELENGTH"]) == pytest.approx(1.0)
    assert float(h["BEAM_CENTER_X"]) == pytest.approx(0.85)
    assert float(h["BEAM_CENTER_Y"]) == pytest.approx(0.85)
    assert int(h["SIZE1"]) == 6 and int(h["SIZE2"]) == 4
    assert float(h["TWOTHETA"]) == pytest.approx(10.0)


# ---- parity with the C binary (NB_C_BIN) ----

NB_C_BIN = os.environ.get("NB_C_BIN")
BASE_FLAGS = "-cell 50 50 50 -N 3 -default_F 10 -detpixels 16 -pixel 0.1 -distance 50 -seed 1 -noprogress"


def _run_c(cwd: Path, flags: list[str]) -> str:
    run = subprocess.run([NB_C_BIN, *flags], cwd=cwd, check=True, capture_output=True, text=True, timeout=120)
    return run.stdout


@pytest.mark.needs_c
@pytest.mark.parametrize("extra", list(C_FIELDS_HEX))
def test_smv_files_identical_to_c(tmp_path, extra):
    flags = BASE_FLAGS.split() + ([] if extra == "default" else extra.split())
    _run_c(tmp_path, [*flags, "-intfile", "i.img", "-noisefile", "n.img", "-nopgm"])
    fields = c_fields(extra)
    for name, variant in (("i.img", "int"), ("n.img", "noise")):
        c_bytes = (tmp_path / name).read_bytes()
        assert smv_header_text(fields, variant) == c_bytes[:512]
        _, image, _ = read_smv(tmp_path / name)
        write_smv(tmp_path / f"ours_{name}", image, fields, variant)
        assert (tmp_path / f"ours_{name}").read_bytes() == c_bytes


@pytest.mark.needs_c
def test_img_header_read_like_c(tmp_path):
    # -img takes the detector size, pixel, wavelength, beam centre and phi from a header: compare what the C
    # then prints with what smv_value reads (repeated key, junk after a number, a key without '=')
    header = ("{\nHEADER_BYTES=  1024;\nDIM=2;\nBYTE_ORDER=little_endian;\nTYPE=unsigned_short;\nSIZE1=10;\n"
              "SIZE2=7;\nPIXEL_SIZE=0.3;\nPIXEL_SIZE=0.2;\nDISTANCE=100;\nWAVELENGTH=1.5abc;\nBEAM_CENTER_X=0.5;\n"
              "BEAM_CENTER_Y=0.6;\nPHI 7;\nOSC_RANGE=0.25;\n}\f")  # fmt: skip
    (tmp_path / "in.img").write_bytes(_smv(header, np.arange(70, dtype="<u2").tobytes(), 1024))
    hdr, image, size = read_smv(tmp_path / "in.img")
    assert image.shape == (7, 10) and size == 1024
    out = _run_c(tmp_path, ["-img", "in.img", "-cell", "50", "50", "50", "-N", "1", "-default_F", "1",
                            "-nonoise", "-nopgm", "-noprogress", "-intfile", "o.img"])  # fmt: skip
    text = (tmp_path / "in.img").read_bytes()[:1024]
    mm = {k: smv_value(text, k) for k in ("PIXEL_SIZE", "DISTANCE", "BEAM_CENTER_X", "BEAM_CENTER_Y")}
    assert f"distance={mm['DISTANCE'] / 1000:g} " in out
    assert f"pixel={mm['PIXEL_SIZE'] / 1000:g} meters (10x7 pixels)" in out
    assert f"Xbeam={mm['BEAM_CENTER_X'] / 1000:g} Ybeam={mm['BEAM_CENTER_Y'] / 1000:g}" in out
    assert f"lambda0 = {smv_value(text, 'WAVELENGTH') / 1e10:g}" in out
    assert re.search(rf"^phi0 = {smv_value(text, 'PHI'):g}$", out, re.M)  # PHI took OSC_RANGE's value
