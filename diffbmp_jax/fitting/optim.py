"""The optimiser: its normalised parameter space (:class:`Theta`) and Adam with per-field rates.

Inside the optimiser the parameters live in a normalised space: positions in
units of a length ``unit`` (pixels; :func:`diffbmp_jax.fit` uses the typical
stamp half-extent :func:`diffbmp_jax.fitting.init.base_scale`) and scales as
logarithms, so that one set of learning rates suits any canvas size and
primitive count, and scales stay positive.

The optimiser is Adam written out here rather than an Optax chain: it is a
few lines, it computes what ``optax.chain(scale_by_adam, scale_by_schedule,
per-field rates)`` computes (``tests/test_fit.py`` compares the two), and a
process that fits no longer imports Optax (0.1 s on 2 CPU cores,
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import functools

import math
from typing import Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.fitting.config import FitConfig
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.fitting.schedules import lr_multiplier

__all__ = ["Theta", "AdamState", "Optimizer", "to_theta", "host_theta", "initial_state", "to_params", "make_optimizer",
           "apply_updates", "finite_grads", "clamp_theta", "PACKED_WIDTH", "pack", "unpack", "clamp_packed"]


class Theta(NamedTuple):
    """Optimiser-space parameters (see module docstring); leading axis ``N``."""
    xy: jax.Array             # [N, 2] position / unit
    log_scale: jax.Array      # [N] log of the half-extent in pixels
    rotation: jax.Array       # [N] radians
    opacity_logit: jax.Array  # [N]
    color_logit: jax.Array    # [N, 3]


class AdamState(NamedTuple):
    """Adam's state for a :class:`Theta`: steps taken and the two moments (each field's shape)."""
    count: jax.Array  # int32 scalar
    mu: Theta         # first moment (mean of the gradients)
    nu: Theta         # second moment (mean of their squares)


class Optimizer(NamedTuple):
    """``init(theta) -> state`` and ``update(grads, state, params=None) -> (updates, state)``,
    the calling convention of an Optax ``GradientTransformation``; add the updates with
    :func:`apply_updates`."""
    init: Callable
    update: Callable


# A Theta packed as one [N, 8] array (columns: x, y, log_scale, rotation, opacity_logit, and
# the three colour logits): a step's Adam update and clamps are then one elementwise pass over
# one array (on a GPU, one fusion instead of one per field; XLA does not fuse the fields' passes).
_WIDTHS = (2, 1, 1, 1, 3)
PACKED_WIDTH = sum(_WIDTHS)


def pack(t: Theta) -> jax.Array:
    """:class:`Theta` -> ``[..., N, 8]`` (columns in field order; leading axes, e.g. scenes, kept)."""
    if not isinstance(t, Theta):
        raise TypeError(f"pack: t must be a Theta, got {type(t).__name__}")
    lead = t.log_scale.shape
    return jnp.concatenate([jnp.reshape(f, lead + (w,)) for f, w in zip(t, _WIDTHS)], axis=-1)


def unpack(p: jax.Array) -> Theta:
    """``[..., N, 8]`` -> :class:`Theta`; the inverse of :func:`pack`."""
    if jnp.ndim(p) < 2 or jnp.shape(p)[-1] != PACKED_WIDTH:
        raise ValueError(f"unpack: p must have shape [..., N, {PACKED_WIDTH}], got {jnp.shape(p)}")
    out, at = [], 0
    for w, shape in zip(_WIDTHS, ((2,), (), (), (), (3,))):
        out.append(p[..., at:at + w].reshape(p.shape[:-1] + shape))
        at += w
    return Theta(*out)


def to_theta(p: Primitives, unit: float) -> Theta:
    """:class:`Primitives` (pixel units) -> :class:`Theta`; ``unit`` is pixels per position unit.

    Always float32 (also under ``jax_enable_x64``): the optimiser's carry keeps one dtype.
    """
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return Theta(f32(p.xy) / f32(unit), jnp.log(f32(p.scale)), f32(p.rotation), f32(p.opacity_logit),
                 f32(p.color_logit))


def host_theta(p: Primitives, unit: float) -> Theta:
    """:func:`to_theta` computed on the host (NumPy), then put on the device: no program to compile."""
    if not isinstance(p, Primitives):
        raise TypeError(f"p must be a diffbmp_jax.Primitives, got {type(p).__name__}")
    f32 = functools.partial(np.asarray, dtype=np.float32)
    fields = (f32(p.xy) / np.float32(unit), np.log(f32(p.scale)), f32(p.rotation), f32(p.opacity_logit),
              f32(p.color_logit))
    return Theta(*(jax.device_put(f.astype(np.float32)) for f in fields))


def initial_state(optimizer: Optimizer, theta: Theta):
    """``optimizer.init(theta)`` without compiling: the state's shapes from ``jax.eval_shape``, its
    values zeros (Adam's moments and every count start at 0; ``tests/test_fit.py`` compares
    the result with ``optimizer.init``)."""
    shapes = jax.eval_shape(optimizer.init, theta)
    return jax.tree.map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype)), shapes)


def to_params(t: Theta, unit: float) -> Primitives:
    """:class:`Theta` -> :class:`Primitives` (pixel units); the inverse of :func:`to_theta`."""
    return Primitives(xy=t.xy * unit, scale=jnp.exp(t.log_scale), rotation=t.rotation,
                      opacity_logit=t.opacity_logit, color_logit=t.color_logit)


def make_optimizer(cfg: FitConfig, steps: int) -> Optimizer:
    """Adam, then the decay schedule over ``steps`` steps, then one learning rate per field.

    The learning rates ``cfg.lr_xy`` (position units), ``lr_scale`` (log
    scale), ``lr_rotation`` (radians), ``lr_opacity``, ``lr_color`` (logits)
    are step sizes per step of a :class:`Theta`. Step ``t`` (from 0) moves each
    entry by ``-lr * schedule(t) * m / (sqrt(v) + 1e-8)``, ``m`` and ``v`` the
    bias-corrected moments (decays ``cfg.adam_b1``, ``cfg.adam_b2``); ``steps``
    may be a traced int32 scalar.
    """
    lrs = Theta(cfg.lr_xy, cfg.lr_scale, cfg.lr_rotation, cfg.lr_opacity, cfg.lr_color)
    packed_lrs = np.repeat(np.asarray(lrs, np.float32), _WIDTHS)  # [8]: one rate per column of pack()
    b1, b2, eps = float(cfg.adam_b1), float(cfg.adam_b2), 1e-8
    schedule = lr_multiplier(cfg.lr_schedule, steps, cfg.lr_final, cfg.warmup_steps)

    def init(theta: Theta) -> AdamState:
        zeros = Theta(*(jnp.zeros_like(f) for f in theta))
        return AdamState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(grads, state: AdamState, params=None):
        """``grads`` a :class:`Theta` (moments too), or one packed array (:func:`pack`; moments too)."""
        del params
        rates = lrs if isinstance(grads, Theta) else packed_lrs  # the same tree as grads
        mu = jax.tree.map(lambda g, m: (1.0 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree.map(lambda g, v: (1.0 - b2) * g * g + b2 * v, grads, state.nu)
        t = (state.count + 1).astype(jnp.float32)
        keep1, keep2 = 1.0 - jnp.power(jnp.float32(b1), t), 1.0 - jnp.power(jnp.float32(b2), t)
        factor = schedule(state.count)  # the schedule sees the steps taken before this one

        def step(m, v, lr):
            return (-lr * factor) * ((m / keep1) / (jnp.sqrt(v / keep2) + eps)).astype(m.dtype)

        updates = jax.tree.map(step, mu, nu, rates)
        return updates, AdamState(state.count + 1, mu, nu)

    return Optimizer(init, update)


def apply_updates(theta, updates):
    """``theta + updates``, field by field (or packed, :func:`pack`), in each field's dtype."""
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), theta, updates)


def finite_grads(grads):
    """Zeroes non-finite gradient entries, so a degenerate primitive cannot poison the optimiser state."""
    return jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)


def _clamp_bounds(cfg: FitConfig, size: float, unit: float):
    """``((xy lo, hi), (log_scale lo, hi))`` of :func:`clamp_theta`."""
    return (-0.5 * size / unit, 1.5 * size / unit), (math.log(0.05), math.log(cfg.max_scale * size))


def clamp_packed(p: jax.Array, cfg: FitConfig, size: float, unit: float) -> jax.Array:
    """:func:`clamp_theta` of a packed ``[N, 8]`` theta: one clip against per-column bounds."""
    (xy_lo, xy_hi), (ls_lo, ls_hi) = _clamp_bounds(cfg, size, unit)
    inf = np.float32(np.inf)
    lo = np.array([xy_lo] * 2 + [ls_lo] + [-inf] * 5, np.float32)
    hi = np.array([xy_hi] * 2 + [ls_hi] + [inf] * 5, np.float32)
    return jnp.clip(p, lo, hi)


def clamp_theta(theta: Theta, cfg: FitConfig, size: float, unit: float) -> Theta:
    """Keeps scales in ``[0.05, cfg.max_scale * size]`` pixels and centres within
    ``[-0.5, 1.5] * size`` pixels (``size``: the canvas' longer side, pixels);
    pruning catches what leaves the canvas anyway."""
    (xy_lo, xy_hi), (ls_lo, ls_hi) = _clamp_bounds(cfg, size, unit)
    return theta._replace(log_scale=jnp.clip(theta.log_scale, ls_lo, ls_hi), xy=jnp.clip(theta.xy, xy_lo, xy_hi))
