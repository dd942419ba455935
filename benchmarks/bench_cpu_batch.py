"""Batched renders on the cpu backend: ``jit(vmap(grad))`` of a weighted sum of C and A.

    python benchmarks/bench_cpu_batch.py          # DIFFBMP_NUM_THREADS picks the thread count

Prints the median of 15 timed calls (after one warm-up) for a batch of small
scenes (more scenes than threads: each thread renders whole scenes) and a
batch of larger ones, and a checksum of the gradients.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import jax
import jax.numpy as jnp

import diffbmp_jax as db

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import random_atlas, random_scene  # noqa: E402  (the tests' random scenes)

CASES = [(64, 100, 16), (256, 500, 8)]  # (canvas side, N, scenes)


def main():
    rng = np.random.default_rng(0)
    atlas = random_atlas(rng, num=4, h=16, w=16)
    print(f"{'canvas':>7} {'N':>5} {'scenes':>6} {'median ms':>10} {'checksum':>12}")
    for side, n, count in CASES:
        params = jax.tree.map(lambda *x: jnp.stack(x), *[random_scene(rng, n, side, side) for _ in range(count)])

        def loss(p):
            c, a = db.render(p, atlas, height=side, width=side, backend="cpu")
            return jnp.sum(c) + jnp.sum(a * a)

        f = jax.jit(jax.vmap(jax.grad(loss)))
        grads = jax.block_until_ready(f(params))
        times = []
        for _ in range(15):
            t = time.perf_counter()
            jax.block_until_ready(f(params))
            times.append(time.perf_counter() - t)
        print(f"{side:5d}^2 {n:5d} {count:6d} {np.median(times) * 1e3:10.2f} {float(jnp.sum(grads.xy)):12.5f}")


if __name__ == "__main__":
    main()
