"""Docs that run: every ```sh (or bash, shell, console) and ```python block of README.md and docs/*.md is executed.

Blocks run in the order of their file, in a temporary folder per file (so a block can use the files an earlier
one made, e.g. `nanobragg -demo` then `-mat out/demo.mat`) that holds links to the checkout's tools/, golden/
and docs/; the Python blocks of one file share one namespace (a later block continues an earlier one). Shell
blocks run under `bash -e -o pipefail` with this interpreter's bin folder first on PATH; NB_SHARED_DATA points
at the shared reference inputs, NB_KERNEL_CACHE at the tests' kernel cache (conftest.py).

Fences without one of those languages (```, ```text, ```toml, indented blocks) are not run: use them for
output, file trees and formats. A block is marked by HTML comments on the lines right above its fence, one
per line, `<!-- docs-test: KEY reason -->`:

  skip REASON      never run (installs, the whole suite, pseudo-code, a long job); the reason is the skip message
  needs-c          needs the C binaries (NB_C_BIN executable); skipped cleanly without them
  needs-gpu        needs a CUDA device
  needs-ray        needs Ray installed
  needs-shared     needs the shared reference inputs (../shared/data or NB_SHARED_DATA)
  slow             a long render: marked `slow` (deselect with -m 'not slow')
  installed        the block opens with the install command (`pip install ... && rest`): the test runs inside
                   the installed checkout, so it drops that command and runs the rest

Unknown keys fail the test, so a typo in a marker cannot silently skip a block.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nanobragg_torch.parity.goldens import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell", "console"}
PYTHON = {"python", "py"}
KEYS = {"skip", "needs-c", "needs-gpu", "needs-ray", "needs-shared", "slow", "installed"}
_INSTALL = re.compile(r"^\s*pip install [^\n]*?&&\s*")
_FENCE = re.compile(r"^```\s*([A-Za-z0-9_+-]*)\s*$")
_MARK = re.compile(r"^<!--\s*docs-test:\s*(\S+)\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str  # "sh" or "python"
    code: str
    marks: tuple[tuple[str, str], ...]  # (key, reason)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The runnable blocks of a Markdown file, with their docs-test marks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        lang = m.group(1).lower()
        marks = []
        j = i - 1
        while j >= 0 and (mark := _MARK.match(lines[j])):
            marks.append((mark.group(1), mark.group(2)))
            j -= 1
        kind = "sh" if lang in SHELL else "python" if lang in PYTHON else None
        if kind:
            out.append(Block(path, i + 1, kind, "\n".join(lines[i + 1 : end]) + "\n", tuple(reversed(marks))))
        i = end + 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]


def _params() -> list:
    out = []
    for b in ALL:
        marks = [pytest.mark.slow] if any(k == "slow" for k, _ in b.marks) else []
        out.append(pytest.param(b, id=b.id, marks=marks))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Per doc file: its work folder (with links to tools/, golden/, docs/) and its Python namespace."""
    made: dict[Path, tuple[Path, dict]] = {}

    def get(path: Path) -> tuple[Path, dict]:
        if path not in made:
            work = tmp_path_factory.mktemp(path.stem)
            for name in ("tools", "golden", "docs"):
                (work / name).symlink_to(ROOT / name)
            made[path] = (work, {"__name__": "__docs__"})
        return made[path]

    return get


def _skip_reason(block: Block) -> str | None:
    for key, reason in block.marks:
        if key not in KEYS:
            pytest.fail(f"{block.id}: unknown docs-test mark {key!r} (known: {', '.join(sorted(KEYS))})")
        if key == "skip":
            return reason or "marked skip"
        if key == "needs-c" and not (os.environ.get("NB_C_BIN") and os.access(os.environ["NB_C_BIN"], os.X_OK)):
            return "needs the C binary (NB_C_BIN)"
        if key == "needs-gpu" and not torch.cuda.is_available():
            return "needs a CUDA device"
        if key == "needs-ray" and shutil.which("ray") is None:
            try:
                import ray  # noqa: F401
            except ImportError:
                return "needs Ray"
        if key == "needs-shared" and not shared_data_dir().is_dir():
            return f"needs the shared reference inputs ({shared_data_dir()}; set NB_SHARED_DATA)"
    return None


def test_the_docs_have_runnable_blocks():
    assert len(ALL) >= 8, [b.id for b in ALL]


@pytest.mark.parametrize("block", _params())
def test_doc_block_runs(block: Block, folders, monkeypatch) -> None:
    reason = _skip_reason(block)
    if reason:
        pytest.skip(reason)
    work, namespace = folders(block.path)
    code = block.code
    if any(k == "installed" for k, _ in block.marks):
        code, n = _INSTALL.subn("", code, count=1)
        assert n == 1, f"{block.id}: marked 'installed' but does not open with `pip install ... &&`"
    if block.lang == "sh":
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
               "NB_SHARED_DATA": str(shared_data_dir()), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=work, env=env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"{block.id} exited {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    else:
        monkeypatch.chdir(work)
        exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 (the docs' own code, on purpose)


_COUNT = re.compile(r"(\d+) goldens \((\d+) cases\)")


def test_golden_counts_come_from_the_manifest():
    """Every "N goldens (M cases)" in the docs is the manifest's count: goldens and the cases they cover."""
    from nanobragg_torch.parity.goldens import load_manifest

    entries = load_manifest()["entries"]
    want = (len(entries), len({k.split("/", 1)[1] for k in entries}))
    found = [(doc.relative_to(ROOT), m) for doc in DOCS for m in _COUNT.finditer(doc.read_text())]
    assert found, "no golden count in the docs (docs/golden.md states how many goldens the suite has)"
    wrong = [f"{doc}: {m.group(0)}" for doc, m in found if (int(m.group(1)), int(m.group(2))) != want]
    assert not wrong, f"golden counts differ from golden/manifest.json ({want[0]} goldens ({want[1]} cases)): {wrong}"
