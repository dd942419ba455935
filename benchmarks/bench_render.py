"""Forward and forward+backward times of the renderers.

For each backend, canvas size and primitive count: the median of ``--repeats``
timed runs after a warm-up, with results blocked on. Prints a table and writes
JSON. The reference is skipped where ``N * H * W`` exceeds ``--max-ref-pairs``
(its memory grows with that product).

    python benchmarks/bench_render.py --backends reference,cpu --sizes 256,512 --counts 100,1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import diffbmp_jax as db  # noqa: E402
from scenes import blob_atlas, pixel_pairs, random_params  # noqa: E402


def _median_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _device_for(backend: str):
    return jax.devices("cpu")[0] if backend in ("cpu",) else jax.devices()[0]


def bench_one(backend: str, n: int, size: int, atlas, repeats: int) -> dict:
    device = _device_for(backend)
    params = random_params(n, size, size, seed=n + size)
    template = jnp.arange(n, dtype=jnp.int32) % atlas.num
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(size, size, 3)), jnp.float32)
    params, template, atlas, weights = jax.device_put((params, template, atlas, weights), device)

    def forward(p):
        return db.render(p, atlas, height=size, width=size, template=template, backend=backend)

    def loss(p):
        color, alpha = forward(p)
        return jnp.sum(color * weights) + jnp.sum(alpha)

    fwd = jax.jit(forward)
    fwd_bwd = jax.jit(jax.value_and_grad(loss))
    row = {"backend": backend, "N": n, "size": size, "device": str(device.device_kind),
           "forward_ms": _median_ms(fwd, (params,), repeats),
           "forward_backward_ms": _median_ms(fwd_bwd, (params,), repeats)}
    pairs = pixel_pairs(params, size, size)
    row["pairs"] = pairs
    row["pairs_per_s_fwd_bwd"] = pairs / (row["forward_backward_ms"] * 1e-3)
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        row["peak_bytes"] = int(stats["peak_bytes_in_use"])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="reference,cpu")
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--counts", default="100,1000,10000")
    ap.add_argument("--bitmap", type=int, default=64, help="bitmap side in pixels")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-ref-pairs", type=float, default=3e8,
                    help="skip the reference where N*H*W exceeds this")
    ap.add_argument("--max-cpu-pairs", type=float, default=2e9,
                    help="skip the cpu backend where composited pairs exceed this")
    ap.add_argument("--json", default="bench_render.json")
    args = ap.parse_args(argv)

    atlas = blob_atlas(8, args.bitmap)
    rows = []
    header = f"{'backend':>9} {'N':>7} {'size':>6} {'fwd ms':>10} {'fwd+bwd ms':>11} {'Mpairs/s':>10} {'peak MB':>8}"
    print(f"# jax {jax.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU threads, devices {jax.devices()}")
    print(header)
    for backend in args.backends.split(","):
        for size in map(int, args.sizes.split(",")):
            for n in map(int, args.counts.split(",")):
                if backend == "reference" and n * size * size > args.max_ref_pairs:
                    continue
                if backend == "cpu" and pixel_pairs(random_params(n, size, size, seed=n + size), size, size) > args.max_cpu_pairs:
                    continue
                row = bench_one(backend, n, size, atlas, args.repeats)
                rows.append(row)
                peak = f"{row['peak_bytes'] / 2**20:8.0f}" if "peak_bytes" in row else f"{'-':>8}"
                print(f"{backend:>9} {n:>7} {size:>6} {row['forward_ms']:>10.2f} "
                      f"{row['forward_backward_ms']:>11.2f} {row['pairs_per_s_fwd_bwd'] / 1e6:>10.1f} {peak}",
                      flush=True)
    by_key = {(r["backend"], r["N"], r["size"]): r for r in rows}
    for (b, n, s), r in by_key.items():
        ref = by_key.get(("reference", n, s))
        if b != "reference" and ref:
            r["speedup_vs_reference_fwd_bwd"] = ref["forward_backward_ms"] / r["forward_backward_ms"]
            print(f"{b} vs reference, N={n}, {s}²: {r['speedup_vs_reference_fwd_bwd']:.1f}x (fwd+bwd)")
    with open(args.json, "w") as f:
        json.dump({"jax": jax.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
