#!/usr/bin/env python
"""git textconv driver for the golden arrays: prints a .npz in the fingerprint's vocabulary (shape, sum,
extremes, argmax, mean, nonzero count, percentiles, block sums), so `git diff`, `git log -p` and `git show`
print a readable diff of a golden image instead of "Binary files differ".

    python tools/golden_textconv.py --install   # once per clone: git config diff.nbgolden.textconv ...
    python tools/golden_textconv.py FILE.npz    # what git runs (.gitattributes: golden/**/*.npz diff=nbgolden)

2-D arrays print as a fingerprint [image] section (8 x 8 grid of block sums); a stack of crops prints one
line of statistics per crop; small arrays print their values.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def describe(path: str | Path) -> str:
    from nanobragg_torch.parity.fingerprint import fingerprint, format_number

    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"(not a readable .npz: {exc})\n"
    out = []
    with z:
        for key in sorted(z.files):
            a = z[key]
            out.append(f"== {key}: {a.dtype} shape {tuple(a.shape)}")
            if a.ndim == 2 and a.size > 16:
                out += fingerprint(image=a.astype(np.float64)).splitlines()[2:]
            elif a.ndim == 3:
                for i, c in enumerate(a.astype(np.float64)):
                    fin = c[np.isfinite(c)]
                    out.append(f"  [{i}] sum {format_number(fin.sum())} max {format_number(fin.max(initial=0.0))} "
                               f"min {format_number(fin.min(initial=0.0))} non-finite {c.size - fin.size}")
            else:
                flat = a.ravel()
                shown = " ".join(str(v) for v in flat[:32]) + (" ..." if flat.size > 32 else "")
                out.append(f"  {shown}")
    return "\n".join(out) + "\n"


def install() -> int:
    cmd = ["git", "-C", str(ROOT), "config", "diff.nbgolden.textconv", f"{sys.executable} tools/golden_textconv.py"]
    rc = subprocess.run(cmd).returncode
    if rc == 0:
        print("git diff now prints golden .npz files as text in this clone (.gitattributes: diff=nbgolden)")
    return rc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--install"]:
        return install()
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(describe(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
