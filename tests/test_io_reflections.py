"""read_structure_factors: MTZ and mmCIF files (written here with gemmi, or as text) expanded to the C's P1 grid.

The expected grids never come from the function under test: the asymmetric-unit reflections are expanded
here by hand-written point-group operators (P1, P21, P212121) or by gemmi's Op.apply_to_hkl one reflection
at a time (P3221, C2), written as a P1 text HKL file and read by the C's text reader (read_hkl_file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nanobragg_torch.cli import main
from nanobragg_torch.errors import InputError
from nanobragg_torch.io.hkl import read_hkl_file
from nanobragg_torch.io.reflections import file_kind, read_structure_factors

gemmi = pytest.importorskip("gemmi")

CELLS = {"P 1": (31, 37, 41, 80, 85, 95), "P 1 21 1": (31, 37, 41, 90, 100, 90),
         "P 21 21 21": (31, 37, 41, 90, 90, 90), "P 32 2 1": (40, 40, 55, 90, 90, 120),
         "C 1 2 1": (60, 37, 41, 90, 105, 90)}  # fmt: skip

# the point-group rotations acting on (h, k, l), written out: h -> h.R for the group's operators
HAND_OPS = {
    "P 1": [lambda h, k, l: (h, k, l)],
    "P 1 21 1": [lambda h, k, l: (h, k, l), lambda h, k, l: (-h, k, -l)],
    "P 21 21 21": [lambda h, k, l: (h, k, l), lambda h, k, l: (-h, -k, l), lambda h, k, l: (-h, k, -l),
                   lambda h, k, l: (h, -k, -l)],
}  # fmt: skip


def equivalents(sg_name: str, hkl: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """h.R for every rotation of the group, by hand where written out, else by gemmi one op at a time."""
    if sg_name in HAND_OPS:
        return [tuple(op(*hkl)) for op in HAND_OPS[sg_name]]
    ops = gemmi.SpaceGroup(sg_name).operations()
    return [tuple(int(x) for x in op.apply_to_hkl(list(hkl))) for op in ops.sym_ops]


def asu_reflections(sg_name: str, n: int, seed: int, reach: int = 4) -> list[tuple[int, int, int]]:
    """n distinct reflections of the reciprocal asymmetric unit (gemmi.ReciprocalAsu), (0,0,0) left out."""
    asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup(sg_name))
    r = range(-reach, reach + 1)
    every = [(h, k, l) for h in r for k in r for l in r if (h, k, l) != (0, 0, 0) and asu.is_in([h, k, l])]
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(every), size=min(n, len(every)), replace=False))
    return [every[i] for i in pick]


def random_F(n: int, seed: int) -> np.ndarray:
    """Amplitudes exactly representable in float32 (MTZ stores float32)."""
    return np.random.default_rng(seed).uniform(1, 500, n).astype(np.float32).astype(np.float64)


def p1_text(path: Path, F_by_hkl: dict[tuple[int, int, int], float]) -> Path:
    path.write_text("".join(f"{h} {k} {l} {F!r}\n" for (h, k, l), F in F_by_hkl.items()))
    return path


def expected_p1(sg_name: str, hkls, F_plus, F_minus=None) -> dict[tuple[int, int, int], float]:
    """Each reflection to its equivalents (F(+)) and their Friedel mates (F(-), F(+) without a pair);
    F(+) wins where both land (centric reflections); NaN fills nothing."""
    F_minus = F_plus if F_minus is None else F_minus
    out: dict[tuple[int, int, int], float] = {}
    for hkl, fp, fm in zip(hkls, F_plus, F_minus, strict=True):
        eq = equivalents(sg_name, hkl)
        if not np.isnan(fm):
            out.update({(-h, -k, -l): float(fm) for h, k, l in eq})
        if not np.isnan(fp):
            out.update({e: float(fp) for e in eq})
    return out


def write_mtz(path: Path, sg_name: str, hkls, columns: dict[str, tuple[str, np.ndarray]]) -> Path:
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(sg_name)
    mtz.set_cell_for_all(gemmi.UnitCell(*CELLS[sg_name]))
    mtz.add_dataset("synthetic")
    for label, (kind, _) in columns.items():
        mtz.add_column(label, kind)
    data = np.column_stack([np.array(hkls, dtype=np.float64)] + [v for _, v in columns.values()])
    mtz.set_data(data.astype(np.float32))
    mtz.write_to_file(str(path))
    return path


def write_cif(path: Path, sg_name: str, hkls, tags: dict[str, np.ndarray]) -> Path:
    """An mmCIF structure-factor file written as text (NaN as '?')."""
    a, b, c, al, be, ga = CELLS[sg_name]
    head = [
        "data_r1xyzsf", "_cell.length_a " + str(a), "_cell.length_b " + str(b), "_cell.length_c " + str(c),
        "_cell.angle_alpha " + str(al), "_cell.angle_beta " + str(be), "_cell.angle_gamma " + str(ga),
        f"_symmetry.space_group_name_H-M '{sg_name}'", "loop_", "_refln.index_h", "_refln.index_k",
        "_refln.index_l", *(f"_refln.{t}" for t in tags),
    ]
    rows = [" ".join([str(h), str(k), str(l)] + ["?" if np.isnan(v[i]) else repr(float(v[i])) for v in tags.values()])
            for i, (h, k, l) in enumerate(hkls)]
    path.write_text("\n".join(head + rows) + "\n")
    return path


def assert_same_as_text(tmp_path: Path, got, expected: dict, default_F: float = 0.0) -> None:
    F, meta = got
    F_text, meta_text = read_hkl_file(p1_text(tmp_path / "expected_p1.hkl", expected), default_F=default_F)
    assert meta == meta_text
    assert np.array_equal(F, F_text)


# ----------------------------------------------------------------------------------- expansion to P1


@pytest.mark.parametrize("sg_name", ["P 1", "P 1 21 1", "P 21 21 21", "P 32 2 1", "C 1 2 1"])
def test_mtz_expands_like_the_p1_text_file(tmp_path, sg_name):
    hkls = asu_reflections(sg_name, 40, seed=len(sg_name))
    F = random_F(len(hkls), seed=1)
    F[3] = np.nan  # missing: fills nothing
    path = write_mtz(tmp_path / "x.mtz", sg_name, hkls, {"FP": ("F", F), "SIGFP": ("Q", F / 10)})
    expected = expected_p1(sg_name, hkls, F)
    assert hkls[3] not in expected
    assert_same_as_text(tmp_path, read_structure_factors(path), expected)
    assert_same_as_text(tmp_path, read_structure_factors(path, default_F=7.5), expected, default_F=7.5)


@pytest.mark.parametrize("sg_name", ["P 32 2 1", "C 1 2 1"])
def test_every_filled_index_maps_back_to_its_asu_reflection(tmp_path, sg_name):
    """A second, independent check: gemmi's ReciprocalAsu.to_asu takes every filled cell back to the file."""
    hkls = asu_reflections(sg_name, 30, seed=5)
    F = random_F(len(hkls), seed=2)
    grid, meta = read_structure_factors(write_mtz(tmp_path / "x.mtz", sg_name, hkls, {"F": ("F", F)}), default_F=-1)
    ops = gemmi.SpaceGroup(sg_name).operations()
    asu = gemmi.ReciprocalAsu(gemmi.SpaceGroup(sg_name))
    by_hkl = dict(zip(hkls, F, strict=True))
    filled = np.argwhere(grid != -1)
    assert len(filled) == meta["hkls"] > len(hkls)
    for cell in filled:
        hkl = [int(cell[0]) + meta["h_min"], int(cell[1]) + meta["k_min"], int(cell[2]) + meta["l_min"]]
        back = tuple(asu.to_asu(hkl, ops)[0])
        assert grid[tuple(cell)] == by_hkl[back]
    assert meta["hkls"] == sum(len(set(equivalents(sg_name, h)) | {(-a, -b, -c) for a, b, c in
                                                                 equivalents(sg_name, h)}) for h in hkls)


def test_mmcif_gives_the_mtz_grid(tmp_path):
    sg_name = "P 21 21 21"
    hkls = asu_reflections(sg_name, 40, seed=3)
    F = random_F(len(hkls), seed=4)
    F[[0, 7]] = np.nan
    cif = write_cif(tmp_path / "x.cif", sg_name, hkls, {"F_meas_sigma_au": F / 10, "F_meas_au": F})
    expected = expected_p1(sg_name, hkls, F)
    assert_same_as_text(tmp_path, read_structure_factors(cif), expected)
    mtz = write_mtz(tmp_path / "x.mtz", sg_name, hkls, {"FP": ("F", F)})
    for a, b in zip(read_structure_factors(cif, column="_refln.F_meas_au"), read_structure_factors(mtz), strict=True):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


# --------------------------------------------------------------------------------------- columns


def test_default_is_the_first_amplitude_column(tmp_path):
    sg_name = "P 21 21 21"
    hkls = asu_reflections(sg_name, 20, seed=6)
    I, F, FC = random_F(len(hkls), 7), random_F(len(hkls), 8), random_F(len(hkls), 9)
    path = write_mtz(tmp_path / "x.mtz", sg_name, hkls,
                     {"IMEAN": ("J", I), "SIGIMEAN": ("Q", I / 9), "FOBS": ("F", F), "FC": ("F", FC)})
    default = read_structure_factors(path)
    assert_same_as_text(tmp_path, default, expected_p1(sg_name, hkls, F))
    assert_same_as_text(tmp_path, read_structure_factors(path, column="FOBS"), expected_p1(sg_name, hkls, F))
    assert_same_as_text(tmp_path, read_structure_factors(path, column="FC"), expected_p1(sg_name, hkls, FC))


@pytest.mark.parametrize("chosen", ["F(+)", "F(-)"])
def test_anomalous_pair_is_not_merged(tmp_path, chosen):
    sg_name = "P 1 21 1"
    hkls = asu_reflections(sg_name, 40, seed=10)
    Fp, Fm = random_F(len(hkls), 11), random_F(len(hkls), 12)
    Fm[2] = np.nan
    Fp[5] = np.nan
    path = write_mtz(tmp_path / "x.mtz", sg_name, hkls,
                     {"FP": ("F", (Fp + Fm) / 2), "F(+)": ("G", Fp), "F(-)": ("G", Fm)})
    got = read_structure_factors(path, column=chosen)
    expected = expected_p1(sg_name, hkls, Fp, Fm)
    assert_same_as_text(tmp_path, got, expected)
    # an acentric reflection keeps F(+) at h and F(-) at -h (Friedel's law not applied)
    F, meta = got
    h, k, l = next(x for i, x in enumerate(hkls) if x[1] != 0 and i not in (2, 5))
    at = hkls.index((h, k, l))
    lo = (meta["h_min"], meta["k_min"], meta["l_min"])
    assert F[h - lo[0], k - lo[1], l - lo[2]] == Fp[at]
    assert F[-h - lo[0], -k - lo[1], -l - lo[2]] == Fm[at]
    # the mmCIF spelling of the pair gives the same grid
    cif = write_cif(tmp_path / "x.mmcif", sg_name, hkls, {"pdbx_F_plus": Fp, "pdbx_F_minus": Fm})
    F_cif, meta_cif = read_structure_factors(cif, column="pdbx_F_minus")
    assert meta_cif == meta and np.array_equal(F_cif, F)


def test_a_file_with_only_an_anomalous_pair_defaults_to_it(tmp_path):
    sg_name = "P 21 21 21"
    hkls = asu_reflections(sg_name, 20, seed=13)
    Fp, Fm = random_F(len(hkls), 14), random_F(len(hkls), 15)
    path = write_mtz(tmp_path / "x.mtz", sg_name, hkls, {"SIGF": ("Q", Fp / 5), "F(-)": ("G", Fm), "F(+)": ("G", Fp)})
    assert_same_as_text(tmp_path, read_structure_factors(path), expected_p1(sg_name, hkls, Fp, Fm))


def one_line_error(match: str | None, fn, *args, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_column_name_lists_the_columns(tmp_path):
    hkls = asu_reflections("P 1", 5, seed=1)
    path = write_mtz(tmp_path / "x.mtz", "P 1", hkls, {"FOBS": ("F", random_F(5, 1)), "SIGFOBS": ("Q", random_F(5, 2))})
    message = one_line_error("no column 'F'", read_structure_factors, path, column="F")
    assert str(path) in message and "FOBS (F)" in message and "SIGFOBS (Q)" in message
    message = one_line_error("standard deviation", read_structure_factors, path, column="SIGFOBS")
    assert str(path) in message


def test_intensities_are_refused(tmp_path):
    hkls = asu_reflections("P 1", 5, seed=1)
    path = write_mtz(tmp_path / "x.mtz", "P 1", hkls,
                     {"IMEAN": ("J", random_F(5, 1)), "SIGIMEAN": ("Q", random_F(5, 2))})
    assert str(path) in one_line_error("no amplitude column", read_structure_factors, path)
    assert "IMEAN" in one_line_error("intensities", read_structure_factors, path, column="IMEAN")
    cif = write_cif(tmp_path / "x.cif", "P 1", hkls, {"intensity_meas": random_F(5, 1)})
    assert str(cif) in one_line_error("no amplitude column", read_structure_factors, cif)
    one_line_error("intensities", read_structure_factors, cif, column="intensity_meas")


def test_anomalous_column_without_partner(tmp_path):
    hkls = asu_reflections("P 1", 5, seed=1)
    path = write_mtz(tmp_path / "x.mtz", "P 1", hkls, {"F(+)": ("G", random_F(5, 1)), "FX": ("G", random_F(5, 2))})
    assert str(path) in one_line_error("no F\\(\\+\\)/F\\(-\\) partner", read_structure_factors, path)


# ----------------------------------------------------------------------------------- bad files


def test_unreadable_files_name_the_file(tmp_path):
    hkls = asu_reflections("P 1", 10, seed=1)
    good = write_mtz(tmp_path / "good.mtz", "P 1", hkls, {"F": ("F", random_F(10, 1))}).read_bytes()
    cases = {
        "missing.mtz": None,
        "garbage.mtz": b"MTZ \x00\x01 this is not an MTZ file at all" * 3,
        "truncated.mtz": good[:200],
        "empty.mtz": b"",
        "broken.cif": b"data_x\nloop_\n_refln.index_h\n_refln.index_k\n'unterminated\n",
        "noloop.cif": b"data_x\n_cell.length_a 10\n",
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        message = one_line_error(None, read_structure_factors, path)
        assert str(path) in message, message


def test_non_integer_and_non_finite_values(tmp_path):
    hkls = [(1, 2, 3), (2, 0, 1)]
    bad_index = np.array([[1.5, 2, 3], [2, 0, 1]])
    path = write_mtz(tmp_path / "index.mtz", "P 1", bad_index, {"F": ("F", np.array([1.0, 2.0]))})
    assert str(path) in one_line_error("integers, got 1.5 2 3", read_structure_factors, path)
    path = write_mtz(tmp_path / "inf.mtz", "P 1", hkls, {"F": ("F", np.array([1.0, np.inf]))})
    assert str(path) in one_line_error("2 0 1: value is not finite", read_structure_factors, path)
    path = write_mtz(tmp_path / "allnan.mtz", "P 1", hkls, {"F": ("F", np.array([np.nan, np.nan]))})
    assert str(path) in one_line_error("no reflection with a value", read_structure_factors, path)
    cif = write_cif(tmp_path / "index.cif", "P 1", hkls, {"F_meas_au": np.array([1.0, 2.0])})
    cif.write_text(cif.read_text().replace("\n1 2 3 ", "\n1 2 x "))
    assert str(cif) in one_line_error(None, read_structure_factors, cif)


def test_unmerged_data_is_refused(tmp_path):
    hkls = asu_reflections("P 1", 4, seed=1)
    path = write_mtz(tmp_path / "x.mtz", "P 1", hkls, {"BATCH": ("B", np.arange(4.0)), "I": ("J", random_F(4, 1))})
    assert str(path) in one_line_error("unmerged", read_structure_factors, path)


def test_kind_by_extension_or_magic(tmp_path):
    hkls = asu_reflections("P 21 21 21", 10, seed=2)
    F = random_F(10, 3)
    mtz = write_mtz(tmp_path / "data.bin", "P 21 21 21", hkls, {"F": ("F", F)})
    assert file_kind(mtz) == "mtz" and file_kind(tmp_path / "X.MTZ") == "mtz"
    assert file_kind(tmp_path / "r1abcsf.ent") == "cif" and file_kind(tmp_path / "y.cif.gz") == "cif"
    assert_same_as_text(tmp_path, read_structure_factors(mtz), expected_p1("P 21 21 21", hkls, F))
    text = p1_text(tmp_path / "p1.hkl", {(1, 2, 3): 4.0})
    assert file_kind(text) == "text"
    assert read_structure_factors(text)[1] == read_hkl_file(text)[1]
    assert str(text) in one_line_error("text HKL file", read_structure_factors, text, column="F")


# -------------------------------------------------------------------------------------------- CLI

CLI = ["-cell", "31", "37", "41", "90", "90", "90", "-N", "3", "-detpixels", "16", "-pixel", "1.5", "-distance", "40",
       "-lambda", "1.5", "-misset", "10", "20", "30", "-nonoise", "-nopgm"]  # fmt: skip


def test_cli_render_from_mtz_equals_the_text_hkl_render(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sg_name = "P 21 21 21"
    hkls = asu_reflections(sg_name, 150, seed=21, reach=6)
    F, FC = random_F(len(hkls), 22), random_F(len(hkls), 23)
    write_mtz(tmp_path / "x.mtz", sg_name, hkls, {"FP": ("F", F), "FC": ("F", FC)})
    p1_text(tmp_path / "x.hkl", expected_p1(sg_name, hkls, F))
    p1_text(tmp_path / "xc.hkl", expected_p1(sg_name, hkls, FC))

    def render(*args: str) -> tuple[np.ndarray, bytes]:
        out = f"{len(list(tmp_path.glob('*.bin')))}.bin"
        assert main([*CLI, *args, "-floatfile", out, "-dump", "Fdump.bin"]) == 0, capsys.readouterr().err
        return np.fromfile(tmp_path / out, dtype="<f4"), (tmp_path / "Fdump.bin").read_bytes()

    from_text, dump_text = render("-hkl", "x.hkl")
    capsys.readouterr()
    from_mtz, dump_mtz = render("-hkl", "x.mtz")
    assert f"reading FP from x.mtz: {len(hkls)} reflections in P 21 21 21" in capsys.readouterr().out
    assert np.count_nonzero(from_text) > 10
    assert np.array_equal(from_mtz, from_text) and dump_mtz == dump_text
    from_fc, _ = render("-hkl", "x.mtz", "-F_column", "FC")
    assert np.array_equal(from_fc, render("-hkl", "xc.hkl")[0]) and not np.array_equal(from_fc, from_text)


@pytest.mark.parametrize("argv, names", [
    (["-hkl", "x.mtz", "-F_column", "NOPE"], ["x.mtz", "NOPE", "FP (F)"]),
    (["-hkl", "x.hkl", "-F_column", "FP"], ["-F_column", "x.hkl"]),
    (["-default_F", "10", "-F_column", "FP"], ["-F_column", "-hkl"]),
])  # fmt: skip
def test_cli_column_errors(tmp_path, monkeypatch, capsys, argv, names):
    monkeypatch.chdir(tmp_path)
    write_mtz(tmp_path / "x.mtz", "P 1", [(1, 2, 3)], {"FP": ("F", np.array([5.0]))})
    p1_text(tmp_path / "x.hkl", {(1, 2, 3): 5.0})
    assert main([*CLI, *argv, "-floatfile", "out.bin"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in names), lines
    assert not (tmp_path / "out.bin").exists()


def test_unmerged_mmcif_is_refused(tmp_path):
    cif = tmp_path / "unmerged.cif"
    cif.write_text("data_x\n_symmetry.space_group_name_H-M 'P 1'\nloop_\n_diffrn_refln.index_h\n_diffrn_refln.index_k\n"
                   "_diffrn_refln.index_l\n_diffrn_refln.intensity_net\n1 2 3 4\n")
    assert str(cif) in one_line_error("only unmerged", read_structure_factors, cif)


def test_dataset_spec_flags_read_mtz_relative_to_the_spec_folder(tmp_path):
    from nanobragg_torch.dataset.spec import experiment_from_flags

    sg_name = "P 1 21 1"
    hkls = asu_reflections(sg_name, 20, seed=31)
    F, FC = random_F(len(hkls), 32), random_F(len(hkls), 33)
    write_mtz(tmp_path / "x.mtz", sg_name, hkls, {"FP": ("F", F), "FC": ("F", FC)})
    cfg, _ = experiment_from_flags([*CLI[:7], "-hkl", "x.mtz", "-F_column", "FC"], str(tmp_path))
    sf = cfg.crystal.structure_factors
    F_text, meta = read_hkl_file(p1_text(tmp_path / "p1.hkl", expected_p1(sg_name, hkls, FC)))
    assert np.array_equal(np.asarray(sf.grid), F_text)
    assert (sf.h_min, sf.k_min, sf.l_min, sf.hkls) == (meta["h_min"], meta["k_min"], meta["l_min"], meta["hkls"])


def test_mmcif_reads_the_first_merged_block(tmp_path):
    sg_name = "P 1 21 1"
    hkls = asu_reflections(sg_name, 15, seed=41)
    F1, F2 = random_F(len(hkls), 42), random_F(len(hkls), 43)
    unmerged = ("data_r1xyzsf_unmerged\n_symmetry.space_group_name_H-M 'P 1 21 1'\nloop_\n_diffrn_refln.index_h\n"
                "_diffrn_refln.index_k\n_diffrn_refln.index_l\n_diffrn_refln.intensity_net\n1 2 3 4\n")
    first = write_cif(tmp_path / "a.cif", sg_name, hkls, {"F_meas_au": F1}).read_text()
    second = write_cif(tmp_path / "b.cif", sg_name, hkls, {"F_meas_au": F2}).read_text().replace("data_r1xyzsf",
                                                                                                  "data_r1xyzsf_2")
    cif = tmp_path / "several.cif"
    cif.write_text(unmerged + first + second)
    assert_same_as_text(tmp_path, read_structure_factors(cif), expected_p1(sg_name, hkls, F1))


# ------------------------------------------------------------------- precedence: explicit rows over mates


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("kind", ["mtz", "cif"])
def test_explicit_rows_win_over_friedel_mates_whatever_the_order(tmp_path, order, kind):
    """Issue 30: rows 1 2 3 F=80 and -1 -2 -3 F=20 of a P1 file both read back as written, in either order;
    the contradiction is reported once, with the count and an example."""
    rows = [((1, 2, 3), 80.0), ((-1, -2, -3), 20.0)][:: 1 if order == 0 else -1]
    hkls, F = [r[0] for r in rows], np.array([r[1] for r in rows])
    if kind == "mtz":
        path = write_mtz(tmp_path / "x.mtz", "P 1", hkls, {"FP": ("F", F)})
    else:
        path = write_cif(tmp_path / "x.cif", "P 1", hkls, {"F_meas_au": F})
    notes: list[str] = []
    grid, meta = read_structure_factors(path, notes=notes)
    assert grid[1 - meta["h_min"], 2 - meta["k_min"], 3 - meta["l_min"]] == 80.0
    assert grid[-1 - meta["h_min"], -2 - meta["k_min"], -3 - meta["l_min"]] == 20.0
    warnings_ = [n for n in notes if n.startswith("warning:")]
    assert len(warnings_) == 1
    assert "2 reflections of the file disagree with a symmetry or Friedel mate" in warnings_[0]
    first = "1 2 3: F 80 in the file, 20" if order == 1 else "-1 -2 -3: F 20 in the file, 80"
    assert f"(e.g. {first} from reflection" in warnings_[0]


def test_explicit_rows_win_over_symmetry_mates(tmp_path):
    """P 1 21 1: 1 2 3 and its equivalent -1 2 -3 both listed with different F; both keep their own value,
    their Friedel mates come from each (later rows win among mates); an agreeing mate is no conflict."""
    hkls = [(1, 2, 3), (-1, 2, -3), (2, 1, 1), (-2, -1, -1)]
    F = np.array([80.0, 20.0, 5.0, 5.0])
    notes: list[str] = []
    grid, meta = read_structure_factors(write_mtz(tmp_path / "x.mtz", "P 1 21 1", hkls, {"FP": ("F", F)}),
                                        notes=notes)

    def at(h, k, l):
        return grid[h - meta["h_min"], k - meta["k_min"], l - meta["l_min"]]

    assert (at(1, 2, 3), at(-1, 2, -3)) == (80.0, 20.0)
    assert at(-1, -2, -3) == 20.0 and at(1, -2, 3) == 20.0  # mates of the later row win among mates
    assert at(2, 1, 1) == at(-2, -1, -1) == at(-2, 1, -1) == 5.0
    assert [n for n in notes if n.startswith("warning:")] == [
        "warning: " + str(tmp_path / "x.mtz") + ": 2 reflections of the file disagree with a symmetry or Friedel "
        "mate of another reflection (e.g. -1 2 -3: F 20 in the file, 80 from reflection 1); the file's own values "
        "are kept"]


def test_precedence_from_the_command_line(tmp_path):
    """As a user runs it: the MTZ render equals the text file holding the explicit values, one warning line."""
    import os
    import subprocess
    import sys

    write_mtz(tmp_path / "x.mtz", "P 1", [(-1, -2, -3), (1, 2, 3), (0, 1, 1)],
              {"FP": ("F", np.array([20.0, 80.0, 50.0]))})
    p1_text(tmp_path / "x.hkl", {(1, 2, 3): 80.0, (-1, -2, -3): 20.0, (0, 1, 1): 50.0, (0, -1, -1): 50.0})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "NB_COMPILE": "0"}
    outs = []
    for name in ("x.mtz", "x.hkl"):
        run = subprocess.run([sys.executable, "-m", "nanobragg_torch", *CLI, "-hkl", name, "-floatfile",
                              name + ".bin"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout)
    assert outs[0].count("reflections of the file disagree") == 1 and "disagree" not in outs[1]
    a, b = (np.fromfile(tmp_path / f"{n}.bin", dtype="<f4") for n in ("x.mtz", "x.hkl"))
    assert np.count_nonzero(a) > 0 and np.array_equal(a, b)
