"""The test harness stays in its lane: installing the package changes nobody else's pytest, and the package,
its command and the demo run without the test extra's libraries.

Both run in a fresh interpreter (subprocess) of this environment, with a `sys.meta_path` hook that refuses the
libraries under test as if they were not installed (and records who asked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TEST_LIBRARIES = ("pytest", "_pytest", "syrupy", "deepdiff", "matplotlib")

# installed first in the child: `hidden` modules raise ModuleNotFoundError, as if not installed; every attempt
# is recorded (a top-level name) in HIDE_ATTEMPTS
HIDE = textwrap.dedent(
    """
    import sys

    class _Hide:
        def __init__(self, hidden):
            self.hidden, self.attempts = set(hidden), []

        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in self.hidden:
                self.attempts.append(top)
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    HIDE = _Hide(__HIDDEN__)
    sys.meta_path.insert(0, HIDE)
    """
)


def _hide(names: tuple[str, ...]) -> str:
    return HIDE.replace("__HIDDEN__", repr(names))


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_child_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_a_foreign_projects_pytest_loads_neither_torch_nor_the_package(tmp_path: Path) -> None:
    """Another project's one-line test in this environment, with deepdiff missing (the package installed without
    its test extra): pytest starts, loads no plugin of ours, and neither torch nor the package is imported."""
    project = tmp_path / "other_project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = \"-p no:cacheprovider\"\n")
    (project / "test_one.py").write_text(textwrap.dedent(
        """
        import sys

        def test_one():
            assert 1 + 1 == 2
        """
    ))
    code = _hide(("deepdiff",)) + textwrap.dedent(
        f"""
        import json
        import pytest

        rc = pytest.main(["-q", {str(project)!r}])
        loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & {{"torch", "nanobragg_torch", "deepdiff"}})
        print("RESULT " + json.dumps({{"rc": int(rc), "loaded": loaded}}))
        """
    )
    run = _run(code, project)
    lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, run.stdout + run.stderr
    result = json.loads(lines[-1][len("RESULT "):])
    assert result == {"rc": 0, "loaded": []}, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_the_package_command_and_demo_run_without_the_test_libraries(tmp_path: Path) -> None:
    """`import nanobragg_torch`, a render through the API, the command's help and `nanobragg -demo` with pytest,
    syrupy, deepdiff and matplotlib hidden: all work, and none of them is even asked for."""
    code = _hide(TEST_LIBRARIES) + textwrap.dedent(
        """
        import contextlib, io, json
        import nanobragg_torch
        from nanobragg_torch import BeamConfig, CrystalConfig, DetectorConfig, SimulationConfig, simulate
        from nanobragg_torch.cli import main

        cfg = SimulationConfig(
            detector=DetectorConfig(fpixels=8, spixels=8, pixel_size=1e-4, distance=0.1),
            beam=BeamConfig(wavelength=1e-10),
            crystal=CrystalConfig(cell=(5e-9, 5e-9, 5e-9, 1.5707963267948966, 1.5707963267948966,
                                        1.5707963267948966), Na=3, Nb=3, Nc=3, default_F=100.0),
        )
        api_max = float(simulate(cfg).max())
        with contextlib.redirect_stdout(io.StringIO()):
            help_rc = main(["--help"])
        demo_rc = main(["-demo", "-detpixels", "48", "-outdir", "out"])
        print("RESULT " + json.dumps({"api_max": api_max, "help": help_rc, "demo": demo_rc,
                                      "attempts": sorted(set(HIDE.attempts))}))
        """
    )
    run = _run(code, tmp_path)
    lines = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, run.stdout + run.stderr
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["api_max"] > 0 and result["help"] == 0 and result["demo"] == 0, run.stderr
    assert result["attempts"] == [], f"asked for test libraries: {result['attempts']}"
    assert (tmp_path / "out" / "demo_float.bin").stat().st_size == 48 * 48 * 4


@pytest.mark.parametrize(("module", "attribute", "library"), [
    ("nanobragg_torch.parity.compare", "compare_traces", "deepdiff"),
    ("nanobragg_torch.parity.fingerprint", "FingerprintExtension", "syrupy"),
    ("nanobragg_torch.parity.pictures", "diff_figure_png", "matplotlib"),
])
def test_parity_modules_name_the_extra_when_a_test_library_is_missing(tmp_path: Path, module: str, attribute: str,
                                                                      library: str) -> None:
    """A parity module imports without its test library; using the part that needs it says what to install."""
    code = _hide((library,)) + textwrap.dedent(
        f"""
        import importlib
        import numpy as np
        mod = importlib.import_module({module!r})
        try:
            if {attribute!r} == "compare_traces":
                mod.compare_traces({{"polar": 1.0}}, {{"polar": 1.0}})
            elif {attribute!r} == "diff_figure_png":
                mod.diff_figure_png(np.ones((4, 4)), np.ones((4, 4)))
            else:
                getattr(mod, {attribute!r})
        except ImportError as exc:
            print("RESULT " + str(exc))
        """
    )
    run = _run(code, tmp_path)
    assert f"RESULT {library} is not installed" in run.stdout, run.stdout + run.stderr
    assert "pip install 'nanobragg-torch[test]'" in run.stdout


def test_this_suite_loads_the_drift_plugin_from_its_conftest(pytestconfig) -> None:
    """The plugin comes from tests/conftest.py (`pytest_plugins`), not from an entry point of the package."""
    assert pytestconfig.pluginmanager.has_plugin("nanobragg_torch.parity.drift")
    assert pytestconfig.getoption("--drift-report", default="absent") != "absent"
    from importlib.metadata import entry_points

    ours = [ep for ep in entry_points(group="pytest11") if ep.value.startswith("nanobragg_torch")]
    assert not ours, f"the package registers a pytest plugin: {ours}"
