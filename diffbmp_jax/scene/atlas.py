"""The atlas: ``P`` bitmaps of one size, as a coverage mask and optional colours."""

from __future__ import annotations

import dataclasses

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax import validation as V

__all__ = ["Atlas"]


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, jax.Array))


def _check_names(names, mask) -> tuple:
    """``names`` as a tuple of str/None, one per bitmap of ``mask`` when it is a real array.

    Raises TypeError/ValueError naming ``names``.
    """
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise TypeError(f"Atlas.names must be a sequence of str (one per bitmap) or None, "
                        f"got {type(names).__name__}")
    names = tuple(names)
    for k, s in enumerate(names):
        if s is not None and not isinstance(s, str):
            raise TypeError(f"Atlas.names[{k}] must be a str or None, got {type(s).__name__}")
    if _is_array(mask) and mask.ndim >= 3 and len(names) != mask.shape[-3]:
        raise ValueError(f"Atlas.names must have {mask.shape[-3]} entries (one per bitmap), got {len(names)}")
    return names


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Atlas:
    """``P`` bitmaps of one size ``h x w``.

    Attributes:
      mask: ``[P, h, w]`` float32 coverage (alpha) in [0, 1].
      rgb: optional ``[P, h, w, 3]`` float32 colours in [0, 1], the bitmaps' own
        colours, used when ``render(..., color_blend > 0)``.
      names: optional ``P`` names of the bitmaps (a tuple of str, or None for an
        unnamed one), e.g. the stamp files' stems from
        :func:`~diffbmp_jax.stamps.load_stamps`; the PSD export names layers
        after them. Static metadata: never an array, never in compiled code.

    A registered pytree: it can cross ``jit`` and be differentiated
    (``render(..., atlas_grad=True)``). ``names`` is a static (meta) field, so
    it is no leaf: ``grad`` and ``tree_map`` carry it along unchanged.
    """

    mask: jax.Array
    rgb: jax.Array | None = None
    names: tuple[str | None, ...] | None = dataclasses.field(default=None, metadata=dict(static=True))

    def __post_init__(self):
        if self.names is not None:
            object.__setattr__(self, "names", _check_names(self.names, self.mask))
        # jax rebuilds pytrees with placeholder leaves; check real arrays only.
        if not _is_array(self.mask):
            return
        # Leading batch dimensions are allowed: vmap builds atlases of stacked
        # per-scene atlases (or their gradients); render checks for exactly 3.
        mask = self.mask
        if mask.ndim < 3:
            raise ValueError(f"Atlas.mask must have shape (P, h, w), got {tuple(mask.shape)}")
        if mask.shape[-3] == 0:
            raise ValueError("Atlas.mask is empty: the atlas needs at least one bitmap (P >= 1)")
        if mask.shape[-2] == 0 or mask.shape[-1] == 0:
            raise ValueError(f"Atlas.mask bitmaps must be non-empty, got size {tuple(mask.shape[-2:])}")
        if not jnp.issubdtype(mask.dtype, jnp.floating):
            raise TypeError(f"Atlas.mask must be a float array, got dtype {mask.dtype}")
        if _is_array(self.rgb):
            rgb = self.rgb
            if rgb.shape != tuple(mask.shape) + (3,):
                raise ValueError(
                    f"Atlas.rgb must have shape {tuple(mask.shape) + (3,)} to match mask, got {tuple(rgb.shape)}")
            if not jnp.issubdtype(rgb.dtype, jnp.floating):
                raise TypeError(f"Atlas.rgb must be a float array, got dtype {rgb.dtype}")

    def check_values(self) -> "Atlas":
        """Raises ValueError unless mask and rgb are finite and in [0, 1] (concrete arrays only).

        Not run by ``__init__``: JAX rebuilds atlases to hold gradients, whose values
        are unbounded. ``from_arrays``, the stamp loaders (:mod:`diffbmp_jax.stamps`) and ``render`` call it.
        """
        for name, x in (("Atlas.mask", self.mask), ("Atlas.rgb", self.rgb)):
            if _is_array(x) and V.is_concrete(x):
                V.check_finite(name, x)
                V.check_range(name, x, 0.0, 1.0)
        return self

    @classmethod
    def from_arrays(cls, mask, rgb=None, names=None) -> "Atlas":
        """Builds an atlas from array-likes, converting to float32.

        Args:
          mask: ``[P, h, w]`` (or ``[h, w]`` for one bitmap) in [0, 1].
          rgb: optional ``[P, h, w, 3]`` (or ``[h, w, 3]``) in [0, 1].
          names: optional sequence of ``P`` bitmap names (str, or None for an
            unnamed bitmap); stored as a tuple.
        """
        mask = np.asarray(mask, np.float32)
        if mask.ndim == 2:
            mask = mask[None]
        if rgb is not None:
            rgb = np.asarray(rgb, np.float32)
            if rgb.ndim == 3:
                rgb = rgb[None]
            rgb = jax.device_put(rgb)
        # device_put, not jnp.asarray: that compiles a copy program per new shape.
        return cls(mask=jax.device_put(mask), rgb=rgb, names=names).check_values()

    @property
    def num(self) -> int:
        """Number of bitmaps ``P``."""
        return self.mask.shape[-3]

    @property
    def size(self) -> tuple[int, int]:
        """Bitmap size ``(h, w)`` in pixels."""
        return tuple(self.mask.shape[-2:])

    @property
    def colors(self) -> jax.Array:
        """``[P, h, w, 3]`` colours: ``rgb`` if present, else white."""
        if self.rgb is None:
            return jnp.ones(self.mask.shape + (3,), self.mask.dtype)
        return self.rgb
