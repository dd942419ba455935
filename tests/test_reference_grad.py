"""Reference gradients against central finite differences (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.rendering.reference import render_reference
from scenes import random_scene

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")


def _smooth_atlas(rng, num=2, h=8, w=6):
    # A smooth bitmap keeps finite differences away from bilinear kinks.
    yy, xx = np.mgrid[0:h, 0:w]
    masks = []
    for _ in range(num):
        cx, cy = rng.uniform(1, w - 2), rng.uniform(1, h - 2)
        masks.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.2 * h * w)))
    return np.stack(masks), rng.uniform(size=(num, h, w, 3))


@pytest.mark.parametrize("seed", range(3))
def test_reference_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    mask, rgb = _smooth_atlas(rng)
    with jax.enable_x64(True):
        p32 = random_scene(rng, 6, 14, 16, scale=(3.0, 8.0), off_canvas=0.0)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p32)
        template = jnp.arange(6) % 2
        wc = jnp.asarray(rng.normal(size=(14, 16, 3)))
        wt = jnp.asarray(rng.normal(size=(14, 16)))

        @jax.jit
        def loss(p):
            c, t = render_reference(p, jnp.asarray(mask), jnp.asarray(rgb), template, 14, 16,
                                    color_blend=0.3, alpha_max=0.99)
            return jnp.sum(c * wc) + jnp.sum(t * wt)

        grads = jax.grad(loss)(params)
        eps = 1e-6
        for f in FIELDS:
            x = np.asarray(getattr(params, f))
            g = np.asarray(getattr(grads, f))
            for idx in [tuple(rng.integers(0, s) for s in x.shape) for _ in range(4)]:
                def at(delta):
                    y = x.copy()
                    y[idx] += delta
                    return float(loss(db.Primitives(**{**params.to_dict(), f: jnp.asarray(y)})))
                fd = (at(eps) - at(-eps)) / (2 * eps)
                assert abs(fd - g[idx]) <= 1e-5 * max(1.0, abs(fd)), (f, idx, fd, g[idx])


def test_cpu_matches_finite_differences_float32():
    """The kernel's gradient also agrees with finite differences of its own forward."""
    rng = np.random.default_rng(5)
    mask, rgb = _smooth_atlas(rng)
    atlas = db.Atlas.from_arrays(mask, rgb)
    params = random_scene(rng, 5, 20, 20, scale=(4.0, 8.0), off_canvas=0.0)
    wc = jnp.asarray(rng.normal(size=(20, 20, 3)), jnp.float32)

    def loss(p):
        return jnp.sum(db.render(p, atlas, height=20, width=20, backend="cpu", color_blend=0.5)[0] * wc)

    grads = jax.grad(loss)(params)
    eps = 1e-3  # small: the bitmap's edge is a kink that wider steps would straddle
    for f in FIELDS:
        x = np.asarray(getattr(params, f), np.float32)
        g = np.asarray(getattr(grads, f))
        idx = tuple(rng.integers(0, s) for s in x.shape)
        vals = []
        for d in (eps, -eps):
            y = x.copy()
            y[idx] += d
            vals.append(float(loss(db.Primitives(**{**params.to_dict(), f: jnp.asarray(y)}))))
        fd = (vals[0] - vals[1]) / (2 * eps)
        assert abs(fd - g[idx]) <= 2e-2 * max(1.0, abs(fd)), (f, fd, g[idx])
