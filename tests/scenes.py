"""Random scenes for comparing backends (shared by the test modules)."""

from __future__ import annotations

import numpy as np

import diffbmp_jax as db


def random_atlas(rng, num=3, h=9, w=7, with_rgb=True) -> db.Atlas:
    """Smooth-ish random bitmaps, non-square, with transparent and opaque parts."""
    mask = rng.uniform(size=(num, h, w)).astype(np.float32)
    mask[:, 0, :] = 0.0  # a transparent row, as real stamps have
    mask[:, :, -1] *= 0.3
    rgb = rng.uniform(size=(num, h, w, 3)).astype(np.float32) if with_rgb else None
    return db.Atlas.from_arrays(mask, rgb)


def random_scene(rng, n, height, width, *, scale=(1.5, 12.0), off_canvas=0.25, opacity=(0.05, 0.97)):
    """``n`` primitives, some partly or wholly off the canvas, rotations of all angles."""
    lo = -off_canvas * np.array([width, height])
    hi = (1 + off_canvas) * np.array([width, height])
    xy = rng.uniform(lo, hi, size=(n, 2))
    s = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), size=n))
    rot = rng.uniform(-2 * np.pi, 2 * np.pi, size=n)
    op = rng.uniform(*opacity, size=n)
    col = rng.uniform(0.02, 0.98, size=(n, 3))
    return db.Primitives.create(xy, s, rot, op, col)


def stacked_scene(rng, n, height, width, scale=6.0):
    """``n`` primitives piled on one spot: deep overlap, exercises early termination."""
    centre = np.array([width / 2, height / 2])
    xy = centre + rng.normal(scale=1.5, size=(n, 2))
    rot = rng.uniform(-np.pi, np.pi, size=n)
    return db.Primitives.create(xy, np.full(n, scale), rot, rng.uniform(0.05, 0.6, n),
                                rng.uniform(0.02, 0.98, (n, 3)))


def rel_err(a, b) -> float:
    """max |a - b| / max |b|: relative error of a whole field."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / denom) if denom > 0 else float(np.max(np.abs(a)))
