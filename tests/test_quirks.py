"""The registry of C quirks is the truth: default and --c-compat differ exactly where it says they do."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nanobragg_torch import quirks
from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.engine import render
from nanobragg_torch.parity.goldens import golden_dir, has_golden, load_cases, load_golden, shared_data_dir
from nanobragg_torch.plan import build_plan

CASES = {c.name: c for c in load_cases()}
QUIRK_CASES = sorted({name for q in quirks.REGISTRY for name in q.golden_cases})


def _differs_by_registry(name: str) -> bool:
    return any(q.differs and q.scope == "image" for q in quirks.REGISTRY if name in q.golden_cases)


def _image(name: str, c_compat: bool) -> np.ndarray:
    case = CASES[name]
    argv = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir()) + (["--c-compat"] if c_compat else [])
    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    with torch.no_grad():
        return render(build_plan(cfg, torch.float64)).image.numpy()


def _params():
    for name in QUIRK_CASES:
        marks = [pytest.mark.slow] if CASES[name].full else []
        if CASES[name].shared_files():
            marks.append(pytest.mark.needs_shared(*CASES[name].shared_files()))
        yield pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", list(_params()))
def test_variants_differ_exactly_where_registry_says(name):
    pinned, fixed = _image(name, True), _image(name, False)
    differ = not np.array_equal(pinned, fixed)
    assert differ == _differs_by_registry(name), (
        f"{name}: default and --c-compat {'differ' if differ else 'agree'}, registry says "
        f"{'differ' if _differs_by_registry(name) else 'agree'}"
    )
    # and the two C builds agree with us on whether they differ (cases with both goldens, small ones)
    if has_golden(name, "pinned") and has_golden(name, "fixed") and not CASES[name].full:
        c_pinned, c_fixed = load_golden(name, "pinned").image, load_golden(name, "fixed").image
        assert (not np.array_equal(c_pinned, c_fixed)) == differ


def test_every_quirk_case_exists_and_docs_are_current():
    for q in quirks.REGISTRY:
        for name in q.golden_cases:
            assert name in CASES, f"{q.key}: golden case {name} missing from golden/cases.toml"
    doc = Path(__file__).resolve().parents[1] / "docs" / "c_quirks.md"
    assert doc.read_text() == quirks.markdown() + "\n", (
        "regenerate: python -m nanobragg_torch.quirks > docs/c_quirks.md"
    )


SMALL = "-cell 50 50 50 90 90 90 -N 3 -detpixels 16 -pixel 0.5 -distance 60 -lambda 1.0".split()


def _write_hkl(path: Path, value: float) -> None:
    path.write_text("".join(f"{h} {k} {l} {value}\n" for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4)))


def test_fdump_reuse_only_in_c_compat(tmp_path, monkeypatch, capsys):
    """FDUMP_REUSE: the C reads ./Fdump.bin when -hkl is absent; our default refuses to guess."""
    monkeypatch.chdir(tmp_path)
    _write_hkl(tmp_path / "a.hkl", 7.0)
    assert main(SMALL + ["-hkl", "a.hkl", "--c-compat", "-nonoise", "-nopgm"]) == 0
    assert (tmp_path / "Fdump.bin").exists()  # written after reading -hkl, like the C
    assert main(SMALL + ["--c-compat", "-nonoise", "-nopgm", "-floatfile", "reuse.bin"]) == 0
    out = capsys.readouterr().out
    assert "reading Fs from Fdump.bin" in out
    assert np.fromfile(tmp_path / "reuse.bin", dtype=np.float32).max() > 0
    assert main(SMALL + ["-floatfile", "default.bin"]) == 2  # default: no -hkl, no -default_F -> error
    assert not (tmp_path / "default.bin").exists()


def test_unrequested_files(tmp_path, monkeypatch):
    """UNREQUESTED_FILES: --c-compat writes the C's default files; the default writes only what is asked."""
    monkeypatch.chdir(tmp_path)
    assert main(SMALL + ["-default_F", "10", "-seed", "1"]) == 0
    assert sorted(os.listdir(tmp_path)) == []
    assert main(SMALL + ["-default_F", "10", "-seed", "1", "--c-compat"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["floatimage.bin", "image.pgm", "intimage.img", "noiseimage.img"]


def test_pix0_ignored_unless_override(capsys):
    """PIX0_IGNORED: the vector only switches to CUSTOM; -pix0_override places the detector by it (mm)."""
    base = SMALL + ["-default_F", "10", "-pix0_vector_mm", "55", "4", "-4"]
    cfg, opts = config_from_flags(base)
    assert any("ignored by nanoBragg.c" in n for n in opts.notes)
    pix0 = build_plan(cfg, torch.float64).geom.pix0
    assert not torch.allclose(pix0, torch.tensor([0.055, 0.004, -0.004], dtype=torch.float64))
    cfg, opts = config_from_flags(base + ["-pix0_override"])
    pix0 = build_plan(cfg, torch.float64).geom.pix0
    assert torch.allclose(pix0, torch.tensor([0.055, 0.004, -0.004], dtype=torch.float64))
    assert not opts.notes


def test_trailing_curved_det():
    """TRAILING_ARGUMENT_GUARDS: a trailing -curved_det is ignored by the pinned C only."""
    argv = SMALL + ["-default_F", "10", "-curved_det"]
    assert config_from_flags(argv)[0].detector.curved
    assert not config_from_flags(argv + ["--c-compat"])[0].detector.curved
    assert config_from_flags(SMALL + ["-curved_det", "-default_F", "10", "--c-compat"])[0].detector.curved


@pytest.mark.needs_shared("pilatus_6m/A.mat", "pilatus_6m/scaled.hkl")
def test_long_smv_header(tmp_path, monkeypatch):
    """SMV_LONG_HEADER: the Pilatus geometry prints a 518-byte header. The C writes it unpadded while declaring
    512; by default we declare and pad to 1024, and the pixels read back right."""
    from nanobragg_torch.io.smv import read_smv
    from nanobragg_torch.parity.goldens import get_case

    case = get_case("full_pilatus6m")
    assert case.shared_files() == ["pilatus_6m/A.mat", "pilatus_6m/scaled.hkl"]
    monkeypatch.chdir(tmp_path)
    argv = [a for a in case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())]
    argv += ["-roi", "1030", "1040", "680", "690", "-intfile", "i.img"]
    assert main(argv) == 0
    header, image, size = read_smv(tmp_path / "i.img")
    assert size == 1024 and header["HEADER_BYTES"] == "1024"
    assert image[680:691, 1030:1041].max() > 40 and image[0, 0] == 0  # ROI pixels (auto scale + adc), rest 0
    assert main(argv + ["--c-compat", "-nopgm", "-nonoise"]) == 0
    data = (tmp_path / "i.img").read_bytes()
    assert b"HEADER_BYTES=512;" in data[:40]
    text_end = data.index(b"}\f") + 2
    assert text_end > 512 and len(data) == text_end + 2 * 2463 * 2527
