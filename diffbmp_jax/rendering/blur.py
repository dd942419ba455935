"""Gaussian filtering and the soft-rasterisation schedule (blurred atlas masks).

During optimisation the atlas masks are blurred with a Gaussian of std ``sigma``
(bitmap pixels) annealed to 0, so that primitives far from an edge still get a
gradient early on; the final render uses the sharp atlas (docs/DESIGN.md §1).
Everything here is plain JAX and works on traced ``sigma`` (inside ``jit``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax import validation as V
from diffbmp_jax.scene.atlas import Atlas

__all__ = ["gaussian_kernel1d", "gaussian_filter", "filter_matrix", "smooth_last_two", "blur_atlas", "blur_sigma", "kernel_radius"]


def kernel_radius(sigma_max: float) -> int:
    """Static tap radius that holds a Gaussian of std up to ``sigma_max`` (3 sigma)."""
    return max(0, int(math.ceil(3.0 * float(sigma_max))))


def gaussian_kernel1d(sigma, radius: int) -> jax.Array:
    """``[2 * radius + 1]`` normalised Gaussian taps of std ``sigma`` (may be traced).

    ``sigma == 0`` gives the identity kernel (a single 1 in the middle), so an
    annealed sigma reaching 0 needs no special case.
    """
    i = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    # The tiny constant makes sigma = 0 a delta instead of 0/0.
    k = jnp.exp(-(i * i) / (2.0 * sigma * sigma + 1e-12))
    return k / jnp.sum(k)


def _filter_axis(x: jax.Array, k: jax.Array, axis: int, mode: str) -> jax.Array:
    """Correlates ``x`` with taps ``k`` along ``axis`` by summing shifted slices."""
    r = (k.shape[0] - 1) // 2
    if r == 0:
        return x * k[0]
    n = x.shape[axis]
    if mode == "same":
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        x = jnp.pad(x, pad)  # zero padding: bitmaps are transparent outside
        out_len = n
    elif mode == "reflect":
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        x = jnp.pad(x, pad, mode="reflect" if n > r else "edge")
        out_len = n
    elif mode == "valid":
        out_len = n - 2 * r
    else:
        raise ValueError(f"mode must be 'same', 'reflect' or 'valid', got {mode!r}")
    out = 0.0
    for j in range(2 * r + 1):
        out = out + k[j] * jax.lax.slice_in_dim(x, j, j + out_len, axis=axis)
    return out


def gaussian_filter(x: jax.Array, sigma, radius: int, *, axes=(-2, -1), mode: str = "same") -> jax.Array:
    """Separable Gaussian filter of ``x`` over two ``axes`` (default the last two).

    Args:
      x: array, e.g. ``[P, h, w]`` masks or ``[H, W, C]`` images (``axes=(0, 1)``).
      sigma: std in pixels (float or traced scalar).
      radius: static tap radius; ``2 * radius + 1`` taps per axis.
      mode: ``"same"`` (zero padding), ``"reflect"`` or ``"valid"`` (output
        shrinks by ``2 * radius`` along each axis).
    """
    k = gaussian_kernel1d(sigma, radius)
    for ax in axes:
        x = _filter_axis(x, k, ax % x.ndim, mode)
    return x


@functools.lru_cache(maxsize=32)
def filter_matrix(n: int, sigma: float, radius: int, mode: str = "same") -> np.ndarray:
    """``[n, n]`` float32 matrix ``F``: ``F @ x`` is :func:`gaussian_filter` of ``x`` along its first axis.

    For a static ``sigma`` (pixels) and ``mode`` ``"same"`` (zero padding) or
    ``"reflect"`` (``"edge"`` where ``n <= radius``, as :func:`gaussian_filter`).
    Two products compile in a fraction of the time of ``2 * radius + 1``
    shifted slices per axis (the structure maps filter five maps with radii of
    20 texels and more), and cost ``O(n)`` per sample instead of ``O(radius)``.
    """
    if mode not in ("same", "reflect"):
        raise ValueError(f"mode must be 'same' or 'reflect', got {mode!r}")
    n, radius = V.check_count("n", n, 1), V.check_count("radius", radius, 0)
    if not (isinstance(sigma, (int, float, np.floating, np.integer)) and 0.0 <= float(sigma) < math.inf):
        raise ValueError(f"sigma must be a finite number >= 0 (pixels), got {sigma!r}")
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(taps * taps) / (2.0 * float(sigma) ** 2 + 1e-12))
    k /= k.sum()
    rows = np.repeat(np.arange(n), 2 * radius + 1)
    src = (np.arange(n)[:, None] + taps[None, :].astype(np.int64)).reshape(-1)
    weights = np.tile(k, n)
    if mode == "same":
        inside = (src >= 0) & (src < n)
        rows, src, weights = rows[inside], src[inside], weights[inside]
    elif n > radius:  # reflect about the end samples, which are not repeated
        src = np.abs(src)
        src = np.where(src > n - 1, 2 * (n - 1) - src, src)
    else:
        src = np.clip(src, 0, n - 1)
    out = np.zeros((n, n), np.float64)
    np.add.at(out, (rows, src), weights)
    return out.astype(np.float32)


def smooth_last_two(x: jax.Array, sigma: float, radius: int, mode: str = "reflect") -> jax.Array:
    """:func:`gaussian_filter` of ``x [..., H, W]`` over its last two axes, for a static ``sigma``,
    as two matrix products with :func:`filter_matrix` (full float32: no TF32 on GPUs).

    Same values as the shifted slices to float rounding; a product compiles in a
    fraction of the time of ``2 * (2 * radius + 1)`` slices (seconds on a GPU at
    radii of 20 pixels and more) and suits the few fixed-size maps the fit smooths.
    """
    if np.ndim(x) < 2:
        raise ValueError(f"x must have at least two axes [..., H, W], got shape {tuple(np.shape(x))}")
    h, w = x.shape[-2:]
    highest = jax.lax.Precision.HIGHEST
    rows, cols = filter_matrix(h, sigma, radius, mode), filter_matrix(w, sigma, radius, mode)
    return jnp.matmul(jnp.matmul(rows, x, precision=highest), cols.T, precision=highest)


def blur_atlas(atlas: Atlas, sigma, radius: int) -> Atlas:
    """The atlas with its masks ``[P, h, w]`` blurred by a Gaussian of std ``sigma``.

    Colours are left alone: only coverage decides where a primitive has influence.
    The result is clipped to [0, 1] and carries no gradient to the atlas.
    """
    mask = jax.lax.stop_gradient(jnp.asarray(atlas.mask, jnp.float32))
    if radius > 0:
        mask = jnp.clip(gaussian_filter(mask, sigma, radius, mode="same"), 0.0, 1.0)
    return Atlas(mask=mask, rgb=atlas.rgb)


def blur_sigma(step, total_steps, sigma0: float, anneal_frac: float) -> jax.Array:
    """Annealed blur std at ``step``: ``sigma0 * (1 - step / (anneal_frac * total))^2``, >= 0.

    Reaches 0 after ``anneal_frac`` of the fit; quadratic so most of the
    schedule runs at small sigma, where the gradients match the sharp render.
    ``step`` and ``total_steps`` may be traced.
    """
    end = jnp.maximum(1.0, anneal_frac * jnp.asarray(total_steps, jnp.float32))
    t = jnp.clip(1.0 - jnp.asarray(step, jnp.float32) / end, 0.0, 1.0)
    return sigma0 * t * t


def annealed_atlas(atlas: Atlas, step, total_steps, sigma0: float, anneal_frac: float) -> Atlas:
    """The atlas a training step renders with (soft rasterisation).

    Masks blurred with the std :func:`blur_sigma` gives at ``step`` (bitmap
    pixels; the kernel sized for ``sigma0``); ``sigma0 <= 0`` returns
    ``atlas`` unchanged (sharp). ValueError when ``sigma0`` exceeds the bitmaps' side.
    """
    if sigma0 <= 0:
        return atlas
    side = max(atlas.mask.shape[-2:])
    if sigma0 > side:  # wider blurs only flatten the bitmap, at a cost growing with sigma
        raise ValueError(f"blur_sigma must be at most the bitmaps' size ({side} px), got {sigma0!r}")
    return blur_atlas(atlas, blur_sigma(step, total_steps, sigma0, anneal_frac), kernel_radius(sigma0))
