"""Gaussian filtering and the soft-rasterisation schedule (blurred atlas masks).

During optimisation the atlas masks are blurred with a Gaussian of std ``sigma``
(bitmap pixels) annealed to 0, so that primitives far from an edge still get a
gradient early on; the final render uses the sharp atlas (docs/DESIGN.md §1.8).
A step hands :func:`annealed_blur`'s :class:`MaskBlur` to the render, which
folds it into the mip levels' filters (:mod:`diffbmp_jax.rendering.mipmap`).
Everything here is plain JAX and works on traced ``sigma`` (inside ``jit``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax import validation as V

__all__ = ["MaskBlur", "gaussian_kernel1d", "gaussian_taps", "gaussian_filter", "filter_matrix", "times_blur",
           "blur_matrix", "smooth_last_two", "blur_sigma", "annealed_blur", "kernel_radius", "check_mask_blur"]


class MaskBlur(NamedTuple):
    """A Gaussian blur of the atlas masks that :func:`diffbmp_jax.render` applies (``mask_blur=``).

    ``sigma`` is the std in bitmap texels (a float or a traced scalar, >= 0; 0
    is no blur); ``radius`` the static number of taps on each side (at least
    ``3 * sigma`` for a faithful Gaussian: :func:`kernel_radius`). Zero padding:
    texels outside a bitmap are transparent.
    """
    sigma: Any
    radius: int


def kernel_radius(sigma_max: float) -> int:
    """Static tap radius that holds a Gaussian of std up to ``sigma_max`` (3 sigma)."""
    return max(0, int(math.ceil(3.0 * float(sigma_max))))


def gaussian_kernel1d(sigma, radius: int) -> jax.Array:
    """``[2 * radius + 1]`` normalised Gaussian taps of std ``sigma`` (may be traced).

    ``sigma == 0`` gives the identity kernel (a single 1 in the middle), so an
    annealed sigma reaching 0 needs no special case.
    """
    return jnp.stack(gaussian_taps(sigma, radius))


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


def gaussian_taps(sigma, radius: int) -> list:
    """The ``2 * radius + 1`` normalised Gaussian taps of std ``sigma`` (may be traced), as scalars.

    :func:`gaussian_kernel1d` without its array: the normalising sum is unrolled,
    so the taps fuse with what uses them instead of costing a reduction.
    """
    s2 = 2.0 * jnp.asarray(sigma, jnp.float32) ** 2 + 1e-12  # the tiny constant: sigma = 0 is a delta
    taps = [jnp.exp(-float(t * t) / s2) for t in range(-radius, radius + 1)]
    total = sum(taps)
    return [tap / total for tap in taps]


def times_blur(m: np.ndarray, sigma, radius: int) -> jax.Array:
    """``m @ B`` for a constant ``m [..., k, n]``, ``B [n, n]`` the Gaussian filter of std ``sigma``
    (may be traced; mode ``"same"``, zero padding) along an axis of ``n``: ``B @ x`` is
    :func:`gaussian_filter` of ``x`` along its first axis.

    ``B`` is banded, so the product is ``2 * radius + 1`` shifted copies of ``m``
    weighted by the taps: one elementwise fusion, not a matrix product.
    """
    pad = [(0, 0)] * (np.ndim(m) - 1) + [(radius, radius)]
    padded = np.pad(np.asarray(m, np.float32), pad)
    n = np.shape(m)[-1]
    taps = gaussian_taps(sigma, radius)
    return sum(w * jnp.asarray(padded[..., radius - t:radius - t + n]) for t, w in zip(range(-radius, radius + 1), taps))


def blur_matrix(n: int, sigma, radius: int) -> jax.Array:
    """``[n, n]`` float32 matrix ``B``: ``B @ x`` is :func:`gaussian_filter` of ``x`` (mode ``"same"``,
    zero padding) along its first axis, for a ``sigma`` that may be traced (:func:`times_blur` of the
    identity; ``sigma = 0`` gives the identity)."""
    return times_blur(np.eye(n, dtype=np.float32), sigma, radius)


def check_mask_blur(mask_blur) -> MaskBlur | None:
    """Validates the ``mask_blur`` argument of :func:`diffbmp_jax.render`: None or a :class:`MaskBlur`
    (``radius`` an int >= 0; ``sigma`` a finite scalar >= 0 when concrete). Returns it, or None for no blur."""
    if mask_blur is None:
        return None
    if not isinstance(mask_blur, MaskBlur):
        raise TypeError(f"mask_blur must be None or a diffbmp_jax.MaskBlur(sigma, radius), got {type(mask_blur).__name__}")
    radius = mask_blur.radius
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ValueError(f"mask_blur.radius must be a Python int >= 0 (taps on each side), got {radius!r}")
    if np.ndim(mask_blur.sigma) != 0:
        raise ValueError(f"mask_blur.sigma must be a scalar (texels), got shape {tuple(np.shape(mask_blur.sigma))}")
    if V.is_concrete(mask_blur.sigma):
        sigma = float(np.asarray(mask_blur.sigma))
        if not (0.0 <= sigma < math.inf):
            raise ValueError(f"mask_blur.sigma must be a finite number >= 0 (texels), got {sigma!r}")
    return MaskBlur(mask_blur.sigma, int(radius)) if radius > 0 else None


def blur_sigma(step, total_steps, sigma0: float, anneal_frac: float) -> jax.Array:
    """Annealed blur std at ``step``: ``sigma0 * (1 - step / (anneal_frac * total))^2``, >= 0.

    Reaches 0 after ``anneal_frac`` of the fit; quadratic so most of the
    schedule runs at small sigma, where the gradients match the sharp render.
    ``step`` and ``total_steps`` may be traced.
    """
    end = jnp.maximum(1.0, anneal_frac * jnp.asarray(total_steps, jnp.float32))
    t = jnp.clip(1.0 - jnp.asarray(step, jnp.float32) / end, 0.0, 1.0)
    return sigma0 * t * t


def annealed_blur(step, total_steps, sigma0: float, anneal_frac: float, side: int) -> MaskBlur | None:
    """The mask blur a training step renders with (soft rasterisation), for :func:`diffbmp_jax.render`'s ``mask_blur``.

    The std :func:`blur_sigma` gives at ``step`` (bitmap texels; the taps sized
    for ``sigma0``); None when ``sigma0 <= 0`` (sharp). ValueError when
    ``sigma0`` exceeds ``side``, the bitmaps' longer side in texels.
    """
    if sigma0 <= 0:
        return None
    if sigma0 > side:  # wider blurs only flatten the bitmap, at a cost growing with sigma
        raise ValueError(f"blur_sigma must be at most the bitmaps' size ({side} px), got {sigma0!r}")
    return MaskBlur(blur_sigma(step, total_steps, sigma0, anneal_frac), kernel_radius(sigma0))
