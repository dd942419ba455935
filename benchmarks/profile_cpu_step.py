"""Where a fitting step's time goes on the CPU backend: the step split by stage.

Builds a fit exactly as :func:`diffbmp_jax.fit` does (``fitting.image.prepare``),
times the engine's compiled chunk of ``log_every`` steps (median of
``--repeats``; the real step, respawn included) and traces one chunk with
``jax.profiler``: XLA's CPU runtime reports every operation it runs, and the
compiled HLO says which custom call is which kernel. Per step (ms, share):

* ``forward kernel`` / ``backward kernel``: the C++ FFI handlers; where the step's loss is
  the plain MSE, ``forward, loss and backward (one call)`` (the respawn's renders run the
  plain forward);
* ``matrix products``: the antialiasing pyramid (mip levels, two batched products);
* ``other XLA ops``: fusions (blur, noise, loss, Adam, respawn's share, ...);
* ``outside ops``: the rest of the chunk's wall time (loop control, the
  runtime between operations).

Scenes: ``demo`` (the CLI demo: the bundled target at 128 px, its stamps,
N=300) and ``vangogh1`` (``--bench`` folder's vangogh1 at 512 px, its
fingerprint stamp, N=1000)::

    python benchmarks/profile_cpu_step.py --scene demo
    python benchmarks/profile_cpu_step.py --scene vangogh1 --bench ../shared/bench

Run from outside the checkout or with the package installed.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from diffbmp_jax.fitting.config import resolve_config
from diffbmp_jax.fitting.engine import periodic, run_fit_chunk, step
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.fitting.loop import run_chunk


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


def kernel_names(hlo: str) -> dict:
    """``{instruction name: FFI target}`` of the custom calls in compiled HLO text."""
    names = {}
    for m in re.finditer(r"%?([\w.\-]+) = [^\n]*custom-call\([^\n]*custom_call_target=\"(\w+)\"", hlo):
        names[m.group(1)] = m.group(2)
    return names


def traced_split(run, hlo: str, steps: int) -> dict:
    """ms per step by category (see the module docstring) from one traced run of ``run``."""
    folder = tempfile.mkdtemp(prefix="diffbmp_cpu_trace_")
    jax.profiler.start_trace(folder, create_perfetto_trace=True)
    t = time.perf_counter()
    jax.block_until_ready(run())
    wall = time.perf_counter() - t
    jax.profiler.stop_trace()
    path = sorted(glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True))[-1]
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    targets = kernel_names(hlo)
    split = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = e["name"]
        if name.startswith(("ThunkExecutor", "$", "PjitFunction", "CommonPjRt")) or " " in name:
            continue  # runtime and Python frames, not operations
        if name in targets:
            cat = {"diffbmp_forward": "forward kernel", "diffbmp_forward_loss": "forward kernel (loss folded in)",
                   "diffbmp_backward": "backward kernel",
                   "diffbmp_mse_grad": "forward, loss and backward (one call)"}.get(targets[name], "other custom calls")
        elif name.startswith(("dot", "ynn_fusion")) or "dot" in name:
            cat = "matrix products"
        elif name.startswith(("while", "cond", "call")):
            continue  # containers: their operations are counted one by one
        else:
            cat = "other XLA ops"
        split[cat] += e["dur"] / 1e3
    out = {k: v / steps for k, v in sorted(split.items(), key=lambda kv: -kv[1])}
    out["outside ops"] = 1e3 * wall / steps - sum(out.values())
    return out


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
    run = lambda: run_fit_chunk(static, data, carry, jnp.int32(0), jnp.int32(args.steps), True)  # noqa: E731
    step_ms = median_ms(run, args.repeats) / chunk
    hlo = run_chunk.lower(step, static, data, carry, jnp.int32(0), jnp.int32(args.steps),
                          periodic(static), True).compile().as_text()
    split = traced_split(run, hlo, chunk)
    print(f"scene {args.scene}: {h}x{w}, N={n}, P={atlas.num} bitmaps of {atlas.mask.shape[1]}x"
          f"{atlas.mask.shape[2]}, {jax.device_count()} device(s), {os.cpu_count()} cpu(s), "
          f"backend {cfg.backend}, chunk {chunk}")
    print(f"step (median of {args.repeats} chunks, untraced): {step_ms:.2f} ms")
    traced = sum(split.values())
    print("| stage (one traced chunk) | ms per step | share |\n| --- | --- | --- |")
    for name, ms in split.items():
        print(f"| {name} | {ms:.2f} | {100 * ms / traced:.0f}% |")


if __name__ == "__main__":
    main()
