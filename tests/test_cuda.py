"""The cuda backend against the reference (and the cpu backend): needs a GPU.

Skipped where the CUDA kernels are not built or JAX sees no GPU (CI). The
fuller GPU check, with large scenes, is ``benchmarks/gpu_check.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.rendering import registry
from scenes import off_texel_edges, random_atlas, random_scene, rel_err, stacked_scene

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not registry.cuda_available(), reason="CUDA kernels not built or no GPU"),
]

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")
FWD_TOL = 1e-5
GRAD_TOL = 1e-4


def _run(backend, device, params, atlas, height, width, wc, wa, **kw):
    with jax.default_device(device):
        params, atlas, wc, wa = jax.device_put((params, atlas, wc, wa), device)
        kw = dict(height=height, width=width, backend=backend, **kw)
        color, alpha = db.render(params, atlas, **kw)

        def loss(p, a):
            c, al = db.render(p, a, **kw)
            return jnp.sum(c * wc) + jnp.sum(al * wa)

        gp, ga = jax.grad(loss, argnums=(0, 1))(params, atlas)
        return np.asarray(color), np.asarray(alpha), gp, ga


def compare(params, atlas, height, width, seed, against="reference", fwd_tol=FWD_TOL, **kw):
    params = off_texel_edges(params, atlas, height, width)
    rng = np.random.default_rng(seed + 1000)
    wc = jnp.asarray(rng.normal(size=(height, width, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(height, width)), jnp.float32)
    gpu = jax.devices("gpu")[0]
    other = jax.devices("cpu")[0] if against == "cpu" else gpu
    c_cu, a_cu, g_cu, ga_cu = _run("cuda", gpu, params, atlas, height, width, wc, wa, **kw)
    c_b, a_b, g_b, ga_b = _run(against, other, params, atlas, height, width, wc, wa, **kw)
    assert rel_err(c_cu, c_b) < fwd_tol
    assert rel_err(a_cu, a_b) < fwd_tol
    for f in FIELDS:
        err = rel_err(getattr(g_cu, f), getattr(g_b, f))
        assert err < GRAD_TOL, f"{f}: relative error {err:.2e}"
    if kw.get("atlas_grad"):
        assert rel_err(ga_cu.mask, ga_b.mask) < GRAD_TOL
        if kw.get("color_blend", 0.0) > 0:
            assert rel_err(ga_cu.rgb, ga_b.rgb) < GRAD_TOL
    return c_cu


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("color_blend", [0.0, 0.5, 1.0])
def test_random_scenes(seed, color_blend):
    rng = np.random.default_rng(seed)
    height, width = [(33, 47), (40, 24), (64, 80), (17, 130)][seed]
    atlas = random_atlas(rng, num=1 + seed % 4, h=5 + seed, w=11 - seed)
    params = random_scene(rng, 40 + 25 * seed, height, width)
    template = jnp.asarray(rng.integers(0, atlas.num, params.num), jnp.int32)
    color = compare(params, atlas, height, width, seed, template=template,
                    color_blend=color_blend, atlas_grad=seed % 2 == 0)
    assert float(np.max(color)) > 0.05


def test_deep_stack_early_termination():
    rng = np.random.default_rng(100)
    atlas = random_atlas(rng, num=2, h=8, w=8)
    params = stacked_scene(rng, 200, 24, 24)
    compare(params, atlas, 24, 24, 100, color_blend=0.5, atlas_grad=True)


def test_thousands_on_one_tile_against_cpu():
    rng = np.random.default_rng(101)
    atlas = random_atlas(rng, num=3, h=16, w=16)
    centre = np.array([8.0, 8.0])
    n = 5000
    params = db.Primitives.create(centre + rng.normal(size=(n, 2)), np.full(n, 9.0),
                                  rng.uniform(-np.pi, np.pi, n), rng.uniform(0.002, 0.02, n),
                                  rng.uniform(0.02, 0.98, (n, 3)))
    compare(params, atlas, 16, 16, 101, against="cpu", color_blend=0.3)


def test_larger_than_canvas():
    rng = np.random.default_rng(102)
    atlas = random_atlas(rng, num=3, h=6, w=10)
    params = random_scene(rng, 30, 30, 37, scale=(40.0, 400.0), opacity=(0.05, 0.3))
    compare(params, atlas, 30, 37, 102, color_blend=0.5, atlas_grad=True)


def test_backward_warp_skipping_keeps_every_sample():
    """The backward lets a warp skip a candidate when its 8 x 4 pixels provably all
    sample outside the bitmap (warps_to_visit): small rotated primitives with edges
    on the warps' borders keep every primitive's own gradient, not just the field's."""
    rng = np.random.default_rng(103)
    atlas = random_atlas(rng, num=2, h=7, w=12)
    n, height, width = 120, 32, 48
    # Centres near the warps' borders (x multiples of 8, y multiples of 4), sizes of
    # a fraction of a pixel to a few pixels, every rotation.
    xy = np.stack([8.0 * rng.integers(0, 7, n) + rng.normal(0, 1.5, n),
                   4.0 * rng.integers(0, 9, n) + rng.normal(0, 1.0, n)], -1)
    params = db.Primitives.create(xy, rng.uniform(0.4, 4.0, n), rng.uniform(-np.pi, np.pi, n),
                                  rng.uniform(0.05, 0.5, n), rng.uniform(0.05, 0.95, (n, 3)))
    params = off_texel_edges(params, atlas, height, width)
    wc = jnp.asarray(rng.normal(size=(height, width, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(height, width)), jnp.float32)
    gpu, cpu = jax.devices("gpu")[0], jax.devices("cpu")[0]
    kw = dict(color_blend=0.5, atlas_grad=True)
    _, _, g_cu, _ = _run("cuda", gpu, params, atlas, height, width, wc, wa, **kw)
    _, _, g_cpu, _ = _run("cpu", cpu, params, atlas, height, width, wc, wa, **kw)
    for f in FIELDS:
        a = np.asarray(getattr(g_cu, f), np.float64).reshape(n, -1)
        b = np.asarray(getattr(g_cpu, f), np.float64).reshape(n, -1)
        scale = np.max(np.abs(b), axis=1, keepdims=True)
        assert np.all(np.abs(a - b) <= 1e-3 * scale + 1e-6 * np.max(np.abs(b))), f
        seen = scale[:, 0] > 0
        assert np.all(np.max(np.abs(a), axis=1)[seen] > 0), f"{f}: a primitive lost its gradient"
    assert np.count_nonzero(np.max(np.abs(np.asarray(g_cpu.xy)), axis=1)) > n // 2


@pytest.mark.parametrize("budget", ["0", "40"])
def test_all_primitives_fallback(monkeypatch, budget):
    """Over the pair capacity the kernels walk every primitive per tile: same result.

    Capacity 0 never bins; capacity 40 fills part of the lists before the
    device finds the overflow and abandons them.
    """
    rng = np.random.default_rng(103)
    atlas = random_atlas(rng, num=2, h=9, w=7)
    params = random_scene(rng, 150, 50, 70)
    monkeypatch.setenv("DIFFBMP_CUDA_MAX_PAIRS", budget)
    compare(params, atlas, 50, 70, 103, color_blend=0.5)


def test_ordered_rows_need_room_for_every_pair(monkeypatch):
    """The ordered binning gives every tile a row of N pair slots: with a pair budget one short of
    tiles x N the same call bins through the sorting path instead (its lists packed, the pair
    count still within the budget), and both give the same bits."""
    rng = np.random.default_rng(112)
    atlas = random_atlas(rng, num=2, h=9, w=7)
    n, height, width = 150, 50, 70
    params = random_scene(rng, n, height, width)
    rng_w = np.random.default_rng(7)
    wc = jnp.asarray(rng_w.normal(size=(height, width, 3)), jnp.float32)
    wa = jnp.asarray(rng_w.normal(size=(height, width)), jnp.float32)
    gpu = jax.devices("gpu")[0]
    rows = _run("cuda", gpu, params, atlas, height, width, wc, wa, color_blend=0.5)
    tiles = -(-height // 16) * -(-width // 16)
    monkeypatch.setenv("DIFFBMP_CUDA_MAX_PAIRS", str(tiles * n - 1))
    packed = _run("cuda", gpu, params, atlas, height, width, wc, wa, color_blend=0.5)
    np.testing.assert_array_equal(rows[0], packed[0])
    np.testing.assert_array_equal(rows[1], packed[1])
    for f in FIELDS:
        assert rel_err(getattr(rows[2], f), getattr(packed[2], f)) < GRAD_TOL, f


def test_long_tile_lists_sorted_in_windows(monkeypatch):
    """A tile list longer than the bitmap window of the large-segment sort (2^18 keys).

    The binned render (lists sorted window by window) must equal the
    all-primitives walk, which reads no lists.
    """
    rng = np.random.default_rng(104)
    atlas = random_atlas(rng, num=2, h=6, w=6)
    n = 300_000
    params = db.Primitives.create(rng.uniform(2.0, 14.0, (n, 2)), rng.uniform(1.0, 4.0, n),
                                  rng.uniform(-np.pi, np.pi, n), rng.uniform(1e-4, 1e-3, n),
                                  rng.uniform(0.02, 0.98, (n, 3)))
    rng_w = np.random.default_rng(5)
    wc = jnp.asarray(rng_w.normal(size=(16, 16, 3)), jnp.float32)
    wa = jnp.asarray(rng_w.normal(size=(16, 16)), jnp.float32)
    gpu = jax.devices("gpu")[0]
    binned = _run("cuda", gpu, params, atlas, 16, 16, wc, wa)
    monkeypatch.setenv("DIFFBMP_CUDA_MAX_PAIRS", "0")
    walked = _run("cuda", gpu, params, atlas, 16, 16, wc, wa)
    np.testing.assert_array_equal(binned[0], walked[0])
    np.testing.assert_array_equal(binned[1], walked[1])
    for f in FIELDS:
        assert rel_err(getattr(binned[2], f), getattr(walked[2], f)) < GRAD_TOL, f


def test_ordered_and_sorted_binning_agree():
    """Small calls bin in order (a block per tile walks the rectangles), larger ones
    fill by atomics and sort: both must give the same lists, hence the same bits.

    4,096 primitives on 256^2 take the ordered path (render.cu's kOrderedMaxPrims);
    one more primitive, off the canvas (no tile), sends the same scene down the sorting path.
    """
    rng = np.random.default_rng(105)
    atlas = random_atlas(rng, num=3, h=9, w=12)
    n, size = 4096, 256
    params = random_scene(rng, n, size, size, scale=(2.0, 20.0))
    params = off_texel_edges(params, atlas, size, size)
    extra = db.Primitives.create(np.array([[-5000.0, -5000.0]]), np.array([3.0]), np.array([0.3]),
                                 np.array([0.5]), np.array([[0.5, 0.5, 0.5]]))
    more = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), params, extra)
    rng_w = np.random.default_rng(6)
    wc = jnp.asarray(rng_w.normal(size=(size, size, 3)), jnp.float32)
    wa = jnp.asarray(rng_w.normal(size=(size, size)), jnp.float32)
    gpu = jax.devices("gpu")[0]
    ordered = _run("cuda", gpu, params, atlas, size, size, wc, wa, color_blend=0.5)
    sorted_ = _run("cuda", gpu, more, atlas, size, size, wc, wa, color_blend=0.5)
    np.testing.assert_array_equal(ordered[0], sorted_[0])
    np.testing.assert_array_equal(ordered[1], sorted_[1])
    assert float(np.mean(ordered[1])) > 0.5  # a covered canvas, many lists per tile
    for f in FIELDS:
        g_more = np.asarray(getattr(sorted_[2], f))
        assert rel_err(getattr(ordered[2], f), g_more[:n]) < GRAD_TOL, f
        assert np.all(g_more[n:] == 0), f


def test_jit_auto_picks_cuda():
    rng = np.random.default_rng(104)
    atlas = random_atlas(rng)
    params = random_scene(rng, 25, 20, 20)
    f = jax.jit(jax.value_and_grad(lambda p: jnp.mean(db.render(p, atlas, height=20, width=20)[0])))
    v, g = f(params)
    v_ref = jnp.mean(db.render(params, atlas, height=20, width=20, backend="reference")[0])
    assert abs(float(v) - float(v_ref)) < 1e-6
    assert np.all(np.isfinite(np.asarray(g.xy)))


def test_bf16_atlas_close_to_fp32():
    rng = np.random.default_rng(105)
    atlas = random_atlas(rng, num=2, h=16, w=16)
    params = random_scene(rng, 60, 40, 40)

    def loss(p, bf16):
        c, a = db.render(p, atlas, height=40, width=40, backend="cuda", color_blend=0.5,
                         atlas_bf16=bf16)
        return jnp.sum(c) + jnp.sum(a ** 2), (c, a)

    (_, (c32, a32)), g32 = jax.value_and_grad(loss, has_aux=True)(params, False)
    (_, (c16, a16)), g16 = jax.value_and_grad(loss, has_aux=True)(params, True)
    assert rel_err(c16, c32) < 1e-2 and rel_err(a16, a32) < 1e-2
    for f in FIELDS:
        assert rel_err(getattr(g16, f), getattr(g32, f)) < 5e-2, f


# --------------------------------------------------------------------------- batches (vmap)

def _batch(rng, scenes, n, height, width):
    ps = [random_scene(rng, n, height, width) for _ in range(scenes)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *ps)


def _vmapped_and_loop(params, atlas, template, height, width, atlas_axis=None, atlas_too=True, **kw):
    """vmap'd render + grads on the GPU, and the same scene by scene; the atlas's gradient
    is None unless ``atlas_too``."""
    gpu = jax.devices("gpu")[0]
    rng = np.random.default_rng(7)
    wc = jnp.asarray(rng.normal(size=(height, width, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(height, width)), jnp.float32)

    def value(p, a, t):
        c, al = db.render(p, a, height=height, width=width, template=t, backend="cuda", **kw)
        return jnp.sum(c * wc) + jnp.sum(al * wa), (c, al)

    def grad(p, a, t):  # ((d params, d atlas or None), (colour, alpha))
        if atlas_too:
            return jax.grad(value, argnums=(0, 1), has_aux=True)(p, a, t)
        g, aux = jax.grad(value, has_aux=True)(p, a, t)
        return (g, None), aux

    with jax.default_device(gpu):
        (gp, ga), (c, al) = jax.jit(jax.vmap(grad, in_axes=(0, atlas_axis, 0)))(params, atlas, template)
        loop = []
        for b in range(params.scale.shape[0]):
            a_b = atlas if atlas_axis is None else jax.tree.map(lambda x: x[b], atlas)
            loop.append(jax.jit(grad)(jax.tree.map(lambda x: x[b], params), a_b, template[b]))
    return (gp, ga, c, al), loop


@pytest.mark.parametrize("color_blend, atlas_too", [(0.4, True), (0.0, False)])
@pytest.mark.parametrize("budget", [None, "0"])
def test_vmap_one_launch_equals_loop(monkeypatch, budget, color_blend, atlas_too):
    """Batched kernels (binned, and the all-primitives fallback) equal one render per scene:
    with rgb and the atlas differentiated, and as fits call them (neither)."""
    if budget is not None:
        monkeypatch.setenv("DIFFBMP_CUDA_MAX_PAIRS", budget)
    rng = np.random.default_rng(110)
    atlas = random_atlas(rng, num=3, h=9, w=7)
    params = _batch(rng, 5, 60, 37, 45)
    template = jnp.asarray(rng.integers(0, 3, (5, 60)), jnp.int32)
    (gp, _, c, al), loop = _vmapped_and_loop(params, atlas, template, 37, 45, atlas_too=atlas_too,
                                             color_blend=color_blend)
    for b, ((gp_b, _), (c_b, al_b)) in enumerate(loop):
        assert rel_err(c[b], c_b) < 1e-6 and rel_err(al[b], al_b) < 1e-6
        for f in FIELDS:
            assert rel_err(getattr(gp, f)[b], getattr(gp_b, f)) < 1e-5, (b, f)
    # ... and the cpu backend's batch.
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        c_cpu, _ = jax.vmap(lambda p, t: db.render(p, jax.device_put(atlas, cpu), height=37, width=45, template=t,
                                                   backend="cpu", color_blend=color_blend))(
            jax.device_put(params, cpu), jax.device_put(template, cpu))
    assert rel_err(c, c_cpu) < FWD_TOL


def test_vmap_batched_atlas_grad():
    rng = np.random.default_rng(111)
    atlases = [random_atlas(rng, num=2, h=8, w=8) for _ in range(3)]
    atlas = jax.tree.map(lambda *xs: jnp.stack(xs), *atlases)
    params = _batch(rng, 3, 40, 30, 30)
    template = jnp.asarray(rng.integers(0, 2, (3, 40)), jnp.int32)
    (gp, ga, c, _), loop = _vmapped_and_loop(params, atlas, template, 30, 30, atlas_axis=0,
                                            color_blend=0.6, atlas_grad=True)
    for b, ((gp_b, ga_b), (c_b, _)) in enumerate(loop):
        assert rel_err(c[b], c_b) < 1e-6
        assert rel_err(ga.mask[b], ga_b.mask) < 1e-5 and rel_err(ga.rgb[b], ga_b.rgb) < 1e-5


def test_nested_vmap_mixed_sharing():
    """Outer axis maps the atlas, inner axis only the params: strides 0 and full mixed."""
    rng = np.random.default_rng(112)
    atlas = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_atlas(rng, num=2) for _ in range(2)])
    ps = [[random_scene(rng, 30, 24, 28) for _ in range(3)] for _ in range(2)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs).reshape((2, 3) + xs[0].shape), *[p for row in ps for p in row])
    gpu = jax.devices("gpu")[0]
    f = lambda p, a: db.render(p, a, height=24, width=28, backend="cuda", color_blend=0.5)[0]
    with jax.default_device(gpu):
        out = jax.jit(jax.vmap(jax.vmap(f, in_axes=(0, None)), in_axes=(0, 0)))(params, atlas)
        for i in range(2):
            for j in range(3):
                ref = f(ps[i][j], jax.tree.map(lambda x: x[i], atlas))
                assert rel_err(out[i, j], ref) < 1e-6, (i, j)
