"""Review output a reviewer can trust: the drift summary row shows one case's name with that case's numbers;
a partial run neither advises deleting the snapshots it did not use nor deletes them on an update."""

from __future__ import annotations

from pathlib import Path

from nanobragg_torch.parity.drift import DriftRecord, report_markdown, summary_lines

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _rec(case: str, rel: float, corr: float, ratio: float) -> DriftRecord:
    return DriftRecord(f"t::{case}", "image", case, factor="polar", pixel=(1, 2), rel=rel,
                       metrics={"corr": corr, "sum_ratio": ratio})


def test_summary_row_names_the_case_its_numbers_belong_to():
    # the worst metrics (corr, sum ratio) belong to case_b, the largest relative difference to case_a
    recs = [_rec("pinned/case_a", 3e-5, 0.99999990, 1.00001), _rec("pinned/case_b", 1e-6, 0.99, 1.5)]
    row = next(line for line in summary_lines(recs, [], None) if line.strip().startswith("polar"))
    assert "pinned/case_a" in row and "3e-05" in row, row
    assert "0.999999900" in row and "1.00001000" in row, row  # case_a's own metrics
    assert "0.99000" not in row and "1.5" not in row, row  # never case_b's beside case_a's name
    md = report_markdown(recs, [])
    assert "| `polar` | 2 | 2 | 3e-05 | pinned/case_a | (1, 2) |" in md


SNAPSHOT_TESTS = '''
import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode


class Text(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    file_extension = "txt"


@pytest.fixture
def snap(snapshot):
    return snapshot.use_extension(Text)


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_value(name, snap):
    assert f"value of {name}\\n" == snap
'''


def _suite(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_snaps=SNAPSHOT_TESTS)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--snapshot-update").assert_outcomes(passed=2)
    folder = pytester.path / "__snapshots__" / "test_snaps"
    assert sorted(p.name for p in folder.iterdir()) == ["test_value[alpha].txt", "test_value[beta].txt"]
    return folder


def test_partial_run_does_not_advise_deleting_snapshots(pytester):
    _suite(pytester)
    for args in (["-k", "alpha"], ["test_snaps.py::test_value[alpha]"], ["--co"], ["-x", "-k", "beta"]):
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
        text = result.stdout.str()
        assert "--snapshot-update to delete" not in text and "snapshot unused" not in text, (args, text)


def test_partial_update_updates_only_what_it_selected(pytester):
    folder = _suite(pytester)
    (folder / "test_value[beta].txt").write_text("stale\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--snapshot-update", "-k", "alpha")
    result.assert_outcomes(passed=1)
    assert (folder / "test_value[beta].txt").read_text() == "stale\n"  # neither rewritten nor deleted
    assert (folder / "test_value[alpha].txt").is_file()


def test_whole_run_still_reports_unused_snapshots(pytester):
    """Only a whole run can tell that a snapshot's test is gone: there syrupy still reports it."""
    folder = _suite(pytester)
    (folder / "test_value[gone].txt").write_text("old\n")
    text = pytester.runpytest_inprocess("-p", "no:cacheprovider").stdout.str()
    assert "1 snapshot unused" in text, text
