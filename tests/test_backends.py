"""The cpu backend against the reference renderer: forward and every gradient."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp

import numpy as np
import pytest

import diffbmp_jax as db
from scenes import off_texel_edges, random_atlas, random_scene, rel_err, stacked_scene

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")
FWD_TOL = 1e-5
GRAD_TOL = 1e-4


def _weighted_loss(params, atlas, backend, height, width, wc, wa, **kw):
    color, alpha = db.render(params, atlas, height=height, width=width, backend=backend, **kw)
    return jnp.sum(color * wc) + jnp.sum(alpha * wa)


def compare(params, atlas, height, width, seed, **kw):
    params = off_texel_edges(params, atlas, height, width)
    rng = np.random.default_rng(seed + 1000)
    # Compiled whole (one program per backend), not op by op.
    render = {b: jax.jit(functools.partial(db.render, height=height, width=width, backend=b, **kw))
              for b in ("reference", "cpu")}
    c_ref, a_ref = render["reference"](params, atlas)
    c_cpu, a_cpu = render["cpu"](params, atlas)
    assert rel_err(c_cpu, c_ref) < FWD_TOL
    assert rel_err(a_cpu, a_ref) < FWD_TOL
    # Random cotangents so every pixel and channel matters.
    wc = jnp.asarray(rng.normal(size=(height, width, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(height, width)), jnp.float32)
    grad = jax.jit(jax.grad(_weighted_loss), static_argnums=(2, 3, 4), static_argnames=tuple(
        k for k, v in kw.items() if not hasattr(v, "shape")))
    g_ref = grad(params, atlas, "reference", height, width, wc, wa, **kw)
    g_cpu = grad(params, atlas, "cpu", height, width, wc, wa, **kw)
    for f in FIELDS:
        err = rel_err(getattr(g_cpu, f), getattr(g_ref, f))
        assert err < GRAD_TOL, f"{f}: relative error {err:.2e}"
    return c_ref


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("color_blend", [0.0, 0.5, 1.0])
def test_random_scenes(seed, color_blend):
    rng = np.random.default_rng(seed)
    height, width = [(33, 47), (40, 24), (32, 32)][seed % 3]
    atlas = random_atlas(rng, num=1 + seed % 4, h=5 + seed, w=11 - seed)
    params = random_scene(rng, 30 + 7 * seed, height, width)
    template = jnp.asarray(rng.integers(0, atlas.num, params.num), jnp.int32)
    color = compare(params, atlas, height, width, seed, template=template, color_blend=color_blend)
    assert float(jnp.max(color)) > 0.05  # the scene is not empty


@pytest.mark.parametrize("seed", range(2))
def test_deep_stacks(seed):
    rng = np.random.default_rng(100 + seed)
    atlas = random_atlas(rng, num=2, h=8, w=8)
    params = stacked_scene(rng, 80, 24, 24)
    compare(params, atlas, 24, 24, seed, color_blend=0.5)


def test_tiny_and_huge_scales():
    rng = np.random.default_rng(7)
    atlas = random_atlas(rng, num=3, h=6, w=10)
    tiny = random_scene(rng, 20, 30, 30, scale=(0.05, 0.6))
    huge = random_scene(rng, 6, 30, 30, scale=(40.0, 400.0), opacity=(0.05, 0.3))
    params = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), tiny, huge)
    compare(params, atlas, 30, 30, 7)


@pytest.mark.parametrize("height, width", [(33, 47), (40, 1), (1, 37)])
def test_axis_aligned_and_grid_aligned_geometry(height, width):
    """Exact right angles, centres on pixel centres and tile edges, bitmap edges on pixel centres.

    The cpu backend skips, row by row, the pixels where a primitive cannot
    reach (a span from the row's end points); these are the cases where its
    rounding, or a row or column of width 1, could make it drop a pixel. The
    forward is compared on the exact scene; gradients (which both backends
    take one-sidedly where a sample sits exactly on a texel edge, a kink of
    bilinear sampling) on the scene nudged off those kinks.
    """
    rng = np.random.default_rng(11)
    atlas = random_atlas(rng, num=2, h=8, w=6)
    rots = np.array([0.0, np.pi / 2, np.pi, -np.pi / 2, 2 * np.pi, 1e-7, np.pi / 4])
    scales = np.array([0.3, 0.5, 1.0, 4.0, 7.5, 8.0, 16.0])
    xs = np.array([0.0, 7.5, 15.5, 16.0, 16.5, 31.5, width - 1.0])
    ys = np.array([0.0, 7.5, 15.5, 16.0, 16.5, 31.5, height - 1.0])
    k = len(rots)
    idx = np.stack(np.meshgrid(*[np.arange(k)] * 4, indexing="ij"), -1).reshape(-1, 4)
    idx = idx[rng.choice(len(idx), 160, replace=False)]
    xy = np.stack([xs[idx[:, 0]], ys[idx[:, 1]]], -1)
    params = db.Primitives.create(xy, scales[idx[:, 2]], rots[idx[:, 3]], rng.uniform(0.1, 0.6, 160),
                                  rng.uniform(0.02, 0.98, (160, 3)))
    template = jnp.asarray(rng.integers(0, atlas.num, 160), jnp.int32)
    kw = dict(height=height, width=width, template=template, color_blend=0.5)
    c_ref, a_ref = db.render(params, atlas, backend="reference", **kw)
    c_cpu, a_cpu = db.render(params, atlas, backend="cpu", **kw)
    assert rel_err(c_cpu, c_ref) < FWD_TOL
    assert rel_err(a_cpu, a_ref) < FWD_TOL
    assert float(jnp.max(a_ref)) > 0.1
    nudged = dataclasses.replace(params, xy=params.xy + 0.013, rotation=params.rotation + 2e-3)
    compare(nudged, atlas, height, width, 11, template=template, color_blend=0.5)


def test_alpha_max_and_no_rgb_atlas():
    rng = np.random.default_rng(8)
    atlas = random_atlas(rng, num=2, h=7, w=7, with_rgb=False)
    params = random_scene(rng, 25, 20, 28)
    compare(params, atlas, 20, 28, 8, alpha_max=0.6)


def test_atlas_gradients_match_reference():
    rng = np.random.default_rng(9)
    atlas = random_atlas(rng, num=2, h=6, w=5)
    params = random_scene(rng, 20, 18, 22)
    wc = jnp.asarray(rng.normal(size=(18, 22, 3)), jnp.float32)

    def loss(atlas, backend, **kw):
        c, a = db.render(params, atlas, height=18, width=22, backend=backend, color_blend=0.5, **kw)
        return jnp.sum(c * wc) + jnp.sum(a)

    g_ref = jax.grad(loss)(atlas, "reference")
    g_cpu = jax.grad(loss)(atlas, "cpu", atlas_grad=True)
    assert rel_err(g_cpu.mask, g_ref.mask) < GRAD_TOL
    assert rel_err(g_cpu.rgb, g_ref.rgb) < GRAD_TOL
    for backend in ("cpu", "auto"):  # no flag: the atlas is differentiated because grad asks for it
        g = jax.grad(loss)(atlas, backend)
        assert rel_err(g.mask, g_ref.mask) < GRAD_TOL, backend
        assert rel_err(g.rgb, g_ref.rgb) < GRAD_TOL, backend


def test_atlas_gradient_only_when_the_atlas_is_differentiated():
    """A fit's step differentiates the primitives only: the backward kernel skips the atlas."""
    rng = np.random.default_rng(19)
    atlas = random_atlas(rng, num=2, h=6, w=5)
    params = random_scene(rng, 8, 16, 16)

    def loss(p, a):
        return jnp.sum(db.render(p, a, height=16, width=16, backend="cpu", color_blend=0.5)[0])

    def backward_flags(argnums):
        text = str(jax.make_jaxpr(jax.grad(loss, argnums=argnums))(params, atlas))
        return sorted(set(re.findall(r"'atlas_grad', np\.int32\((\d)\)", text)))

    assert backward_flags(0) == ["0"]
    assert backward_flags(1) == ["1"]
    assert backward_flags((0, 1)) == ["1"]


def test_forward_mode_names_the_reference_backend():
    rng = np.random.default_rng(21)
    atlas = random_atlas(rng, num=2, h=6, w=5)
    params = random_scene(rng, 6, 12, 12)

    def image(p, backend):
        return db.render(p, atlas, height=12, width=12, backend=backend)[0]

    for backend in ("cpu", "auto"):
        with pytest.raises(TypeError, match="reverse mode only.*backend='reference'"):
            jax.jvp(lambda p: image(p, backend), (params,), (params,))
    _, tangent = jax.jvp(lambda p: image(p, "reference"), (params,), (params,))
    assert np.all(np.isfinite(np.asarray(tangent))) and float(jnp.abs(tangent).max()) > 0


@pytest.mark.skipif(any(d.platform == "gpu" for d in jax.devices()), reason="this machine has a GPU")
def test_cuda_backend_without_a_gpu_raises():
    rng = np.random.default_rng(23)
    atlas = random_atlas(rng, num=1, h=4, w=4)
    params = random_scene(rng, 3, 8, 8)
    with pytest.raises(RuntimeError, match="backend='cuda' is not available.*available backends: auto, reference"):
        db.render(params, atlas, height=8, width=8, backend="cuda")
    assert "cuda" not in db.rendering.available_backends()


def test_single_primitive_pixels_exact():
    """An axis-aligned stamp at scale = half its size maps texels onto pixels 1:1."""
    mask = np.zeros((1, 4, 4), np.float32)
    mask[0, 1:3, 1:3] = 1.0
    atlas = db.Atlas.from_arrays(mask)
    params = db.Primitives.create([[5.5, 4.5]], [2.0], 0.0, opacity=0.5, color=[1.0, 0.0, 0.0])
    for backend in ("reference", "cpu"):
        color, alpha = db.render(params, atlas, height=10, width=12, backend=backend, alpha_max=0.99)
        a = np.asarray(alpha)
        expected = np.zeros((10, 12), np.float32)
        expected[4:6, 5:7] = 0.99 * 0.5
        np.testing.assert_allclose(a, expected, atol=1e-6)
        np.testing.assert_allclose(np.asarray(color)[..., 0], expected * (1 - 1e-6), atol=1e-5)


def test_rotation_is_counter_clockwise_on_screen():
    """A bar along +u, rotated by +90 degrees, points up (towards smaller y)."""
    mask = np.zeros((1, 5, 5), np.float32)
    mask[0, 2, 3:] = 1.0  # right arm only
    atlas = db.Atlas.from_arrays(mask)
    params = db.Primitives.create([[10.0, 10.0]], [5.0], np.pi / 2, opacity=0.9)
    for backend in ("reference", "cpu"):
        _, alpha = db.render(params, atlas, height=21, width=21, backend=backend)
        a = np.asarray(alpha)
        assert a[6:9, 10].min() > 0.85     # above the centre
        assert a[12:17, 10].max() < 1e-6   # nothing below
        assert a[10, 12:17].max() < 1e-6   # nothing to the right any more


def test_painters_order_last_on_top():
    atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))
    params = db.Primitives.create([[8.0, 8.0], [8.0, 8.0]], [4.0, 4.0], 0.0, opacity=0.99999,
                                  color=[[1, 0, 0], [0, 0, 1]])
    for backend in ("reference", "cpu"):
        color, _ = db.render(params, atlas, height=16, width=16, backend=backend)
        c = np.asarray(color)[8, 8]
        assert c[2] > 0.95 and c[0] < 0.02


def test_jit_value_and_grad_and_auto():
    rng = np.random.default_rng(11)
    atlas = random_atlas(rng)
    params = random_scene(rng, 15, 20, 20)
    f = jax.jit(jax.value_and_grad(lambda p: jnp.mean(db.render(p, atlas, height=20, width=20)[0])))
    v, g = f(params)
    v_ref = jnp.mean(db.render(params, atlas, height=20, width=20, backend="reference")[0])
    assert abs(float(v) - float(v_ref)) < 1e-6
    assert np.all(np.isfinite(np.asarray(g.xy)))


def test_auto_calls_the_kernels_directly_where_every_platform_has_them():
    """backend="auto" traces no per-platform branch (nor the reference) when the kernels
    cover every platform of the process: half the tracing of a fitting step."""
    from diffbmp_jax.rendering import registry
    rng = np.random.default_rng(12)
    atlas = random_atlas(rng)
    params = random_scene(rng, 4, 16, 16)
    text = str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(db.render(p, atlas, height=16, width=16)[0])))(params))
    if registry.kernels_everywhere():
        assert "platform_index" not in text and "diffbmp_forward" in text and "diffbmp_backward" in text
    else:
        assert "platform_index" in text


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_vmap_equals_loop(backend):
    rng = np.random.default_rng(12)
    atlas = random_atlas(rng)
    scenes = [random_scene(rng, 12, 16, 20) for _ in range(3)]
    batch = jax.tree.map(lambda *xs: jnp.stack(xs), *scenes)

    @jax.jit
    def one(p):
        return db.render(p, atlas, height=16, width=20, backend=backend, color_blend=0.5)

    c_b, a_b = jax.jit(jax.vmap(one))(batch)
    for i, p in enumerate(scenes):
        c, a = one(p)
        np.testing.assert_allclose(np.asarray(c_b[i]), np.asarray(c), atol=1e-6)
        np.testing.assert_allclose(np.asarray(a_b[i]), np.asarray(a), atol=1e-6)
    g_b = jax.vmap(jax.grad(lambda p: jnp.sum(one(p)[0] ** 2)))(batch)
    g_0 = jax.grad(lambda p: jnp.sum(one(p)[0] ** 2))(scenes[1])
    np.testing.assert_allclose(np.asarray(g_b.xy[1]), np.asarray(g_0.xy), rtol=1e-5, atol=1e-6)


def test_empty_scene_and_empty_canvas_tiles():
    atlas = db.Atlas.from_arrays(np.ones((1, 3, 3), np.float32))
    params = db.Primitives.create(np.zeros((0, 2)), np.zeros(0))
    for backend in ("reference", "cpu"):
        c, a = db.render(params, atlas, height=5, width=6, backend=backend)
        assert c.shape == (5, 6, 3) and float(jnp.max(a)) == 0.0
    far = db.Primitives.create([[-100.0, -100.0]], [2.0])
    c, a = db.render(far, atlas, height=40, width=40, backend="cpu")
    assert float(jnp.max(a)) == 0.0


def test_cpu_gradients_are_bitwise_repeatable():
    """Static tile scheduling in the backward pass: the same sums in the same order."""
    rng = np.random.default_rng(13)
    atlas = random_atlas(rng)
    params = random_scene(rng, 150, 48, 48)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(db.render(p, atlas, height=48, width=48, backend="cpu")[0] ** 2)))
    g1, g2 = grad(params), grad(params)
    for f in FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(g1, f)), np.asarray(getattr(g2, f)))


def test_kernels_read_a_zero_padded_atlas():
    """kernels.pad_atlas: one texel of zeros around each bitmap; a dummy rgb passes through."""
    from diffbmp_jax.rendering import kernels
    rng = np.random.default_rng(12)
    mask = jnp.asarray(rng.uniform(0.5, 1.0, (3, 5, 4)), jnp.float32)
    rgb = jnp.asarray(rng.uniform(0.5, 1.0, (3, 5, 4, 3)), jnp.float32)
    pm, pr = kernels.pad_atlas(mask, rgb, True)
    assert pm.shape == (3, 7, 6) and pr.shape == (3, 7, 6, 3)
    np.testing.assert_array_equal(pm[:, 1:-1, 1:-1], mask)
    np.testing.assert_array_equal(pr[:, 1:-1, 1:-1], rgb)
    inner = np.zeros((7, 6), bool)
    inner[1:-1, 1:-1] = True
    assert not np.any(np.asarray(pm)[:, ~inner]) and not np.any(np.asarray(pr)[:, ~inner])
    dummy = jnp.zeros((1, 1, 1, 3), jnp.float32)
    assert kernels.pad_atlas(mask, dummy, False)[1] is dummy
