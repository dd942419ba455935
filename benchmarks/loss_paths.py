"""A fit's step through each way of computing its MSE, alternated in one process (any backend).

Times the engine's compiled chunk of ``--chunk`` steps (``engine.run_fit_chunk``, respawn
included) for three builds of the same step, round after round:

* ``one call``: the loss folded into the kernels, the gradient by ``diffbmp_mse_grad``
  (forward, loss and backward in one call) -- what a fit runs where the kernels have it;
* ``two calls``: the same with ``diffbmp_mse_grad`` hidden from the registry while the step
  is traced: the forward with the loss (``diffbmp_forward_loss``), then the backward;
* ``image``: the step before the fold: a :class:`~diffbmp_jax.fitting.engine.PixelLoss`
  subclass, which scores the rendered image (render, composite, mean in XLA).

Prints each build's last losses (the one call and the two calls give the same bits) and ms a
step, median and range. Scenes as ``profile_cpu_step.py``'s::

    python benchmarks/loss_paths.py --scene demo --rounds 15
    python benchmarks/loss_paths.py --scene vangogh1 --bench ../shared/bench --rounds 11

Run from outside the checkout or with the package installed.
"""

from __future__ import annotations

import argparse
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


def hidden(target: str):
    """The registry's exports with ``target`` hidden (restored by the caller)."""
    return {p: names - {target} for p, names in registry._EXPORTED.items()}


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
    for platform in ("cpu", "CUDA"):
        registry.registered(platform)
    full = dict(registry._EXPORTED)
    builds = {}
    for label, objective, exports in (("one call", static.objective, full),
                                      ("two calls", static.objective, hidden(registry.MSE_GRAD)),
                                      ("image", ImageLoss(), full)):
        registry._EXPORTED.update(exports)  # read while the step is traced, below
        st = static._replace(objective=objective)
        run = jax.jit(run_fit_chunk, static_argnums=(0, 5))
        out = jax.block_until_ready(run(st, data, carry, jnp.int32(0), jnp.int32(300), True))
        builds[label] = (run, st, out[1][0])
        registry._EXPORTED.update(full)
    for label, (_, _, losses) in builds.items():
        print(f"{label}: last losses {[float(x) for x in losses[-3:]]}")
    times = {label: [] for label in builds}
    for _ in range(args.rounds):
        for label, (run, st, _) in builds.items():
            t0 = time.perf_counter()
            jax.block_until_ready(run(st, data, carry, jnp.int32(0), jnp.int32(300), True))
            times[label].append((time.perf_counter() - t0) / args.chunk * 1e3)
    print(f"scene {args.scene}, N={n}, chunks of {args.chunk} steps, {args.rounds} rounds, {jax.devices()[0]}")
    for label, ts in times.items():
        print(f"{label:>9}: {statistics.median(ts):8.2f} ms a step (median; {min(ts):.2f}-{max(ts):.2f})")


if __name__ == "__main__":
    main()
