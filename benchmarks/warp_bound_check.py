"""Checks the CUDA backward's warp skipping bound (``warps_to_visit``) in float32 on the host.

For random primitives (scales over five decades, every rotation, centres
around their tile) it evaluates, with NumPy float32 arithmetic in the
kernel's order, both the per-pixel test of ``render_common.h`` (``to_bitmap``
and ``inside`` at each of a warp's 8 x 4 pixel centres) and the per-warp bound
of ``cuda/gpu/render.cu`` (the warp centre's bitmap coordinates plus or minus
the half-extents, with the rounding margin), and counts warps that have a
pixel inside yet would be skipped (must be 0) and warps kept needlessly::

    python benchmarks/warp_bound_check.py --count 400000

A re-statement of the kernel's arithmetic, not the kernel: the GPU tests
(tests/test_cuda.py) check the kernel itself against the cpu backend.
"""

from __future__ import annotations

import argparse

import numpy as np

f32 = np.float32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=400_000, help="primitives")
    ap.add_argument("--bitmap", default="64x48", help="bitmap W x H in texels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    bw, bh = (int(v) for v in args.bitmap.split("x"))
    rng = np.random.default_rng(args.seed)
    m = args.count
    half, off_x, off_y = f32(max(bw, bh) / 2), f32(bw / 2 - 0.5), f32(bh / 2 - 0.5)
    tx, ty = rng.integers(0, 128, m), rng.integers(0, 128, m)
    x = (tx * 16 + rng.uniform(-40, 56, m)).astype(f32)
    y = (ty * 16 + rng.uniform(-40, 56, m)).astype(f32)
    scale = np.exp(rng.uniform(np.log(0.05), np.log(3000), m)).astype(f32)
    rot = rng.uniform(-np.pi, np.pi, m).astype(f32)
    inv, cos, sin = (f32(1) / scale).astype(f32), np.cos(rot).astype(f32), np.sin(rot).astype(f32)
    kc, ks = (half * inv * cos).astype(f32), (half * inv * sin).astype(f32)  # setup_prim's

    def to_bitmap(px, py):  # render_common.h's to_bitmap, in float32
        dx, dy = (px - x).astype(f32), (py - y).astype(f32)
        return ((kc * dx - ks * dy) + off_x).astype(f32), ((ks * dx + kc * dy) + off_y).astype(f32)

    ac, as_ = np.abs(kc), np.abs(ks)
    rx, ry = (f32(3.5) * ac + f32(1.5) * as_).astype(f32), (f32(3.5) * as_ + f32(1.5) * ac).astype(f32)
    fx0, fy0 = to_bitmap((tx * 16).astype(f32) + f32(3.5), (ty * 16).astype(f32) + f32(1.5))
    skipped_wrongly = kept = needed = 0
    for w in range(8):
        ox, oy = f32((w & 1) * 8), f32((w >> 1) * 4)
        fx, fy = (fx0 + ox * kc - oy * ks).astype(f32), (fy0 + ox * ks + oy * kc).astype(f32)
        margin = (f32(1e-3) + f32(1e-5) * (np.abs(fx) + np.abs(fy) + rx + ry)).astype(f32)
        seen = (fx - rx - margin < bw) & (fx + rx + margin > -1) & (fy - ry - margin < bh) & (fy + ry + margin > -1)
        inside = np.zeros(m, bool)
        for lane in range(32):
            px = (tx * 16 + (w & 1) * 8 + (lane & 7)).astype(f32)
            py = (ty * 16 + (w >> 1) * 4 + (lane >> 3)).astype(f32)
            gx, gy = to_bitmap(px, py)
            inside |= (gx > -1) & (gx < bw) & (gy > -1) & (gy < bh)
        skipped_wrongly += int(np.sum(inside & ~seen))
        kept += int(seen.sum())
        needed += int(inside.sum())
    print(f"{8 * m} warp tests: {skipped_wrongly} skipped with a pixel inside (must be 0); "
          f"kept {kept}, of which {needed} have a pixel inside ({100 * (kept - needed) / max(needed, 1):.2f} % kept needlessly)")
    if skipped_wrongly:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
