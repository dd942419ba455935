"""Benchmark scenes: random primitives with a fixed mean depth of overlap."""

from __future__ import annotations

import numpy as np

import diffbmp_jax as db


def blob_atlas(num: int = 8, size: int = 64, seed: int = 0) -> db.Atlas:
    """``num`` soft random blobs of ``size x size`` with colours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    masks, rgbs = [], []
    for _ in range(num):
        k = rng.integers(3, 7)
        r = np.sqrt(xx ** 2 + yy ** 2)
        ang = np.arctan2(yy, xx)
        edge = 0.75 + 0.2 * np.cos(k * ang + rng.uniform(0, 6.28))
        masks.append(np.clip((edge - r) * 12, 0, 1))
        rgbs.append(np.broadcast_to(rng.uniform(size=3), (size, size, 3)) * (0.6 + 0.4 * masks[-1][..., None]))
    return db.Atlas.from_arrays(np.stack(masks), np.stack(rgbs))


def random_params(n: int, height: int, width: int, depth: float = 4.0, seed: int = 0) -> db.Primitives:
    """``n`` primitives whose bitmaps cover the canvas ``depth`` times on average."""
    rng = np.random.default_rng(seed)
    mean_scale = 0.5 * np.sqrt(depth * height * width / n)
    return db.Primitives.create(
        rng.uniform([0, 0], [width, height], size=(n, 2)),
        mean_scale * rng.uniform(0.5, 1.5, n),
        rng.uniform(-np.pi, np.pi, n),
        rng.uniform(0.3, 0.9, n),
        rng.uniform(0.05, 0.95, (n, 3)),
    )


def pixel_pairs(params: db.Primitives, height: int, width: int) -> int:
    """Primitive-pixel pairs inside the primitives' rotated bitmap bounds (square bitmaps).

    The work a tile rasteriser does is proportional to this number.
    """
    s = np.asarray(params.scale, np.float64)
    r = np.asarray(params.rotation, np.float64)
    xy = np.asarray(params.xy, np.float64)
    ext = s * (np.abs(np.cos(r)) + np.abs(np.sin(r)))
    x0 = np.clip(xy[:, 0] - ext, 0, width)
    x1 = np.clip(xy[:, 0] + ext, 0, width)
    y0 = np.clip(xy[:, 1] - ext, 0, height)
    y1 = np.clip(xy[:, 1] + ext, 0, height)
    return int(np.sum((x1 - x0) * (y1 - y0)))
