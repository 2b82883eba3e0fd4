"""Parsing the C stdout (committed goldens)."""

from __future__ import annotations

import pytest

from nanobragg_torch.parity.cstdout import normalize_stdout, stdout_trace
from nanobragg_torch.parity.goldens import load_cases, load_golden

CASES = load_cases()


@pytest.mark.parametrize("case,variant", [(c.name, v) for c in CASES for v in c.variants])
def test_every_golden_stdout_parses_fully(case, variant):
    d = load_golden(case, variant).stdout
    assert "unparsed" not in d, d.get("unparsed")
    for key in (
        "convention",
        "pivot",
        "pixels",
        "distance",
        "Fbeam",
        "Sbeam",
        "Fclose",
        "Sclose",
        "fdet_vector",
        "beam_vector",
        "dials_origin_mm",
        "fluence",
        "steps",
        "max_I",
        "mean",
        "rmsd",
        "intfile_scale",
    ):
        assert key in d, key
    assert d["steps"] == d["source_count"] * d["mosaic_domains"] * d["phisteps"] * d["oversample"] ** 2


@pytest.mark.parametrize(
    "case,convention,pivot",
    [
        ("mosflm_default", "mosflm", "beam"),
        ("xds_default_rect", "xds", "sample"),
        ("adxv_beam", "adxv", "beam"),
        ("denzo_beam", "denzo", "beam"),
        ("dials_orgx_polar", "dials", "sample"),
        ("custom_pivot_sample_rot", "custom", "sample"),
        ("custom_pivot_beam_rot", "custom", "beam"),
        ("mosflm_twotheta", "mosflm", "beam"),
        ("twotheta_axis_custom", "custom", "sample"),
    ],
)
def test_convention_and_pivot(case, convention, pivot):
    d = load_golden(case).stdout
    assert (d["convention"], d["pivot"]) == (convention, pivot)


def test_derived_geometry_values():
    d = load_golden("mosflm_default").stdout
    assert d["pixels"] == (128, 128) and d["pixel_size"] == 0.0002 and d["distance"] == 0.1
    assert (d["Xbeam"], d["Ybeam"], d["Fbeam"], d["Sbeam"]) == (0.0129, 0.0129, 0.013, 0.013)
    assert d["fdet_vector"] == (0, 0, 1) and d["sdet_vector"] == (0, -1, 0) and d["odet_vector"] == (1, 0, 0)
    assert d["dials_origin_mm"] == (-13, 13, -100) and d["xds_incident_beam"] == (0, 0, 1)
    assert d["unit_cell"] == (70, 80, 90, 90, 90, 90) and d["volume_A3"] == 504000
    assert d["real_cell_vectors"]["a"] == (56.96583769, 32.88924173, -23.94141003)
    assert d["recip_cell_vectors"]["c_star"] == (0.0042058, 0.00020031, 0.01028241)
    assert d["N_cells"] == (5, 5, 5) and d["xtal_shape"] == "square" and d["default_F"] == 100
    assert d["recommended_oversample"] == 3 and d["kahn_factor"] == 0.0 and d["nopolar"] is False
    assert (d["max_I"], d["max_I_x"], d["max_I_y"]) == (598.74, 0.0037, 0.0187)
    t = stdout_trace(d)
    assert t["pix0_vector"] == (0.1, 0.013, -0.013) and t.precision["pix0_vector"].digits == 6
    assert t["steps"] == 1.0 and "steps" not in t.precision


def test_sampling_counts():
    d = load_golden("div_x_disp").stdout
    assert d["source_count"] == 15 and d["divergence_steps"] == 5 and d["dispsteps"] == 3
    assert len(d["lambdas_m"]) == 3 and len(d["sources"]) == 15 and len(d["divergence_deviations"]) == 5
    d = load_golden("quirk_oversample_all_water", "fixed").stdout
    assert d["oversample"] == 2 and d["oversample_thick"] and d["oversample_polar"] and d["oversample_omega"]
    assert d["sensor_layers"] == 2 and "water_size" not in d  # printed only with noise on
    d = load_golden("oversample_auto").stdout
    assert d["auto_oversample"] == 3 and d["oversample"] == 3 and not d["oversample_thick"]
    d = load_golden("mosaic_x_phi").stdout
    assert (d["mosaic_domains"], d["mosaic_spread_deg"], d["phisteps"]) == (4, 0.4, 3)
    assert d["phi_values_deg"] == [20, 20.3333, 20.6667] and d["phi_end_deg"] == 21
    d = load_golden("detector_thick").stdout
    assert d["thick_layers_um"] == [0, 66.6667, 133.333, 200] and d["sensor_mu"] == 2000


def test_sources_file_defaults():
    d = load_golden("sourcefile").stdout
    assert d["source_count"] == 5
    # missing intensity -> 1, missing wavelength -> lambda0 (1e-10 m)
    assert d["sources"][3] == (-10.0, 0.0, -0.0012, 1.0, 1e-10)
    assert d["divergence_steps"] == -1


def test_noise_and_scales():
    d = load_golden("noise_very_high").stdout
    assert d["noise_seed"] == -13 and d["overloads"] > 0 and d["noise_photons"] > 1e10
    assert load_golden("noise_low").stdout["overloads"] == 0
    assert load_golden("pgm_scale").stdout["pgm_scale"] == 2
    assert load_golden("scale_adc_int").stdout["intfile_scale"] == 100


def test_warnings_and_misc():
    d = load_golden("interpolate_out_of_range").stdout
    assert any("out of range for three point interpolation" in w for w in d["warnings"])
    assert any("further warnings will not be printed" in w for w in d["warnings"])
    assert load_golden("misset_random").stdout["random_misset_deg"] == (-60.714628, 6.325875, 74.150939)
    assert load_golden("custom_tilted_axes").stdout["warnings"][0] == "WARNING: auto-generating odet_vector"
    assert load_golden("mask").stdout["mask_file"] == "inputs/mask128.img"
    assert load_golden("curved_det").stdout["curved_detector"] is True
    assert load_golden("point_pixel").stdout["point_pixel"] is True
    assert load_golden("nopolar").stdout["nopolar"] is True
    assert load_golden("roi").stdout["roi"] == (20, 90, 30, 100)
    assert "curved_detector" not in load_golden("quirk_curved_det_last", "pinned").stdout
    assert load_golden("quirk_curved_det_last", "fixed").stdout["curved_detector"] is True


def test_normalize_pointer_lines():
    text = "reading inputs/mask128.img\nmmap(inputs/mask128.img) = 0x7f3a2c001000\nnext\n"
    assert (
        normalize_stdout(text) == "reading inputs/mask128.img\nmmap(inputs/mask128.img) = <pointer>\nnext\n"
    )
    assert "mmap(inputs/mask128.img) = <pointer>" in load_golden("mask").stdout_text
