"""Times the CUDA backend: forward and forward+backward, peak device memory, pairs/s.

Run on a GPU machine from outside the source tree:

    cd /tmp && python3 /path/to/benchmarks/bench_cuda.py --json cuda_bench.json

Scenes: N random primitives of 64x64 bitmaps (8 smooth shapes) on square
canvases, centres uniform over the canvas, half-extent log-uniform in
[0.5, 2] x 0.8 * side / sqrt(N) (about four layers of depth on average at
every N), random rotations, opacities in [0.2, 0.9], colour_blend 0.5 (tint
and bitmap colours: the heavier path).

Timing: jit-compiled functions, 3 warm-up calls, then the median of --repeats
calls, each timed with ``block_until_ready``. "fwd+bwd" is ``jax.grad`` of
``sum(C * w1) + sum(A * w2)`` w.r.t. every primitive field (atlas_grad off).

pairs/s: primitive-pixel pairs of the forward divided by its median time; a
pair is a pixel inside a primitive's screen bounding box (the kernels' own box,
clipped to the canvas), counted on the host with numpy. Early termination
means the kernels composite at most this many.

Peak memory: ``memory_stats()["peak_bytes_in_use"]`` of the GPU after the
configuration ran. JAX cannot reset that counter, so it is the process peak so
far; configurations run in ascending size so that the value reported for the
largest is its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import jax
import jax.numpy as jnp

import diffbmp_jax as db


def make_atlas(rng, num=8, size=64):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    masks, rgbs = [], []
    for i in range(num):
        r = np.hypot((xx - c) / (1 + 0.1 * i), (yy - c)) / (size / 2)
        ang = np.arctan2(yy - c, xx - c)
        edge = 0.75 + 0.2 * np.cos((i + 2) * ang)
        m = np.clip((edge - r) * size / 4, 0, 1)
        masks.append(m)
        rgbs.append(np.stack([m * (0.3 + 0.07 * i), 1 - m * 0.5, (xx / size)], -1))
    mask = np.stack(masks).astype(np.float32)
    rgb = np.clip(np.stack(rgbs), 0, 1).astype(np.float32)
    return db.Atlas.from_arrays(mask, rgb)


def make_scene(rng, n, side):
    s0 = 0.8 * side / np.sqrt(n)
    xy = rng.uniform(0, side, size=(n, 2))
    scale = s0 * np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=n))
    rot = rng.uniform(-np.pi, np.pi, size=n)
    op = rng.uniform(0.2, 0.9, size=n)
    col = rng.uniform(0.05, 0.95, size=(n, 3))
    return db.Primitives.create(xy, scale, rot, op, col)


def count_pairs(params, side, bitmap=(64, 64)):
    """Pixels inside each primitive's screen box (render_common.h setup_prim), summed."""
    h, w = bitmap
    half = max(h, w) / 2.0
    xy = np.asarray(params.xy, np.float64)
    s = np.asarray(params.scale, np.float64)
    r = np.asarray(params.rotation, np.float64)
    hu, hv = (w + 1) / (2 * half), (h + 1) / (2 * half)
    ac, as_ = np.abs(np.cos(r)), np.abs(np.sin(r))
    ex = s * (ac * hu + as_ * hv) + 1
    ey = s * (as_ * hu + ac * hv) + 1
    x0 = np.clip(np.ceil(xy[:, 0] - ex), 0, side - 1)
    x1 = np.clip(np.floor(xy[:, 0] + ex), 0, side - 1)
    y0 = np.clip(np.ceil(xy[:, 1] - ey), 0, side - 1)
    y1 = np.clip(np.floor(xy[:, 1] + ey), 0, side - 1)
    return int(np.sum(np.maximum(x1 - x0 + 1, 0) * np.maximum(y1 - y0 + 1, 0)))


def median_time(fn, args, warmup=3, repeats=20):
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def run_config(side, n, backend, repeats, atlas, seed=0, atlas_bf16=False):
    rng = np.random.default_rng(seed)
    params = make_scene(rng, n, side)
    template = jnp.asarray(rng.integers(0, atlas.num, n), jnp.int32)
    w1 = jnp.asarray(rng.normal(size=(side, side, 3)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(side, side)), jnp.float32)
    kw = dict(height=side, width=side, template=template, color_blend=0.5, backend=backend)
    if atlas_bf16:
        kw["atlas_bf16"] = True

    @jax.jit
    def fwd(p):
        return db.render(p, atlas, **kw)

    @jax.jit
    def fwd_bwd(p):
        def loss(p):
            c, a = db.render(p, atlas, **kw)
            return jnp.sum(c * w1) + jnp.sum(a * w2)
        return jax.value_and_grad(loss)(p)

    t_f, t_f_min = median_time(fwd, (params,), repeats=repeats)
    t_fb, t_fb_min = median_time(fwd_bwd, (params,), repeats=repeats)
    stats = jax.devices()[0].memory_stats() or {}
    pairs = count_pairs(params, side)
    return dict(backend=backend + ("-bf16" if atlas_bf16 else ""), canvas=side, n=n, bitmap=64,
                fwd_ms=1e3 * t_f, fwd_min_ms=1e3 * t_f_min,
                fwd_bwd_ms=1e3 * t_fb, fwd_bwd_min_ms=1e3 * t_fb_min,
                peak_bytes=int(stats.get("peak_bytes_in_use", -1)),
                bytes_in_use=int(stats.get("bytes_in_use", -1)),
                pairs=pairs, fwd_pairs_per_s=pairs / t_f, fwd_bwd_pairs_per_s=pairs / t_fb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--canvases", default="512,1024,2048")
    ap.add_argument("--ns", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--atlas-bf16", action="store_true", help="bf16 atlas (cuda only)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = jax.devices()[0]
    print("device:", dev, getattr(dev, "device_kind", ""), "jax", jax.__version__, flush=True)
    atlas = make_atlas(np.random.default_rng(0))
    rows = []
    configs = sorted(((int(c), int(n)) for c in args.canvases.split(",") for n in args.ns.split(",")),
                     key=lambda cn: (cn[0] * cn[0] * 4 + cn[1] * 200, cn))
    for side, n in configs:
        r = run_config(side, n, args.backend, args.repeats, atlas, atlas_bf16=args.atlas_bf16)
        rows.append(r)
        print(f"{r['backend']} {side:5d}^2 N={n:7d}  fwd {r['fwd_ms']:8.3f} ms  fwd+bwd "
              f"{r['fwd_bwd_ms']:8.3f} ms  peak {r['peak_bytes'] / 2**20:8.1f} MiB  "
              f"pairs {r['pairs'] / 1e6:7.2f} M  {r['fwd_pairs_per_s'] / 1e9:6.2f} Gpair/s fwd",
              flush=True)
    print("\n| canvas | N | fwd ms | fwd+bwd ms | peak MiB | pairs (M) | fwd Gpairs/s | fwd+bwd Gpairs/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: (r["canvas"], r["n"])):
        print(f"| {r['canvas']}^2 | {r['n']} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} | "
              f"{r['peak_bytes'] / 2**20:.0f} | {r['pairs'] / 1e6:.2f} | "
              f"{r['fwd_pairs_per_s'] / 1e9:.2f} | {r['fwd_bwd_pairs_per_s'] / 1e9:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(device=str(dev), device_kind=getattr(dev, "device_kind", ""),
                           jax=jax.__version__, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
