"""The suite checks its own naming: every factor of ``perturb.PERTURBABLE``, changed by 1e-5 in both
evaluation paths, in the fused kernel only or in the general path only, must make the golden suite's first
failure name that factor (and, for a kernel-only change, the kernel).

Each check runs the real golden tests of one case (tests/golden/test_golden_parity.py, in file order, stopping
at the first failure) in-process through pytester, with the perturbation around the run and the renders eager
(NB_COMPILE=0), and reads the first failure's message. The case of each factor is the golden that sees it
best (``sensitivity.best_case``: visible in the image and the trace, the cheapest such golden). This is the
guard against a refactor that silently breaks the verdict (tests/golden/verdict.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from perturb import PERTURBABLE, WAYS, perturbed

from nanobragg_torch.parity.goldens import load_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_TESTS = Path(__file__).with_name("test_golden_parity.py")
TESTS = ("test_image_matches_golden[float64-{k}]", "test_image_matches_golden[float32-{k}]",
         "test_traces_match_c_printout[{k}]", "test_trace_is_the_image[{k}]",
         "test_statistics_and_files_match[{k}]", "test_fingerprint_snapshot[{k}]")


def _case(factor: str) -> tuple[str, str]:
    from sensitivity import best_case

    return best_case(factor)


class _Perturbation:
    """pytester plugin: the golden tests' renders run with the factor perturbed; the test modules' render
    caches are emptied before and after (the outer session may share the module)."""

    def __init__(self, factor: str, way: str):
        self.factor, self.way = factor, way

    @staticmethod
    def _clear(session) -> None:
        for module in {item.module for item in session.items if hasattr(item, "module")}:
            for obj in vars(module).values():
                if callable(getattr(obj, "cache_clear", None)):
                    obj.cache_clear()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session):
        self._clear(session)
        try:
            with perturbed({self.factor: 1.0 + 1e-5}, self.way):
                return (yield)
        finally:
            self._clear(session)


def first_failure(pytester, monkeypatch, factor: str, way: str) -> tuple[str, str]:
    """(case, message of the golden suite's first failure) with ``factor`` perturbed ``way``."""
    variant, name = _case(factor)
    key = f"{variant}-{name}"
    monkeypatch.setenv("NB_COMPILE", "0")  # eager: the wrappers are seen by the fused kernel
    ids = [f"{GOLDEN_TESTS}::{t.format(k=key)}" for t in TESTS]
    rec = pytester.inline_run(*ids, "-x", "-p", "no:cacheprovider", "--rootdir", str(ROOT), "-c",
                              str(ROOT / "pyproject.toml"), plugins=[_Perturbation(factor, way)])
    failures = rec.getfailures()
    if not failures:
        passed = len(rec.getreports("pytest_runtest_logreport"))
        pytest.fail(f"{factor} x1.00001 ({way}) in {variant}/{name}: no golden test failed ({passed} reports)",
                    pytrace=False)
    return f"{variant}/{name}", failures[0].longreprtext


def names(message: str, factor: str) -> bool:
    """Whether ``message`` names ``factor`` as the verdict (a word, not a prefix of another factor)."""
    return re.search(rf"(?<![\w]){re.escape(factor)}(?![\w])", message) is not None


@pytest.mark.slow
@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("factor", sorted(PERTURBABLE))
def test_first_failure_names_the_factor(factor, way, pytester, monkeypatch):
    case, message = first_failure(pytester, monkeypatch, factor, way)
    verdict = message.splitlines()[0] if message else ""
    print(f"{factor} | {way} | {case} | {verdict}")  # the table of docs/golden.md (pytest -rP shows it)
    if not names(message, factor):
        pytest.fail(f"{factor} x1.00001 ({way}) in {case}: the first failure does not name {factor}:\n{verdict}",
                    pytrace=False)
    if way == "kernel" and "fused kernel" not in message:
        pytest.fail(f"{factor} x1.00001 (fused kernel only) in {case}: the first failure does not name the fused "
                    f"kernel:\n{verdict}", pytrace=False)


def test_perturbation_cases_have_goldens():
    """Every factor's self-check case is a committed golden (its traced pixel is what the check reads)."""
    for factor in PERTURBABLE:
        variant, name = _case(factor)
        assert load_golden(name, variant).traced_pixels, f"{variant}/{name} traces no pixel"
