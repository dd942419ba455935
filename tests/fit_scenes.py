"""Small targets for the fitting tests."""

import numpy as np
import jax.numpy as jnp

import diffbmp_jax as db


def shape_atlas(size=16) -> db.Atlas:
    """A disc and a square, ``size`` pixels."""
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    disc = (xx ** 2 + yy ** 2 < 0.85).astype(np.float32)
    square = ((np.abs(xx) < 0.8) & (np.abs(yy) < 0.8)).astype(np.float32)
    return db.Atlas.from_arrays(np.stack([disc, square]))


def synthetic_target(h=32, w=32):
    """White canvas with 8 known stamps drawn by the reference renderer; returns (target, atlas)."""
    atlas = shape_atlas()
    rng = np.random.default_rng(7)
    n = 8
    params = db.Primitives.create(rng.uniform(6, [w - 6, h - 6], (n, 2)), rng.uniform(4, 8, n),
                                  rng.uniform(-1, 1, n), rng.uniform(0.7, 0.95, n),
                                  rng.uniform(0.05, 0.95, (n, 3)))
    c, a = db.render(params, atlas, height=h, width=w, template=jnp.arange(n) % 2, backend="reference")
    return np.asarray(db.composite(c, a, 1.0)), atlas
