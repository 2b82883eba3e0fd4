"""Small 8-bit PNG previews of the golden images, committed beside them (``golden/previews/<variant>/<case>.png``)
so that GitHub's own image views (2-up, swipe, onion skin) show a golden change in a pull request, where
the ``.npz`` arrays show only as "Binary files differ".

What is drawn: the float image of a small golden (``image.npz``), or the block-sum grid of a full-size one
(``summary.npz``), block-averaged down to at most :data:`SIDE` pixels a side. The scale is fixed from the C
golden and does not float with small changes: log10 over :data:`DECADES` decades below the golden's peak
rounded *up* to a power of ten, quantised to 0..255 and drawn with the viridis palette (one byte per pixel).
A uniform change of a few percent therefore moves the grey levels; the scale is stored in the PNG's text
chunks. Written by the regen tool with each golden; ``tools/golden_previews.py`` rewrites or checks them all.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import import_extra

__all__ = [
    "SIDE", "DECADES", "preview_levels", "preview_png", "preview_path", "write_preview", "golden_arrays", "out_of_step",
]

SIDE = 96  # 128-pixel goldens are drawn at 64: all previews together about 0.6 MB
DECADES = 5.0


def _source(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    for key in ("image", "grid"):
        if key in arrays and np.ndim(arrays[key]) == 2:
            return np.asarray(arrays[key], dtype=np.float64)
    return None


def preview_levels(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float] | None:
    """(uint8 levels, top of the scale) of a golden's arrays, or None when it has no 2-D image."""
    a = _source(arrays)
    if a is None:
        return None
    n = max(1, math.ceil(max(a.shape) / SIDE))
    if n > 1:
        s, f = (a.shape[0] // n) * n, (a.shape[1] // n) * n
        a = a[:s, :f].reshape(s // n, n, f // n, n).mean(axis=(1, 3))
    finite = a[np.isfinite(a)]
    peak = float(np.abs(finite).max()) if finite.size else 0.0
    top = 10.0 ** math.ceil(math.log10(peak)) if peak > 0 else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (np.log10(np.clip(np.abs(a), top * 10.0**-DECADES, None) / top) + DECADES) / DECADES
    levels = np.round(np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    return levels, top


def preview_png(arrays: Mapping[str, np.ndarray], title: str = "") -> bytes | None:
    from PIL import Image, PngImagePlugin

    colormaps = import_extra("matplotlib").colormaps

    got = preview_levels(arrays)
    if got is None:
        return None
    levels, top = got
    img = Image.fromarray(levels, mode="L").convert("P")
    img.putpalette(colormaps["viridis"](np.arange(256) / 255.0, bytes=True)[:, :3].ravel().tolist())
    img.putdata(levels.ravel().tolist())  # convert("P") may have remapped; indices are the levels
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title)
    info.add_text("Scale", f"log10(|value| / {top:g}) over {DECADES:g} decades -> 0..255, viridis")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, pnginfo=info)
    return buf.getvalue()


def preview_path(root: Path, variant: str, case: str) -> Path:
    return Path(root) / "previews" / variant / f"{case}.png"


def golden_arrays(directory: Path) -> dict[str, np.ndarray] | None:
    for name in ("image.npz", "summary.npz"):
        p = Path(directory) / name
        if p.is_file():
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
    return None


def write_preview(root: Path, variant: str, case: str) -> Path | None:
    """Write (or remove, when the golden has no image) the preview of ``golden/<variant>/<case>``."""
    arrays = golden_arrays(Path(root) / variant / case)
    path = preview_path(root, variant, case)
    png = preview_png(arrays, f"{variant}/{case} (C golden)") if arrays is not None else None
    if png is None:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def out_of_step(root: Path) -> list[str]:
    """Previews that differ (in their pixels) from the ones the committed goldens give, are missing, or
    have no golden; one line each."""
    from PIL import Image

    from .goldens import load_manifest

    root = Path(root)
    entries = load_manifest(root).get("entries", {})
    bad = []
    for key in entries:
        variant, case = key.split("/", 1)
        arrays = golden_arrays(root / variant / case)
        path = preview_path(root, variant, case)
        want = preview_levels(arrays) if arrays is not None else None
        if want is None:
            if path.exists():
                bad.append(f"{path}: the golden {key} has no image")
            continue
        if not path.is_file():
            bad.append(f"{path}: missing (python tools/golden_previews.py)")
            continue
        with Image.open(path) as im:
            got = np.asarray(im) if im.mode == "P" else None
        if got is None or got.shape != want[0].shape or not np.array_equal(got, want[0]):
            bad.append(f"{path}: out of step with golden/{key} (python tools/golden_previews.py)")
    for path in sorted((root / "previews").rglob("*.png")):
        if f"{path.parent.name}/{path.stem}" not in entries:
            bad.append(f"{path}: no golden {path.parent.name}/{path.stem}")
    return bad
