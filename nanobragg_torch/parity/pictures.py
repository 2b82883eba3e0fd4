"""Diff pictures with matplotlib: C golden | ours | signed difference, with titles, colour bars and ranges.

Used by the drift report (:mod:`.drift`) and ``tools/diff_picture.py``. The two images share one log
colour scale (``decades`` below their joint maximum); the difference panel shows ``ours - ref`` in a
diverging map symmetric about zero (blue negative, red positive). Only the Agg backend is used.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from . import import_extra

__all__ = ["diff_figure_png", "png_data_uri"]


def _mpl():
    matplotlib = import_extra("matplotlib")
    matplotlib.use("Agg", force=False)
    plt = import_extra("matplotlib.pyplot")
    colors = import_extra("matplotlib.colors")
    return plt, colors.LogNorm, colors.Normalize


def diff_figure_png(
    ref: np.ndarray,
    ours: np.ndarray,
    title: str = "",
    ref_label: str = "C golden",
    ours_label: str = "ours",
    decades: float = 4.0,
    dpi: int = 80,
) -> bytes:
    """PNG bytes of a three-panel figure: ``ref`` | ``ours`` | ``ours - ref`` (NaN pixels left blank)."""
    plt, LogNorm, Normalize = _mpl()
    ref = np.asarray(ref, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    diff = ours - ref
    peak = float(np.nanmax([np.nanmax(ref), np.nanmax(ours)])) if np.isfinite(ref).any() else 0.0
    positive = peak > 0 and bool(np.nanmin([np.nanmin(ref), np.nanmin(ours)]) >= 0)
    norm = LogNorm(vmin=peak * 10.0 ** (-decades), vmax=peak, clip=True) if positive else None
    lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.0
    lim = lim if lim > 0 else 1.0
    fig, axes = plt.subplots(1, 3, figsize=(12.6, 4.0), dpi=dpi)
    fig.subplots_adjust(left=0.05, right=0.97, bottom=0.12, top=0.8, wspace=0.35)  # no layout engine: fast
    panels = (
        (ref, ref_label, "viridis", norm),
        (ours, ours_label, "viridis", norm),
        (diff, f"{ours_label} - {ref_label}", "RdBu_r", Normalize(-lim, lim)),
    )
    for ax, (img, label, cmap, nrm) in zip(axes, panels, strict=True):
        shown = np.ma.masked_invalid(img)
        if nrm is norm and positive:
            shown = np.ma.masked_less_equal(shown, 0)
        im = ax.imshow(shown, cmap=cmap, norm=nrm, interpolation="nearest", origin="upper")
        finite = img[np.isfinite(img)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        ax.set_title(f"{label}\n[{lo:.4g}, {hi:.4g}]", fontsize=9)
        ax.set_xlabel("fast", fontsize=8)
        ax.set_ylabel("slow", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.85).ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

