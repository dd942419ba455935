"""Native batching of the cpu kernels under jax.vmap: one launch for all scenes.

Every batched result is compared with a Python loop over the scenes (same
kernel, one scene per call: equal to float rounding, in practice bitwise) and
with the reference renderer.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from scenes import random_atlas, random_scene, rel_err

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")
H, W = 24, 32
FWD_TOL = 1e-5   # cpu kernel vs reference (as test_backends)
GRAD_TOL = 1e-4
LOOP_TOL = 1e-6  # batched vs one scene per call, relative to the field's largest value
# Atlas gradients are accumulated with atomic adds from several threads: their
# summation order (unlike the parameter gradients') varies from run to run.
ATLAS_TOL = 1e-5


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _assert_same(batched, looped, what="", tol=LOOP_TOL):
    """Batched equals looped: to ``tol`` of the field's largest value (bitwise in practice)."""
    batched, looped = np.asarray(batched), np.asarray(looped)
    assert batched.shape == looped.shape, what
    scale = max(float(np.max(np.abs(looped))), 1e-30)
    err = float(np.max(np.abs(batched - looped)))
    assert err <= tol * scale, f"{what}: batched differs from the loop by {err:.3e} (max {scale:.3e})"


def _batch(rng, count, n, atlas_num):
    scenes = [random_scene(rng, n, H, W) for _ in range(count)]
    templates = [jnp.asarray(rng.integers(0, atlas_num, n), jnp.int32) for _ in range(count)]
    return scenes, templates


def _render(params, atlas, template, backend="cpu", **kw):
    return db.render(params, atlas, height=H, width=W, template=template, backend=backend, **kw)


def _loss(params, atlas, template, wc, wa, backend="cpu", **kw):
    """Weighted sum of colour and alpha: both cotangents non-zero and different per pixel."""
    c, a = _render(params, atlas, template, backend, **kw)
    return jnp.sum(c * wc) + jnp.sum(a * wa)


def _weights(rng, count):
    wc = jnp.asarray(rng.normal(size=(count, H, W, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(count, H, W)), jnp.float32)
    return wc, wa


# --------------------------------------------------------------------------- forward and grads

@pytest.mark.parametrize("color_blend", [0.0, 0.6])
def test_vmap_forward_equals_loop_and_reference(color_blend):
    rng = np.random.default_rng(1)
    atlas = random_atlas(rng, num=3, h=9, w=7)  # shared, with rgb
    scenes, templates = _batch(rng, 3, 30, atlas.num)
    f = jax.jit(jax.vmap(lambda p, t: _render(p, atlas, t, color_blend=color_blend)))
    c_b, a_b = f(_stack(scenes), jnp.stack(templates))
    assert c_b.shape == (3, H, W, 3) and a_b.shape == (3, H, W)
    for b, (p, t) in enumerate(zip(scenes, templates)):
        c, a = _render(p, atlas, t, color_blend=color_blend)
        _assert_same(c_b[b], c, f"colour of scene {b}")
        _assert_same(a_b[b], a, f"alpha of scene {b}")
        c_ref, a_ref = _render(p, atlas, t, "reference", color_blend=color_blend)
        assert rel_err(c_b[b], c_ref) < FWD_TOL
        assert rel_err(a_b[b], a_ref) < FWD_TOL
        assert float(jnp.max(a)) > 0.3  # something was drawn
    # The scenes really differ (a kernel reading scene 0 for all would pass the above only if they did not).
    assert not np.allclose(np.asarray(c_b[0]), np.asarray(c_b[1]), atol=1e-3)


@pytest.mark.parametrize("color_blend", [0.0, 0.6])
def test_vmap_grad_equals_loop_and_reference(color_blend):
    rng = np.random.default_rng(2)
    atlas = random_atlas(rng, num=2, h=6, w=10)
    scenes, templates = _batch(rng, 3, 25, atlas.num)
    wc, wa = _weights(rng, 3)
    grad = jax.grad(lambda p, t, wc, wa: _loss(p, atlas, t, wc, wa, color_blend=color_blend))
    g_b = jax.jit(jax.vmap(grad))(_stack(scenes), jnp.stack(templates), wc, wa)
    for b, (p, t) in enumerate(zip(scenes, templates)):
        g = grad(p, t, wc[b], wa[b])
        g_ref = jax.grad(_loss)(p, atlas, t, wc[b], wa[b], "reference", color_blend=color_blend)
        for f in FIELDS:
            _assert_same(getattr(g_b, f)[b], getattr(g, f), f"d{f} of scene {b}")
            err = rel_err(getattr(g_b, f)[b], getattr(g_ref, f))
            assert err < GRAD_TOL, f"d{f} of scene {b}: relative error {err:.2e} against the reference"
        assert float(jnp.max(jnp.abs(g.xy))) > 0


def test_vmap_grad_shared_template_and_one_mapped_field():
    """Only some arguments mapped (others size-1 batch dims, read in place)."""
    rng = np.random.default_rng(3)
    atlas = random_atlas(rng, num=2)
    p = random_scene(rng, 20, H, W)
    template = jnp.asarray(rng.integers(0, 2, 20), jnp.int32)
    opacities = jnp.asarray(rng.normal(size=(4, 20)), jnp.float32)
    wc, wa = _weights(rng, 1)

    def loss(op):
        q = db.Primitives(xy=p.xy, scale=p.scale, rotation=p.rotation, opacity_logit=op,
                          color_logit=p.color_logit)
        return _loss(q, atlas, template, wc[0], wa[0], color_blend=0.5)

    v_b, g_b = jax.jit(jax.vmap(jax.value_and_grad(loss)))(opacities)
    for b in range(4):
        v, g = jax.value_and_grad(loss)(opacities[b])
        # The loss sums ~3000 terms (XLA's order differs batched): rounding only.
        np.testing.assert_allclose(float(v_b[b]), float(v), rtol=0, atol=2e-5)
        _assert_same(g_b[b], g, f"d opacity of scene {b}")


# --------------------------------------------------------------------------- atlas gradients

def test_batched_atlas_grad_equals_loop_and_reference():
    rng = np.random.default_rng(4)
    atlases = [random_atlas(rng, num=2, h=7, w=8) for _ in range(3)]
    scenes, templates = _batch(rng, 3, 20, 2)
    wc, wa = _weights(rng, 3)
    kw = dict(color_blend=0.5)
    grad = jax.grad(lambda p, at, t, wc, wa: _loss(p, at, t, wc, wa, atlas_grad=True, **kw), argnums=(0, 1))
    (gp_b, ga_b) = jax.jit(jax.vmap(grad))(_stack(scenes), _stack(atlases), jnp.stack(templates), wc, wa)
    assert ga_b.mask.shape == (3, 2, 7, 8) and ga_b.rgb.shape == (3, 2, 7, 8, 3)
    for b in range(3):
        gp, ga = grad(scenes[b], atlases[b], templates[b], wc[b], wa[b])
        _assert_same(ga_b.mask[b], ga.mask, f"d mask of scene {b}", ATLAS_TOL)
        _assert_same(ga_b.rgb[b], ga.rgb, f"d rgb of scene {b}", ATLAS_TOL)
        for f in FIELDS:
            _assert_same(getattr(gp_b, f)[b], getattr(gp, f), f"d{f} of scene {b}")
        ref = jax.grad(_loss, argnums=1)(scenes[b], atlases[b], templates[b], wc[b], wa[b], "reference", **kw)
        assert rel_err(ga_b.mask[b], ref.mask) < GRAD_TOL
        assert rel_err(ga_b.rgb[b], ref.rgb) < GRAD_TOL
        assert float(jnp.max(jnp.abs(ga.mask))) > 0
    assert not np.allclose(np.asarray(ga_b.mask[0]), np.asarray(ga_b.mask[1]))


def test_batched_atlas_with_shared_params_and_unmapped_error():
    rng = np.random.default_rng(9)
    atlases = [random_atlas(rng, num=2, h=8, w=6) for _ in range(3)]
    p = random_scene(rng, 15, H, W)
    stacked = _stack(atlases)  # an Atlas with a leading batch dim (allowed on construction)
    assert stacked.mask.shape == (3, 2, 8, 6) and stacked.num == 2
    c_b, a_b = jax.jit(jax.vmap(lambda at: _render(p, at, None, color_blend=0.5)))(stacked)
    for b in range(3):
        c, a = _render(p, atlases[b], None, color_blend=0.5)
        _assert_same(c_b[b], c, f"colour of scene {b}")
        _assert_same(a_b[b], a, f"alpha of scene {b}")
    assert not np.allclose(np.asarray(c_b[0]), np.asarray(c_b[1]), atol=1e-3)
    # Without vmap a batched atlas is refused with a clear message.
    with pytest.raises(ValueError, match=r"atlas\.mask.*vmap"):
        _render(p, stacked, None)


def test_shared_atlas_grad_under_vmap():
    """A shared atlas: vmap(grad) gives per-scene grads; grad of the summed loss gives their sum."""
    rng = np.random.default_rng(5)
    atlas = random_atlas(rng, num=3, h=6, w=6)
    scenes, templates = _batch(rng, 3, 20, 3)
    wc, wa = _weights(rng, 3)
    batch, tb = _stack(scenes), jnp.stack(templates)

    def loss(at, p, t, wc, wa):
        return _loss(p, at, t, wc, wa, atlas_grad=True, color_blend=0.7)

    per_scene = [jax.grad(loss)(atlas, scenes[b], templates[b], wc[b], wa[b]) for b in range(3)]
    g_each = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, 0, 0)))(atlas, batch, tb, wc, wa)
    for b in range(3):
        _assert_same(g_each.mask[b], per_scene[b].mask, f"d mask of scene {b}", ATLAS_TOL)
        _assert_same(g_each.rgb[b], per_scene[b].rgb, f"d rgb of scene {b}", ATLAS_TOL)

    total = jax.jit(jax.grad(lambda at: jnp.sum(jax.vmap(loss, in_axes=(None, 0, 0, 0, 0))(at, batch, tb, wc, wa))))
    g_sum = total(atlas)
    assert g_sum.mask.shape == atlas.mask.shape and g_sum.rgb.shape == atlas.rgb.shape
    for field in ("mask", "rgb"):
        expected = sum(np.asarray(getattr(g, field), np.float64) for g in per_scene)
        # A different summation order than the loop: float rounding only.
        assert rel_err(getattr(g_sum, field), expected) < 1e-5, field
    ref = jax.grad(lambda at: sum(_loss(scenes[b], at, templates[b], wc[b], wa[b], "reference", color_blend=0.7)
                                  for b in range(3)))(atlas)
    assert rel_err(g_sum.mask, ref.mask) < GRAD_TOL
    assert rel_err(g_sum.rgb, ref.rgb) < GRAD_TOL


# --------------------------------------------------------------------------- nested vmap

def test_nested_vmap_atlas_outer_params_both():
    """[2, 3] scenes: the atlas mapped on the outer level only, the template on the inner only."""
    rng = np.random.default_rng(6)
    atlases = [random_atlas(rng, num=2, h=7, w=5) for _ in range(2)]
    scenes = [[random_scene(rng, 15, H, W) for _ in range(3)] for _ in range(2)]
    templates = [jnp.asarray(rng.integers(0, 2, 15), jnp.int32) for _ in range(3)]
    wc = jnp.asarray(rng.normal(size=(H, W, 3)), jnp.float32)
    wa = jnp.asarray(rng.normal(size=(H, W)), jnp.float32)
    kw = dict(color_blend=0.5)

    def one(at, p, t):
        loss = lambda p, at: _loss(p, at, t, wc, wa, atlas_grad=True, **kw)
        return _render(p, at, t, **kw), jax.grad(loss, argnums=(0, 1))(p, at)

    inner = jax.vmap(one, in_axes=(None, 0, 0))
    outer = jax.jit(jax.vmap(inner, in_axes=(0, 0, None)))
    params = _stack([_stack(row) for row in scenes])
    assert params.xy.shape == (2, 3, 15, 2)
    (c_b, a_b), (gp_b, ga_b) = outer(_stack(atlases), params, jnp.stack(templates))
    assert c_b.shape == (2, 3, H, W, 3) and ga_b.mask.shape == (2, 3, 2, 7, 5)
    for i in range(2):
        for j in range(3):
            (c, a), (gp, ga) = one(atlases[i], scenes[i][j], templates[j])
            where = f"scene [{i}, {j}]"
            _assert_same(c_b[i, j], c, f"colour of {where}")
            _assert_same(a_b[i, j], a, f"alpha of {where}")
            for f in FIELDS:
                _assert_same(getattr(gp_b, f)[i, j], getattr(gp, f), f"d{f} of {where}")
            _assert_same(ga_b.mask[i, j], ga.mask, f"d mask of {where}", ATLAS_TOL)
            _assert_same(ga_b.rgb[i, j], ga.rgb, f"d rgb of {where}", ATLAS_TOL)
    c_ref, _ = _render(scenes[1][2], atlases[1], templates[2], "reference", **kw)
    assert rel_err(c_b[1, 2], c_ref) < FWD_TOL


# --------------------------------------------------------------------------- one launch

_TENSOR = re.compile(r"tensor<([^>]*)>")


def _custom_calls(text: str, target: str) -> list[list[str]]:
    """Result types (``"3x24x32x3xf32"``) of every custom call to ``target`` in lowered StableHLO."""
    calls = []
    for line in text.splitlines():
        if re.search(rf"custom_call @{target}\(", line):
            results = line.rsplit("->", 1)[1]
            calls.append(_TENSOR.findall(results))
    return calls


def _check_one_launch(text: str, batch: str, n: int):
    """One forward and one backward custom call, results with batch dims ``batch``, no while loop."""
    fwd = _custom_calls(text, "diffbmp_forward")
    bwd = _custom_calls(text, "diffbmp_backward")
    assert len(fwd) == 1, f"{len(fwd)} forward custom calls"
    assert len(bwd) == 1, f"{len(bwd)} backward custom calls"
    assert fwd[0][:3] == [f"{batch}x{H}x{W}x3xf32", f"{batch}x{H}x{W}xf32", f"{batch}x{H}x{W}xi32"], fwd
    # Then the tile lists for all scenes at once (and on CUDA a workspace): bytes, no batch dims.
    assert all(re.fullmatch(r"\d+xui8", t) for t in fwd[0][3:]), fwd
    assert bwd[0][:2] == [f"{batch}x{n}x2xf32", f"{batch}x{n}xf32"], bwd
    assert not re.search(r"\bwhile\b", text), "a while loop: scenes rendered one after another"


def test_vmapped_render_is_one_custom_call():
    rng = np.random.default_rng(7)
    atlas = random_atlas(rng)
    scenes, templates = _batch(rng, 3, 10, atlas.num)
    wc, wa = _weights(rng, 3)
    args = (_stack(scenes), jnp.stack(templates), wc, wa)

    def f(p, t, wc, wa):
        return jax.value_and_grad(_loss)(p, atlas, t, wc, wa, color_blend=0.5)

    text = jax.jit(jax.vmap(f)).lower(*args).as_text()
    assert "stablehlo.custom_call" in text  # the text format the parsing below expects
    _check_one_launch(text, "3", 10)
    # The shared atlas goes in with a size-1 batch dimension: read in place, not copied per
    # scene (its 3 bitmaps of 9 x 7 padded by one texel, kernels.pad_atlas).
    line = next(l for l in text.splitlines() if "custom_call @diffbmp_forward(" in l)
    assert "tensor<1x3x11x9xf32>" in line.split("->")[0]

    # Two levels: one call, results [2, 3, ...].
    nested = jax.tree.map(lambda x: x.reshape((1,) + x.shape).repeat(2, 0), args)
    text2 = jax.jit(jax.vmap(jax.vmap(f))).lower(*nested).as_text()
    _check_one_launch(text2, "2x3", 10)

    # The checks can fail: one kernel call per scene in a loop is rejected.
    seq = jax.jit(lambda *a: jax.lax.map(lambda s: f(*s), a)).lower(*args).as_text()
    with pytest.raises(AssertionError):
        _check_one_launch(seq, "3", 10)
    assert re.search(r"\bwhile\b", seq)


# --------------------------------------------------------------------------- invalid primitives

def test_invalid_primitives_in_a_batch_draw_nothing_and_leave_other_scenes_alone():
    rng = np.random.default_rng(8)
    atlas = random_atlas(rng, num=2)
    n, bad = 12, 5
    scenes, templates = _batch(rng, 3, n, 2)
    # Make the primitive that will go bad clearly visible, so dropping it changes the image.
    scenes = [db.Primitives(xy=p.xy.at[bad].set([W / 2, H / 2]), scale=p.scale.at[bad].set(8.0),
                            rotation=p.rotation, opacity_logit=p.opacity_logit.at[bad].set(3.0),
                            color_logit=p.color_logit) for p in scenes]
    bad_scenes = list(scenes)
    bad_templates = list(templates)
    bad_templates[1] = templates[1].at[bad].set(atlas.num + 5)       # template id out of range
    p2 = scenes[2]
    bad_scenes[2] = db.Primitives(xy=p2.xy, scale=p2.scale.at[bad].set(jnp.nan), rotation=p2.rotation,
                                  opacity_logit=p2.opacity_logit, color_logit=p2.color_logit)  # NaN scale
    wc, wa = _weights(rng, 3)

    f = jax.jit(jax.vmap(lambda p, t: _render(p, atlas, t, color_blend=0.5)))
    grad = jax.grad(lambda p, t, wc, wa: _loss(p, atlas, t, wc, wa, color_blend=0.5))
    c_b, a_b = f(_stack(bad_scenes), jnp.stack(bad_templates))
    g_b = jax.jit(jax.vmap(grad))(_stack(bad_scenes), jnp.stack(bad_templates), wc, wa)
    assert np.all(np.isfinite(np.asarray(c_b))) and np.all(np.isfinite(np.asarray(a_b)))
    for f_ in FIELDS:
        assert np.all(np.isfinite(np.asarray(getattr(g_b, f_)))), f_

    keep = np.arange(n) != bad
    for b in range(3):
        c_full, a_full = _render(scenes[b], atlas, templates[b], color_blend=0.5)
        if b == 0:  # untouched scene: as if rendered alone
            c, a = c_full, a_full
            g = grad(scenes[b], templates[b], wc[b], wa[b])
            for f_ in FIELDS:
                _assert_same(getattr(g_b, f_)[b], getattr(g, f_), f"d{f_} of scene 0")
        else:  # the bad primitive draws nothing: as if it were not there
            c, a = _render(scenes[b][keep], atlas, templates[b][keep], color_blend=0.5)
            assert float(jnp.max(jnp.abs(a_full - a))) > 0.1  # it would have drawn
            g = grad(scenes[b][keep], templates[b][keep], wc[b], wa[b])
            for f_ in FIELDS:
                gb = np.asarray(getattr(g_b, f_)[b])
                assert np.all(gb[bad] == 0), f"d{f_} of the invalid primitive of scene {b}"
                _assert_same(gb[keep], getattr(g, f_), f"d{f_} of scene {b}")
        np.testing.assert_allclose(np.asarray(c_b[b]), np.asarray(c), atol=1e-6, err_msg=f"scene {b}")
        np.testing.assert_allclose(np.asarray(a_b[b]), np.asarray(a), atol=1e-6, err_msg=f"scene {b}")


def test_cpu_field_gradients_do_not_depend_on_threads(monkeypatch, on_cpu):
    """The cpu backward sums each primitive's fields per (tile, candidate) and adds them in list
    order: the same bits for any thread count and any grouping of the tiles (its memory bound),
    and a batch's scenes equal the loop's."""
    rng = np.random.default_rng(32)
    atlas = random_atlas(rng, num=3)
    scenes, templates = _batch(rng, 3, 60, 3)
    params, template = _stack(scenes), jnp.stack(templates)
    wc, wa = _weights(rng, 3)
    one = jax.jit(jax.grad(_loss))
    many = jax.jit(jax.vmap(jax.grad(_loss), in_axes=(0, None, 0, 0, 0)))
    runs = []
    for threads, group in (("1", None), ("2", None), ("5", None), ("2", "1"), ("3", "40")):
        monkeypatch.setenv("DIFFBMP_NUM_THREADS", threads)
        if group is None:
            monkeypatch.delenv("DIFFBMP_CPU_PAIRS_PER_GROUP", raising=False)
        else:  # at most `group` pairs at once (one tile per group when a tile has more)
            monkeypatch.setenv("DIFFBMP_CPU_PAIRS_PER_GROUP", group)
        looped = [one(scenes[b], atlas, templates[b], wc[b], wa[b]) for b in range(3)]
        runs.append((looped, many(params, atlas, template, wc, wa)))
    for looped, batched in runs:
        for f in FIELDS:
            for b in range(3):
                np.testing.assert_array_equal(np.asarray(getattr(looped[b], f)),
                                              np.asarray(getattr(runs[0][0][b], f)), err_msg=f)
                np.testing.assert_array_equal(np.asarray(getattr(batched, f)[b]),
                                              np.asarray(getattr(looped[b], f)), err_msg=f)
    assert float(np.max(np.abs(np.asarray(runs[0][0][0].xy)))) > 0


@pytest.mark.parametrize("threads", ["1", "2", "16"])
def test_scene_scheduling_is_repeatable_and_agrees(monkeypatch, threads, on_cpu):
    """1 thread; scenes >= threads (one scene per thread); scenes < threads (each over all).

    Every schedule gives the loop's gradients to rounding, and the same bits on every run.
    """
    monkeypatch.setenv("DIFFBMP_NUM_THREADS", threads)
    rng = np.random.default_rng(31)
    atlas = random_atlas(rng, num=3)
    scenes, templates = _batch(rng, 4, 40, 3)
    params, template = _stack(scenes), jnp.stack(templates)
    wc, wa = _weights(rng, 4)
    grad = jax.jit(jax.vmap(jax.grad(_loss), in_axes=(0, None, 0, 0, 0)))
    first = grad(params, atlas, template, wc, wa)
    again = grad(params, atlas, template, wc, wa)
    for f in FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(first, f)), np.asarray(getattr(again, f)))
    for b in range(4):
        ref = jax.grad(_loss)(scenes[b], atlas, templates[b], wc[b], wa[b])
        for f in FIELDS:
            _assert_same(getattr(first, f)[b], getattr(ref, f), f"scene {b} {f}")
