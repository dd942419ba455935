"""What a fit leaves in its output folder: ``result.png``, ``params.npz``, ``progress.gif``;
and :func:`load_result`, which reads such a folder back."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from diffbmp_jax.files import AtomicWriter, read_npz
from diffbmp_jax.scene.primitives import FIELDS, Primitives
from diffbmp_jax.io.images import PNG_LEVEL, over_white, read_rgba, to_uint8
from diffbmp_jax.io.video import subsample, write_frames

__all__ = ["primitive_arrays", "save_params", "write_image_outputs", "SavedResult", "load_result"]


PROGRESS_FPS = 1.0 / 0.3
"""Frame rate of ``progress.gif`` (0.3 s a frame)."""


def primitive_arrays(params) -> dict:
    """The five fields of a :class:`~diffbmp_jax.Primitives` as numpy arrays, by name."""
    return {f: np.asarray(getattr(params, f)) for f in FIELDS}


def save_params(fh, arrays: dict, height: int, width: int, color_blend: float, **extra) -> None:
    """Writes ``params.npz``: ``arrays``, then ``height``, ``width`` (int32),
    ``color_blend`` (float32), then ``extra`` arrays."""
    np.savez(fh, **arrays, height=np.int32(height), width=np.int32(width), color_blend=np.float32(color_blend),
             **extra)


def write_image_outputs(writer: AtomicWriter, image, params, template, height: int, width: int,
                        color_blend: float, frames: list, max_frames: int) -> None:
    """Writes ``result.png`` (``image`` ``[H, W, 3]`` in [0, 1]), ``params.npz``
    (:func:`save_params` of ``params`` and the ``[N]`` ``template``) and, when
    ``frames`` (uint8) is not empty, ``progress.gif`` of at most ``max_frames``."""
    from PIL import Image
    Image.fromarray(to_uint8(image)).save(writer.path("result.png"), format="PNG", compress_level=PNG_LEVEL)
    with open(writer.path("params.npz"), "wb") as fh:
        save_params(fh, {**primitive_arrays(params), "template": np.asarray(template, np.int32)},
                    height, width, color_blend)
    if frames:
        write_frames(writer.path("progress.gif"), subsample(frames, max_frames), fps=PROGRESS_FPS,
                     atomic=False)


@dataclasses.dataclass(frozen=True)
class SavedResult:
    """A fit's output folder read back by :func:`load_result`.

    Attributes:
      params: the fitted :class:`~diffbmp_jax.Primitives` (float32, pixel units).
      template: ``[N]`` int32 bitmap id per primitive (numpy), or None when
        ``params.npz`` has none (``render``'s default ``n % P`` then applies).
      height, width: the canvas the fit ran on, in pixels.
      color_blend: the fit's ``color_blend`` (0.0 when the file has none).
      image: ``result.png`` as float32 ``[H, W, 3]`` in [0, 1] (numpy; any
        transparency composed over white), or None when the folder has none.
    """

    params: Primitives
    template: np.ndarray | None
    height: int
    width: int
    color_blend: float
    image: np.ndarray | None


def _scalar(arrays: dict, name: str, source: str, kind: str):
    """The 0-d (or 1-element) entry ``name`` of ``arrays`` as a Python int/float, checked."""
    a = np.asarray(arrays[name])
    integer = np.issubdtype(a.dtype, np.integer)
    if a.size != 1 or a.ndim > 1 or not (integer or (kind == "float" and np.issubdtype(a.dtype, np.floating))):
        raise ValueError(f"{source}: {name} must be a single {'integer' if kind == 'int' else 'number'}, "
                         f"got {a.dtype} of shape {a.shape}")
    v = a.reshape(()).item()
    if kind == "int" and v <= 0:
        raise ValueError(f"{source}: {name} must be a positive int, got {v}")
    if kind == "float" and not 0.0 <= v <= 1.0:
        raise ValueError(f"{source}: {name} must be in [0, 1], got {v!r}")
    return int(v) if kind == "int" else float(v)


def load_result(folder) -> SavedResult:
    """Reads a fit's output folder (``params.npz``, and ``result.png`` if there).

    ``folder`` is the folder that ``fit``, ``demo``, ``batch`` (one per
    target), ``regions`` or ``text`` wrote, or the path of its
    ``params.npz`` (the picture is then the ``result.png`` beside it), or
    any file of :meth:`Primitives.save` given ``height`` and ``width`` (no
    picture). ``params.npz`` keeps neither the atlas nor the render settings:
    with the fit's atlas and settings (defaults: ``alpha_max`` 0.99,
    ``antialias=True``, white output background) ``render`` draws the fit's
    picture again::

        r = db.load_result("out/")
        color, alpha = db.render(r.params, atlas, height=r.height, width=r.width, template=r.template,
                                 color_blend=r.color_blend, antialias=True)
        image = db.composite(color, alpha, 1.0)   # the fit's image to ~1e-5; r.image is result.png (uint8)

    A video fit's ``params.npz`` holds one set of primitives per frame and is
    refused, naming its shapes.

    Raises FileNotFoundError / ValueError naming ``folder`` and the file: no
    such folder or file, no ``params.npz`` in the folder, a file that is not
    an npz archive, a missing or mis-shaped field (the five of
    :data:`~diffbmp_jax.scene.primitives.FIELDS`, ``height``, ``width``; a
    ``template`` of other than ``N`` ids >= 0; ``color_blend`` outside [0, 1]),
    an unreadable ``result.png``.
    """
    try:
        given = os.fspath(folder)
    except TypeError as e:
        raise TypeError(f"folder must be a folder or file path, got {type(folder).__name__}") from e
    if os.path.isdir(given):
        npz = os.path.join(given, "params.npz")
        if not os.path.isfile(npz):
            raise FileNotFoundError(f"folder: {given!r} holds no params.npz (is it a fit's output folder?)")
    elif os.path.isfile(given):
        npz = given
    else:
        raise FileNotFoundError(f"folder: no such folder or file: {given!r}")
    source = f"folder: {npz!r}"
    arrays = read_npz(npz, "folder")
    params = Primitives.from_dict(arrays, source=source)
    missing = [k for k in ("height", "width") if k not in arrays]
    if missing:
        raise ValueError(f"{source} has no field(s) {missing} (the canvas size a fit writes; "
                         "for primitives alone use Primitives.load)")
    height, width = (_scalar(arrays, k, source, "int") for k in ("height", "width"))
    color_blend = _scalar(arrays, "color_blend", source, "float") if "color_blend" in arrays else 0.0
    template = None
    if "template" in arrays:
        t = np.asarray(arrays["template"])
        if t.shape != (params.num,) or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"{source}: template must be {params.num} integer ids (one per primitive), "
                             f"got {t.dtype} of shape {t.shape}")
        if t.size and (t.min() < 0 or t.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{source}: template ids must be in [0, 2**31), found {int(t.min())}..{int(t.max())}")
        template = t.astype(np.int32)
    png = os.path.join(os.path.dirname(npz), "result.png")
    image = None
    if os.path.basename(npz) == "params.npz" and os.path.isfile(png):  # a fit's folder, not any .npz's
        try:
            rgba, _ = read_rgba(png)
        except ValueError as e:
            raise ValueError(f"folder: {e}") from e
        image = over_white(rgba)
    return SavedResult(params=params, template=template, height=height, width=width, color_blend=color_blend,
                       image=image)
