"""The differentiable state of a scene: one pytree of float arrays, and its ``params.npz`` file."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax import validation as V
from diffbmp_jax.files import atomic_output, read_npz

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
    def from_dict(cls, d, *, source: str = "d") -> "Primitives":
        """Builds primitives from a mapping of the five :data:`FIELDS` (e.g. the
        arrays of a ``params.npz``), as float32 arrays; other keys are ignored.

        Raises ValueError naming ``source`` for a missing field, a non-numeric
        one, or shapes other than ``xy [N, 2]``, ``scale``, ``rotation``,
        ``opacity_logit`` ``[N]`` and ``color_logit [N, 3]`` of one ``N``.
        """
        missing = [f for f in FIELDS if f not in d]
        if missing:
            raise ValueError(f"{source} has no field(s) {missing} (Primitives needs {list(FIELDS)})")
        scale = tuple(np.shape(d["scale"]))
        for f in FIELDS:
            dtype = V.dtype_of(d[f])
            if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
                raise ValueError(f"{source}: {f} must hold real numbers, got dtype {dtype}")
            got = tuple(np.shape(d[f]))
            if len(scale) != 1 or got != scale + _TRAILING[f]:
                want = str(("N",) + _TRAILING[f]).replace("'", "")
                hint = " (a stack of several sets, e.g. one per video frame: pass one set)" if len(scale) > 1 else ""
                raise ValueError(f"{source}: {f} must have shape {want} with N = len(scale), got {got} "
                                 f"(scale {scale}){hint}")
        return cls(**{f: jnp.asarray(d[f], jnp.float32) for f in FIELDS})

    def save(self, path, *, template=None, height: int | None = None, width: int | None = None,
             color_blend: float | None = None) -> None:
        """Writes these primitives to the file ``path`` in the ``params.npz`` format of a fit.

        The archive holds the five :data:`FIELDS` (float32) and, when given,
        ``template`` (``[N]`` int32 bitmap ids), ``height``, ``width`` (int32)
        and ``color_blend`` (float32): the keys and dtypes of
        :func:`diffbmp_jax.io.results.save_params`, so :meth:`load`,
        :func:`diffbmp_jax.load_result` (which needs ``height`` and ``width``)
        and ``numpy.load`` read it back. ``path`` is used as given (no
        ``.npz`` appended). The file is written under a temporary name beside
        ``path`` and renamed onto it at the end, with the usual umask
        permissions: an error leaves no partial file and an existing ``path``
        untouched.

        The writing and reading go through :mod:`diffbmp_jax.files` (the
        package's base layer for files: atomic outputs, safe ``.npz`` reading).

        Raises TypeError/ValueError naming the argument (``path``,
        ``template``, ``height``, ``width``, ``color_blend``) before writing
        anything, and TypeError for primitives inside ``jit`` (no values).
        """
        if not all(V.is_concrete(getattr(self, f)) for f in FIELDS):
            raise TypeError("Primitives.save needs concrete arrays (it cannot run inside jit, grad or vmap)")
        arrays = {f: np.asarray(a, np.float32) for f, a in self.to_dict().items()}
        self.from_dict(arrays, source="Primitives.save: the primitives")  # one N, the documented shapes
        n = arrays["scale"].shape[0]
        if template is not None:
            t = np.asarray(template)
            if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
                raise ValueError(f"template must be an int array of shape ({n},) (one bitmap id per "
                                 f"primitive), got {t.dtype} {t.shape}")
            if t.size and (t.min() < 0 or t.max() > np.iinfo(np.int32).max):
                raise ValueError(f"template ids must be in [0, 2**31), found {int(t.min())}..{int(t.max())}")
            arrays["template"] = t.astype(np.int32)
        if height is not None:
            arrays["height"] = np.int32(V.positive_int("height", height))
        if width is not None:
            arrays["width"] = np.int32(V.positive_int("width", width))
        if color_blend is not None:
            arrays["color_blend"] = np.float32(V.unit_float("color_blend", color_blend))
        with atomic_output(path, "path") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # a file object: numpy would append ".npz" to a name

    @classmethod
    def load(cls, path) -> "Primitives":
        """Reads the primitives of a ``params.npz`` file (:meth:`save`'s, or a fit's output).

        Returns float32 :class:`Primitives`, bit for bit as saved. The file's
        ``template``, ``height``, ``width`` and ``color_blend`` are not part of
        them; :func:`diffbmp_jax.load_result` returns those too. Raises
        FileNotFoundError / ValueError naming ``path`` and the file for a
        missing file, a folder, a file that is not an npz archive, or a missing
        or mis-shaped field.
        """
        arrays = read_npz(path, "path")
        return cls.from_dict(arrays, source=f"path: {os.fspath(path)!r}")

    def __getitem__(self, index) -> "Primitives":
        """Selects primitives along the leading axis (``params[10:20]``)."""
        return jax.tree_util.tree_map(lambda a: a[index], self)
