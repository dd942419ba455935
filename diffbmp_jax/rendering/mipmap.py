"""Level-of-detail sampling (``render(..., antialias=True)``): bitmaps prefiltered per on-screen size.

The kernels sample a bitmap at one point per pixel (bilinear). A stamp drawn
smaller than its bitmap skips texels, so detail finer than a screen pixel
aliases: a fingerprint's ridges turn into moiré that no photo of the same
stamp would show, and the fit must fight a coverage that flickers with every
sub-pixel move (on the textured-stamp scenes of ``benchmarks/quality.py`` this
cost about 0.8 dB at 100 steps, ``benchmarks/RESULTS.md``).

As in texture mip-mapping, each bitmap gets ``L`` levels at its own
resolution: level ``l`` is the bitmap low-passed for a minification of
``2**l`` texels per pixel (resized down by ``2**l`` and back up, both with a
linear filter, so about a Gaussian of ``0.6 * 2**l`` texels). A primitive
whose bitmap of side ``S`` texels spans ``2 * scale`` pixels (minification
``m = S / (2 * scale)``) shows level ``round(log2(m))``, clipped to
``[0, L - 1]``: the nearest level, not a blend of two, so a primitive that
shrinks through ``m = 2**(l + 1/2)`` switches level (the level is not
differentiated).

All of it happens before the backends: the levels are stacked as the
``P * L`` bitmaps of one atlas (bitmap ``p`` level ``l`` at ``p * L + l``) and
the template ids are remapped, so every backend renders the same picture and
gradients reach the original atlas through the (linear) prefilter.

A fit's step blurs the masks first (soft rasterisation, a
:class:`~diffbmp_jax.rendering.blur.MaskBlur` whose std changes every step).
Blur and levels are both linear along each axis, so for masks alone they are
one matrix per level and axis, ``F_l @ B(sigma)`` (:func:`level_matrices`), and
the whole stack is two products with the atlas: the atlas is never blurred on
its own (on the H200 the blur and the pyramid took 14 us of a 138 us step
before, 10 us after; ``benchmarks/RESULTS.md``, stop 27).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.rendering.blur import MaskBlur, times_blur

__all__ = ["num_levels", "resize_matrix", "level_filters", "level_matrices", "blur_masks", "pyramid",
           "level_template", "Prefiltered", "prefilter", "lod_scene"]

HIGHEST = jax.lax.Precision.HIGHEST  # full float32 products (no TF32 on GPUs)


def num_levels(side: int) -> int:
    """Levels kept for bitmaps whose longer side is ``side`` texels: down to about 4 texels across."""
    return max(1, int(math.floor(math.log2(max(int(side), 1)))) - 1)


def resize_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """``[n_out, n_in]`` float64 weights of a linear (tent) resize along one axis.

    The resampling ``jax.image.resize(..., method="linear")`` does, written out:
    output sample ``i`` sits at ``(i + 1/2) * n_in / n_out - 1/2`` in input
    texels; a tent of half-width 1 input texel (``n_in / n_out`` when
    minifying with ``antialias``) weighs the input texels, normalised to sum
    1; samples outside ``[-1/2, n_in - 1/2]`` get no weight.
    """
    inv = n_in / n_out
    width = max(inv, 1.0) if antialias else 1.0
    at = (np.arange(n_out) + 0.5) * inv - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(at[:, None] - np.arange(n_in)[None, :]) / width)
    total = w.sum(1, keepdims=True)
    w = np.where(np.abs(total) > 1000.0 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1.0), 0.0)
    return np.where(((at >= -0.5) & (at <= n_in - 0.5))[:, None], w, 0.0)


@functools.lru_cache(maxsize=64)
def level_filters(n: int, levels: int) -> np.ndarray:
    """``[levels - 1, n, n]`` float32: along an axis of ``n`` texels, level ``l >= 1`` is
    the resize down by ``2**l`` (antialiased) and back up, as one matrix ``up @ down``."""
    out = []
    for level in range(1, levels):
        small = max(1, round(n / 2.0 ** level))
        out.append(resize_matrix(small, n, antialias=False) @ resize_matrix(n, small, antialias=True))
    return np.asarray(out, np.float32).reshape(levels - 1, n, n)


@functools.lru_cache(maxsize=64)
def _with_identity(n: int, levels: int) -> np.ndarray:
    """``[levels, n, n]`` float32: the identity (level 0) above :func:`level_filters`."""
    eye = np.eye(n, dtype=np.float32)[None]
    return eye if levels == 1 else np.concatenate([eye, level_filters(n, levels)], 0)


def level_matrices(n: int, levels: int, blur: MaskBlur | None = None) -> jax.Array:
    """``[levels, n, n]`` float32: along an axis of ``n`` texels, the matrix of level ``l`` of the
    masks blurred by ``blur`` (None: not blurred), ``F_l @ B(sigma)`` with ``F_0`` the identity.

    ``blur.sigma`` may be traced (one elementwise fusion per call); without a blur
    the result is a constant.
    """
    filters = _with_identity(n, levels)
    if blur is None:
        return jnp.asarray(filters)
    return times_blur(filters, blur.sigma, blur.radius)  # F_l @ B as shifted sums: one fusion


def _both_axes(x: jax.Array, levels: int, blur: MaskBlur | None) -> jax.Array:
    """``out[p, l] = R_l @ x[p] @ C_l.T`` for ``x [P, h, w]``, with ``R``, ``C`` the
    :func:`level_matrices` of its two axes (one set when the bitmaps are square): ``[P, L, h, w]``.

    Written as two plain products: the first one matrix product against the
    atlas laid out ``[h, P * w]``, the second one batched over levels. (On the
    H200 the atlas' transpose still runs every step, 1.1 us: XLA does not move
    it out of the fit's loop.)
    """
    p, h, w = x.shape
    rows = level_matrices(h, levels, blur)
    cols = rows if w == h else level_matrices(w, levels, blur)
    xt = jnp.transpose(x, (1, 0, 2)).reshape(h, p * w)                          # [j, (p, k)]
    y = jnp.matmul(rows.reshape(levels * h, h), xt, precision=HIGHEST)          # [(l, i), (p, k)]
    y = y.reshape(levels, h * p, w)                                             # [l, (i, p), k]
    z = jnp.einsum("lak,lmk->lam", y, cols, precision=HIGHEST)                  # [l, (i, p), m]
    return jnp.transpose(z.reshape(levels, h, p, w), (2, 0, 1, 3))


def blur_masks(mask: jax.Array, blur: MaskBlur | None) -> jax.Array:
    """``[P, h, w]`` masks blurred by ``blur`` (zero padding), clipped to [0, 1]; unchanged for None."""
    if blur is None:
        return mask
    return jnp.clip(_both_axes(mask, 1, blur)[:, 0], 0.0, 1.0)


def _prefiltered(images: jax.Array, levels: int) -> jax.Array:
    """``[P, h, w, C]`` images low-passed for minifications ``2**l``, ``l = 1 .. levels - 1``:
    ``[P, levels - 1, h, w, C]``, two batched matrix products (one per axis), computed
    in full float32 (``HIGHEST``: no TF32 on GPUs) as ``jax.image.resize`` computes them."""
    _, h, w, _ = images.shape
    rows, cols = jnp.asarray(level_filters(h, levels)), jnp.asarray(level_filters(w, levels))
    x = jnp.einsum("lij,pjkc->plikc", rows, images, precision=HIGHEST)
    return jnp.einsum("lmk,plikc->plimc", cols, x, precision=HIGHEST)


def pyramid(mask: jax.Array, rgb: jax.Array | None, levels: int,
            blur: MaskBlur | None = None) -> tuple[jax.Array, jax.Array | None]:
    """The ``levels`` prefiltered versions of every bitmap, as one atlas of ``P * levels`` bitmaps.

    Args:
      mask: ``[P, h, w]`` coverage in [0, 1].
      rgb: ``[P, h, w, 3]`` colours in [0, 1], or None.
      levels: ``L >= 1`` (level 0 is the bitmap itself).
      blur: blur the masks first (:class:`~diffbmp_jax.rendering.blur.MaskBlur`, colours untouched),
        or None.

    Returns:
      ``(mask [P * L, h, w], rgb [P * L, h, w, 3] or None)``; bitmap ``p`` at
      level ``l`` is entry ``p * L + l``. Colours are filtered premultiplied by
      the (blurred) mask (so transparent texels do not bleed in) and left as they
      were where a level's coverage is zero.
    """
    p, h, w = mask.shape
    if rgb is None:  # masks alone: blur and levels as one matrix per level and axis
        if levels == 1 and blur is None:
            return mask, None
        return jnp.clip(_both_axes(mask, levels, blur), 0.0, 1.0).reshape((p * levels, h, w)), None
    mask = blur_masks(mask, blur)
    if levels == 1:
        return mask, rgb
    stack = jnp.concatenate([mask[..., None], rgb * mask[..., None]], -1)
    lv = _prefiltered(stack, levels)  # [P, L - 1, h, w, C]
    out_mask = jnp.concatenate([mask[:, None], jnp.clip(lv[..., 0], 0.0, 1.0)], 1).reshape((p * levels, h, w))
    a = lv[..., :1]
    colours = jnp.where(a > 1e-6, jnp.clip(lv[..., 1:] / jnp.maximum(a, 1e-6), 0.0, 1.0), rgb[:, None])
    return out_mask, jnp.concatenate([rgb[:, None], colours], 1).reshape((p * levels, h, w, 3))


def level_template(scale: jax.Array, template: jax.Array, side: int, levels: int, num_bitmaps: int) -> jax.Array:
    """``[N]`` ids into :func:`pyramid`'s atlas: bitmap ``template[n]`` at the level for ``scale[n]``.

    Args:
      scale: ``[N]`` half-extents in pixels of the bitmaps' longer side ``side`` (texels).
      template: ``[N]`` int32 ids in ``[0, num_bitmaps)``; others stay out of range (-1),
        so the kernels keep drawing them as invisible.
    """
    m = side / (2.0 * jnp.maximum(jax.lax.stop_gradient(scale), 1e-6))
    level = jnp.clip(jnp.round(jnp.log2(jnp.maximum(m, 1e-6))), 0, levels - 1).astype(jnp.int32)
    valid = (template >= 0) & (template < num_bitmaps)
    return jnp.where(valid, template * levels + level, -1).astype(jnp.int32)


class Prefiltered(NamedTuple):
    """An atlas as the kernels sample it, filtered ahead of :func:`diffbmp_jax.render` (:func:`prefilter`).

    ``mask [P * L, h, w]`` and ``rgb [P * L, h, w, 3]`` or None: the ``L``
    levels of :func:`pyramid` (``L = num_levels(max(h, w))`` with antialiasing,
    else 1), the masks blurred by the blur they were made with. A fit's steps
    draw one each, computed for a block of steps in one batched pass ahead of
    them (:func:`diffbmp_jax.fitting.canvas.step_atlases`).
    """
    mask: jax.Array
    rgb: Any = None


def prefilter(mask: jax.Array, rgb: jax.Array | None, blur: MaskBlur | None = None,
              antialias: bool = True) -> Prefiltered:
    """What :func:`diffbmp_jax.render` samples for atlas ``mask [P, h, w]`` / ``rgb [P, h, w, 3]`` (or None),
    mask blur ``blur`` and ``antialias``: its levels (:func:`pyramid`), or the blurred masks alone
    when ``antialias`` is off or the bitmaps are too small for a second level."""
    levels = num_levels(max(mask.shape[1:])) if antialias else 1
    if levels == 1:
        return Prefiltered(blur_masks(mask, blur), rgb)
    return Prefiltered(*pyramid(mask, rgb, levels, blur))


def lod_scene(scale: jax.Array, mask: jax.Array, rgb: jax.Array | None, template: jax.Array,
              blur: MaskBlur | None = None, prefiltered: Prefiltered | None = None):
    """What the plain sampler must see to draw a scene antialiased.

    Args:
      scale: ``[N]`` primitive half-extents in pixels (as drawn: scaled
        canvases pass scaled primitives, so their levels suit the output size).
      mask, rgb: the atlas, ``[P, h, w]`` and ``[P, h, w, 3]`` or None.
      template: ``[N]`` int32 ids in ``[0, P)``.
      blur: the masks' blur (soft rasterisation), folded into the levels' filters; or None.
      prefiltered: :func:`prefilter`'s result for ``mask``, ``rgb`` and ``blur``,
        when computed ahead (then not computed here).

    Returns:
      ``(mask, rgb, template)``: :func:`pyramid`'s atlas and
      :func:`level_template`'s ids, or the (blurred) inputs when the bitmaps
      are too small for a second level.
    """
    if prefiltered is None:
        prefiltered = prefilter(mask, rgb, blur)
    side = max(mask.shape[1:])
    levels = num_levels(side)
    if levels > 1:
        template = level_template(scale, template, side, levels, mask.shape[0])
    return prefiltered.mask, prefiltered.rgb, template
