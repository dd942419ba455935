"""Learning-rate multipliers over a fit (``step -> factor``, 1 at the start)."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

__all__ = ["LR_SCHEDULES", "lr_multiplier"]

LR_SCHEDULES = ("constant", "cosine", "linear", "exponential")


def lr_multiplier(kind: str, steps, final: float = 0.1, warmup_steps: int = 0) -> Callable:
    """A schedule of the learning-rate factor: ``count`` (steps taken, an int scalar) -> float32 factor.

    Args:
      kind: one of :data:`LR_SCHEDULES`; decays from 1 to ``final`` over
        ``steps`` (``"constant"`` stays 1).
      steps: length of the fit; an int or a traced int32 scalar (a fit's
        compiled steps do not depend on its length).
      final: factor reached at the last step, in [0, 1].
      warmup_steps: linear ramp from ~0 to 1 over the first steps (0 = none);
        Adam's first steps are large, so a short warm-up calms fresh primitives.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")

    def base(count):
        n = jnp.maximum(jnp.asarray(steps, jnp.float32), 1.0)
        done = jnp.minimum(jnp.asarray(count, jnp.float32), n) / n  # fraction of the fit, in [0, 1]
        if kind == "constant":
            return jnp.ones_like(done)
        if kind == "cosine":
            return final + (1.0 - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
        if kind == "linear":
            return 1.0 + (final - 1.0) * done
        return jnp.power(max(final, 1e-8), done)  # exponential

    if warmup_steps <= 0:
        return base

    def schedule(count):
        ramp = jnp.minimum(1.0, (jnp.asarray(count, jnp.float32) + 1.0) / warmup_steps)
        return ramp * base(count)

    return schedule
