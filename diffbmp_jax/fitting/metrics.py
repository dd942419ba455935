"""Image quality metrics: PSNR (dB) and SSIM, for images in [0, 1]."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from diffbmp_jax.fitting.losses import SSIM_C1, SSIM_C2, SSIM_RADIUS, SSIM_SIGMA, mse, ssim

__all__ = ["psnr", "ssim", "score_ssim"]


def psnr(image: jax.Array, target: jax.Array, max_value: float = 1.0, weight=None) -> jax.Array:
    """Peak signal-to-noise ratio in dB: ``10 log10(max_value^2 / MSE)``.

    Args:
      image, target: ``[..., H, W, C]`` in ``[0, max_value]``.
      weight: optional mask ``[H, W(, 1|C)]`` (see :mod:`diffbmp_jax.fitting.losses`).

    Identical images give ``inf``.
    """
    err = mse(jnp.asarray(image, jnp.float32), jnp.asarray(target, jnp.float32), weight)
    return 10.0 * jnp.log10(max_value ** 2 / err)


def score_ssim(image, target) -> float:
    """:func:`ssim` of a final image ``[H, W, C]`` against its target, on the host in NumPy.

    The same value as :func:`ssim` (to float32 rounding) without compiling
    anything: a fit's closing score, not a loss. Compiled, the shifted slices
    of its Gaussian windows took 1.6 s to compile on 2 CPU cores and 18 s on
    an H200 (``benchmarks/RESULTS.md``); here the five windowed sums are one
    stacked array, filtered once (0.1 s at 512 x 512 on 2 cores).
    """
    x = np.asarray(image, np.float32)
    y = np.asarray(target, np.float32)
    h, w, c = x.shape[-3], x.shape[-2], x.shape[-1]
    r = max(0, min(SSIM_RADIUS, (min(h, w) - 1) // 2))
    i = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(i * i) / (2.0 * SSIM_SIGMA ** 2))
    k = (k / k.sum()).astype(np.float32)
    stack = np.concatenate([x, y, x * x, y * y, x * y], axis=-1)  # [H, W, 5C]
    for axis in (0, 1):  # separable, "valid": windows along the axis, dotted with the taps
        stack = sliding_window_view(stack, 2 * r + 1, axis=axis) @ k
    mx, my, fxx, fyy, fxy = (stack[..., q * c:(q + 1) * c] for q in range(5))
    sxx, syy, sxy = fxx - mx * mx, fyy - my * my, fxy - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mx * mx + my * my + SSIM_C1) * (sxx + syy + SSIM_C2)
    return float(np.mean(num / den, dtype=np.float64))
