"""CBF (`-cbffile`) and NeXus/NXmx (`-nxsfile`) images: written through the API and the CLI, read back with
other people's readers (fabio for both; the `nxmx` package for the NeXus geometry) and checked field by
field against values worked out here from the flags (docs/formats.md).

Independent expectations: the MOSFLM convention puts the beam along +x with fdet = (0, 0, 1),
sdet = (0, -1, 0), pix0 = (d, Sbeam, -Fbeam) where Fbeam = Ybeam + px/2, Sbeam = Xbeam + px/2 (nanoBragg.c's
set-up); NeXus's McStas frame has the beam along +z and y up, so a MOSFLM vector (x, y, z) is (-z, y, x) there
(the C's DIALS_ORIGIN mapping followed by dxtbx's imgCIF-to-McStas diag(-1, 1, -1)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

fabio = pytest.importorskip("fabio")
h5py = pytest.importorskip("h5py")
nxmx = pytest.importorskip("nxmx")

from nanobragg_torch.cli import main  # noqa: E402
from nanobragg_torch.config import DetectorConfig, PanelConfig, SimulationConfig  # noqa: E402
from nanobragg_torch.errors import InputError  # noqa: E402
from nanobragg_torch.io.cbf import CBFHeader, cbf_bytes, write_cbf  # noqa: E402
from nanobragg_torch.io.floatimage import read_float_image  # noqa: E402
from nanobragg_torch.io.nexus import (  # noqa: E402
    BeamGeometry,
    GoniometerGeometry,
    mcstas_rotation,
    write_nxmx,
)
from nanobragg_torch.io.smv import read_smv  # noqa: E402

DEG = math.pi / 180.0


def to_mcstas(v) -> np.ndarray:
    """A MOSFLM-frame vector in the McStas frame (module docstring)."""
    x, y, z = v
    return np.array([-z, y, x], dtype=np.float64)


def nxmx_modules(path: Path):
    """Per module, from the `nxmx` reader alone: (origin m, fast unit, slow unit, pixel size m, slices), in
    the order of their hyperslabs (data_origin) in the data."""
    out = []
    with h5py.File(path, "r") as f:
        entry = nxmx.NXmx(f).entries[0]
        det = entry.instruments[0].detectors[0]
        for m in det.modules:
            chain = nxmx.get_dependency_chain(m.fast_pixel_direction.depends_on)
            A = nxmx.get_cumulative_transformation(chain)[0]  # mm, as nxmx works
            origin_mm = A[:3, 3] + m.fast_pixel_direction.offset.to("mm").magnitude
            px_f = m.fast_pixel_direction[()].to("m").magnitude.item()
            px_s = m.slow_pixel_direction[()].to("m").magnitude.item()
            assert px_f == px_s
            sl = tuple(slice(int(o), int(o + n)) for o, n in zip(m.data_origin, m.data_size, strict=True))
            out.append((origin_mm / 1000.0, np.asarray(m.fast_pixel_direction.vector),
                        np.asarray(m.slow_pixel_direction.vector), px_f, sl))
    return sorted(out, key=lambda m: tuple(s.start for s in m[4]))


def pixel_centre(module, s: int, f: int) -> np.ndarray:
    origin, fast, slow, px, _ = module
    return origin + (f + 0.5) * px * fast + (s + 0.5) * px * slow


# --- CBF ------------------------------------------------------------------------------------------------------


def test_cbf_api_round_trip_through_fabio(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 65536, size=(7, 11)).astype(np.int32)
    img[0, 0], img[6, 10] = 0, 65535
    h = CBFHeader(pixel_size=172e-6, wavelength=0.9794e-10, distance=0.2503, beam_fast=0.1376, beam_slow=0.2211,
                  exposure_time=0.25, phi_start=12.5 * DEG, phi_range=0.2 * DEG, polarization=0.99)
    path = tmp_path / "x.cbf"
    write_cbf(path, img, h)
    im = fabio.open(str(path))
    assert type(im).__name__ == "CbfImage"
    assert im.data.dtype == np.int32 and np.array_equal(im.data, img)
    ph = im.pilatus_headers._dict
    assert ph["Pixel_size"] == pytest.approx((172e-6, 172e-6))
    assert ph["Wavelength"] == pytest.approx(0.9794, abs=1e-6)
    assert ph["Detector_distance"] == pytest.approx(0.2503, abs=1e-6)
    assert ph["Beam_xy"] == pytest.approx((0.1376 / 172e-6, 0.2211 / 172e-6), abs=1e-3)
    assert ph["Exposure_time"] == pytest.approx(0.25)
    assert ph["Start_angle"] == pytest.approx(12.5, abs=1e-6)
    assert ph["Angle_increment"] == pytest.approx(0.2, abs=1e-6)
    assert ph["Polarization"] == pytest.approx(0.99)
    assert im.header["X-Binary-Element-Type"] == "signed 32-bit integer"
    assert path.read_bytes().startswith(b"###CBF: VERSION")


def test_cbf_read_by_cbflib(tmp_path: Path) -> None:
    """CBFlib itself (its Python binding pycbf, when installed) reads the pixels, checking the MD5 digest."""
    pycbf = pytest.importorskip("pycbf")
    img = (np.arange(35, dtype=np.int32).reshape(5, 7) - 3) * 977
    write_cbf(tmp_path / "p.cbf", img, CBFHeader(1e-4, 1e-10, 0.1, 1e-3, 2e-3))
    h = pycbf.cbf_handle_struct()
    h.read_file(str(tmp_path / "p.cbf"), pycbf.MSG_DIGEST)
    h.select_datablock(0)
    h.find_category("array_data")
    h.find_column("header_convention")
    assert h.get_value() in ("PILATUS_1.2", b"PILATUS_1.2")
    h.find_column("data")
    params = h.get_integerarrayparameters_wdims_fs()
    assert params[2] == 4 and params[9:11] == [7, 5]  # element size, fast and slow dimensions
    got = np.frombuffer(h.get_integerarray_as_string(), dtype="<i4").reshape(5, 7)
    assert np.array_equal(got, img)


@pytest.mark.parametrize(
    "image, message",
    [(np.zeros((2, 3), np.float32), "integer"), (np.full((2, 3), 2**31, np.int64), "32-bit"),
     (np.zeros(6, np.int32), "2-D")],
)
def test_cbf_refuses_what_it_cannot_hold(image: np.ndarray, message: str) -> None:
    h = CBFHeader(pixel_size=1e-4, wavelength=1e-10, distance=0.1, beam_fast=0.0, beam_slow=0.0)
    with pytest.raises(ValueError, match=message):
        cbf_bytes(image, h)


# --- NeXus through the API ------------------------------------------------------------------------------------


def test_mcstas_rotation_puts_the_beam_on_z() -> None:
    np.testing.assert_array_equal(mcstas_rotation((1, 0, 0)), np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]]))
    for beam in [(0, 0, 1), (0, 0, -1), (1, 1, 0.2), (-1, 0, 0), (0.3, -0.2, 0.9)]:
        R = mcstas_rotation(beam)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(R @ (np.asarray(beam) / np.linalg.norm(beam)), [0, 0, 1], atol=1e-14)


def test_nexus_multi_panel_round_trip(tmp_path: Path) -> None:
    """Three panels (PanelConfig, as a multi-panel detector gives them) read back by nxmx and fabio."""
    cfgs = (
        PanelConfig(origin=(0.1, 0.01, -0.02), fast_axis=(0, 0, 1), slow_axis=(0, -1, 0), pixel_size=1e-4,
                    fpixels=5, spixels=4, name="q0"),
        PanelConfig(origin=(0.12, -0.03, 0.01), fast_axis=(0, 1, 0), slow_axis=(0, 0, 1), pixel_size=1e-4,
                    fpixels=5, spixels=4, name="q1"),
        PanelConfig(origin=(0.09, 0.0, 0.0), fast_axis=(0, 0.6, 0.8), slow_axis=(0, -0.8, 0.6), pixel_size=1e-4,
                    fpixels=5, spixels=4, name=""),
    )
    images = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5) * 0.5
    beam = BeamGeometry(wavelength=1.3e-10, direction=(1, 0, 0), polarization=(0, 0, 1), polarization_fraction=0.9)
    path = tmp_path / "multi.nxs"
    write_nxmx(path, images, cfgs, beam, GoniometerGeometry((0, 0, 1), 0.0, 0.1 * DEG))
    modules = nxmx_modules(path)
    assert len(modules) == 3
    with h5py.File(path, "r") as f:
        data = f["/entry/data/data"][()]
        assert data.shape == (1, 3, 4, 5) and data.dtype == np.float32
        names = sorted(k for k, v in f["/entry/instrument/detector"].items() if v.attrs.get("NX_class") ==
                       "NXdetector_module")
        assert names == ["module2", "q0", "q1"]
    for p, (cfg, module) in enumerate(zip(cfgs, modules, strict=True)):
        np.testing.assert_array_equal(data[0][module[4]][0], images[p])  # data_origin/data_size: this panel
        for s, f in [(0, 0), (3, 4), (2, 1)]:
            ours = np.asarray(cfg.origin) + (f + 0.5) * 1e-4 * np.asarray(cfg.fast_axis) + (s + 0.5) * 1e-4 * (
                np.asarray(cfg.slow_axis))
            np.testing.assert_allclose(pixel_centre(module, s, f), to_mcstas(ours), atol=1e-12)
    im = fabio.open(str(path))
    assert np.array_equal(im.data, images)


def test_nexus_refuses_images_that_do_not_match_the_panels(tmp_path: Path) -> None:
    pan = PanelConfig((0.1, 0, 0), (0, 0, 1), (0, -1, 0), 1e-4, fpixels=5, spixels=4)
    beam = BeamGeometry(1e-10, (1, 0, 0))
    gon = GoniometerGeometry((0, 0, 1), 0.0, 0.0)
    with pytest.raises(ValueError, match="not \\(spixels, fpixels\\)"):
        write_nxmx(tmp_path / "x.nxs", np.zeros((5, 4)), [pan], beam, gon)
    with pytest.raises(ValueError, match="2 panel"):
        write_nxmx(tmp_path / "x.nxs", np.zeros((4, 5)), [pan, pan], beam, gon)
    assert not list(tmp_path.iterdir())


def test_nexus_bitshuffle_compression_reads_back(tmp_path: Path) -> None:
    pytest.importorskip("hdf5plugin")
    pan = PanelConfig((0.1, 0, 0), (0, 0, 1), (0, -1, 0), 1e-4, fpixels=64, spixels=32)
    img = np.random.default_rng(1).poisson(5.0, (32, 64)).astype(np.float32)
    write_nxmx(tmp_path / "b.nxs", img, [pan], BeamGeometry(1e-10, (1, 0, 0)),
               GoniometerGeometry((0, 0, 1), 0.0, 0.0), compression="bitshuffle")
    assert np.array_equal(fabio.open(str(tmp_path / "b.nxs")).data, img)


# --- through the CLI ------------------------------------------------------------------------------------------

CASE = ["-cell", "70", "80", "90", "90", "90", "90", "-N", "3", "-default_F", "100", "-misset", "10", "20", "30",
        "-lambda", "1.2", "-distance", "80", "-pixel", "0.1", "-detpixels_f", "24", "-detpixels_s", "20",
        "-Xbeam", "1.0", "-Ybeam", "1.5", "-phi", "10", "-osc", "0.5", "-exposure", "2", "-polar", "0.8"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    rc = main([*CASE, "-floatfile", str(out / "f.bin"), "-intfile", str(out / "i.img"), "-cbffile",
               str(out / "i.cbf"), "-nxsfile", str(out / "f.nxs"), "-noprogress"])
    assert rc == 0
    return out


def test_cli_cbf_holds_the_int_image_and_its_header(rendered: Path) -> None:
    header, smv, _ = read_smv(rendered / "i.img")
    im = fabio.open(str(rendered / "i.cbf"))
    assert im.data.dtype == np.int32 and np.array_equal(im.data, smv.astype(np.int32))
    ph = im.pilatus_headers._dict
    # MOSFLM: Fbeam = Ybeam + px/2 = 1.55 mm, Sbeam = Xbeam + px/2 = 1.05 mm (in pixels: 15.5, 10.5)
    assert ph["Beam_xy"] == pytest.approx((15.5, 10.5), abs=1e-3)
    assert float(header["ADXV_CENTER_X"]) == pytest.approx(1.55)  # the SMV header agrees
    assert ph["Pixel_size"] == pytest.approx((1e-4, 1e-4))
    assert ph["Wavelength"] == pytest.approx(1.2)
    assert ph["Detector_distance"] == pytest.approx(0.08)
    assert ph["Exposure_time"] == pytest.approx(2.0)
    assert ph["Start_angle"] == pytest.approx(10.0)
    assert ph["Angle_increment"] == pytest.approx(0.5)
    assert ph["Polarization"] == pytest.approx(0.8)


def test_cli_nexus_geometry_read_back_with_nxmx(rendered: Path) -> None:
    px, d, fbeam, sbeam = 1e-4, 0.08, 1.55e-3, 1.05e-3
    (module,) = nxmx_modules(rendered / "f.nxs")
    assert module[3] == pytest.approx(px)
    np.testing.assert_allclose(module[1], to_mcstas((0, 0, 1)), atol=1e-15)  # fdet
    np.testing.assert_allclose(module[2], to_mcstas((0, -1, 0)), atol=1e-15)  # sdet
    for s, f in [(0, 0), (19, 23), (10, 15)]:
        mosflm = np.array([d, sbeam - (s + 0.5) * px, -fbeam + (f + 0.5) * px])
        np.testing.assert_allclose(pixel_centre(module, s, f), to_mcstas(mosflm), atol=1e-12)
    # the direct beam (McStas +z) meets the detector at (Fbeam, Sbeam) from the corner of pixel (0, 0)
    origin, fast, slow = module[0], module[1], module[2]
    normal = np.cross(fast, slow)
    hit = np.array([0.0, 0.0, np.dot(origin, normal) / normal[2]])
    assert np.dot(hit - origin, fast) == pytest.approx(fbeam, abs=1e-12)
    assert np.dot(hit - origin, slow) == pytest.approx(sbeam, abs=1e-12)
    with h5py.File(rendered / "f.nxs", "r") as fh:
        entry = nxmx.NXmx(fh).entries[0]
        assert entry.definition == "NXmx"
        inst = entry.instruments[0]
        assert inst.beams[0].incident_wavelength.to("angstrom").magnitude == pytest.approx(1.2)
        det = inst.detectors[0]
        assert det.depends_on.path == "/entry/instrument/detector/transformations/detector_arm"
        assert det.count_time.to("s").magnitude == pytest.approx(2.0)
        axes = nxmx.get_rotation_axes(nxmx.get_dependency_chain(entry.samples[0].depends_on))
        np.testing.assert_allclose(axes.axes[0], to_mcstas((0, 0, 1)))  # MOSFLM spindle along +z
        assert axes.angles[0] == pytest.approx(10.0)
        phi = entry.samples[0].depends_on
        assert phi.increment_set.to("deg").magnitude == pytest.approx(0.5)
        assert phi.end[0].to("deg").magnitude == pytest.approx(10.5)
        stokes = fh["/entry/instrument/beam/incident_polarization_stokes"][()]
        # E along MOSFLM z = McStas -x: linear polarization 0.8 along x (Q = +0.8)
        np.testing.assert_allclose(stokes, [1.0, 0.8, 0.0, 0.0], atol=1e-12)
        data = det.data
    floats = read_float_image(rendered / "f.bin", (20, 24))
    assert data.shape == (1, 20, 24) and np.array_equal(data[0], floats)
    assert np.array_equal(fabio.open(str(rendered / "f.nxs")).data, floats)


def test_cli_nexus_rotated_detector_matches_the_plan(tmp_path: Path) -> None:
    """A tilted, twotheta-swung detector: nxmx's pixel centres equal the plan's (pix0, fdet, sdet) in McStas."""
    import torch

    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.detector import resolve_geometry

    argv = [*CASE, "-detector_rotx", "3", "-detector_roty", "-4", "-detector_rotz", "5", "-twotheta", "12",
            "-nxsfile", str(tmp_path / "r.nxs"), "-noprogress"]
    assert main(argv) == 0
    cfg, _ = config_from_flags(argv)
    g = resolve_geometry(cfg, torch.float64, torch.device("cpu"))
    pix0, fdet, sdet = (np.asarray(v, dtype=np.float64) for v in (g.pix0, g.fdet, g.sdet))
    (module,) = nxmx_modules(tmp_path / "r.nxs")
    for s, f in [(0, 0), (19, 23), (7, 3)]:
        ours = pix0 + (f + 0.5) * 1e-4 * fdet + (s + 0.5) * 1e-4 * sdet
        np.testing.assert_allclose(pixel_centre(module, s, f), to_mcstas(ours), atol=1e-12)


def test_cli_bad_outputs_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*CASE, "-cbffile", "", "-noprogress"]) == 2
    assert "flag -cbffile: empty value" in capsys.readouterr().err
    (tmp_path / "dir").mkdir()
    assert main([*CASE, "-nxsfile", "dir", "-noprogress"]) == 2
    assert "is a folder" in capsys.readouterr().err

    import nanobragg_torch.outputs as outputs

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_nexus", fail)
    assert main([*CASE, "-cbffile", "a.cbf", "-nxsfile", "a.nxs", "-intfile", "a.img", "-noprogress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a.nxs" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_cli_outdir_and_multi_panel_cbf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*CASE, "-outdir", "o", "-cbffile", "a.cbf", "-nxsfile", "a.nxs", "-noprogress"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.cbf", "a.nxs"]
    from nanobragg_torch.options import RunOptions
    from nanobragg_torch.outputs import check_output_paths

    panel = PanelConfig((0.1, 0, 0), (0, 0, 1), (0, -1, 0), 1e-4, 4, 4)
    cfg = SimulationConfig(detector=DetectorConfig(panels=(panel, panel)))
    opts = RunOptions(dtype="float32", device="cpu", c_compat=False, trace_pixel=None, printout_pixel=None,
                      floatfile=None, intfile=None, noisefile=None, pgmfile=None, pngfile=None, dumpfile=None,
                      intfile_scale=0.0, pgm_scale=0.0, adc_offset=40.0, seed=1, chunk=None, notes=[],
                      cbffile="x.cbf")
    with pytest.raises(InputError, match="-cbffile holds one panel"):
        check_output_paths(opts, cfg)


def test_api_save_cbf_and_nxmx_match_the_cli(rendered: Path, tmp_path: Path) -> None:
    """The API twins of -cbffile/-nxsfile on `simulate(cfg)`'s image write what the CLI writes."""
    from nanobragg_torch import simulate
    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.outputs import save_cbf, save_nxmx

    cfg, _ = config_from_flags(CASE)
    image = simulate(cfg)
    save_cbf(str(tmp_path / "a.cbf"), cfg, image, exposure_time=2.0)
    save_nxmx(str(tmp_path / "a.nxs"), cfg, image, exposure_time=2.0)
    _, smv, _ = read_smv(rendered / "i.img")
    api, cli = fabio.open(str(tmp_path / "a.cbf")), fabio.open(str(rendered / "i.cbf"))
    assert np.array_equal(api.data, smv.astype(np.int32))
    assert api.pilatus_headers._dict == cli.pilatus_headers._dict
    (a,), (c,) = nxmx_modules(tmp_path / "a.nxs"), nxmx_modules(rendered / "f.nxs")
    for x, y in zip(a[:4], c[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    with h5py.File(tmp_path / "a.nxs", "r") as f:
        assert np.array_equal(f["/entry/data/data"][0], read_float_image(rendered / "f.bin", (20, 24)))
    with pytest.raises(InputError, match="one panel"):
        panel = PanelConfig((0.1, 0, 0), (0, 0, 1), (0, -1, 0), 1e-4, 4, 4)
        save_cbf(str(tmp_path / "m.cbf"), SimulationConfig(detector=DetectorConfig(panels=(panel,))), np.zeros((4, 4)))


def test_cli_nexus_pixel_mask_marks_the_skipped_pixels(tmp_path: Path) -> None:
    """-roi: the pixels outside it (not rendered, 0 in the image) carry bit 8 (user mask) of pixel_mask."""
    path = tmp_path / "roi.nxs"
    assert main([*CASE, "-roi", "3", "17", "2", "11", "-nxsfile", str(path), "-noprogress"]) == 0
    with h5py.File(path, "r") as f:
        det = nxmx.NXmx(f).entries[0].instruments[0].detectors[0]
        mask = det.pixel_mask[()]
        data = det.data[0]
    expected = np.full((20, 24), 256, dtype=np.uint32)
    expected[2:12, 3:18] = 0  # -roi xmin xmax ymin ymax, inclusive (fast, then slow)
    np.testing.assert_array_equal(mask, expected)
    assert np.all(data[mask != 0] == 0) and np.any(data[mask == 0] > 0)


@pytest.mark.needs_shared("cspad/cspad_detector.json")
def test_nexus_of_the_cspad_gives_dxtbx_pixel_positions(tmp_path: Path, monkeypatch) -> None:
    """The 64-panel CSPAD through `-expt ... -nxsfile`: every module that nxmx reads back puts its pixels where
    the dxtbx model does, taken from the JSON by the plain hierarchy composition (written here) and moved from
    dxtbx's lab frame (beam along -z) to McStas by diag(-1, 1, -1), dxtbx's own McStas/imgCIF matrix."""
    import json

    from nanobragg_torch.cli import main
    from nanobragg_torch.parity.goldens import shared_data_dir

    path = shared_data_dir() / "cspad" / "cspad_detector.json"
    d = json.loads(path.read_text())
    lab: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def walk(node, R, o):  # a node's frame is given in its parent's
        f, s = R @ np.asarray(node["fast_axis"], float), R @ np.asarray(node["slow_axis"], float)
        frame, origin = np.stack([f, s, np.cross(f, s)], axis=1), R @ np.asarray(node["origin"], float) + o
        for child in node.get("children", []):
            if "panel" in child:
                p = d["panels"][child["panel"]]
                lab[child["panel"]] = (frame @ np.asarray(p["origin"], float) + origin,
                                       *(frame @ np.asarray(p[k], float) for k in ("fast_axis", "slow_axis")))
            else:
                walk(child, frame, origin)

    walk(d["hierarchy"], np.eye(3), np.zeros(3))
    monkeypatch.chdir(tmp_path)
    assert main(["-expt", str(path), "-beam_vector", "0", "0", "-1", "-cell", "80", "90", "100", "90", "90", "90",
                 "-N", "1", "-default_F", "1", "-lambda", "1.3", "-oversample", "1", "-nxsfile", "c.nxs",
                 "-noprogress"]) == 0
    modules = nxmx_modules(tmp_path / "c.nxs")
    assert len(modules) == 64
    to_mcstas_from_dxtbx = np.diag([-1.0, 1.0, -1.0])
    px = 0.10992
    for p, module in enumerate(modules):
        origin, fast, slow = lab[p]
        for s, f in [(0, 0), (184, 193), (90, 7)]:
            want_mm = origin + (f + 0.5) * px * fast + (s + 0.5) * px * slow
            np.testing.assert_allclose(pixel_centre(module, s, f), to_mcstas_from_dxtbx @ want_mm * 1e-3, atol=1e-10)
