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


def off_texel_edges(params, atlas, height, width, *, margin=1e-3, step=0.01, tries=50):
    """``params`` with primitives moved (``step`` px at a time) until no pixel centre
    samples their bitmap within ``margin`` texels of a texel edge.

    There the bilinear sample's spatial derivative jumps, and float rounding picks the
    side, so backends may legitimately disagree (docs/DESIGN.md §1, "Ties at texel
    boundaries"); backend comparisons run on scenes without such ties.
    """
    h, w = np.shape(atlas.mask)[-2:]
    half = max(h, w) / 2.0
    xy = np.array(params.xy, np.float64)
    s = np.asarray(params.scale, np.float64)
    rot = np.asarray(params.rotation, np.float64)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    for n in range(len(s)):
        c, sn = np.cos(rot[n]), np.sin(rot[n])
        for _ in range(tries):
            dx, dy = (xs - xy[n, 0]) / s[n], (ys - xy[n, 1]) / s[n]
            fx = (c * dx - sn * dy) * half + w / 2 - 0.5
            fy = (sn * dx + c * dy) * half + h / 2 - 0.5
            inside = (fx > -1) & (fx < w) & (fy > -1) & (fy < h)
            near = np.minimum(np.abs(fx - np.round(fx)), np.abs(fy - np.round(fy)))[inside]
            if near.size == 0 or near.min() > margin:
                break
            xy[n] += step
    return db.Primitives(xy=np.asarray(xy, np.float32), scale=params.scale, rotation=params.rotation,
                         opacity_logit=params.opacity_logit, color_logit=params.color_logit)
