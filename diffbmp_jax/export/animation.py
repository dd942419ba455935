"""GIF and MP4 animations: optimisation progress and painter's-order build-up."""

from __future__ import annotations

import numpy as np

from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.files import check_output_path
from diffbmp_jax.io.video import animation_format, write_frames
from diffbmp_jax.export.common import (check_background, check_scale, check_scene, composite, drawn_atlas,
                                       render_image, render_layers_chunked, scale_scene)
from diffbmp_jax.io.images import to_uint8

__all__ = ["export_progress", "export_buildup", "buildup_frames"]

def buildup_frames(params, atlas, *, height: int, width: int, template=None, color_blend: float = 0.0,
                   background=(1.0, 1.0, 1.0), scale: float = 1, alpha_max: float = 0.99,
                   num_frames: int = 30, backend: str = "auto", antialias: bool = True):
    """Frames of the picture built up in painter's order: frame ``k`` shows
    primitives ``[0, n_k)`` with ``n_k`` evenly spaced up to ``N`` (stamps
    antialiased for their output size unless ``antialias=False``, as in
    :func:`~diffbmp_jax.export.export_png`).

    Returns a list of ``num_frames`` (at most ``N``) uint8 images ``[H, W, 3]``.
    Each frame costs only the new primitives (chunks composited on top).
    """
    params, atlas, height, width, template, color_blend, alpha_max = check_scene(
        params, atlas, height, width, template, color_blend, alpha_max)
    bg = check_background(background)
    params, height, width = scale_scene(params, height, width, check_scale(scale))
    atlas, template = drawn_atlas(params, atlas, template, antialias)
    n = params.num
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    k = min(int(num_frames), max(n, 1))
    if n == 0:
        return [to_uint8(np.broadcast_to(bg, (height, width, 3)))]
    ends = np.unique(np.ceil(np.linspace(n / k, n, k)).astype(int))
    step = int(np.diff(np.concatenate([[0], ends])).max())
    frames = []
    for end, C, A in render_layers_chunked(params, atlas, template, height, width, color_blend=color_blend,
                                           alpha_max=alpha_max, backend=backend, chunk=step):
        frames.append(to_uint8(np.asarray(composite(C, A, bg))))
    return frames


def export_buildup(path, params, atlas, *, height: int, width: int, template=None, color_blend: float = 0.0,
                   background=(1.0, 1.0, 1.0), scale: float = 1, alpha_max: float = 0.99, fps: float = 10.0,
                   num_frames: int = 30, hold: int = 10, fmt: str | None = None, backend: str = "auto",
                   antialias: bool = True) -> str:
    """Writes a GIF/MP4 that adds the primitives in painter's order
    (see :func:`buildup_frames`), holding the final picture for ``hold`` extra frames."""
    fmt = animation_format(path, fmt)
    check_output_path(path)  # fail before rendering, not after
    frames = buildup_frames(params, atlas, height=height, width=width, template=template,
                            color_blend=color_blend, background=background, scale=scale, alpha_max=alpha_max,
                            num_frames=num_frames, backend=backend, antialias=antialias)
    frames += [frames[-1]] * max(0, int(hold))
    return write_frames(path, frames, fps=fps, fmt=fmt)


def export_progress(path, params_history, atlas, *, height: int, width: int, template=None,
                    color_blend: float = 0.0, background=(1.0, 1.0, 1.0), scale: float = 1,
                    alpha_max: float = 0.99, fps: float = 10.0, fmt: str | None = None,
                    backend: str = "auto", antialias: bool = True) -> str:
    """Writes a GIF/MP4 of optimisation progress: one frame per entry of
    ``params_history`` (a sequence of :class:`Primitives`, e.g. snapshots taken
    during ``fit``), or of ready images ``[H, W, 3]``."""
    fmt = animation_format(path, fmt)
    check_output_path(path)
    history = list(params_history)
    if not history:
        raise ValueError("params_history: no frames given")
    frames = []
    for k, p in enumerate(history):
        if isinstance(p, Primitives):
            pp, at, h, w, t, cb, am = check_scene(p, atlas, height, width, template, color_blend, alpha_max)
            pp, h, w = scale_scene(pp, h, w, check_scale(scale))
            at, t = drawn_atlas(pp, at, t, antialias)
            frames.append(render_image(pp, at, t, h, w, color_blend=cb, alpha_max=am,
                                       background=check_background(background), backend=backend))
        else:
            frames.append(np.asarray(p))
    return write_frames(path, frames, fps=fps, fmt=fmt)
