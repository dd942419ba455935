"""Template assignment: round-robin, random, colour match, greedy reassignment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.fitting import templates as T


def _rgb_atlas():
    yy, xx = np.mgrid[:8, :8]
    mask = np.stack([np.ones((8, 8)), ((xx - 3.5) ** 2 + (yy - 3.5) ** 2 < 10) * 1.0, (xx < 4) * 1.0])
    rgb = np.stack([np.full((8, 8, 3), c) for c in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]])
    return db.Atlas.from_arrays(mask.astype(np.float32), rgb.astype(np.float32))


def _scene(n=16, hw=24, seed=0):
    rng = np.random.default_rng(seed)
    return db.Primitives.create(xy=rng.random((n, 2)) * hw, scale=rng.uniform(3, 7, n),
                                rotation=rng.uniform(-1, 1, n), opacity=0.9, color=0.5)


def test_round_robin_and_random():
    np.testing.assert_array_equal(T.assign_round_robin(7, 3), [0, 1, 2, 0, 1, 2, 0])
    r = np.asarray(T.assign_random(jax.random.key(0), 200, 4))
    assert r.dtype == np.int32 and r.min() >= 0 and r.max() <= 3 and len(np.unique(r)) == 4
    w = np.asarray(T.assign_random(jax.random.key(1), 200, 3, weights=[1.0, 0.0, 1.0]))
    assert 1 not in w and set(np.unique(w)) == {0, 2}
    with pytest.raises(ValueError, match="weights"):
        T.assign_random(jax.random.key(0), 5, 3, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="num_bitmaps"):
        T.assign_round_robin(5, 0)


def test_mean_colours_and_local_colours():
    atlas = _rgb_atlas()
    np.testing.assert_allclose(T.bitmap_mean_colors(atlas), np.eye(3), atol=1e-6)
    rng = np.random.default_rng(0)
    img = rng.random((10, 12, 3)).astype(np.float32)
    xy = np.array([[5.0, 4.0], [0.0, 0.0], [11.0, 9.0]])
    got = np.asarray(T.local_mean_colors(img, xy, [2.0, 1.0, 3.0]))
    want = [img[2:7, 3:8].mean((0, 1)), img[0:2, 0:2].mean((0, 1)), img[6:10, 8:12].mean((0, 1))]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_assign_by_color_picks_nearest_bitmap():
    atlas = _rgb_atlas()
    # Target: left third red, middle green, right blue.
    target = np.zeros((12, 30, 3), np.float32)
    target[:, :10, 0] = 1
    target[:, 10:20, 1] = 1
    target[:, 20:, 2] = 1
    p = db.Primitives.create(xy=[[4, 6], [15, 6], [25, 6], [5, 2]], scale=3.0)
    np.testing.assert_array_equal(T.assign_by_color(p, atlas, target), [0, 1, 2, 0])
    with pytest.raises(ValueError, match="rgb"):
        T.assign_by_color(p, db.Atlas.from_arrays(np.ones((2, 4, 4), np.float32)), target)


def test_template_losses_match_full_renders():
    atlas = _rgb_atlas()
    p = _scene(8)
    rng = np.random.default_rng(3)
    target = rng.random((24, 24, 3)).astype(np.float32)
    t = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)
    L = np.asarray(T.template_losses(p, t, atlas, target, color_blend=1.0))
    assert L.shape == (8, 3)
    for n, k in [(0, 2), (3, 1), (7, 0)]:
        t2 = t.at[n].set(k)
        c, a = db.render(p, atlas, height=24, width=24, template=t2, color_blend=1.0)
        want = float(jnp.mean((db.composite(c, a, 1.0) - target) ** 2))
        assert L[n, k] == pytest.approx(want, rel=1e-4)


def test_reassign_recovers_true_templates_and_never_worsens():
    atlas = _rgb_atlas()
    p = _scene(16)
    true_t = jnp.asarray(np.random.default_rng(1).integers(0, 3, 16), jnp.int32)
    c, a = db.render(p, atlas, height=24, width=24, template=true_t, color_blend=1.0)
    target = db.composite(c, a, 1.0)
    start = jnp.zeros(16, jnp.int32)
    c0, a0 = db.render(p, atlas, height=24, width=24, template=start, color_blend=1.0)
    loss0 = float(jnp.mean((db.composite(c0, a0, 1.0) - target) ** 2))
    new, loss = T.reassign_templates(p, start, atlas, target, color_blend=1.0, rounds=4)
    assert new.dtype == jnp.int32 and loss <= loss0
    assert loss < 1e-4
    # Only the allowed primitives may change.
    new2, loss2 = T.reassign_templates(p, start, atlas, target, color_blend=1.0, indices=[0, 1])
    assert np.all(np.asarray(new2)[2:] == 0) and loss2 <= loss0
