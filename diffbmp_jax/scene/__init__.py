"""The scene: what is drawn. :class:`Primitives` (the differentiable pytree of
positions, scales, rotations, colours and opacities) and :class:`Atlas` (the
bitmaps they show). Nothing here renders; `Primitives.save`/`load` keep the
``params.npz`` format, through :mod:`diffbmp_jax.files`."""

from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.scene.primitives import Primitives

__all__ = ["Atlas", "Primitives"]
