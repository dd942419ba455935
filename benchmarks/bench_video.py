"""Video fitting: flicker and PSNR of independent fits vs warm start vs the full method.

    python benchmarks/bench_video.py [--frames 10] [--size 64] [-n 120] [--steps 150] [--steps-next 40]

Synthetic video (:func:`diffbmp_jax.tasks.video.synthetic_video`): a few shapes moving
over a static textured background. Variants:

* independent: every frame fitted from scratch with ``--steps`` steps (same key);
* warm start: frame t starts from frame t-1, ``--steps-next`` steps, all primitives free;
* warm + freeze + prune: primitives over unchanged pixels frozen, invisible ones respawned;
* warm + freeze + prune + temporal: plus the parameter-motion penalty.

Then frames/s of the full method fitted sequentially vs in vmapped windows of
``--batch`` frames (compiled beforehand, so no compilation is timed).
Prints a markdown table and writes ``benchmarks/bench_video.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import jax

import diffbmp_jax as db
from diffbmp_jax.cli import app as cli
from diffbmp_jax.tasks.video import fit_video, synthetic_video


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("-n", type=int, default=120)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--steps-next", dest="steps_next", type=int, default=40)
    ap.add_argument("--temporal-weight", dest="temporal_weight", type=float, default=0.003)
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "bench_video.json"))
    a = ap.parse_args(argv)

    video = synthetic_video(a.frames, a.size, a.size, num_shapes=2, speed=1.5, seed=0)
    atlas = db.stamps.load_images(str(cli.ASSETS / "stamps"), size=24)
    common = dict(num_primitives=a.n, steps=a.steps, steps_next=a.steps_next, key=0)
    variants = [
        ("independent per-frame fits", dict(warm_start=False)),
        ("warm start only", dict(freeze=False, prune=False)),
        ("warm start + freeze + prune", dict()),
        (f"warm start + freeze + prune + temporal ({a.temporal_weight:g})", dict(temporal_weight=a.temporal_weight)),
    ]
    rows = []
    for name, kw in variants:
        r = fit_video(video, atlas, **common, **kw)
        rows.append({"variant": name, "mean_psnr": float(r.psnr.mean()), "min_psnr": float(r.psnr.min()),
                     "flicker": r.flicker, "mean_frozen": float(r.frozen[1:].mean()),
                     "respawned": int(r.respawned.sum()), "wall_time": r.wall_time, "psnr": r.psnr.tolist()})
        print(f"{name}: mean PSNR {r.psnr.mean():.2f} flicker {r.flicker:+.4f} ({r.wall_time:.1f} s)", flush=True)

    # Throughput of later frames, compiled already (the runs above compiled batch=1;
    # one warm-up run compiles the batched window).
    fit_video(video[: 1 + a.batch], atlas, **common, batch=a.batch)
    speed = []
    for k in (1, a.batch):
        t0 = time.perf_counter()
        r = fit_video(video, atlas, **common, batch=k)
        later = float(np.sum(r.frame_time[1:]))
        speed.append({"batch": k, "frames_per_s": (a.frames - 1) / later, "mean_psnr": float(r.psnr.mean()),
                      "flicker": r.flicker, "wall_time": time.perf_counter() - t0})

    print()
    print(f"Synthetic video {a.frames} frames {a.size}x{a.size}, N={a.n}, steps {a.steps} (frame 0 / independent), "
          f"{a.steps_next} (later frames), backend auto; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}).")
    print()
    print("| variant | mean PSNR (dB) | min PSNR (dB) | flicker (added mean abs diff) | frozen / frame | respawned | wall time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['mean_psnr']:.2f} | {r['min_psnr']:.2f} | {r['flicker']:+.4f} | "
              f"{r['mean_frozen']:.1f} / {a.n} | {r['respawned']} | {r['wall_time']:.1f} |")
    print()
    print("| later frames fitted | frames/s | mean PSNR (dB) | flicker |")
    print("|---|---|---|---|")
    for s in speed:
        label = "sequentially" if s["batch"] == 1 else f"in vmapped windows of {s['batch']}"
        print(f"| {label} | {s['frames_per_s']:.2f} | {s['mean_psnr']:.2f} | {s['flicker']:+.4f} |")
    with open(a.json, "w") as fh:
        json.dump({"args": vars(a), "variants": rows, "throughput": speed, "jax": jax.__version__,
                   "cpu_count": os.cpu_count()}, fh, indent=1)


if __name__ == "__main__":
    main()
