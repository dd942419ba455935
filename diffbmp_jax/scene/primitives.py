"""The differentiable state of a scene: one pytree of float arrays."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["Primitives", "FIELDS", "logit"]

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")
"""The five fields of :class:`Primitives`, in order."""
_TRAILING = {"xy": (2,), "scale": (), "rotation": (), "opacity_logit": (), "color_logit": (3,)}


def logit(p, eps: float):
    """Inverse sigmoid of ``p`` (array or scalar) clipped to ``[eps, 1 - eps]``, float32.

    ``eps`` is a Python float in (0, 0.5): how close to 0 and 1 an opacity or
    colour may be asked for (its logit is finite).
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    p = jnp.clip(jnp.asarray(p, jnp.float32), eps, 1.0 - eps)
    return jnp.log(p) - jnp.log1p(-p)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Primitives:
    """Parameters of ``N`` bitmap primitives (docs/DESIGN.md §1).

    Attributes:
      xy: ``[N, 2]`` centre in canvas pixels, ``x`` right, ``y`` down.
      scale: ``[N]`` half-extent in pixels of the bitmap's longer side (> 0).
      rotation: ``[N]`` radians, counter-clockwise on screen.
      opacity_logit: ``[N]``; opacity is ``sigmoid(opacity_logit)``.
      color_logit: ``[N, 3]``; the RGB tint is ``sigmoid(color_logit)``.

    Only float arrays live here, so ``jax.grad``, Optax and ``vmap`` take it as it
    is. Which bitmap each primitive shows is a separate int32 ``template`` array.
    """

    xy: jax.Array
    scale: jax.Array
    rotation: jax.Array
    opacity_logit: jax.Array
    color_logit: jax.Array

    @property
    def num(self) -> int:
        """Number of primitives ``N``."""
        return self.scale.shape[-1]

    @property
    def opacity(self) -> jax.Array:
        """``[N]`` opacity in (0, 1)."""
        return jax.nn.sigmoid(self.opacity_logit)

    @property
    def color(self) -> jax.Array:
        """``[N, 3]`` tint in (0, 1)."""
        return jax.nn.sigmoid(self.color_logit)

    @classmethod
    def create(cls, xy, scale, rotation=None, opacity=0.5, color=0.5) -> "Primitives":
        """Builds primitives from natural units (opacity and colour in (0, 1)).

        Args:
          xy: ``[N, 2]`` centres in pixels.
          scale: ``[N]`` or scalar, half-extent in pixels.
          rotation: ``[N]`` or scalar radians (default 0).
          opacity: ``[N]`` or scalar in (0, 1).
          color: ``[N, 3]``, ``[3]`` or scalar in (0, 1).
        """
        xy = jnp.asarray(xy, jnp.float32)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"xy must have shape (N, 2), got {tuple(xy.shape)}")
        n = xy.shape[0]

        def per_primitive(name, value, trailing=()):
            a = jnp.asarray(value, jnp.float32)
            try:
                return jnp.broadcast_to(a, (n,) + trailing)
            except ValueError:
                raise ValueError(f"{name} must be a scalar or have shape {(n,) + trailing} (one per primitive "
                                 f"of xy), got {tuple(a.shape)}") from None

        return cls(
            xy=xy,
            scale=per_primitive("scale", scale),
            rotation=per_primitive("rotation", 0.0 if rotation is None else rotation),
            opacity_logit=per_primitive("opacity", logit(opacity, 1e-6)),
            color_logit=per_primitive("color", logit(color, 1e-6), (3,)),
        )

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_dict(cls, d) -> "Primitives":
        return cls(**{f: jnp.asarray(d[f], jnp.float32) for f in FIELDS})

    def __getitem__(self, index) -> "Primitives":
        """Selects primitives along the leading axis (``params[10:20]``)."""
        return jax.tree_util.tree_map(lambda a: a[index], self)
