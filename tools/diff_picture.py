"""Picture of our float image against a reference: reference | ours | signed difference (matplotlib).

    python tools/diff_picture.py --ours OURS --ref C_FLOAT.bin [--shape SLOW FAST] --out diff.png
    python tools/diff_picture.py --case NAME [--variant pinned|fixed] [--ours OURS] --out diff.png

OURS / the reference: a raw float32 file (``-floatfile``; --shape SLOW FAST unless square or known from the
case) or a .npy array. With --case the reference is the committed golden (a full-size golden keeps only
crops: the picture then shows those crops side by side), and without --ours we render the case ourselves
(float64; pinned -> --c-compat). The figure (:func:`nanobragg_torch.parity.pictures.diff_figure_png`, the
drift report's) has titles, colour bars and value ranges: both images on one log scale (--decades below
the joint maximum), the difference ours - reference in a diverging map symmetric about zero. The metrics
and the worst pixels (relative difference over the significant reference pixels) are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from nanobragg_torch.io.atomic import atomic_write  # noqa: E402
from nanobragg_torch.io.floatimage import read_float_image  # noqa: E402
from nanobragg_torch.parity.compare import image_metrics  # noqa: E402
from nanobragg_torch.parity.pictures import diff_figure_png  # noqa: E402

GAP = 4  # NaN gap between the crops of a full-size golden, pixels


def relative_difference(ours: np.ndarray, ref: np.ndarray, significant: float) -> tuple[np.ndarray, np.ndarray]:
    """(ours - ref) / max(|ref|, significant * max|ref|), and the mask of significant reference pixels."""
    peak = float(np.nanmax(np.abs(ref))) if np.isfinite(ref).any() else 0.0
    floor = significant * peak if peak > 0 else 1.0
    with np.errstate(invalid="ignore"):
        rel = (ours - ref) / np.maximum(np.abs(ref), floor)
        sig = np.abs(ref) > significant * peak
    return rel, sig & np.isfinite(rel)


def block_mean(img: np.ndarray, n: int) -> np.ndarray:
    if n <= 1:
        return img
    s, f = (img.shape[0] // n) * n, (img.shape[1] // n) * n
    return img[:s, :f].reshape(s // n, n, f // n, n).mean(axis=(1, 3))


# ---------------------------------------------------------------------------------------------------
# inputs


def read_image(path: Path, shape: tuple[int, int] | None) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path).astype(np.float64)
    if shape is None:
        n = path.stat().st_size // 4
        side = int(round(n**0.5))
        if side * side != n:
            raise SystemExit(f"{path}: not square; give --shape SLOW FAST")
        shape = (side, side)
    return read_float_image(path, shape).astype(np.float64)


def tile_crops(crops: np.ndarray, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, n, n) crops side by side with NaN gaps: (image, global (slow, fast) of each pixel, -1 in gaps)."""
    k, n, _ = crops.shape
    width = k * n + (k - 1) * GAP
    img = np.full((n, width), np.nan)
    where = np.full((n, width, 2), -1, dtype=np.int64)
    ss, ff = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for i, (s0, f0) in enumerate(origins):
        c0 = i * (n + GAP)
        img[:, c0:c0 + n] = crops[i]
        where[:, c0:c0 + n, 0] = ss + int(s0)
        where[:, c0:c0 + n, 1] = ff + int(f0)
    return img, where


def render_case(argv: list[str]) -> np.ndarray:
    import torch

    from nanobragg_torch.cli import config_from_flags
    from nanobragg_torch.engine import render
    from nanobragg_torch.plan import build_plan

    cfg, _ = config_from_flags(argv, cwd=os.devnull)
    with torch.no_grad():
        image = render(build_plan(cfg, torch.float64, "cpu")).image
    return image.float().double().numpy()  # stored as float32, like the C float file


def worst_pixels(ours: np.ndarray, ref: np.ndarray, rel: np.ndarray, sig: np.ndarray, count: int,
                 where: np.ndarray | None = None) -> list[dict]:
    """The `count` significant pixels with the largest |relative difference|, worst first."""
    idx = np.flatnonzero(sig.ravel())
    if idx.size == 0:
        return []
    order = idx[np.argsort(-np.abs(rel.ravel()[idx]), kind="stable")[:count]]
    out = []
    for flat in order:
        r, c = np.unravel_index(flat, ours.shape)
        pos = (int(where[r, c, 0]), int(where[r, c, 1])) if where is not None else (int(r), int(c))
        out.append({"slow": pos[0], "fast": pos[1], "ours": float(ours[r, c]), "ref": float(ref[r, c]),
                    "rel": float(rel[r, c])})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", type=Path, help="our float image (raw float32 or .npy)")
    ap.add_argument("--ref", type=Path, help="reference float image (C -floatfile or .npy)")
    ap.add_argument("--case", help="golden case: the reference (and our render when --ours is absent)")
    ap.add_argument("--variant", choices=("pinned", "fixed"), default="pinned")
    ap.add_argument("--shape", type=int, nargs=2, metavar=("SLOW", "FAST"), help="shape of raw float files")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--significant", type=float, default=1e-3,
                    help="reference pixels above this fraction of its max count as significant (default 1e-3)")
    ap.add_argument("--decades", type=float, default=4.0, help="log colour range below the max (default 4)")
    ap.add_argument("--bin", type=int, default=1, help="average NxN blocks before drawing (large detectors)")
    ap.add_argument("--worst", type=int, default=10, help="how many worst pixels to print")
    args = ap.parse_args(argv)

    shape = tuple(args.shape) if args.shape else None
    where = None
    if args.case:
        from nanobragg_torch.parity.goldens import get_case, golden_dir, load_golden, shared_data_dir

        case = get_case(args.case)
        golden = load_golden(case, args.variant)
        shape = shape or golden.shape
        if args.ours is not None:
            ours = read_image(args.ours, shape)
        else:
            flags = case.argv(inputs=golden_dir() / "inputs", shared=shared_data_dir())
            ours = render_case(flags + (["--c-compat"] if args.variant == "pinned" else []))
        if golden.image is not None:
            ref = golden.image.astype(np.float64)
        else:  # full-size golden: its crops only
            s = golden.summary
            ref, where = tile_crops(s.crops, s.origins)
            ours, _ = tile_crops(s.crops_of(ours), s.origins)
    elif args.ours is not None and args.ref is not None:
        ours = read_image(args.ours, shape)
        ref = read_image(args.ref, shape or ours.shape)
    else:
        ap.error("give --ours and --ref, or --case")
    if ours.shape != ref.shape:
        raise SystemExit(f"shapes differ: ours {ours.shape}, reference {ref.shape}")

    finite = np.isfinite(ref) & np.isfinite(ours)
    m = image_metrics(ours[finite], ref[finite], args.significant)
    rel, sig = relative_difference(ours, ref, args.significant)
    b = max(1, args.bin) if where is None else 1
    title = f"{args.case or args.ours.name}: corr {m['corr']:.10f}, sum ratio {m['sum_ratio']:.8f}"
    png = diff_figure_png(block_mean(ref, b), block_mean(ours, b), title=title, decades=args.decades)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as handle:
        handle.write(png)
    print(f"wrote {args.out}: reference | ours | ours - reference")
    print(f"corr {m['corr']:.10f}  sum ratio {m['sum_ratio']:.8f}  max rel err {m['max_rel_err']:.3g} over "
          f"{m.get('n_significant', int(sig.sum()))} significant pixels")
    rows = worst_pixels(ours, ref, rel, sig, args.worst, where)
    if rows:
        print(f"{'slow':>6} {'fast':>6} {'ours':>14} {'reference':>14} {'rel diff':>10}")
        for r in rows:
            print(f"{r['slow']:6d} {r['fast']:6d} {r['ours']:14.7g} {r['ref']:14.7g} {r['rel']:10.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
