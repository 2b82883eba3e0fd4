#!/usr/bin/env python
"""Picture of our float image against a reference: ours | reference | signed relative difference.

    python tools/diff_picture.py --ours OURS --ref C_FLOAT.bin [--shape SLOW FAST] --out diff.png
    python tools/diff_picture.py --case NAME [--variant pinned|fixed] [--ours OURS] --out diff.png

OURS / the reference: a raw float32 file (``-floatfile``; --shape SLOW FAST unless square or known from the
case) or a .npy array. With --case the reference is the committed golden (a full-size golden keeps only
crops: the picture then shows those crops side by side), and without --ours we render the case ourselves
(float64; pinned -> --c-compat). The two images use one log-scaled grey ramp (--decades below the joint
maximum); the difference panel shows (ours - ref) / max(|ref|, significant * max(ref)) in a diverging map
(blue negative, white zero, red positive) scaled to +-R (--range, default the largest |difference| over the
significant pixels). The PNG is RGB, written with zlib only. The worst pixels are printed.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from nanobragg_torch.io.atomic import atomic_write  # noqa: E402
from nanobragg_torch.io.floatimage import read_float_image  # noqa: E402
from nanobragg_torch.io.png import write_png  # noqa: E402
from nanobragg_torch.parity.compare import image_metrics  # noqa: E402

GAP = 4  # separator width between panels, pixels


# ---------------------------------------------------------------------------------------------------
# PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def rgb_png_bytes(rgb: np.ndarray) -> bytes:
    """8-bit RGB PNG (colour type 2) of an (H, W, 3) uint8 array."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = img.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), img.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def write_rgb_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    with atomic_write(path) as handle:
        handle.write(rgb_png_bytes(rgb))


# ---------------------------------------------------------------------------------------------------
# maps


def log_grey(img: np.ndarray, vmax: float, decades: float) -> np.ndarray:
    """uint8 greys: log10 of the value over `decades` below vmax (NaN: mid grey)."""
    if vmax <= 0:
        vmax = 1.0
    lo = vmax * 10.0 ** (-decades)
    with np.errstate(invalid="ignore"):
        t = (np.log10(np.clip(img, lo, vmax)) - np.log10(lo)) / decades
    out = np.round(np.nan_to_num(t, nan=0.5) * 255.0)
    return out.astype(np.uint8)


def diverging(diff: np.ndarray, limit: float) -> np.ndarray:
    """(H, W, 3) uint8: blue (-limit) .. white (0) .. red (+limit); NaN: mid grey."""
    t = np.clip(np.nan_to_num(diff, nan=0.0) / (limit if limit > 0 else 1.0), -1.0, 1.0)
    fade = np.round(255.0 * (1.0 - np.abs(t))).astype(np.uint8)
    full = np.full_like(fade, 255)
    rgb = np.stack([np.where(t < 0, fade, full), fade, np.where(t > 0, fade, full)], axis=-1)
    rgb[np.isnan(diff)] = 128
    return rgb


def relative_difference(ours: np.ndarray, ref: np.ndarray, significant: float) -> tuple[np.ndarray, np.ndarray]:
    """(ours - ref) / max(|ref|, significant * max|ref|), and the mask of significant reference pixels."""
    peak = float(np.nanmax(np.abs(ref))) if np.isfinite(ref).any() else 0.0
    floor = significant * peak if peak > 0 else 1.0
    with np.errstate(invalid="ignore"):
        rel = (ours - ref) / np.maximum(np.abs(ref), floor)
        sig = np.abs(ref) > significant * peak
    return rel, sig & np.isfinite(rel)


def compose(ours: np.ndarray, ref: np.ndarray, rel: np.ndarray, limit: float, decades: float) -> np.ndarray:
    """ours | ref | difference, RGB, with mid-grey separators."""
    vmax = float(np.nanmax([np.nanmax(ours), np.nanmax(ref)]))
    grey = [np.repeat(log_grey(a, vmax, decades)[..., None], 3, axis=-1) for a in (ours, ref)]
    gap = np.full((ours.shape[0], GAP, 3), 128, np.uint8)
    return np.concatenate([grey[0], gap, grey[1], gap, diverging(rel, limit)], axis=1)


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
    from nanobragg_torch.engine import build_plan, render

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
    ap.add_argument("--range", type=float, dest="limit", help="difference colour range +-R (relative)")
    ap.add_argument("--decades", type=float, default=4.0, help="log grey range below the max (default 4)")
    ap.add_argument("--bin", type=int, default=1, help="average NxN blocks before drawing (large detectors)")
    ap.add_argument("--worst", type=int, default=10, help="how many worst pixels to print")
    ap.add_argument("--grey", action="store_true", help="write an 8-bit greyscale PNG (|difference| in grey)")
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
    limit = args.limit or (float(np.abs(rel[sig]).max()) if sig.any() else 0.0) or 1e-12
    b = max(1, args.bin) if where is None else 1
    d_ours, d_ref = block_mean(ours, b), block_mean(ref, b)
    d_rel, _ = relative_difference(d_ours, d_ref, args.significant)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.grey:
        vmax = float(np.nanmax([np.nanmax(d_ours), np.nanmax(d_ref)]))
        diff = np.round(np.clip(np.abs(np.nan_to_num(d_rel)) / limit, 0, 1) * 255).astype(np.uint8)
        gap = np.full((d_ours.shape[0], GAP), 128, np.uint8)
        write_png(args.out, np.concatenate([log_grey(d_ours, vmax, args.decades), gap,
                                            log_grey(d_ref, vmax, args.decades), gap, diff], axis=1))
    else:
        write_rgb_png(args.out, compose(d_ours, d_ref, d_rel, limit, args.decades))
    print(f"wrote {args.out}: ours | reference | (ours-ref)/ref in +-{limit:.3g}")
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
