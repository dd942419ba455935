"""The work floor of the render kernels: bytes they must move and pixel-sample pairs they must evaluate.

For the scenes of ``bench_cuda.py`` (64x64 bitmaps, about four layers deep)
at 512^2/N=1000, 1024^2/N=10000 and 2048^2/N=100000 this counts, per call:

* pixels, and pairs: pixels inside each primitive's screen box (the samples
  a tile rasteriser evaluates at least), and tile entries (primitive-tile
  pairs the binning writes, sorts and reads);
* DRAM bytes a perfect kernel still moves: forward writes colour,
  transmittance and stop (20 B/px) and reads the primitives (36 B each);
  backward reads transmittance, stop and the two cotangents (24 B/px) and
  writes 8 gradient floats per primitive; each binning writes its tile
  entries unsorted, sorts them (read + write) and the renderer reads them
  (16 B per entry); the atlas is L2-resident and not counted;
* arithmetic: about 30 FP32 operations per forward pair (position, taps,
  bilinear, compositing) and 80 per backward pair (the forward's plus
  the derivative chain), counted from ``cuda/common/render_common.h``.

The floor of a call is the larger of bytes / bandwidth and operations /
FP32 rate (``--bandwidth`` 4.3 TB/s, the device-to-device copy measured on
the H200; ``--flops`` 67 TFLOP/s, the datasheet's plain FP32), plus one
launch per kernel of the call (``--launch-us``, about 2 us each inside a CUDA
graph): the achieved kernel times (``profile_step.py --timeline``) are read
against it in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

TILE = 16
FWD_OPS, BWD_OPS = 30, 80
KERNELS = {"forward": 6, "backward": 7}  # setup, scan, prepare, fill, sort, render (+ the memset of grads)


def tile_entries(params, side: int, bitmap: int = 64) -> int:
    """Primitive-tile pairs of the binning (tiles overlapped by each screen box)."""
    half = bitmap / 2.0
    xy = np.asarray(params.xy, np.float64)
    s = np.asarray(params.scale, np.float64)
    r = np.asarray(params.rotation, np.float64)
    h = (bitmap + 1) / (2 * half)
    ext = s * h * (np.abs(np.cos(r)) + np.abs(np.sin(r))) + 1
    x0 = np.clip(np.ceil(xy[:, 0] - ext), 0, side - 1) // TILE
    x1 = np.clip(np.floor(xy[:, 0] + ext), 0, side - 1) // TILE
    y0 = np.clip(np.ceil(xy[:, 1] - ext), 0, side - 1) // TILE
    y1 = np.clip(np.floor(xy[:, 1] + ext), 0, side - 1) // TILE
    return int(np.sum((x1 - x0 + 1) * (y1 - y0 + 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bandwidth", type=float, default=4.3e12, help="bytes per second")
    ap.add_argument("--flops", type=float, default=67e12, help="FP32 operations per second")
    ap.add_argument("--launch-us", type=float, default=2.0, help="microseconds per kernel launch in a graph")
    args = ap.parse_args()
    from bench_cuda import count_pairs, make_scene

    print("| canvas | N | pairs (M) | tile entries (M) | call | MB moved | GFLOP | bytes floor us | "
          "FLOP floor us | launches us | floor us |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for side, n in ((512, 1000), (1024, 10000), (2048, 100000)):
        params = make_scene(np.random.default_rng(0), n, side)
        pairs = count_pairs(params, side)
        entries = tile_entries(params, side)
        px = side * side
        calls = {"forward": (20 * px + 36 * n + 16 * entries, FWD_OPS * pairs),
                 "backward": (24 * px + 32 * n + 16 * entries, BWD_OPS * pairs)}
        for call, (nbytes, ops) in calls.items():
            t_bytes = 1e6 * nbytes / args.bandwidth
            t_ops = 1e6 * ops / args.flops
            launches = KERNELS[call] * args.launch_us
            print(f"| {side}^2 | {n} | {pairs / 1e6:.2f} | {entries / 1e6:.2f} | {call} | {nbytes / 1e6:.1f} | "
                  f"{ops / 1e9:.3f} | {t_bytes:.1f} | {t_ops:.1f} | {launches:.0f} | "
                  f"{max(t_bytes, t_ops) + launches:.1f} |")


if __name__ == "__main__":
    main()
