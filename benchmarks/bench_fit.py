"""Fitting benchmarks: pruning/respawn on vs off, and time per step per backend.

    python benchmarks/bench_fit.py                 # full run (slow on CPU)
    python benchmarks/bench_fit.py --quick         # small sizes, about a minute

Part 1 fits the bundled target with and without pruning/respawn at equal steps
(for each initialiser) and reports final PSNR. Part 2 reports time per
optimisation step (compilation excluded) and final PSNR for every backend that
is available, for each N in --ns at --size^2; combinations whose dense
reference cost N*H*W exceeds --reference-max-work are skipped (and listed).
Prints tables and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import jax
from PIL import Image

import diffbmp_jax as db
from diffbmp_jax.rendering import registry
from diffbmp_jax import stamps
from diffbmp_jax.assets import ASSETS


def target_image(size: int) -> np.ndarray:
    im = Image.open(ASSETS / "target.png").convert("RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def bench_pruning(args, atlas) -> list[dict]:
    target = target_image(args.prune_size)
    rows = []
    for init in args.inits:
        for prune in (False, True):
            psnrs = []
            for seed in range(args.seeds):
                r = db.fit(target, atlas, num_primitives=args.prune_n, steps=args.prune_steps,
                           key=jax.random.key(seed), progress=False, init=init,
                           prune_every=args.prune_every if prune else 0, backend=args.prune_backend)
                psnrs.append(r.psnr)
                respawned = sum(r.history["respawned"])
            rows.append({"init": init, "prune": prune, "psnr": float(np.mean(psnrs)), "psnr_seeds": psnrs,
                         "respawned_last_seed": respawned, "n": args.prune_n, "steps": args.prune_steps,
                         "size": args.prune_size})
            print(f"  init={init:16s} prune={str(prune):5s}  PSNR {np.mean(psnrs):6.2f} dB"
                  f"  (respawned {respawned})", flush=True)
    return rows


def available_backends(wanted) -> list[str]:
    ok = {"reference": True, "cpu": registry.registered("cpu"),
          "cuda": registry.registered("CUDA") and any(d.platform == "gpu" for d in jax.devices())}
    return [b for b in wanted if ok.get(b, False)]


def bench_backends(args, atlas) -> tuple[list[dict], list[str]]:
    target = target_image(args.size)
    h, w = target.shape[:2]
    rows, skipped = [], []
    backends = available_backends(args.backends)
    skipped += [f"{b}: not available" for b in args.backends if b not in backends]
    for n in args.ns:
        for backend in backends:
            if backend == "reference" and n * h * w > args.reference_max_work:
                skipped.append(f"reference N={n} {w}x{h}: N*H*W={n * h * w:.2g} > {args.reference_max_work:.2g}")
                continue
            chunk = max(1, args.steps // 4)
            r = db.fit(target, atlas, num_primitives=n, steps=args.steps, key=jax.random.key(0),
                       progress=False, backend=backend, log_every=chunk)
            t, s = r.history["time"], r.history["step"]
            # Time per step from the chunks after the first (which includes compilation).
            per_step = (t[-1] - t[1]) / max(s[-1] - s[1], 1)
            rows.append({"backend": backend, "n": n, "size": args.size, "steps": args.steps,
                         "ms_per_step": 1e3 * per_step, "psnr": r.psnr, "wall_s": r.wall_time})
            print(f"  {backend:9s} N={n:6d} {w}x{h}  {1e3 * per_step:9.1f} ms/step  PSNR {r.psnr:6.2f} dB"
                  f"  wall {r.wall_time:6.1f} s", flush=True)
    return rows, skipped


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for a fast check")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--ns", type=int, nargs="+", default=[500, 2000, 10000])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--backends", nargs="+", default=["reference", "cpu", "cuda"])
    p.add_argument("--reference-max-work", type=float, default=3e7, help="skip reference when N*H*W exceeds this")
    p.add_argument("--prune-size", type=int, default=128)
    p.add_argument("--prune-n", type=int, default=300)
    p.add_argument("--prune-steps", type=int, default=300)
    p.add_argument("--prune-every", type=int, default=25)
    p.add_argument("--prune-backend", default="auto")
    p.add_argument("--inits", nargs="+", default=["random", "structure_aware"])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--stamp-size", type=int, default=64)
    p.add_argument("--skip-prune", action="store_true")
    p.add_argument("--skip-backends", action="store_true")
    p.add_argument("--json", default="benchmarks/bench_fit.json")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.ns, args.steps = 96, [60, 200], 40
        args.prune_size, args.prune_n, args.prune_steps, args.seeds = 64, 120, 150, 1

    atlas = stamps.load_stamps([str(ASSETS / "stamps")], size=args.stamp_size)
    out = {"device": str(jax.devices()[0]), "platform": platform.platform(), "jax": jax.__version__,
           "args": vars(args), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not args.skip_prune:
        print(f"Pruning/respawn at equal steps ({args.prune_n} primitives, {args.prune_steps} steps, "
              f"{args.prune_size}^2):")
        out["pruning"] = bench_pruning(args, atlas)
    if not args.skip_backends:
        print(f"Time per step by backend ({args.steps} steps, {args.size}^2):")
        out["backends"], out["skipped"] = bench_backends(args, atlas)
        for s in out["skipped"]:
            print("  skipped:", s)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1)
    print("wrote", args.json)


if __name__ == "__main__":
    main()
