"""A fit's step through each way of computing its MSE, alternated in one process (any backend).

Times the engine's compiled chunk of ``--chunk`` steps (``engine.run_fit_chunk``, respawn
included) for three builds of the same step, round after round:

* ``one call``: the loss folded into the kernels, the gradient by ``diffbmp_mse_grad``
  (forward, loss and backward in one call) -- what a fit runs where the kernels have it;
* ``two calls``: the same traced inside ``registry.without("diffbmp_mse_grad")``: the forward
  with the loss (``diffbmp_forward_loss``), then the backward;
* ``image``: the step before the fold: a :class:`~diffbmp_jax.fitting.engine.PixelLoss`
  subclass, which scores the rendered image (render, composite, mean in XLA).

Prints each build's kernels (FFI targets in its compiled program), last losses (the one call
and the two calls give the same bits) and ms a step, median and range. Scenes as ``profile_cpu_step.py``'s::

    python benchmarks/loss_paths.py --scene demo --rounds 15
    python benchmarks/loss_paths.py --scene vangogh1 --bench ../shared/bench --rounds 11

Run from outside the checkout or with the package installed.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from diffbmp_jax.fitting.config import resolve_config
from diffbmp_jax.fitting.engine import PixelLoss, run_fit_chunk
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.rendering import registry


class ImageLoss(PixelLoss):
    """PixelLoss that scores the rendered image (the engine folds plain PixelLoss only)."""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default="demo", choices=["demo", "vangogh1"])
    parser.add_argument("--bench", default=None, help="folder of the quality benchmark (vangogh1)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=25)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from profile_cpu_step import scene

    target, atlas, n = scene(args.scene, args.bench)
    cfg = resolve_config(None, {"log_every": args.chunk})
    static, data, carry = prepare(target, atlas, num_primitives=n, steps=300, key=jax.random.key(0), config=cfg)
    builds = {}
    dynamic = (data, carry, jnp.int32(0), jnp.int32(300))
    for label, objective, hide in (("one call", static.objective, None),
                                   ("two calls", static.objective, registry.MSE_GRAD),
                                   ("image", ImageLoss(), None)):
        st = static._replace(objective=objective)
        # Each build compiled ahead of time from a fresh trace: the registry is read while the step
        # is traced, and the jit caches would otherwise hand the two calls the one call's program
        # (their static arguments are equal).
        jax.clear_caches()
        with registry.without(hide) if hide else contextlib.nullcontext():
            run = jax.jit(lambda *a, st=st: run_fit_chunk(st, *a, True)).lower(*dynamic).compile()
        targets = sorted(set(re.findall(r"diffbmp_\w+", run.as_text())))
        out = jax.block_until_ready(run(*dynamic))
        builds[label] = (run, targets, out[1][0])
    for label, (_, targets, losses) in builds.items():
        print(f"{label}: kernels {targets}, last losses {[float(x) for x in losses[-3:]]}")
    times = {label: [] for label in builds}
    for _ in range(args.rounds):
        for label, (run, _, _) in builds.items():
            t0 = time.perf_counter()
            jax.block_until_ready(run(*dynamic))
            times[label].append((time.perf_counter() - t0) / args.chunk * 1e3)
    print(f"scene {args.scene}, N={n}, chunks of {args.chunk} steps, {args.rounds} rounds, {jax.devices()[0]}")
    for label, ts in times.items():
        print(f"{label:>9}: {statistics.median(ts):8.2f} ms a step (median; {min(ts):.2f}-{max(ts):.2f})")


if __name__ == "__main__":
    main()
