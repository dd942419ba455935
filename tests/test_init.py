"""Initialisers: shapes, ranges, determinism, and the structure-aware rules."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import diffbmp_jax as db
from diffbmp_jax.fitting import init


def _atlas():
    yy, xx = np.mgrid[-1:1:16j, -1:1:16j]
    return db.Atlas.from_arrays(np.stack([(xx ** 2 + yy ** 2 < 0.9).astype(np.float32),
                                          np.ones((16, 16), np.float32)]))


def _target(h=32, w=40):
    """Flat grey on the left half; horizontal stripes 2 px wide on the right half."""
    t = np.full((h, w, 3), 0.5, np.float32)
    rows = (np.arange(h) // 2) % 2 == 0
    t[rows, w // 2:] = 0.9
    t[~rows, w // 2:] = 0.1
    return t


@pytest.mark.parametrize("name", sorted(init.INITIALIZERS))
def test_shapes_ranges_determinism(name):
    fn = init.INITIALIZERS[name]
    t, atlas = _target(), _atlas()
    p, tmpl = fn(t, atlas, 37, jax.random.key(1))
    assert p.xy.shape == (37, 2) and p.scale.shape == (37,) and p.color_logit.shape == (37, 3)
    assert tmpl.shape == (37,) and tmpl.dtype == np.int32
    assert np.all((np.asarray(tmpl) >= 0) & (np.asarray(tmpl) < atlas.num))
    assert np.all(np.asarray(p.scale) > 0)
    xy = np.asarray(p.xy)
    assert np.all((xy > -1) & (xy < [40, 32]))
    p2, tmpl2 = fn(t, atlas, 37, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(p.xy), np.asarray(p2.xy))
    np.testing.assert_array_equal(np.asarray(tmpl), np.asarray(tmpl2))


def test_structure_aware_follows_detail():
    t = _target(48, 64)
    p, _ = init.structure_aware(t, _atlas(), 400, jax.random.key(0), opacity=0.2)
    x = np.asarray(p.xy)[:, 0]
    s = np.asarray(p.scale)
    right = x >= 32
    assert right.mean() > 0.65  # more primitives where the detail is
    assert s[right].mean() < 0.8 * s[~right].mean()  # and smaller there
    np.testing.assert_allclose(np.asarray(p.opacity), 0.2, rtol=1e-4)  # low start
    # Horizontal stripes: edges run horizontally, so rotations are 0 mod pi.
    rot = np.asarray(p.rotation)[right & (x > 40) & (x < 56)]
    assert np.all(np.abs(np.sin(rot)) < 0.2)
    # Colours come from the target at each position.
    col = np.asarray(p.color)[x < 28]
    np.testing.assert_allclose(col, 0.5, atol=0.02)


def test_grid_covers_canvas():
    p, _ = init.grid(_target(), _atlas(), 20, jax.random.key(0))
    xy = np.asarray(p.xy)
    assert xy[:, 0].min() < 8 and xy[:, 0].max() > 32 and xy[:, 1].min() < 8 and xy[:, 1].max() > 24


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_primitives"):
        init.random(_target(), _atlas(), 0, jax.random.key(0))
    with pytest.raises(ValueError, match="target"):
        init.grid(np.zeros((4, 4, 2)), _atlas(), 3, jax.random.key(0))


def test_structure_aware_with_precomputed_maps_is_the_same():
    target, atlas, key = _target(), _atlas(), jax.random.key(4)
    maps = init.host_structure_maps(target, 50, coverage=2.0)
    a, ta = init.structure_aware(target, atlas, 50, key, coverage=2.0)
    b, tb = init.structure_aware(target, atlas, 50, key, coverage=2.0, maps=maps)
    np.testing.assert_array_equal(np.asarray(ta), np.asarray(tb))
    for f in ("xy", "scale", "rotation", "opacity_logit", "color_logit"):
        np.testing.assert_allclose(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), atol=1e-6)
    # Other maps give other positions: the argument is used.
    other = init.host_structure_maps(target[:, ::-1], 50, coverage=2.0)
    c, _ = init.structure_aware(target, atlas, 50, key, coverage=2.0, maps=other)
    assert not np.allclose(np.asarray(a.xy), np.asarray(c.xy))


def test_host_structure_maps_are_the_jax_ones():
    """The fit's set-up computes the maps in NumPy; structure_maps (traceable) gives the same."""
    target = np.random.default_rng(3).uniform(size=(40, 52, 3)).astype(np.float32)
    target[:, :20] = 0.5  # a flat part, where only rounding would pick an orientation
    host, dev = init.host_structure_maps(target, 60), init.structure_maps(target, 60)
    for k in ("prob", "scale", "angle", "detail"):
        assert host[k].dtype == np.float32 and host[k].shape == dev[k].shape
        np.testing.assert_allclose(host[k], np.asarray(dev[k]), atol=2e-4 * max(1.0, float(np.abs(host[k]).max())))
    np.testing.assert_array_equal(host["angle"][:, :9], np.float32(0.5 * np.pi))  # no orientation where flat


def test_structure_aware_rejects_maps_of_another_target():
    target, atlas, key = _target(), _atlas(), jax.random.key(4)
    small = init.structure_maps(target[:-4], 50)
    with pytest.raises(ValueError, match=r"maps\['prob'\] must have shape"):
        init.structure_aware(target, atlas, 50, key, maps=small)
    with pytest.raises(ValueError, match="maps must be the dict"):
        init.structure_aware(target, atlas, 50, key, maps={"prob": small["prob"]})


def test_logit_inverts_the_sigmoid_inside_its_clip():
    p = jnp.array([0.0, 0.3, 0.5, 0.9, 1.0])
    out = init.logit(p, 0.01)
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(out)), [0.01, 0.3, 0.5, 0.9, 0.99], rtol=1e-6)
    with pytest.raises(ValueError, match="eps"):
        init.logit(p, 0.5)


def test_sample_pixels_draws_the_inverse_cdf_without_a_loop():
    # The indices are NumPy's inverse-CDF search of the same uniforms, and the
    # compiled search has no while loop (on a GPU each of its levels was a launch).
    h, w, num = 7, 9, 500
    prob = np.random.default_rng(1).uniform(size=h * w).astype(np.float32)
    prob[::5] = 0.0  # pixels that must never be drawn
    key = jax.random.key(3)
    xy = np.asarray(init.sample_pixels(jnp.asarray(prob), key, num, h, w))
    k1, _ = jax.random.split(key)
    cdf = np.cumsum(prob, dtype=np.float32)
    u = np.asarray(jax.random.uniform(k1, (num,))) * cdf[-1]
    idx = np.clip(np.searchsorted(cdf, u, side="right"), 0, h * w - 1)
    np.testing.assert_array_equal(np.round(xy[:, 0]) + w * np.round(xy[:, 1]), idx)
    assert np.all(prob[idx] > 0)
    jaxpr = jax.make_jaxpr(init.sample_pixels, static_argnums=(2, 3, 4))(jnp.asarray(prob), key, num, h, w)
    loops = _loops(jaxpr.jaxpr)
    assert loops and all(unroll >= length for length, unroll in loops), loops


def _loops(jaxpr) -> list:
    """``(length, unroll)`` of every ``scan`` in ``jaxpr`` and the jaxprs nested in it
    (a scan unrolled ``length`` times lowers without a loop); a ``while`` counts as ``(1, 0)``."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            unroll = eqn.params["unroll"]
            found.append((eqn.params["length"], eqn.params["length"] if unroll is True else int(unroll)))
        elif eqn.primitive.name == "while":
            found.append((1, 0))
        for value in eqn.params.values():
            for inner in (value if isinstance(value, (tuple, list)) else (value,)):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    found += _loops(inner)
    return found
