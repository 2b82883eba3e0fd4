"""index.html of the drift report in a real browser: headless Chromium loads the page, every image decodes,
the drifted factor is on the page, every blink/swipe toggle works, and a screenshot is taken (skips cleanly
where no Chromium is installed; NB_CHROMIUM names the binary; `.ci/run` installs Debian's chromium)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from nanobragg_torch.parity.compare import compare_traces
from nanobragg_torch.parity.drift import DriftNote, write_reports
from nanobragg_torch.parity.goldens import load_golden


def _chromium() -> str | None:
    for name in (os.environ.get("NB_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _report(tmp_path, cases: int = 3):
    """A drift report of a real golden against a copy with polar scaled by 1 + 1e-5 in each case."""
    golden = load_golden("mosflm_default", "pinned")
    pixel = golden.traced_pixels[0]
    ref_trace = golden.c_trace(pixel)
    ours_trace = ref_trace.merged(ref_trace)
    ours_trace.values["polar"] = float(ours_trace.values["polar"]) * (1 + 1e-5)
    report = compare_traces(ref_trace, ours_trace)
    failures, pictures = [], {}
    for i in range(cases):
        note = DriftNote(f"tests/golden/test_golden_parity.py::test_image_matches_golden[float64-pinned-c{i}]")
        note.case(f"pinned/case{i}", "image")
        note.trace(report, pixel)
        ours = golden.image * (1 + 1e-5 * (1 + i))
        note.image({"corr": 0.99999999, "sum_ratio": 1 + 1e-5 * (1 + i)}, golden.image, ours)
        failures.append(note.record)
        pictures[note.record.case] = (note.record, note.pictures)
    write_reports(tmp_path, failures, [], pictures)
    return tmp_path / "index.html"


def test_drift_page_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("NB_REQUIRE_CHROMIUM"):  # .ci/run installs it: there the test must run
            pytest.fail("NB_REQUIRE_CHROMIUM is set but no Chromium is installed (apt-get install chromium)")
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; or set NB_CHROMIUM)")
    page = _report(tmp_path)
    text = page.read_text()
    # per drawn case: the three-panel figure and the two images of the comparer
    assert text.count("data:image/png;base64,") == 9 and text.count("class=cmp ") == 3
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=10000", "--dump-dom", page.as_uri() + "#selftest"],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r'id="image-check" data-loaded="(\d+)" data-total="(\d+)"', dom.stdout)
    assert m is not None, f"chromium rendered no image check (exit {dom.returncode}): {dom.stderr[-500:]}"
    assert m.group(1) == m.group(2) == "9", f"{m.group(1)} of {m.group(2)} images loaded"
    t = re.search(r'id="toggle-check" data-ok="(\d+)" data-total="(\d+)"', dom.stdout)
    assert t is not None and t.group(1) == t.group(2) == "3", f"toggles: {t and t.groups()}"
    # the drifted factor: in the rendered summary table, the table of contents and each case's title
    assert re.search(r"<td><code>polar</code></td>", dom.stdout), "summary table not rendered as HTML"
    assert 'href="#factor-polar"' in dom.stdout and dom.stdout.count("first divergent factor polar") == 3
    shot = tmp_path / "index.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    assert float(np.std(img[..., :3])) > 0.05  # not a blank page
    keep = os.environ.get("NB_DRIFT_SCREENSHOT")
    if keep:  # for a person to look at
        shutil.copy(shot, keep)
