"""Learning-rate multipliers over a fit (``step -> factor``, 1 at the start)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

__all__ = ["LR_SCHEDULES", "lr_multiplier"]

LR_SCHEDULES = ("constant", "cosine", "linear", "exponential")


def lr_multiplier(kind: str, steps: int, final: float = 0.1, warmup_steps: int = 0) -> optax.Schedule:
    """An Optax schedule of the learning-rate factor.

    Args:
      kind: one of :data:`LR_SCHEDULES`; decays from 1 to ``final`` over
        ``steps`` (``"constant"`` stays 1).
      steps: length of the fit.
      final: factor reached at the last step, in [0, 1].
      warmup_steps: linear ramp from ~0 to 1 over the first steps (0 = none);
        Adam's first steps are large, so a short warm-up calms fresh primitives.
    """
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    n = max(int(steps), 1)
    if kind == "constant":
        base = optax.constant_schedule(1.0)
    elif kind == "cosine":
        base = optax.cosine_decay_schedule(1.0, n, alpha=final)
    elif kind == "linear":
        base = optax.linear_schedule(1.0, final, n)
    else:
        base = optax.exponential_decay(1.0, n, max(final, 1e-8))
    if warmup_steps <= 0:
        return base

    def schedule(count):
        ramp = jnp.minimum(1.0, (jnp.asarray(count, jnp.float32) + 1.0) / warmup_steps)
        return ramp * base(count)

    return schedule
