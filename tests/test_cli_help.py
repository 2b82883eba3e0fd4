"""A command line that helps: --help without repo files, did-you-mean, the progress bar and callback, the C's
advisory warnings where the C prints them, and the seed's Pilatus script equal to its golden case."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from nanobragg_torch.cli import config_from_flags, main
from nanobragg_torch.flagtable import FLAGS, help_text
from nanobragg_torch.parity.goldens import get_case
from nanobragg_torch.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["-cell", "100", "100", "100", "90", "90", "90", "-N", "5", "-default_F", "100", "-lambda", "1",
         "-distance", "100", "-detpixels", "24", "-pixel", "0.5", "-oversample", "1"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_flag_with_units_and_defaults(flag, capsys):
    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nanobragg")
    for f in FLAGS:
        assert " ".join(f.names) in out
    assert "-distance mm" in out and "[default: 100]" in out
    assert "docs/cli.md" not in out.split("Environment")[0], "the listing must stand without repo files"
    for section in ("Crystal and structure factors:", "Detector:", "Beam and background:", "Our own flags:"):
        assert section in out


def test_no_arguments_prints_usage_not_a_repo_path(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nanobragg") and "--help" in err and "docs/" not in err


@pytest.mark.parametrize(("typo", "meant"), [("-lamda", "-lambda"), ("-distanse", "-distance"),
                                             ("-detpixel", "-detpixels"), ("--ccompat", "--c-compat")])
def test_unknown_flag_suggests_the_nearest(typo, meant, work, capsys):
    assert main([*SMALL, typo, "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"unknown flag {typo}; did you mean " in err
    assert meant in err.split("did you mean ")[1].rstrip("?").split(" or ")
    assert list(work.iterdir()) == []


def test_unknown_flag_without_a_near_spelling(capsys):
    assert main([*SMALL, "-zzzzqq"]) == 2
    assert "did you mean" not in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "shown"), [([], False), (["-progress"], True), (["-noprogress"], False),
                                              (["-progress", "-noprogress"], False),
                                              (["-noprogress", "-progress"], True)])
def test_progress_bar_on_stderr(flags, shown, work, capsys):
    """Not on a terminal (pytest's capture): only -progress draws the bar; the last of the two flags wins."""
    assert main([*SMALL, *flags, "-floatfile", "f.bin"]) == 0
    out, err = capsys.readouterr()
    assert ("px" in err and "samples/s" in err and "100%" in err) == shown, err
    assert "samples/s" not in out  # stdout keeps the C's report


def test_progress_option_is_parsed():
    assert config_from_flags([*SMALL])[1].progress is None
    assert config_from_flags([*SMALL, "-progress"])[1].progress is True
    assert config_from_flags([*SMALL, "-progress", "-noprogress"])[1].progress is False


def test_simulate_progress_callback():
    cfg, _ = config_from_flags(SMALL)
    calls: list[tuple[int, int]] = []
    image = simulate(cfg, torch.float64, samples_per_chunk=100, progress=lambda *done_total: calls.append(done_total))
    assert len(calls) > 1 and calls[-1] == (image.numel(), image.numel())
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert torch.equal(image, simulate(cfg, torch.float64, samples_per_chunk=100))


ODET = ["-odet_vector", "0", "0", "0.9"]  # not unit length: the C replaces it by fdet x sdet and says so
WARNED = "WARNING: auto-generating odet_vector"


@pytest.mark.parametrize("c_compat", [False, True])
def test_advisory_warnings_where_the_c_prints_them(c_compat, work, capsys):
    flags = [*SMALL[:-2], "-oversample", "1", "-N", "40", *ODET, "-floatfile", "f.bin"]
    assert main(flags + (["--c-compat", "-nopgm", "-nonoise"] if c_compat else [])) == 0
    out, err = capsys.readouterr()
    stream, other = (out, err) if c_compat else (err, out)
    assert WARNED in stream and WARNED not in other
    assert re.search(r"recommend -oversample \d+ to work around this", stream)


def test_mosaic_and_detector_advisories(work, capsys):
    assert main([*SMALL, "-mosaic", "0.5", "-detector_thick", "100", "-floatfile", "f.bin"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: finite mosaicity with only one domain! upping to 10 mosaic domains" in err
    assert "WARNING: setting detector attenuation depth to 10000 m" in err
    assert main([*SMALL, "-mosaic_domains", "3", "-floatfile", "f.bin"]) == 0
    assert "WARNING: no mosaic spread specified.  setting mosaic_domains = 1" in capsys.readouterr().err


def test_quiet_set_up_has_no_warnings(work, capsys):
    assert main([*SMALL[:-2], "-floatfile", "f.bin"]) == 0  # the C's own oversampling: nothing to recommend
    assert "WARNING" not in "".join(capsys.readouterr())


def test_pilatus_script_is_the_seed_case():
    """tools/pilatus6m.sh runs exactly the flags of golden case full_pilatus6m ({shared} = $shared)."""
    text = (ROOT / "tools" / "pilatus6m.sh").read_text()
    command = text[text.index("exec nanobragg") :].replace("\\\n", " ")
    argv = shlex.split(command)[2:]
    assert argv[-1] == "$@"
    expected = [t.replace("{shared}", "$shared") for t in get_case("full_pilatus6m").flags]
    assert argv[:-1] == expected


def test_help_text_has_one_line_per_row_head():
    text = help_text()
    assert text.count("\n  -cell ") == 1
