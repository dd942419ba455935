"""How much of the tile kernels' work lands inside a bitmap: a host-side count.

For the first scene of bench_scale.py (structure-aware start, 512², N=1000,
64² stamps), counts with NumPy, per primitive and per tile it is binned to:

* pixel evaluations (tile pixels x candidates) and the share whose sample
  falls inside the bitmap (``inside()`` of the kernels);
* for a few warp shapes (pixels per warp of a 16 x 16 tile): the share of
  (warp, candidate) pairs with at least one sample inside -- the pairs a
  warp cannot skip -- and, among those, the share of lanes with a sample.

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


def scene(size: int, n: int):
    import diffbmp_jax as db
    from diffbmp_jax.assets import ASSETS
    from diffbmp_jax.fitting.config import resolve_config
    from diffbmp_jax.fitting.image import prepare
    from diffbmp_jax.fitting.optim import to_params
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import targets

    atlas = db.load_stamps([str(ASSETS / "stamps")], size=64)
    cfg = resolve_config(None, {})
    static, _, carry = prepare(targets(1, size)[0], atlas, num_primitives=n, steps=1,
                                key=jax.random.key(0), config=cfg)
    p = to_params(carry[0], static.unit)
    h, w = atlas.mask.shape[1:]
    return (np.asarray(p.xy, np.float64), np.asarray(p.scale, np.float64),
            np.asarray(p.rotation, np.float64), h, w)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    xy, s, r, bh, bw = scene(args.size, args.n)
    size = args.size
    half = 0.5 * max(bh, bw)
    hu, hv = (bw + 1) / (2 * half), (bh + 1) / (2 * half)
    # Screen boxes as setup_prim computes them (1 pixel of slack), in tiles.
    ac, as_ = np.abs(np.cos(r)), np.abs(np.sin(r))
    ex, ey = s * (ac * hu + as_ * hv) + 1, s * (as_ * hu + ac * hv) + 1
    x0 = np.clip(np.ceil(xy[:, 0] - ex), 0, size - 1).astype(int)
    x1 = np.clip(np.floor(xy[:, 0] + ex), 0, size - 1).astype(int)
    y0 = np.clip(np.ceil(xy[:, 1] - ey), 0, size - 1).astype(int)
    y1 = np.clip(np.floor(xy[:, 1] + ey), 0, size - 1).astype(int)
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


if __name__ == "__main__":
    main()
