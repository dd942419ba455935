"""Image quality metrics: PSNR (dB) and SSIM, for images in [0, 1]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffbmp_jax.fitting.losses import mse, ssim

__all__ = ["psnr", "ssim"]


def psnr(image: jax.Array, target: jax.Array, max_value: float = 1.0, weight=None) -> jax.Array:
    """Peak signal-to-noise ratio in dB: ``10 log10(max_value^2 / MSE)``.

    Args:
      image, target: ``[..., H, W, C]`` in ``[0, max_value]``.
      weight: optional mask ``[H, W(, 1|C)]`` (see :mod:`diffbmp_jax.fitting.losses`).

    Identical images give ``inf``.
    """
    err = mse(jnp.asarray(image, jnp.float32), jnp.asarray(target, jnp.float32), weight)
    return 10.0 * jnp.log10(max_value ** 2 / err)
