"""Differentiable image losses: MSE, L1, SSIM, weighted combinations, weight masks.

Images are ``[..., H, W, C]`` floats in [0, 1]. A weight mask is ``[H, W]``,
``[H, W, 1]`` or ``[H, W, C]`` of non-negative floats; a weighted loss is the
mask-weighted mean, normalised by the mean weight, so a mask of all ones gives
the plain loss and the scale of the loss does not depend on the mask's scale.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.rendering.blur import gaussian_filter

__all__ = ["mse", "l1", "ssim", "ssim_loss", "combined_loss", "check_weight_mask"]

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_C1 = 0.01 ** 2  # (K1 * data range)^2, data range 1
SSIM_C2 = 0.03 ** 2


def check_weight_mask(weight_mask, height: int, width: int, channels: int = 3):
    """Validates a weight mask and returns it as float32 ``[H, W, 1 or C]`` (or None).

    Raises ValueError naming ``weight_mask`` on a wrong shape, negative or
    non-finite values, or an all-zero mask.
    """
    if weight_mask is None:
        return None
    w = jnp.asarray(weight_mask, jnp.float32)
    if w.ndim == 2:
        w = w[..., None]
    if w.ndim != 3 or w.shape[:2] != (height, width) or w.shape[2] not in (1, channels):
        raise ValueError(f"weight_mask must have shape ({height}, {width}), ({height}, {width}, 1) or "
                         f"({height}, {width}, {channels}) to match the target, got {tuple(np.shape(weight_mask))}")
    if not isinstance(w, jax.core.Tracer):
        a = np.asarray(w)
        if not np.all(np.isfinite(a)):
            raise ValueError("weight_mask contains non-finite values (NaN or inf)")
        if np.any(a < 0):
            raise ValueError("weight_mask must be >= 0 everywhere")
        if not np.any(a > 0):
            raise ValueError("weight_mask is zero everywhere: nothing would be fitted")
    return w


def _weighted_mean(err: jax.Array, weight) -> jax.Array:
    """Mean of ``err [..., H, W, C]``, weighted by ``weight [H, W, 1|C]`` if given."""
    if weight is None:
        return jnp.mean(err)
    w = jnp.broadcast_to(weight, err.shape[-3:])
    return jnp.mean(err * w) / jnp.mean(w)


def mse(image: jax.Array, target: jax.Array, weight=None) -> jax.Array:
    """Mean squared error (scalar); optionally weighted by a mask ``[H, W(, 1|C)]``."""
    return _weighted_mean(jnp.square(image - target), weight)


def l1(image: jax.Array, target: jax.Array, weight=None) -> jax.Array:
    """Mean absolute error (scalar); optionally weighted by a mask."""
    return _weighted_mean(jnp.abs(image - target), weight)


def ssim_map(x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-pixel SSIM ``[..., H - 2r, W - 2r, C]`` (Gaussian window, std 1.5, valid).

    The window radius shrinks for images smaller than 11 pixels so tiny test
    images still get a value.
    """
    h, w = x.shape[-3], x.shape[-2]
    r = max(0, min(SSIM_RADIUS, (min(h, w) - 1) // 2))

    def f(a):
        return gaussian_filter(a, SSIM_SIGMA, r, axes=(-3, -2), mode="valid")

    mx, my = f(x), f(y)
    sxx = f(x * x) - mx * mx
    syy = f(y * y) - my * my
    sxy = f(x * y) - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mx * mx + my * my + SSIM_C1) * (sxx + syy + SSIM_C2)
    return num / den


def ssim(image: jax.Array, target: jax.Array, weight=None) -> jax.Array:
    """Mean structural similarity (scalar, 1 for identical images), data range 1.

    With a weight mask, the SSIM map is weighted by the mask cropped to the
    map's valid region.
    """
    m = ssim_map(image, target)
    if weight is not None:
        h, w = image.shape[-3], image.shape[-2]
        dh, dw = (h - m.shape[-3]) // 2, (w - m.shape[-2]) // 2
        weight = jnp.asarray(weight)[dh:h - dh, dw:w - dw]
    return _weighted_mean(m, weight)


def ssim_loss(image: jax.Array, target: jax.Array, weight=None) -> jax.Array:
    """``1 - ssim``: 0 for identical images."""
    return 1.0 - ssim(image, target, weight)


def combined_loss(image: jax.Array, target: jax.Array, *, mse_weight: float = 1.0, l1_weight: float = 0.0,
                  ssim_weight: float = 0.0, weight=None) -> jax.Array:
    """``mse_weight * MSE + l1_weight * L1 + ssim_weight * (1 - SSIM)`` (scalar).

    Terms with weight 0 are not computed (the weights are static floats).
    """
    total = jnp.zeros((), jnp.float32)
    if mse_weight:
        total = total + mse_weight * mse(image, target, weight)
    if l1_weight:
        total = total + l1_weight * l1(image, target, weight)
    if ssim_weight:
        total = total + ssim_weight * ssim_loss(image, target, weight)
    return total
