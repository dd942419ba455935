"""Checks the CUDA backend on a GPU machine: against the reference and the cpu backend.

Run from outside the source tree (so the installed package is imported):

    cd /tmp && python3 /path/to/benchmarks/gpu_check.py [--json out.json] [--part i/n]

``--part i/n`` runs every n-th check starting at the i-th, so that n processes
share the GPU and the CPU cores (``run_gpu.sh`` starts GPU_CHECK_PARTS of them;
most of the time is compilation, which runs in parallel).

Builds nothing: assumes ``diffbmp_jax`` is installed with its CUDA kernels.
Every check draws fresh random scenes and compares, per field,
``max|a - b| / max|b|``: forward (colour, alpha) within 1e-5, gradients (every
primitive field, and the atlas when ``atlas_grad``) within 1e-4. Prints PASS or
FAIL per check and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp

import diffbmp_jax as db
from diffbmp_jax.rendering import registry

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")
FWD_TOL = 1e-5
GRAD_TOL = 1e-4

RESULTS: list[dict] = []

# GPU_CHECK_DRYRUN=1 runs the script's logic on a machine without a GPU, with
# the cpu backend standing in for cuda (to test the script itself).
DRYRUN = os.environ.get("GPU_CHECK_DRYRUN") == "1"
CUDA = "cpu" if DRYRUN else "cuda"


def gpu_device():
    return jax.devices("cpu" if DRYRUN else "gpu")[0]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not np.all(np.isfinite(a)):
        return float("inf")
    denom = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if b.size else 0.0
    return float(diff / denom) if denom > 0 else float(diff)


def report(name: str, errs: dict, tols: dict) -> bool:
    ok = all(errs[k] <= tols[k] for k in errs)
    worst = max(errs, key=lambda k: errs[k] / max(tols[k], 1e-30))
    print(f"{'PASS' if ok else 'FAIL'}  {name:<58s} worst {worst}={errs[worst]:.2e}"
          f" (tol {tols[worst]:.0e})", flush=True)
    if not ok:
        for k, v in errs.items():
            print(f"        {k:<16s} {v:.3e}  tol {tols[k]:.0e}")
    RESULTS.append(dict(name=name, ok=ok, errors=errs))
    return ok


# ---------------------------------------------------------------- scenes

def random_atlas(rng, num=3, h=9, w=7):
    mask = rng.uniform(size=(num, h, w)).astype(np.float32)
    mask[:, 0, :] = 0.0
    mask[:, :, -1] *= 0.3
    rgb = rng.uniform(size=(num, h, w, 3)).astype(np.float32)
    return db.Atlas.from_arrays(mask, rgb)


def smooth_atlas(rng, num=3, h=64, w=64):
    """Smooth bitmaps (sums of Gaussian blobs), like real stamps.

    Used for the large scenes: the bilinear sample's derivative jumps at texel
    edges by the difference of neighbouring texels, so with white-noise texels a
    coordinate one ulp apart (GPU fused multiply-add vs CPU, or cosf/sinf of
    another libm) can flip a sample across an edge and move one pixel's geometry
    gradient by O(1). Among ~10^6 samples a few such flips occur: with a noise
    atlas the 3000-primitive scene showed d_scale 1.1e-4 between cuda and cpu
    (identical for the binned and the fallback path, while cpu vs cpu with 1 or 7
    threads differs by 1e-6). Smooth bitmaps make those jumps small.

    The mask also fades to zero over its outer 8 texels, as a stamp's transparent
    margin does: past the border the sample is zero, so its derivative jumps there
    by the edge texel's value, and one sample landing at fy = 63.999996 on one side
    and 64.0 on the other (the affine bitmap map's rounding) moved one primitive's
    d_rotation by 3.1 (4.4e-2 of the largest) while every other primitive agreed.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    def field():
        f = np.zeros((h, w))
        for _ in range(5):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            sg = rng.uniform(0.12, 0.3) * max(h, w)
            f += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sg * sg))
        return np.clip(f, 0, 1)
    def ramp(n):  # 0 at the outer texel, 1 from the ninth inwards, smooth between
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) / 8.0
        return np.sin(0.5 * np.pi * np.clip(d, 0.0, 1.0)) ** 2
    margin = ramp(h)[:, None] * ramp(w)[None, :]
    mask = np.stack([field() * margin for _ in range(num)]).astype(np.float32)
    rgb = np.stack([np.stack([field() for _ in range(3)], -1) for _ in range(num)]).astype(np.float32)
    return db.Atlas.from_arrays(mask, rgb)


def random_scene(rng, n, height, width, scale=(1.5, 12.0), off=0.25, opacity=(0.05, 0.97)):
    lo = -off * np.array([width, height])
    hi = (1 + off) * np.array([width, height])
    xy = rng.uniform(lo, hi, size=(n, 2))
    s = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), size=n))
    rot = rng.uniform(-2 * np.pi, 2 * np.pi, size=n)
    return db.Primitives.create(xy, s, rot, rng.uniform(*opacity, size=n),
                                rng.uniform(0.02, 0.98, size=(n, 3)))


def stacked_scene(rng, n, height, width, scale, opacity):
    centre = np.array([width / 2, height / 2])
    xy = centre + rng.normal(scale=1.0, size=(n, 2))
    rot = rng.uniform(-np.pi, np.pi, size=n)
    return db.Primitives.create(xy, np.full(n, scale), rot, rng.uniform(*opacity, size=n),
                                rng.uniform(0.02, 0.98, (n, 3)))


# ---------------------------------------------------------------- evaluation

def evaluate(backend, device, params, atlas, height, width, template, k, atlas_grad, seed):
    """Forward (C, A) and gradients of a random linear loss, as numpy, on `device`."""
    rng = np.random.default_rng(seed)
    wc = rng.normal(size=(height, width, 3)).astype(np.float32)
    wa = rng.normal(size=(height, width)).astype(np.float32)
    with jax.default_device(device):
        params, atlas, template, wc, wa = jax.device_put((params, atlas, template, wc, wa), device)
        kw = dict(height=height, width=width, template=template, color_blend=k,
                  backend=backend, atlas_grad=atlas_grad)
        color, alpha = db.render(params, atlas, **kw)

        def loss(p, a):
            c, al = db.render(p, a, **kw)
            return jnp.sum(c * wc) + jnp.sum(al * wa)

        gp, ga = jax.grad(loss, argnums=(0, 1))(params, atlas)
        out = {"color": np.asarray(color), "alpha": np.asarray(alpha)}
        for f in FIELDS:
            out["d_" + f] = np.asarray(getattr(gp, f))
        if atlas_grad:
            out["d_mask"] = np.asarray(ga.mask)
            if k > 0:
                out["d_rgb"] = np.asarray(ga.rgb)
    return out


def compare(name, a, b, fwd_tol=FWD_TOL, grad_tol=GRAD_TOL) -> bool:
    errs, tols = {}, {}
    for key in b:
        if key not in a:
            continue
        errs[key] = rel_err(a[key], b[key])
        tols[key] = fwd_tol if key in ("color", "alpha") else grad_tol
    return report(name, errs, tols)


def check_scene(tag, params, atlas, height, width, *, template=None, k=0.0, atlas_grad=False,
                seed=0, vs_reference=True, vs_cpu=True, ref_fwd_tol=FWD_TOL):
    gpu, cpu = gpu_device(), jax.devices("cpu")[0]
    if template is None:
        template = jnp.arange(params.num, dtype=jnp.int32) % atlas.num
    args = (params, atlas, height, width, template, k, atlas_grad, seed)
    cu = evaluate(CUDA, gpu, *args)
    ok = True
    if vs_reference:
        ref = evaluate("reference", gpu, *args)
        ok &= compare(f"{tag}: cuda vs reference", cu, ref, fwd_tol=ref_fwd_tol)
    if vs_cpu:
        cp = evaluate("cpu", cpu, *args)
        ok &= compare(f"{tag}: cuda vs cpu", cu, cp)
    return ok, cu


def set_pair_budget(value):
    if value is None:
        os.environ.pop("DIFFBMP_CUDA_MAX_PAIRS", None)
    else:
        os.environ["DIFFBMP_CUDA_MAX_PAIRS"] = str(value)


# ---------------------------------------------------------------- bf16 atlas

def bf16_accuracy(seed=0):
    """fp32 vs bf16-atlas CUDA targets on a 64x64-bitmap scene (informational + loose check)."""
    from diffbmp_jax.rendering import kernels, lowering
    rng = np.random.default_rng(seed)
    H, W, n = 256, 256, 2000
    P = 4
    yy, xx = np.mgrid[0:64, 0:64]
    mask = np.stack([np.clip(1.2 - np.hypot(xx - 31.5, yy - 31.5) / (20 + 4 * i), 0, 1)
                     for i in range(P)]).astype(np.float32)
    mask = np.clip(mask + 0.1 * rng.uniform(size=mask.shape), 0, 1).astype(np.float32)
    rgb = rng.uniform(size=(P, 64, 64, 3)).astype(np.float32)
    params = random_scene(rng, n, H, W, scale=(4, 30))
    tmpl = jnp.asarray(rng.integers(0, P, n), jnp.int32)
    cfg = kernels.KernelConfig(H, W, 0.5, 0.99, True, True)
    d_color = jnp.asarray(rng.normal(size=(H, W, 3)), jnp.float32)
    d_trans = jnp.asarray(rng.normal(size=(H, W)), jnp.float32)
    # The kernels read padded bitmaps (kernels.pad_atlas); their atlas gradients are padded too.
    mask, rgb = (np.asarray(a) for a in kernels.pad_atlas(jnp.asarray(mask), jnp.asarray(rgb), True))
    inputs32 = kernels.kernel_inputs(params, tmpl, jnp.asarray(mask), jnp.asarray(rgb))
    # The bf16 run: the atlas rounded to bf16, everything else fp32.
    m16, r16 = jnp.asarray(mask, jnp.bfloat16), jnp.asarray(rgb, jnp.bfloat16)
    inputs16 = kernels.kernel_inputs(params, tmpl, m16, r16)
    attrs = kernels.kernel_attrs(cfg)
    out_f = (jax.ShapeDtypeStruct((H, W, 3), jnp.float32), jax.ShapeDtypeStruct((H, W), jnp.float32),
             jax.ShapeDtypeStruct((H, W), jnp.int32))
    out_b = tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in
                  [(n, 2), (n,), (n,), (n,), (n, 3), mask.shape, rgb.shape])
    res = {}
    for tag, inputs, suffix in (("fp32", inputs32, ""), ("bf16", inputs16, "_bf16")):
        fwd = lowering.call("diffbmp_forward" + suffix, out_f, *inputs, **attrs)
        bwd = lowering.call("diffbmp_backward" + suffix, out_b, *inputs, fwd[1], fwd[2], d_color,
                            d_trans, fwd[3], atlas_grad=np.int32(1), **attrs)
        res[tag] = [np.asarray(x) for x in fwd[:2]] + [np.asarray(x) for x in bwd]
    names = ["color", "trans", "d_xy", "d_scale", "d_rotation", "d_opacity_logit",
             "d_color_logit", "d_mask", "d_rgb"]
    errs = {nm: rel_err(b, f) for nm, f, b in zip(names, res["fp32"], res["bf16"])}
    # bf16 has an 8-bit mantissa: atlas values carry ~2e-3 relative rounding.
    tols = {nm: (1e-2 if nm in ("color", "trans") else 5e-2) for nm in names}
    report("bf16 atlas vs fp32 atlas (cuda, 256x256, N=2000, 64^2)", errs, tols)
    # Through render(..., atlas_bf16=True): the same comparison, gradients of a
    # random linear loss for every primitive field and the atlas.
    atlas = db.Atlas.from_arrays(mask[:, 1:-1, 1:-1], rgb[:, 1:-1, 1:-1])
    gpu = gpu_device()
    f32 = evaluate("cuda", gpu, params, atlas, H, W, tmpl, 0.5, True, 3)
    orig = db.render

    def render_bf16(*a, **kw):
        return orig(*a, atlas_bf16=True, **kw)

    db.render = render_bf16
    try:
        b16 = evaluate("cuda", gpu, params, atlas, H, W, tmpl, 0.5, True, 3)
    finally:
        db.render = orig
    errs2 = {k: rel_err(b16[k], f32[k]) for k in f32}
    tols2 = {k: (1e-2 if k in ("color", "alpha") else 5e-2) for k in f32}
    report("render(atlas_bf16=True) vs fp32 (forward and all gradients)", errs2, tols2)
    return errs


# ---------------------------------------------------------------- main

# ---------------------------------------------------------------- the checks

def random_scenes(seed):
    """1. A random scene, every colour mode, atlas gradients on even seeds."""
    rng = np.random.default_rng(seed)
    H, W = [(33, 47), (40, 24), (64, 80), (17, 130)][seed % 4]
    atlas = random_atlas(rng, num=1 + seed % 4, h=5 + seed, w=11 - seed)
    params = random_scene(rng, 40 + 30 * seed, H, W)
    tmpl = jnp.asarray(rng.integers(0, atlas.num, params.num), jnp.int32)
    for k in (0.0, 0.5, 1.0):
        check_scene(f"random s{seed} {H}x{W} N={params.num} k={k}", params, atlas, H, W,
                    template=tmpl, k=k, atlas_grad=(seed % 2 == 0), seed=seed)


def deep_stacks():
    """2-3. Dense stacks: early termination, and thousands of layers on one tile."""
    rng = np.random.default_rng(11)
    atlas = random_atlas(rng, num=2, h=8, w=8)
    params = stacked_scene(rng, 300, 40, 40, scale=10.0, opacity=(0.6, 0.99))
    check_scene("opaque stack 300 on 40x40 (early stop)", params, atlas, 40, 40, k=0.5,
                atlas_grad=True, seed=11)
    # 20,000 primitives on one 16x16 tile, translucent (long composited lists:
    # ~5000 layers per pixel before early termination). Against the reference the
    # forward tolerance is 5e-5: sequential float32 compositing over thousands of
    # layers drifts ~2e-5 from a float64 evaluation in BOTH kernel backends (the
    # reference's cumprod/sum is pairwise, ~1e-6); cuda vs cpu stays at 1e-5.
    rng = np.random.default_rng(12)
    atlas = random_atlas(rng, num=3, h=16, w=16)
    params = stacked_scene(rng, 20000, 16, 16, scale=9.0, opacity=(0.001, 0.012))
    check_scene("20k stacked on one tile, translucent", params, atlas, 16, 16, k=0.3,
                seed=12, ref_fwd_tol=5e-5)
    params = stacked_scene(rng, 20000, 16, 16, scale=9.0, opacity=(0.02, 0.5))
    check_scene("20k stacked on one tile, opaque-ish", params, atlas, 16, 16, k=0.0, seed=13)


def large_primitives():
    """4. Primitives larger than the canvas."""
    rng = np.random.default_rng(14)
    atlas = random_atlas(rng, num=3, h=12, w=9)
    params = random_scene(rng, 60, 37, 45, scale=(40.0, 300.0), opacity=(0.02, 0.4))
    check_scene("larger than the canvas (scale 40..300 on 37x45)", params, atlas, 37, 45,
                k=0.5, atlas_grad=True, seed=14)


def many_tiles_and_fallbacks():
    """5-6. Many tiles of 64^2 bitmaps (vs cpu: the reference would be large), then the
    all-primitives fallback (pair budget exceeded), which must give the same result."""
    rng = np.random.default_rng(15)
    atlas = smooth_atlas(rng, num=5, h=64, w=64)
    params = random_scene(rng, 3000, 200, 333, scale=(2.0, 40.0))
    tmpl = jnp.asarray(rng.integers(0, 5, params.num), jnp.int32)
    check_scene("3000 prims 200x333, 64^2 atlas", params, atlas, 200, 333, template=tmpl,
                k=0.5, atlas_grad=True, seed=15, vs_reference=False)
    set_pair_budget(0)
    check_scene("fallback path: 3000 prims 200x333", params, atlas, 200, 333, template=tmpl,
                k=0.5, atlas_grad=True, seed=15, vs_reference=False)
    rng = np.random.default_rng(16)
    atlas = random_atlas(rng, num=3, h=16, w=16)
    params = stacked_scene(rng, 20000, 16, 16, scale=9.0, opacity=(0.001, 0.012))
    check_scene("fallback path: 20k stacked on one tile", params, atlas, 16, 16, k=0.3, seed=16,
                vs_reference=False)
    # A capacity below the pair count: the lists are partly filled, then abandoned on the device.
    set_pair_budget(500)
    check_scene("overflow path (capacity 500): 20k stacked on one tile", params, atlas, 16, 16,
                k=0.3, seed=16, vs_reference=False)
    set_pair_budget(None)


def bad_templates_and_repeatability():
    """7-8. Out-of-range template ids inside jit (invisible on both kernel backends);
    the same inputs twice (forward bitwise, gradients to rounding: atomics)."""
    rng = np.random.default_rng(17)
    atlas = random_atlas(rng, num=3, h=9, w=7)
    params = random_scene(rng, 80, 48, 48)
    tmpl = np.asarray(rng.integers(0, 3, 80), np.int32)
    tmpl[::7] = 5
    tmpl[3::11] = -2
    outs = {}
    for name, dev in ((CUDA, gpu_device()), ("cpu", jax.devices("cpu")[0])):
        with jax.default_device(dev):
            p, a, t = jax.device_put((params, atlas, jnp.asarray(tmpl)), dev)
            f = jax.jit(lambda p, a, t: db.render(p, a, height=48, width=48, template=t,
                                                  backend=name))
            c, al = f(p, a, t)
            outs[dev.platform] = {"color": np.asarray(c), "alpha": np.asarray(al)}
    compare("bad template ids inside jit: cuda vs cpu", outs[gpu_device().platform], outs["cpu"])

    rng = np.random.default_rng(18)
    atlas = random_atlas(rng, num=4, h=64, w=64)
    params = random_scene(rng, 5000, 256, 256, scale=(3.0, 30.0))
    gpu = gpu_device()
    tm = jnp.arange(5000, dtype=jnp.int32) % 4
    r1 = evaluate(CUDA, gpu, params, atlas, 256, 256, tm, 0.5, True, 18)
    r2 = evaluate(CUDA, gpu, params, atlas, 256, 256, tm, 0.5, True, 18)
    errs = {k: rel_err(r1[k], r2[k]) for k in r1}
    tols = {k: (0.0 if k in ("color", "alpha") else 1e-5) for k in r1}
    report("repeatability: same inputs twice (forward bitwise)", errs, tols)


def bf16_targets():
    """9. The bf16 atlas."""
    try:
        if not DRYRUN:
            bf16_accuracy()
    except Exception as e:  # noqa: BLE001
        print(f"FAIL  bf16 atlas targets: {type(e).__name__}: {e}")
        RESULTS.append(dict(name="bf16", ok=False, errors={}))


# In an order that spreads the cost when split into parts (--part): the
# random scenes compile the most.
CHECKS = [lambda: random_scenes(0), many_tiles_and_fallbacks, lambda: random_scenes(1),
          bad_templates_and_repeatability, lambda: random_scenes(2), deep_stacks,
          lambda: random_scenes(3), bf16_targets, lambda: random_scenes(4), large_primitives,
          lambda: random_scenes(5)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--part", default="1/1",
                    help="run the checks of part i of n (i/n), so that n processes can share them")
    args = ap.parse_args()
    i, n = (int(v) for v in args.part.split("/"))
    if not 1 <= i <= n:
        ap.error(f"--part must be i/n with 1 <= i <= n, got {args.part}")
    print("jax", jax.__version__, "devices", jax.devices(), f"part {i}/{n}", flush=True)
    if not DRYRUN and not registry.cuda_available():
        print("FAIL  CUDA kernels not built or no GPU visible")
        return 1
    if not registry.registered("cpu"):
        print("FAIL  cpu kernels not built")
        return 1
    t0 = time.time()
    set_pair_budget(None)
    for check in CHECKS[i - 1::n]:
        check()

    n_fail = sum(not r["ok"] for r in RESULTS)
    print(f"\n{len(RESULTS) - n_fail} passed, {n_fail} failed, {time.time() - t0:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(device=str(jax.devices()[0].device_kind), results=RESULTS), fh, indent=1)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
