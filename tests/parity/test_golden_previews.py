"""The golden previews (golden/previews/, what GitHub shows of a golden change) are in step with the
committed goldens, keep a fixed scale, and are written by the regen tool with each golden; the textconv
driver makes `git diff` of a golden .npz readable."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np

from nanobragg_torch.parity import regen
from nanobragg_torch.parity.goldens import golden_dir, npz_bytes, repo_root
from nanobragg_torch.parity.previews import DECADES, SIDE, out_of_step, preview_levels, preview_path

ROOT = repo_root()


def test_every_golden_image_has_its_preview_in_step():
    bad = out_of_step(golden_dir())
    assert not bad, "\n".join(bad[:10])
    total = sum(p.stat().st_size for p in (golden_dir() / "previews").rglob("*.png"))
    assert total < 1_000_000, f"previews take {total} bytes"


def test_preview_scale_is_fixed_from_the_golden():
    img = np.full((40, 40), 10.0)
    img[5, 5] = 300.0  # peak 300: the scale's top is 1000, so the levels do not float with the peak
    levels, top = preview_levels({"image": img})
    assert top == 1000.0
    assert levels[5, 5] == round((np.log10(0.3) + DECADES) / DECADES * 255)
    brighter, top2 = preview_levels({"image": img * 1.05})  # a uniform 5 % change moves the grey levels
    assert top2 == top and int(brighter[0, 0]) - int(levels[0, 0]) == round(np.log10(1.05) / DECADES * 255)
    big, _ = preview_levels({"image": np.ones((1000, 500))})
    assert max(big.shape) <= SIDE and preview_levels({"crops": np.ones((2, 4, 4))}) is None


def test_regen_writes_the_preview_with_the_golden(tmp_path):
    img = np.arange(64, dtype=np.float32).reshape(8, 8)
    new = regen.Rendered(case=None, variant="pinned", files={"image.npz": npz_bytes({"image": img})}, entry={},
                         image=img)
    regen._write(new, tmp_path / "pinned" / "toy")
    png = preview_path(tmp_path, "pinned", "toy")
    from PIL import Image

    with Image.open(png) as im:
        assert np.array_equal(np.asarray(im), preview_levels({"image": img})[0])


def test_git_diff_prints_a_golden_through_the_textconv_driver(tmp_path):
    repo = tmp_path / "r"
    (repo / "golden" / "pinned" / "toy").mkdir(parents=True)
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    shutil.copytree(ROOT / "tools", repo / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    out = subprocess.run([sys.executable, str(repo / "tools" / "golden_textconv.py"), "--install"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    f = repo / "golden" / "pinned" / "toy" / "image.npz"
    img = np.ones((32, 32), dtype=np.float32)
    f.write_bytes(npz_bytes({"image": img}))
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    img[3, 4] = 2.0
    f.write_bytes(npz_bytes({"image": img}))
    diff = subprocess.run([*git, "diff"], capture_output=True, text=True, check=True).stdout
    assert "Binary files" not in diff
    assert "-  sum                1.0240000e+03" in diff and "+  sum                1.0250000e+03" in diff
    assert "+  argmax (slow fast) 3 4" in diff
