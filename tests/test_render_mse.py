"""render_mse: the fit's pixel loss folded into the kernels (the forward with the loss, and
forward, loss and backward in one call), against the reference."""

import dataclasses
import functools
import re

import numpy as np
import pytest
import jax
import jax.numpy as jnp

import diffbmp_jax as db
from diffbmp_jax.fitting.config import resolve_config
from diffbmp_jax.fitting.engine import PixelLoss, step as fit_step
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.rendering import registry
from scenes import off_texel_edges, random_atlas, random_scene, rel_err

GRAD_TOL = 1e-4
FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")

pytestmark = pytest.mark.skipif(not (registry.exports("cpu", registry.FORWARD_LOSS)
                                     and registry.exports("cpu", registry.MSE_GRAD)),
                                reason="the cpu kernels are not built")


def _backgrounds(rng, height, width):
    return {"white": 1.0, "triple": jnp.asarray([0.2, 0.7, 0.4], jnp.float32),
            "image": jnp.asarray(rng.random((height, width, 3)), jnp.float32)}


def _mse(params, atlas, target, bg, backend, height, width, **kw):
    return db.render_mse(params, atlas, target, bg, height=height, width=width, backend=backend, **kw)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("color_blend", [0.0, 0.5])
@pytest.mark.parametrize("bg_kind", ["white", "triple", "image"])
def test_value_and_gradients_match_the_reference(seed, color_blend, bg_kind):
    """Both kernel paths: the primitives' gradient alone (forward, loss and backward in one call)
    and with the target's and background's too (the forward with the loss, then the backward)."""
    rng = np.random.default_rng(seed)
    height, width = [(33, 47), (40, 24), (32, 32)][seed]
    atlas = random_atlas(rng, num=2 + seed, h=7 + seed, w=9 - seed)
    params = off_texel_edges(random_scene(rng, 40 + 9 * seed, height, width), atlas, height, width)
    target = jnp.asarray(rng.random((height, width, 3)), jnp.float32)
    bg = _backgrounds(rng, height, width)[bg_kind]
    for argnums in ((0,), (0, 2, 3)):
        grad = jax.jit(jax.value_and_grad(_mse, argnums=argnums), static_argnums=(4, 5, 6),
                       static_argnames=("color_blend",))
        v_ref, g_ref = grad(params, atlas, target, bg, "reference", height, width, color_blend=color_blend)
        v_cpu, g_cpu = grad(params, atlas, target, bg, "cpu", height, width, color_blend=color_blend)
        assert abs(float(v_cpu) - float(v_ref)) <= 1e-5 * float(v_ref)
        for name in FIELDS:
            assert rel_err(getattr(g_cpu[0], name), getattr(g_ref[0], name)) < GRAD_TOL, (argnums, name)
    assert rel_err(g_cpu[1], g_ref[1]) < GRAD_TOL  # target
    assert rel_err(g_cpu[2], g_ref[2]) < GRAD_TOL  # background
    assert jnp.shape(g_cpu[2]) == jnp.shape(bg)


def test_gradient_against_finite_differences():
    rng = np.random.default_rng(7)
    height = width = 24
    atlas = random_atlas(rng, num=2, h=8, w=8)
    params = off_texel_edges(random_scene(rng, 12, height, width, opacity=(0.3, 0.9)), atlas, height, width)
    target = jnp.asarray(rng.random((height, width, 3)), jnp.float32)
    f = jax.jit(lambda op: _mse(dataclasses.replace(params, opacity_logit=op), atlas, target, 1.0, "cpu", height, width))
    g = jax.grad(f)(params.opacity_logit)
    eps = 1e-2
    for n in range(4):
        e = jnp.zeros_like(params.opacity_logit).at[n].set(eps)
        fd = (float(f(params.opacity_logit + e)) - float(f(params.opacity_logit - e))) / (2 * eps)
        assert abs(fd - float(g[n])) <= 2e-3 * max(abs(fd), 1e-4) + 1e-6, (n, fd, float(g[n]))


def _targets_called(f, *args) -> set:
    return set(re.findall(r"target=(diffbmp_\w+)", str(jax.make_jaxpr(f)(*args))))


def test_which_kernels_each_use_calls():
    """The value alone: the forward with the loss. The primitives' gradient: forward, loss and
    backward in one call, nothing per pixel between kernels. With the target's gradient too: the
    forward with the loss, then the backward."""
    rng = np.random.default_rng(1)
    atlas = random_atlas(rng)
    params = random_scene(rng, 10, 20, 20)
    target = jnp.zeros((20, 20, 3), jnp.float32)
    f = lambda p, t: _mse(p, atlas, t, 1.0, "cpu", 20, 20)
    assert _targets_called(f, params, target) == {registry.FORWARD_LOSS}
    assert _targets_called(jax.grad(f), params, target) == {registry.MSE_GRAD}
    assert _targets_called(jax.grad(f, argnums=(0, 1)), params, target) == {registry.FORWARD_LOSS,
                                                                            registry.BACKWARD}


def test_same_as_composite_then_mean_with_the_kernels():
    rng = np.random.default_rng(2)
    height, width = 37, 29
    atlas = random_atlas(rng)
    params = random_scene(rng, 50, height, width)
    target = jnp.asarray(rng.random((height, width, 3)), jnp.float32)
    bg = jnp.asarray(rng.random((height, width, 3)), jnp.float32)

    def unfused(p):
        color, alpha = db.render(p, atlas, height=height, width=width, backend="cpu")
        return jnp.mean(jnp.square(db.composite(color, alpha, bg) - target))

    v0, g0 = jax.value_and_grad(unfused)(params)
    v1, g1 = jax.value_and_grad(lambda p: _mse(p, atlas, target, bg, "cpu", height, width))(params)
    np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
    for name in FIELDS:
        assert rel_err(getattr(g1, name), getattr(g0, name)) < 1e-5, name


@pytest.mark.parametrize("shared_bg", [True, False])
def test_vmap_equals_one_scene_at_a_time(shared_bg):
    rng = np.random.default_rng(3)
    height, width, n, b = 24, 40, 20, 3
    atlas = random_atlas(rng)
    scenes = [random_scene(rng, n, height, width) for _ in range(b)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *scenes)
    targets = jnp.asarray(rng.random((b, height, width, 3)), jnp.float32)
    bgs = jnp.asarray(rng.random((b, height, width, 3)), jnp.float32)
    bg_axis = None if shared_bg else 0
    bg = bgs[0] if shared_bg else bgs
    f = jax.value_and_grad(lambda p, t, g: _mse(p, atlas, t, g, "cpu", height, width))
    v, g = jax.jit(jax.vmap(f, in_axes=(0, 0, bg_axis)))(params, targets, bg)
    for i in range(b):
        vi, gi = jax.jit(f)(scenes[i], targets[i], bgs[0] if shared_bg else bgs[i])
        np.testing.assert_allclose(float(v[i]), float(vi), rtol=1e-6)
        for name in FIELDS:
            np.testing.assert_allclose(np.asarray(getattr(g, name)[i]), np.asarray(getattr(gi, name)),
                                       rtol=1e-5, atol=1e-9)


def test_atlas_gradient_matches_the_reference():
    rng = np.random.default_rng(4)
    height, width = 30, 30
    atlas = random_atlas(rng, num=2, h=8, w=8)
    params = off_texel_edges(random_scene(rng, 25, height, width), atlas, height, width)
    target = jnp.asarray(rng.random((height, width, 3)), jnp.float32)

    def f(a, backend):
        return _mse(params, a, target, 1.0, backend, height, width, color_blend=0.5)

    g_ref = jax.grad(f)(atlas, "reference")
    g_cpu = jax.grad(f)(atlas, "cpu")
    assert rel_err(g_cpu.mask, g_ref.mask) < GRAD_TOL
    assert rel_err(g_cpu.rgb, g_ref.rgb) < GRAD_TOL


def test_no_primitives_is_the_background_against_the_target():
    target = jnp.full((8, 8, 3), 0.25, jnp.float32)
    params = db.Primitives(xy=jnp.zeros((0, 2)), scale=jnp.ones((0,)), rotation=jnp.zeros((0,)),
                           opacity_logit=jnp.zeros((0,)), color_logit=jnp.zeros((0, 3)))
    atlas = random_atlas(np.random.default_rng(0))
    assert float(_mse(params, atlas, target, 0.75, "cpu", 8, 8)) == pytest.approx(0.25)


def test_bad_arguments_are_named():
    rng = np.random.default_rng(5)
    atlas = random_atlas(rng)
    params = random_scene(rng, 4, 10, 12)
    good = jnp.zeros((10, 12, 3))
    with pytest.raises(ValueError, match="target"):
        _mse(params, atlas, jnp.zeros((12, 10, 3)), 1.0, "cpu", 10, 12)
    with pytest.raises(ValueError, match="background"):
        _mse(params, atlas, good, jnp.zeros((2,)), "cpu", 10, 12)
    with pytest.raises(TypeError, match="background"):
        _mse(params, atlas, good, "white", "cpu", 10, 12)
    with pytest.raises(TypeError, match="target"):
        _mse(params, atlas, None, 1.0, "cpu", 10, 12)


class _ImageLoss(PixelLoss):
    """PixelLoss scoring the rendered image, as every objective but plain PixelLoss does."""


def _one_step(objective, **options):
    rng = np.random.default_rng(6)
    target = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    cfg = resolve_config(None, {"log_every": 5, "backend": "cpu", **options})
    static, data, carry = prepare(target, random_atlas(rng, with_rgb=False), num_primitives=12, steps=5,
                                  key=jax.random.key(0), config=cfg)
    static = static._replace(objective=objective)
    run = jax.jit(functools.partial(fit_step, static))
    args = (data, carry, jnp.int32(0), jnp.int32(5))
    return run(*args), str(jax.make_jaxpr(functools.partial(fit_step, static))(*args))


@pytest.mark.parametrize("options", [{}, {"background": "noise"}])
def test_a_fitting_step_takes_the_folded_loss(options):
    """The fit's step with the plain MSE calls the forward with the loss, and steps exactly as
    rendering the image and scoring it would, to float rounding."""
    (fused, (loss, _)), jaxpr = _one_step(db.fitting.engine.PIXEL_LOSS, **options)
    (plain, (loss0, _)), jaxpr0 = _one_step(_ImageLoss(), **options)
    assert registry.MSE_GRAD in jaxpr and registry.MSE_GRAD not in jaxpr0
    np.testing.assert_allclose(float(loss), float(loss0), rtol=1e-5)  # sums in another order
    for a, b in zip(jax.tree.leaves(fused[0]), jax.tree.leaves(plain[0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_a_fitting_step_in_one_call_or_two_is_the_same_bits():
    """Hiding the one-call target, the step takes the forward with the loss and the backward,
    and computes exactly the same loss and parameters."""
    (one, (loss1, _)), jaxpr1 = _one_step(db.fitting.engine.PIXEL_LOSS)
    with registry.without(registry.MSE_GRAD):
        (two, (loss2, _)), jaxpr2 = _one_step(db.fitting.engine.PIXEL_LOSS)
    assert registry.MSE_GRAD in jaxpr1 and registry.MSE_GRAD not in jaxpr2
    assert registry.FORWARD_LOSS in jaxpr2 and registry.BACKWARD in jaxpr2
    assert float(loss1) == float(loss2)
    for a, b in zip(jax.tree.leaves(one[0]), jax.tree.leaves(two[0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert registry.exports("cpu", registry.MSE_GRAD)  # restored on leaving


@pytest.mark.parametrize("options", [{"l1_weight": 0.5}, {"ssim_weight": 0.2}])
def test_other_losses_score_the_image(options):
    _, jaxpr = _one_step(db.fitting.engine.PIXEL_LOSS, **options)
    assert registry.FORWARD_LOSS not in jaxpr and registry.MSE_GRAD not in jaxpr


def test_forward_mode_is_refused_in_words():
    rng = np.random.default_rng(8)
    atlas = random_atlas(rng)
    params = random_scene(rng, 5, 12, 12)
    target = jnp.zeros((12, 12, 3))
    with pytest.raises(TypeError, match=r"render_mse\(backend='cpu'\).*reverse mode"):
        jax.jvp(lambda p: _mse(p, atlas, target, 1.0, "cpu", 12, 12), (params,), (params,))
    # The reference supports it, and agrees with the reverse-mode gradient.
    f = lambda op: _mse(dataclasses.replace(params, opacity_logit=op), atlas, target, 1.0, "reference", 12, 12)
    d = jnp.ones_like(params.opacity_logit)
    _, tangent = jax.jvp(f, (params.opacity_logit,), (d,))
    np.testing.assert_allclose(float(tangent), float(jnp.sum(jax.grad(f)(params.opacity_logit))), rtol=1e-4)


def test_one_call_is_the_same_bits_for_any_threads_and_grouping(monkeypatch):
    """Forward, loss and backward in one call keep the backward's guarantee: each tile's squared
    error and each primitive's fields are summed in a fixed order, so the loss and the gradients
    are the same bits for any thread count and any grouping of the tiles, a batch as its loop."""
    rng = np.random.default_rng(12)
    height, width, b = 40, 56, 3
    atlas = random_atlas(rng)
    scenes = [random_scene(rng, 50, height, width) for _ in range(b)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *scenes)
    targets = jnp.asarray(rng.random((b, height, width, 3)), jnp.float32)
    f = jax.value_and_grad(lambda p, t: _mse(p, atlas, t, 0.5, "cpu", height, width))
    one, many = jax.jit(f), jax.jit(jax.vmap(f))
    runs = []
    for threads, group in (("1", None), ("2", None), ("5", None), ("2", "1"), ("3", "40")):
        monkeypatch.setenv("DIFFBMP_NUM_THREADS", threads)
        if group is None:
            monkeypatch.delenv("DIFFBMP_CPU_PAIRS_PER_GROUP", raising=False)
        else:
            monkeypatch.setenv("DIFFBMP_CPU_PAIRS_PER_GROUP", group)
        runs.append(([one(scenes[i], targets[i]) for i in range(b)], many(params, targets)))
    for looped, (values, grads) in runs:
        for i in range(b):
            assert float(looped[i][0]) == float(runs[0][0][i][0]) == float(values[i])
            for name in FIELDS:
                np.testing.assert_array_equal(np.asarray(getattr(looped[i][1], name)),
                                              np.asarray(getattr(runs[0][0][i][1], name)), err_msg=name)
                np.testing.assert_array_equal(np.asarray(getattr(grads, name)[i]),
                                              np.asarray(getattr(looped[i][1], name)), err_msg=name)
