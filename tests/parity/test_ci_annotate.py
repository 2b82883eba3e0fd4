"""tools/ci_annotate.py: failures become at most 10 workflow annotations, the largest drift first, each on
its test function's line, naming the factor; plain failures follow; special characters escaped."""

from __future__ import annotations

import json
import subprocess
import sys

from nanobragg_torch.parity.goldens import repo_root

ROOT = repo_root()
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.golden.test_golden_parity" name="test_image_matches_golden[float64-pinned-a]">
<failure message="image drifted">x</failure></testcase>
<testcase classname="tests.test_cli" name="test_something"><failure message="boom: 50%, twice&#10;more">y</failure>
</testcase><testcase classname="tests.test_cli" name="test_ok"/></testsuite></testsuites>"""


def test_ranked_annotations_on_the_test_lines(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    fails = [{"nodeid": f"tests/golden/test_golden_parity.py::test_image_matches_golden[float64-pinned-{c}]",
              "kind": "image", "case": f"pinned/{c}", "factor": f, "rel": r, "pixel": [3, 4]}
             for c, f, r in [("a", "polar", 1e-5), ("b", "omega_pixel", 3e-3)] + [(f"n{i}", "F_cell", 1e-7)
                                                                                    for i in range(12)]]
    (tmp_path / "drift.json").write_text(json.dumps({"failures": fails, "changes": []}))
    tool = [sys.executable, str(ROOT / "tools" / "ci_annotate.py"), "--junit", str(tmp_path / "junit.xml")]
    out = subprocess.run([*tool, "--drift", str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 10
    line = next(i + 1 for i, s in enumerate((ROOT / "tests/golden/test_golden_parity.py").read_text().splitlines())
                if s.startswith("def test_image_matches_golden"))
    assert out[0].startswith(f"::error file=tests/golden/test_golden_parity.py,line={line},title=drift at omega_pixel")
    assert "polar" in out[1] and "pixel (slow, fast) (3, 4)" in out[1]
    few = subprocess.run([*tool, "--limit", "5"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(few) == 2 and few[1].startswith("::error file=tests/test_cli.py,line=")
    assert few[1].endswith("::boom: 50%25, twice")  # the first line of the message, escaped
