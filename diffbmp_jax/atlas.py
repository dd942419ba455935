"""The atlas: ``P`` bitmaps of one size, as a coverage mask and optional colours."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import jax
import jax.numpy as jnp

from . import validation as V

__all__ = ["Atlas"]


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, jax.Array))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Atlas:
    """``P`` bitmaps of one size ``h x w``.

    Attributes:
      mask: ``[P, h, w]`` float32 coverage (alpha) in [0, 1].
      rgb: optional ``[P, h, w, 3]`` float32 colours in [0, 1], the bitmaps' own
        colours, used when ``render(..., color_blend > 0)``.

    A registered pytree: it can cross ``jit`` and be differentiated
    (``render(..., atlas_grad=True)``).
    """

    mask: jax.Array
    rgb: jax.Array | None = None

    def __post_init__(self):
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
        are unbounded. ``from_arrays``, ``from_files`` and ``render`` call it.
        """
        for name, x in (("Atlas.mask", self.mask), ("Atlas.rgb", self.rgb)):
            if _is_array(x) and V.is_concrete(x):
                V.check_finite(name, x)
                V.check_range(name, x, 0.0, 1.0)
        return self

    @classmethod
    def from_arrays(cls, mask, rgb=None) -> "Atlas":
        """Builds an atlas from array-likes, converting to float32.

        Args:
          mask: ``[P, h, w]`` (or ``[h, w]`` for one bitmap) in [0, 1].
          rgb: optional ``[P, h, w, 3]`` (or ``[h, w, 3]``) in [0, 1].
        """
        mask = np.asarray(mask, np.float32)
        if mask.ndim == 2:
            mask = mask[None]
        if rgb is not None:
            rgb = np.asarray(rgb, np.float32)
            if rgb.ndim == 3:
                rgb = rgb[None]
            rgb = jnp.asarray(rgb)
        return cls(mask=jnp.asarray(mask), rgb=rgb).check_values()

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

    @classmethod
    def from_files(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], size: int = 64,
                   mask_rule: str = "auto", background=(1.0, 1.0, 1.0)) -> "Atlas":
        """Loads bitmaps into one atlas of ``size x size`` bitmaps.

        Each image is resized to fit (aspect kept) and centred on transparent
        padding. Accepts files, folders and glob patterns (see
        :func:`diffbmp_jax.sources.expand_paths`).

        Args:
          paths: image files (PNG/JPG/WebP/...), folders or globs.
          size: output bitmap side in pixels.
          mask_rule: ``"auto"`` (alpha channel if present, else luminance),
            ``"alpha"``, ``"luminance"`` (dark on a light background is opaque),
            ``"background"`` (distance from ``background`` colour) or
            ``"opaque"``.
          background: RGB in [0, 1] used by ``mask_rule="background"``.
        """
        from . import sources
        return sources.load_images(paths, size=size, mask_rule=mask_rule, background=background)

    @classmethod
    def from_svg(cls, paths, size: int = 64) -> "Atlas":
        """Rasterises SVG files (or markup strings) into one atlas; see :func:`sources.atlas_from_svg`."""
        from . import sources
        return sources.atlas_from_svg(paths, size=size)

    @classmethod
    def from_text(cls, text: str, size: int = 64, *, mode: str = "char", font=None,
                  color=(0.0, 0.0, 0.0)) -> "Atlas":
        """One bitmap per character (``mode="char"``) or word (``"word"``) of ``text``."""
        from . import sources
        return sources.atlas_from_text(text, size=size, mode=mode, font=font, color=color)

    @classmethod
    def from_emoji(cls, emoji: str, size: int = 64, *, font=None) -> "Atlas":
        """One colour bitmap per emoji, from a colour emoji font (RuntimeError if none)."""
        from . import sources
        return sources.atlas_from_emoji(emoji, size=size, font=font)

    @classmethod
    def from_stamps(cls, specs, size: int = 64, mask_rule: str = "auto") -> "Atlas":
        """Files, folders, globs, ``text:...`` and ``emoji:...`` specs, as the CLI's ``--stamps``."""
        from . import sources
        return sources.load_stamps(specs, size=size, mask_rule=mask_rule)
