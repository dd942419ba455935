"""What a fit leaves in its output folder: ``result.png``, ``params.npz``, ``progress.gif``."""

from __future__ import annotations

import numpy as np

from diffbmp_jax.io.files import AtomicWriter
from diffbmp_jax.scene.primitives import FIELDS
from diffbmp_jax.io.images import to_uint8
from diffbmp_jax.io.video import subsample, write_frames

__all__ = ["primitive_arrays", "save_params", "write_image_outputs"]


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
    Image.fromarray(to_uint8(image)).save(writer.path("result.png"), format="PNG")
    with open(writer.path("params.npz"), "wb") as fh:
        save_params(fh, {**primitive_arrays(params), "template": np.asarray(template, np.int32)},
                    height, width, color_blend)
    if frames:
        write_frames(writer.path("progress.gif"), subsample(frames, max_frames), fps=PROGRESS_FPS,
                     atomic=False)
