"""How much of the tile kernels' work lands inside a bitmap: a host-side count.

For the first scene of bench_scale.py (structure-aware start, 512², N=1000,
64² stamps), counts with NumPy, per primitive and per tile it is binned to:

* pixel evaluations (tile pixels x candidates) and the share whose sample
  falls inside the bitmap (``inside()`` of the kernels);
* for a few warp shapes (pixels per warp of a 16 x 16 tile): the share of
  (warp, candidate) pairs with at least one sample inside -- the pairs a
  warp cannot skip -- and, among those, the share of lanes with a sample;
* for the kernels' 8 x 4 warps, with the atlas the fit's first step samples
  (mip levels, masks blurred at the starting sigma): the (warp, candidate)
  pairs with a sample inside and with a non-zero sample (the latter are the
  only ones whose work changes anything), and the most samples any one lane
  of each warp has -- the bound of a walk in which each lane took its own
  next candidate instead of the warp taking them together.

    python benchmarks/coverage_stats.py [--size 512] [--n 1000]

No GPU needed; it says what a change of warp shape or of culling could
save before device time is spent on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import jax

TILE = 16


def scene(size: int, n: int, with_atlas: bool = False):
    """``(xy, scale, rotation, h, w)`` of the start (float64), and with ``with_atlas`` also the
    padded masks ``[P', h + 2, w + 2]`` the first step samples and each primitive's bitmap id."""
    import diffbmp_jax as db
    from diffbmp_jax.assets import ASSETS
    from diffbmp_jax.fitting.config import resolve_config
    from diffbmp_jax.fitting.image import prepare
    from diffbmp_jax.fitting.optim import to_params
    from diffbmp_jax.rendering import mipmap
    from diffbmp_jax.rendering.blur import annealed_blur
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import targets

    atlas = db.load_stamps([str(ASSETS / "stamps")], size=64)
    cfg = resolve_config(None, {})
    static, data, carry = prepare(targets(1, size)[0], atlas, num_primitives=n, steps=1,
                                  key=jax.random.key(0), config=cfg)
    p = to_params(carry[0], static.unit)
    h, w = atlas.mask.shape[1:]
    out = (np.asarray(p.xy, np.float64), np.asarray(p.scale, np.float64),
           np.asarray(p.rotation, np.float64), h, w)
    if not with_atlas:
        return out
    blur = annealed_blur(0, 100, cfg.blur_sigma, cfg.blur_anneal, max(h, w))
    mask, _, template = mipmap.lod_scene(p.scale, atlas.mask, None, data.template, blur)
    padded = np.pad(np.asarray(mask), ((0, 0), (1, 1), (1, 1)))
    return out + (padded, np.asarray(template))


def sample_stats(size: int, n: int) -> None:
    """Prints the 8 x 4 warps' (warp, candidate) pairs with a sample inside, with a non-zero
    sample, and the sum over warps of the most samples one lane has (module docstring)."""
    xy, s, r, bh, bw, mask, template = scene(size, n, with_atlas=True)
    x0, x1, y0, y1 = screen_boxes(xy, s, r, bh, bw, size)
    half = 0.5 * max(bh, bw)
    warps = (size // 4, size // 8)
    pairs = {"inside": np.zeros(warps, np.int64), "non-zero": np.zeros(warps, np.int64)}
    per_pixel = {"inside": np.zeros((size, size), np.int64), "non-zero": np.zeros((size, size), np.int64)}
    for i in range(len(s)):
        xs = np.arange(x0[i] // TILE * TILE, (x1[i] // TILE + 1) * TILE)
        ys = np.arange(y0[i] // TILE * TILE, (y1[i] // TILE + 1) * TILE)
        X, Y = np.meshgrid(xs, ys)
        kc, ks = half / s[i] * np.cos(r[i]), half / s[i] * np.sin(r[i])
        fx = kc * (X - xy[i, 0]) - ks * (Y - xy[i, 1]) + bw / 2 - 0.5  # to_bitmap
        fy = ks * (X - xy[i, 0]) + kc * (Y - xy[i, 1]) + bh / 2 - 0.5
        ins = (fx > -1) & (fx < bw) & (fy > -1) & (fy < bh)
        tx = np.floor(np.clip(fx, -1, bw - 1e-3)).astype(int) + 1  # padded tap (x0, y0)
        ty = np.floor(np.clip(fy, -1, bh - 1e-3)).astype(int) + 1
        m = mask[template[i]]
        nonzero = ins & ((m[ty, tx] != 0) | (m[ty, tx + 1] != 0) | (m[ty + 1, tx] != 0) | (m[ty + 1, tx + 1] != 0))
        for key, hit in (("inside", ins), ("non-zero", nonzero)):
            per_pixel[key][ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] += hit
            seen = hit.reshape(len(ys) // 4, 4, len(xs) // 8, 8).any(axis=(1, 3))
            pairs[key][ys[0] // 4:ys[-1] // 4 + 1, xs[0] // 8:xs[-1] // 8 + 1] += seen
    print(f"\n8 x 4 warps, the first step's atlas ({mask.shape[0]} level bitmaps, blurred):")
    print(f"{'samples':>10s} {'(warp, candidate) pairs':>24s} {'lane samples / 32':>18s} {'most in one lane, summed':>25s}")
    for key in pairs:
        most = per_pixel[key].reshape(warps[0], 4, warps[1], 8).max(axis=(1, 3)).sum()
        print(f"{key:>10s} {pairs[key].sum():24d} {per_pixel[key].sum() / 32:18.0f} {most:25d}")


def screen_boxes(xy, s, r, bh, bw, size):
    """Inclusive pixel boxes ``(x0, x1, y0, y1)`` as setup_prim computes them (1 pixel of slack)."""
    half = 0.5 * max(bh, bw)
    hu, hv = (bw + 1) / (2 * half), (bh + 1) / (2 * half)
    ac, as_ = np.abs(np.cos(r)), np.abs(np.sin(r))
    ex, ey = s * (ac * hu + as_ * hv) + 1, s * (as_ * hu + ac * hv) + 1
    return (np.clip(np.ceil(xy[:, 0] - ex), 0, size - 1).astype(int),
            np.clip(np.floor(xy[:, 0] + ex), 0, size - 1).astype(int),
            np.clip(np.ceil(xy[:, 1] - ey), 0, size - 1).astype(int),
            np.clip(np.floor(xy[:, 1] + ey), 0, size - 1).astype(int))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    xy, s, r, bh, bw = scene(args.size, args.n)
    size = args.size
    half = 0.5 * max(bh, bw)
    hu, hv = (bw + 1) / (2 * half), (bh + 1) / (2 * half)
    x0, x1, y0, y1 = screen_boxes(xy, s, r, bh, bw, size)
    shapes = [(16, 2), (8, 4), (4, 8)]
    evals = inside_evals = 0
    warp_pairs = {sh: 0 for sh in shapes}
    warp_hits = {sh: 0 for sh in shapes}
    lanes = {sh: 0 for sh in shapes}
    for i in range(len(s)):
        xs = np.arange(x0[i] // TILE * TILE, (x1[i] // TILE + 1) * TILE)
        ys = np.arange(y0[i] // TILE * TILE, (y1[i] // TILE + 1) * TILE)
        X, Y = np.meshgrid(xs, ys)
        dx, dy = (X - xy[i, 0]) / s[i], (Y - xy[i, 1]) / s[i]
        u = np.cos(r[i]) * dx - np.sin(r[i]) * dy
        v = np.sin(r[i]) * dx + np.cos(r[i]) * dy
        ins = (np.abs(u) < hu) & (np.abs(v) < hv)
        evals += ins.size
        inside_evals += int(ins.sum())
        for wx, wy in shapes:
            blocks = ins.reshape(len(ys) // wy, wy, len(xs) // wx, wx)
            hit = blocks.any(axis=(1, 3))
            warp_pairs[(wx, wy)] += hit.size
            warp_hits[(wx, wy)] += int(hit.sum())
            lanes[(wx, wy)] += int(blocks.sum())
    print(f"{size}², N={len(s)}: {evals / TILE**2:.0f} (tile, candidate) pairs, {evals} pixel evaluations, "
          f"{inside_evals / evals:.1%} inside a bitmap")
    print(f"{'warp (w x h px)':>16s} {'pairs with a sample inside':>28s} {'lanes busy in those':>20s}")
    for wx, wy in shapes:
        print(f"{f'{wx} x {wy}':>16s} {warp_hits[(wx, wy)] / warp_pairs[(wx, wy)]:28.1%} "
              f"{lanes[(wx, wy)] / warp_hits[(wx, wy)] / 32:20.1%}")
    sample_stats(size, args.n)


if __name__ == "__main__":
    main()
