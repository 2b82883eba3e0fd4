#!/usr/bin/env python
"""Write, or check, the 8-bit PNG previews of the golden images (golden/previews/<variant>/<case>.png).

    python tools/golden_previews.py            # rewrite every preview from the committed goldens
    python tools/golden_previews.py --check    # exit 1 naming each preview out of step (or orphaned)

The regen tool writes a golden's preview with the golden; this rewrites them all (no C binary needed: the
previews are drawn from the committed arrays). See nanobragg_torch/parity/previews.py for the fixed scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobragg_torch.parity.goldens import golden_dir, load_manifest  # noqa: E402
from nanobragg_torch.parity.previews import out_of_step, write_preview  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any preview is out of step")
    args = ap.parse_args(argv)
    root = golden_dir()
    if args.check:
        bad = out_of_step(root)
        for line in bad:
            print(line)
        print(f"{len(bad)} previews out of step" if bad else "previews in step")
        return 1 if bad else 0
    entries = load_manifest(root).get("entries", {})
    written = [write_preview(root, *key.split("/", 1)) for key in entries]
    for path in sorted(p for p in (root / "previews").rglob("*.png")):
        if f"{path.parent.name}/{path.stem}" not in entries:
            path.unlink()
            print(f"removed {path.relative_to(root.parent)} (no golden)")
    print(f"{sum(p is not None for p in written)} previews written under {root / 'previews'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
