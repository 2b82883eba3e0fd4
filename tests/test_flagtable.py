"""The flag table (flagtable.FLAGS) is the one source of the flags' facts: docs/cli.md is generated from it,
validation accepts exactly its spellings, its C variables are what the literal option loop sets, and its config
fields are what refusals name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nanobragg_torch.cflags import ALL_FLAGS, c_defaults, c_option_loop, validate
from nanobragg_torch.cli import main
from nanobragg_torch.config import BeamConfig, CrystalConfig, DetectorConfig, SimulationConfig
from nanobragg_torch.flagtable import ARITY, FLAGS, flags_setting, help_text, markdown
from nanobragg_torch.validation import ConfigError

# a well-formed value of every kind
PROBE = {"": [], "f": ["2.5"], "i": ["3"], "s": ["x.txt"], "F3": ["0.1", "0.2", "0.3"], "I2": ["1", "2"],
         "I4": ["1", "2", "3", "4"], "cell": ["10", "20", "30", "80", "85", "95"], "misset": ["1", "2", "3"],
         "pivot": ["sample"], "abs": ["100"], "dtype": ["float64"]}
PRE_PASS = {"-mask": ("maskfilename",)}  # read in the C's pre-pass, not in its option loop


class _Recorder(dict):
    """The C's variables, recording every assignment of the option loop."""

    def __init__(self, values: dict) -> None:
        super().__init__(values)
        self.assigned: list[str] = []

    def __setitem__(self, key, value) -> None:
        self.assigned.append(key)
        super().__setitem__(key, value)


def _set_by(name: str, kind: str) -> set[str]:
    v = _Recorder(c_defaults())
    before = {k: list(x) if isinstance(x, list) else x for k, x in v.items()}
    c_option_loop([name, *PROBE[kind], "x"], v)  # a trailing token: the `argc > i+1` guards pass
    changed_lists = {k for k, x in v.items() if isinstance(x, list) and x != before[k]}
    return set(v.assigned) | changed_lists


def test_docs_cli_md_is_generated_from_the_table():
    doc = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    assert doc.read_text() == markdown(), "regenerate: python -m nanobragg_torch.flagtable > docs/cli.md"


def test_every_spelling_once_with_a_known_kind():
    names = [n for f in FLAGS for n in f.names]
    assert len(names) == len(set(names))
    assert set(names) == set(ALL_FLAGS)
    assert {f.kind for f in FLAGS} <= set(PROBE) and set(ARITY) <= set(PROBE)


@pytest.mark.parametrize("flag", [f for f in FLAGS if not f.own], ids=lambda f: f.names[0])
def test_c_variables_are_what_the_option_loop_sets(flag):
    for name in flag.names:
        validate([name, *PROBE[flag.kind]])
        assert set(flag.c_vars) <= set(c_defaults()), name
        got = set(PRE_PASS.get(name, ())) | _set_by(name, flag.kind)
        assert got <= set(flag.c_vars), f"{name} also sets {sorted(got - set(flag.c_vars))}"
    union = set().union(*(_set_by(n, flag.kind) for n in flag.names)) | {
        v for n in flag.names for v in PRE_PASS.get(n, ())}
    assert union == set(flag.c_vars), flag.names


def test_help_lists_every_flag(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == help_text()
    for f in FLAGS:
        assert " ".join(f.names) in out


# config fields no flag sets (the C derives the layer step from -detector_thick and -detector_thicksteps)
API_ONLY = {"detector.thickstep"}
# what a flag sets that is not a SimulationConfig field: render options, and the detector's orientation as a whole
NOT_CONFIG = {"dtype", "device", "samples_per_chunk", "detector.orientation"}


def test_the_table_maps_every_config_field_to_its_flags():
    """The `fields` column is the one map from config fields to flags (validation's messages name flags through
    it): every field it names exists, and every config field is set by some flag or is API-only."""
    config = {f.name for f in dataclasses.fields(SimulationConfig)} - {"detector", "beam", "crystal"}
    for section, cls in (("detector", DetectorConfig), ("beam", BeamConfig), ("crystal", CrystalConfig)):
        config |= {f"{section}.{f.name}" for f in dataclasses.fields(cls)}
    named = {field for f in FLAGS for field in f.fields}
    assert named - config == NOT_CONFIG
    assert config - named == API_ONLY
    assert all(not f.fields for f in FLAGS if f.names[0] in ("-printout", "-seed", "-floatfile"))  # outputs set none


def test_refusals_name_the_flags_from_the_table():
    assert flags_setting("beam.wavelength") == "-lambda/-wave/-wavelength/-energy"
    assert flags_setting("beam.hdivsteps/vdivsteps/dispsteps") == "-hdivsteps/-vdivsteps/-divsteps/-dispsteps"
    assert flags_setting("detector.thickstep") is None
    with pytest.raises(ConfigError, match="^flag -lambda/-wave/-wavelength/-energy: must not be zero$"):
        raise ConfigError("beam.wavelength", "must not be zero", flags=True)
    with pytest.raises(ConfigError, match="^config field detector.thickstep: x$"):
        raise ConfigError("detector.thickstep", "x", flags=True)
