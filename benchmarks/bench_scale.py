"""Scaling out: many scenes per launch, and many devices.

    python benchmarks/bench_scale.py                       # 512^2, N=1000, B = 1..64
    python benchmarks/bench_scale.py --size 128 --n 200 --batches 1,4 --steps 5   # smoke run

Three measurements, all of the compiled fitting loop (``log_every`` = --steps,
so one timing is one compiled ``lax.scan`` of --steps optimisation steps;
compilation excluded, median of --repeats):

1. *sequential*: the single-scene loop of :func:`diffbmp_jax.fit`, run for each
   of 16 (or max batch, if smaller) targets one after another;
2. *batched*: :func:`diffbmp_jax.fit_batch`'s loop on one device for each
   batch size in --batches (one kernel launch per forward/backward for all
   scenes);
3. *devices*: the same loop sharded over 1 and over all visible devices
   (when there are several) for the batch sizes in --device-batches.

Throughput is scene-steps per second. Prints tables and writes JSON (--json).
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
from diffbmp_jax.fitting import batch as B
from diffbmp_jax.assets import ASSETS
from diffbmp_jax.fitting.config import resolve_config
from diffbmp_jax.fitting import engine
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.fitting.optim import to_params


def targets(count: int, size: int) -> np.ndarray:
    """``count`` distinct ``size``^2 targets: crops, flips and colour rotations of the bundled one."""
    base = Image.open(ASSETS / "target.png").convert("RGB")
    rng = np.random.default_rng(0)
    out = []
    for b in range(count):
        w, h = base.size
        c = int(min(w, h) * rng.uniform(0.6, 1.0))
        x0, y0 = rng.integers(0, w - c + 1), rng.integers(0, h - c + 1)
        im = base.crop((x0, y0, x0 + c, y0 + c)).resize((size, size), Image.BICUBIC)
        a = np.asarray(im, np.float32) / 255.0
        if b % 2:
            a = a[:, ::-1]
        out.append(np.roll(a, b % 3, axis=2))
    return np.stack(out)


def median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def peak_bytes(device) -> int | None:
    stats = device.memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def breakdown(args, imgs, atlas, device, sizes) -> list[dict]:
    """Where a batched step's time goes: kernels alone, then the step with parts switched off."""
    variants = {
        "full step (defaults)": {},
        "white background (no noise)": {"background": "white"},
        "no respawn": {"prune_every": 0},
        "sharp atlas (no blur)": {"soft_raster": False},
        "white, no respawn, sharp": {"background": "white", "prune_every": 0, "soft_raster": False},
    }
    rows = []
    print("\nbreakdown (ms per step):", flush=True)
    one = B.scene_mesh([device])
    for b in sizes:
        for name, opts in variants.items():
            cfg = resolve_config(None, {"log_every": args.steps, **opts})
            static, scenes, shared, carry = B.host_batch(
                list(imgs[:b]), atlas, num_primitives=args.n, steps=args.steps, key=jax.random.key(0),
                config=cfg, weights=[None] * b, backgrounds=[None] * b, inits=[None] * b)
            sc, at, ca = B.place_batch(one, scenes, shared, carry)
            t = median_time(lambda: B.run_batch_chunk(static, one, sc, at, ca, np.int32(0), np.int32(args.steps), True), args.repeats)
            rows.append({"batch": b, "part": name, "ms_per_step": t / args.steps * 1e3})
            print(f"  B={b:3d}  {name:32s} {t / args.steps * 1e3:8.3f}", flush=True)
        # The kernels alone: forward + backward of the render, vmapped over the scenes.
        params = jax.vmap(lambda th: to_params(th, static.unit))(ca[0])
        tmpl = sc.template
        wc = jax.numpy.ones((args.size, args.size, 3), jax.numpy.float32)

        def kernels(p):
            def loss(q, t):
                c, a = db.render(q, at, height=args.size, width=args.size, template=t)
                return jax.numpy.sum(c * wc) + jax.numpy.sum(a)
            return jax.vmap(jax.grad(loss))(p, tmpl)

        def forward(p):
            return jax.vmap(lambda q, t: db.render(q, at, height=args.size, width=args.size, template=t))(p, tmpl)

        for name, fn in (("render fwd only", forward), ("render fwd+bwd only", kernels)):
            f = jax.jit(fn)
            t = median_time(lambda: f(params), args.repeats * 4)
            rows.append({"batch": b, "part": name, "ms_per_step": t * 1e3})
            print(f"  B={b:3d}  {name:32s} {t * 1e3:8.3f}", flush=True)
    return rows


def sequential_fits(args, imgs, atlas, cfg, seq, result) -> float:
    """1. ``seq`` single-scene loops (that of db.fit), one after another; returns scene-steps/s."""
    singles = []
    for b in range(seq):
        s_static, s_data, s_carry = prepare(imgs[b], atlas, num_primitives=args.n, steps=args.steps,
                                             key=jax.random.key(b), config=cfg)
        singles.append((s_static, jax.device_put(s_data), jax.device_put(s_carry)))
    jax.block_until_ready(engine.run_fit_chunk(*singles[0], np.int32(0), np.int32(args.steps), True))  # compile

    def sequential():
        out = None
        for s_static, s_data, s_carry in singles:
            out = engine.run_fit_chunk(s_static, s_data, s_carry, np.int32(0), np.int32(args.steps), True)
            jax.block_until_ready(out)  # one fit after another
        return out

    t_seq = median_time(sequential, args.repeats)
    seq_rate = seq * args.steps / t_seq
    result["sequential"] = {"scenes": seq, "time_s": t_seq, "scene_steps_per_s": seq_rate}
    print(f"\nsequential: {seq} single-scene fits x {args.steps} steps: {t_seq * 1e3:.1f} ms "
          f"-> {seq_rate:.0f} scene-steps/s ({t_seq / seq / args.steps * 1e3:.3f} ms per scene-step)", flush=True)
    return seq_rate


def take(tree, k):
    return jax.tree.map(lambda x: x[:k], tree)


def run_batched(args, batches, devices, static, scenes, shared, carry, seq_rate, result):
    """2. The batched loop on one device, for each batch size."""
    if not batches:
        return
    one = B.scene_mesh(devices[:1])
    rows = []
    print(f"\n{'B':>4} {'ms/loop':>10} {'ms/step':>9} {'scene-steps/s':>14} {'vs sequential':>14}", flush=True)
    for b in batches:
        sc, at, ca = B.place_batch(one, take(scenes, b), shared, take(carry, b))
        t_b = median_time(lambda: B.run_batch_chunk(static, one, sc, at, ca, np.int32(0), np.int32(args.steps), True), args.repeats)
        rate = b * args.steps / t_b
        rows.append({"batch": b, "time_s": t_b, "ms_per_step": t_b / args.steps * 1e3,
                     "scene_steps_per_s": rate, "speedup_vs_sequential": rate / seq_rate,
                     "peak_bytes": peak_bytes(devices[0])})
        print(f"{b:4d} {t_b * 1e3:10.1f} {t_b / args.steps * 1e3:9.3f} {rate:14.0f} {rate / seq_rate:13.2f}x",
              flush=True)
    result["batched"] = rows


def run_devices(args, dev_batches, devices, static, scenes, shared, carry, result):
    """3. The loop sharded over one device and over all of them."""
    one = B.scene_mesh(devices[:1])
    dev_rows = []
    if len(devices) > 1:
        full = B.scene_mesh(devices)
        print(f"\n{'B':>4} {'1 device ms':>12} {f'{len(devices)} devices ms':>14} {'speed-up':>9}", flush=True)
        for b in dev_batches:
            if b % len(devices):
                continue
            s1 = B.place_batch(one, take(scenes, b), shared, take(carry, b))
            t1 = median_time(lambda: B.run_batch_chunk(static, one, *s1, np.int32(0), np.int32(args.steps), True), args.repeats)
            sc, at, ca = B.place_batch(full, take(scenes, b), shared, take(carry, b))
            tn = median_time(lambda: B.run_batch_chunk(static, full, sc, at, ca, np.int32(0), np.int32(args.steps), True), args.repeats)
            dev_rows.append({"batch": b, "time_1_s": t1, "time_n_s": tn, "devices": len(devices),
                             "speedup": t1 / tn})
            print(f"{b:4d} {t1 * 1e3:12.1f} {tn * 1e3:14.1f} {t1 / tn:8.2f}x", flush=True)
    elif dev_batches:
        print("\none device visible: the multi-device comparison was not run", flush=True)
    result["devices_scaling"] = dev_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed compiled loop")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--device-batches", default="16,32,64")
    ap.add_argument("--sequential", type=int, default=16, help="single-scene fits run one after another")
    ap.add_argument("--breakdown", default="", help="batch sizes for the per-part timing (e.g. 1,16)")
    ap.add_argument("--json")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    dev_batches = [int(b) for b in args.device_batches.split(",") if b]
    devices = jax.devices()
    cfg = resolve_config(None, {"log_every": args.steps})
    atlas = db.load_stamps([str(ASSETS / "stamps")], size=64)
    most = max(batches + dev_batches + [args.sequential, 1])
    imgs = targets(most, args.size)
    print(f"devices: {devices}  ({devices[0].device_kind}), jax {jax.__version__}", flush=True)
    print(f"{args.size}^2, N={args.n}, {args.steps} steps per timing, backend {cfg.backend}", flush=True)

    t = time.perf_counter()
    static, scenes, shared, carry = B.host_batch(
        list(imgs), atlas, num_primitives=args.n, steps=args.steps, key=jax.random.key(0), config=cfg,
        weights=[None] * most, backgrounds=[None] * most, inits=[None] * most)
    print(f"set-up of {most} scenes: {time.perf_counter() - t:.1f} s", flush=True)
    result = {"device": devices[0].device_kind, "devices": len(devices), "platform": platform.node(),
              "jax": jax.__version__, "size": args.size, "n": args.n, "steps": args.steps,
              "repeats": args.repeats}

    seq_rate = float("nan")
    seq = min(args.sequential, most)
    if seq:
        seq_rate = sequential_fits(args, imgs, atlas, cfg, seq, result)
    run_batched(args, batches, devices, static, scenes, shared, carry, seq_rate, result)
    run_devices(args, dev_batches, devices, static, scenes, shared, carry, result)
    if args.breakdown:
        result["breakdown"] = breakdown(args, imgs, atlas, devices[0],
                                        [int(b) for b in args.breakdown.split(",")])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
