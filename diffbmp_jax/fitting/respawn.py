"""Pruning and respawn: invisible primitives are re-initialised where the error is largest.

A primitive is *invisible* when its opacity is below ``cfg.prune_opacity``,
its footprint square (centre +- scale, pixels) lies entirely off the canvas,
or its scale is below ``cfg.prune_min_scale`` pixels. Respawned primitives
are drawn where the (smoothed, weighted) squared error of the current image
is largest, with size and rotation from the target's structure maps
(:func:`diffbmp_jax.fitting.init.structure_maps`) and fresh optimiser moments.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.fitting import init as _init
from diffbmp_jax.rendering.blur import kernel_radius, smooth_last_two
from diffbmp_jax.fitting.config import FitConfig
from diffbmp_jax.fitting.loop import Periodic
from diffbmp_jax.fitting.optim import Theta
from diffbmp_jax.scene.primitives import logit

__all__ = ["invisible", "respawn", "schedule", "per_primitive"]


def invisible(theta: Theta, cfg: FitConfig, height: int, width: int, unit: float, xp=jnp):
    """``[N]`` bool: the pruning rule (see module docstring).

    ``theta`` is in optimiser space with ``unit`` pixels per position unit.
    ``xp=jnp`` works on (traced) JAX arrays; ``xp=np`` on host arrays, in numpy.
    """
    s = xp.exp(xp.asarray(theta.log_scale))
    xy = xp.asarray(theta.xy)
    x, y = xy[:, 0] * unit, xy[:, 1] * unit
    off = (x + s < -0.5) | (x - s > width - 0.5) | (y + s < -0.5) | (y - s > height - 0.5)
    logit = xp.asarray(theta.opacity_logit)
    opacity = jax.nn.sigmoid(logit) if xp is jnp else 1.0 / (1.0 + np.exp(-logit))
    return (opacity < cfg.prune_opacity) | off | (s < cfg.prune_min_scale)


def respawn(theta: Theta, opt_state, image, key, *, cfg: FitConfig, height: int, width: int, unit: float,
            target, weight, guide_scale, guide_angle, region=None):
    """Re-initialises invisible primitives where the error of ``image`` is largest.

    Args:
      theta: optimiser-space parameters, ``N`` primitives, ``unit`` pixels per position unit.
      opt_state: the Optax state of ``theta``; moments with leading axis ``N`` are
        zeroed for respawned primitives, so stale momentum does not throw them away.
      image, target: ``[H, W, 3]`` current render and target, in [0, 1].
      key: ``jax.random.key``.
      weight: ``[H, W, 1|3]`` per-pixel loss weights or None.
      guide_scale: ``[H, W]`` scale (pixels) a primitive respawned at a pixel gets.
      guide_angle: ``[H, W]`` rotation (radians) around which it gets one.
      region: None, or a :class:`~diffbmp_jax.fitting.engine.Region` of ``G``
        groups: the error is masked by each group's ``mask`` *before* smoothing
        (so error outside it cannot pull stamps to its edge), restricted to the
        group's ``allowed`` centres, and a primitive of group ``g`` is drawn
        from group ``g``'s distribution (a tiny floor keeps it inside
        ``allowed`` where the error is zero).

    Returns:
      ``(theta, opt_state, count)``, ``count`` the int32 number of respawned primitives.
    """
    h, w = height, width
    n = theta.log_scale.shape[0]
    dead = invisible(theta, cfg, h, w, unit)

    err = jnp.sum(jnp.square(image - target), -1)
    if weight is not None:
        err = err * jnp.mean(weight, -1)
    # Smooth over about a stamp so that new primitives go to error regions,
    # not to isolated noisy pixels.
    sig = min(max(1.0, 0.5 * _init.base_scale(h, w, n, cfg.coverage)), 0.1 * float(max(h, w)))
    radius = min(kernel_radius(sig), max(h, w) // 2 + 1)
    k1, k2 = jax.random.split(key)
    if region is None:
        err = smooth_last_two(err, sig, radius)
        xy = _init.sample_pixels(err.reshape(-1) + 1e-12, k1, n, h, w)
    else:
        err = smooth_last_two(err[None] * region.mask, sig, radius)  # [G, H, W]
        prob = (err + 1e-12) * region.allowed
        xy = jnp.zeros((n, 2), jnp.float32)
        for g in range(prob.shape[0]):
            xy_g = _init.sample_pixels(prob[g].reshape(-1), jax.random.fold_in(k1, g), n, h, w)
            xy = jnp.where((region.group == g)[:, None], xy_g, xy)
    new = Theta(
        xy=xy / unit,
        log_scale=jnp.log(_init.sample_colors(guide_scale[..., None], xy)[:, 0]),
        rotation=_init.sample_colors(guide_angle[..., None], xy)[:, 0]
        + jax.random.uniform(k2, (n,), minval=-0.3, maxval=0.3),
        opacity_logit=jnp.full((n,), logit(cfg.init_opacity, 1e-4)),
        color_logit=logit(_init.sample_colors(target, xy), 0.02),
    )
    theta = Theta(*(jnp.where(per_primitive(dead, b), a, b) for a, b in zip(new, theta)))

    def reset(leaf):
        if hasattr(leaf, "ndim") and leaf.ndim >= 1 and leaf.shape[0] == n:
            return jnp.where(per_primitive(dead, leaf), 0.0, leaf)
        return leaf

    opt_state = jax.tree_util.tree_map(reset, opt_state)
    return theta, opt_state, jnp.sum(dead).astype(jnp.int32)


def per_primitive(mask, leaf):
    """``[N]`` ``mask`` reshaped to broadcast against ``leaf`` ``[N, ...]``."""
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _prune_every(static) -> int:
    return static.cfg.prune_every


def _before_prune_until(static, t, steps):
    return t + 1 < static.cfg.prune_until * steps


def schedule(apply) -> Periodic:
    """``apply(static, data, carry, t, steps) -> (carry, count)`` on the respawn schedule of
    ``static.cfg`` (a :class:`FitConfig`): after every ``prune_every``-th step, until
    ``prune_until`` of the run's ``steps``. For :func:`diffbmp_jax.fitting.loop.scan_steps`."""
    return Periodic(every=_prune_every, due=_before_prune_until, apply=apply)
