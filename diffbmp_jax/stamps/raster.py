"""Stamps from raster images: masks by rule, fitting into squares, colour bleeding, the atlas."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.validation import positive_int
from diffbmp_jax.io.images import expand_paths, read_rgba

MASK_RULES = ("auto", "alpha", "luminance", "background", "opaque")

# Rasterise a little larger than the bitmap, then downsample with Lanczos in
# ``fit_into_square``: edges come out anti-aliased the same way as raster inputs.
SUPERSAMPLE = 2

MAX_STAMP_SIZE = 4096
"""Largest bitmap side a loader makes (an atlas of such bitmaps is 64 MiB each, already)."""


def check_stamp_size(size) -> int:
    """``size`` (bitmap side, pixels) as an int in ``[1, MAX_STAMP_SIZE]``; ValueError/TypeError naming it."""
    size = positive_int("size", size)
    if size > MAX_STAMP_SIZE:
        raise ValueError(f"size: stamps are at most {MAX_STAMP_SIZE} px a side, got {size}")
    return size


def mask_from_rgba(rgba: np.ndarray, has_alpha: bool, rule: str, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Coverage ``[h, w]`` in [0, 1] from an RGBA image by ``rule`` (see MASK_RULES)."""
    if rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {rule!r}")
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    if rule == "auto":
        rule = "alpha" if has_alpha else "luminance"
    if rule == "alpha":
        return alpha
    if rule == "opaque":
        return np.ones_like(alpha)
    if rule == "luminance":
        lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        return (1.0 - lum) * alpha
    bg = np.asarray(background, np.float32).reshape(3)
    dist = np.linalg.norm(rgb - bg, axis=-1) / np.sqrt(3.0)
    return np.clip(dist / max(float(dist.max()), 1e-6), 0.0, 1.0) * alpha


def fit_into_square(rgba: np.ndarray, size: int) -> np.ndarray:
    """Resizes ``[h, w, 4]`` to fit ``size x size`` (aspect kept), centred on transparency.

    Resampling uses premultiplied colour so transparent pixels do not bleed.
    """
    h, w = rgba.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    premult = rgba.copy()
    premult[..., :3] *= premult[..., 3:4]
    chans = [np.asarray(Image.fromarray(premult[..., c]).resize((nw, nh), Image.LANCZOS)) for c in range(4)]
    small = np.clip(np.stack(chans, -1), 0.0, 1.0)
    a = small[..., 3:4]
    small[..., :3] = np.where(a > 1e-6, small[..., :3] / np.maximum(a, 1e-6), 0.0)
    small = np.clip(small, 0.0, 1.0)
    out = np.zeros((size, size, 4), np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def atlas_from_rgba(images: Sequence[np.ndarray], size: int):
    """Stacks RGBA images ``[h, w, 4]`` (mask in the alpha channel) into an Atlas."""
    if not images:
        raise ValueError("images: no bitmaps given (the atlas would be empty)")
    sq = np.stack([bleed_colors(fit_into_square(im, size)) for im in images])
    return Atlas.from_arrays(mask=sq[..., 3], rgb=sq[..., :3])


def bleed_colors(rgba: np.ndarray, steps: int = 4) -> np.ndarray:
    """Fills the colour of fully transparent pixels from their visible neighbours.

    The renderer samples ``rgb`` and ``mask`` bilinearly *each on its own*, so at
    a stamp's edge the colour of transparent texels leaks in (with black there,
    ``color_blend > 0`` stamps get dark fringes). Each step gives still-empty
    pixels the mean colour of their filled 4-neighbours; after ``steps`` steps
    the rest get the mean visible colour. Alpha is unchanged.

    Args:
      rgba: ``[h, w, 4]`` float32 straight RGBA.
    Returns:
      a new ``[h, w, 4]`` array.
    """
    out = np.array(rgba, np.float32, copy=True)
    filled = out[..., 3] > 0
    if filled.all() or not filled.any():
        return out
    rgb = np.where(filled[..., None], out[..., :3], 0.0)
    for _ in range(steps):
        if filled.all():
            break
        acc = np.zeros_like(rgb)
        cnt = np.zeros(filled.shape, np.float32)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            f = np.roll(filled, (dy, dx), (0, 1))
            c = np.roll(rgb, (dy, dx), (0, 1))
            # np.roll wraps around; drop the wrapped row/column.
            if dy == 1:
                f[0] = False
            if dy == -1:
                f[-1] = False
            if dx == 1:
                f[:, 0] = False
            if dx == -1:
                f[:, -1] = False
            acc += c * f[..., None]
            cnt += f
        new = (~filled) & (cnt > 0)
        rgb[new] = acc[new] / cnt[new][:, None]
        filled = filled | new
    if not filled.all():
        vis = out[..., 3] > 0
        rgb[~filled] = out[..., :3][vis].mean(0)
    out[..., :3] = rgb
    return out


def load_images(paths, size: int = 64, mask_rule: str = "auto", background=(1.0, 1.0, 1.0)):
    """Loads image files into one atlas of ``size x size`` bitmaps.

    Each image is resized to fit (aspect kept) and centred on transparent
    padding. Accepts files, folders and glob patterns
    (:func:`diffbmp_jax.io.images.expand_paths`).

    Args:
      paths: image files (PNG/JPG/WebP/...), folders or globs.
      size: output bitmap side in pixels.
      mask_rule: ``"auto"`` (alpha channel if present, else luminance),
        ``"alpha"``, ``"luminance"`` (dark on a light background is opaque),
        ``"background"`` (distance from ``background`` colour) or ``"opaque"``.
      background: RGB in [0, 1] used by ``mask_rule="background"``.

    Returns:
      :class:`~diffbmp_jax.Atlas` with ``mask [P, size, size]`` and ``rgb``.
    """
    size = check_stamp_size(size)
    if mask_rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
    return atlas_from_rgba([read_stamp(path, size, mask_rule, background) for path in expand_paths(paths)], size)


def read_stamp(path, size: int, mask_rule: str, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """One raster stamp file as float32 ``[h, w, 4]``: its colours, and its coverage by ``mask_rule``
    (:func:`mask_from_rgba`) in the alpha channel, for :func:`atlas_from_rgba` at ``size`` pixels.

    A big photo need not decode whole for a stamp: a JPEG is read at a reduced DCT scale keeping
    twice ``size`` (:func:`diffbmp_jax.io.images.draft_for`).
    """
    rgba, has_alpha = read_rgba(path, draft=2 * size)
    mask = mask_from_rgba(rgba, has_alpha, mask_rule, background)
    return np.concatenate([rgba[..., :3], mask[..., None]], -1)
