"""C-parity library: trace schema, parsers of the C's stdout and printout, drift comparison, goldens.

Modules: ``schema`` (the canonical per-pixel factors in pipeline order), ``printout`` (C -printout_pixel
blocks and our TRACE_PY lines as Trace objects), ``cstdout`` (the C's stdout as a dict), ``compare``
(factor-by-factor and image comparisons), ``fingerprint`` (text fingerprints for syrupy snapshots),
``goldens`` (case matrix and verified golden access), ``regen`` (rendering goldens with a C binary).
See docs/golden.md.

Nothing here is loaded by importing the package. The test extra's libraries (pytest, syrupy, deepdiff,
matplotlib, markdown) are imported where a parity module uses them, through `import_extra`, which names what to install
when one is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "test"  # pyproject's optional dependencies that hold these libraries


def import_extra(name: str) -> ModuleType:
    """Import a library of the test extra (a module path such as "deepdiff.operator"); if it is not installed,
    an ImportError saying to install the extra."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.partition(".")[0]
        raise ImportError(f"{top} is not installed: the C-parity tools need the {EXTRA} extra, "
                          f"pip install 'nanobragg-torch[{EXTRA}]'") from exc
