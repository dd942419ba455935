"""Where a fitting step's time goes on the CPU backend: the step split by stage.

Builds a fit exactly as :func:`diffbmp_jax.fit` does (``fitting.image.prepare``)
and times, each jit-compiled on its own (median of ``--repeats`` after a
warm-up, milliseconds):

* ``chunk / step``: the engine's compiled chunk of ``log_every`` steps divided
  by its steps -- the real step, respawn included;
* ``canvas``: the step's atlas blur, noise background and keys (``step_canvas``);
* ``pyramid``: the mip levels of the (blurred) atlas (``mipmap.lod_scene``);
* ``forward``: the render of the step (pyramid included);
* ``value+grad``: loss and gradient of the render (pyramid included);
* the rest (optimiser update, clipping, respawn's share, scan) is the step
  minus the canvas and value+grad.

Scenes: ``demo`` (the CLI demo: the bundled target at 128 px, its stamps,
N=300) and ``vangogh1`` (``--bench`` folder's vangogh1 at 512 px, its
fingerprint stamp, N=1000)::

    python benchmarks/profile_cpu_step.py --scene demo
    python benchmarks/profile_cpu_step.py --scene vangogh1 --bench ../shared/bench

Run from outside the checkout or with the package installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from diffbmp_jax.fitting.canvas import step_canvas
from diffbmp_jax.fitting.config import resolve_config
from diffbmp_jax.fitting.engine import render_theta, run_fit_chunk
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.rendering import mipmap


def scene(name: str, bench: str | None):
    """``(target [H, W, 3], atlas, N)`` of a named scene, loaded as ``benchmarks/quality.py`` does."""
    import quality  # benchmarks/quality.py, beside this file
    chosen = {s.name: s for s in quality.SCENES}[{"demo": "demo-300", "vangogh1": "vangogh1-fp-100"}[name]]
    root = Path(bench or os.environ.get("DIFFBMP_BENCH", "../shared/bench"))
    return quality.load_target(chosen, root), quality.load_atlas(chosen, root, 128), chosen.num


def median_ms(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default="demo", help="demo or a target name of the bench folder (vangogh1)")
    ap.add_argument("--bench", default=None, help="the bench folder (targets/, stamps/)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300, help="the fit's length (sets the schedules)")
    args = ap.parse_args(argv)

    target, atlas, n = scene(args.scene, args.bench)
    cfg = resolve_config(None, {})
    static, data, carry = prepare(target, atlas, num_primitives=n, steps=args.steps, key=jax.random.key(0),
                                  config=cfg)
    cfg, h, w, chunk = static.cfg, static.height, static.width, static.chunk
    theta = carry[0]
    t = jnp.int32(1)  # an early step: the blur is on, as in the first part of a fit

    @jax.jit
    def canvas(t):
        return step_canvas(cfg, data.atlas, data.bg_image, data.key, t, static.steps, h, w)

    @jax.jit
    def pyramid(t, theta):
        atlas_t = canvas(t)[0]
        scale = jnp.exp(theta.log_scale)
        return mipmap.lod_scene(scale, atlas_t.mask, atlas_t.rgb, data.template)

    @jax.jit
    def forward(t, theta):
        atlas_t, bg, _ = canvas(t)
        return render_theta(static, theta, atlas_t, data.template, bg)

    @jax.jit
    def value_grad(t, theta):
        atlas_t, bg, _ = canvas(t)
        return jax.value_and_grad(lambda th: jnp.mean(jnp.square(
            render_theta(static, th, atlas_t, data.template, bg) - data.target)))(theta)

    rows = {
        "chunk / step": median_ms(lambda: run_fit_chunk(static, data, carry, jnp.int32(0)), args.repeats) / chunk,
        "canvas": median_ms(lambda: canvas(t), args.repeats),
        "pyramid (with canvas)": median_ms(lambda: pyramid(t, theta), args.repeats),
        "forward (with canvas)": median_ms(lambda: forward(t, theta), args.repeats),
        "value+grad (with canvas)": median_ms(lambda: value_grad(t, theta), args.repeats),
    }
    rows["rest (step - value+grad)"] = rows["chunk / step"] - rows["value+grad (with canvas)"]
    print(f"scene {args.scene}: {h}x{w}, N={n}, P={atlas.num} bitmaps of {atlas.mask.shape[1]}x"
          f"{atlas.mask.shape[2]}, {jax.device_count()} device(s), {os.cpu_count()} cpu(s), "
          f"backend {cfg.backend}, chunk {chunk}")
    print("| stage | ms |\n| --- | --- |")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.2f} |")


if __name__ == "__main__":
    main()
