"""GIF and MP4 animations: optimisation progress and painter's-order build-up."""

from __future__ import annotations

import os

import numpy as np

from ..primitives import Primitives
from ._common import (atomic_output, check_output_path, check_background, check_scale, check_scene, composite,
                      drawn_atlas, render_image, render_layers_chunked, scale_scene, to_uint8)

__all__ = ["write_frames", "export_progress", "export_buildup", "buildup_frames", "ANIMATION_FORMATS"]

ANIMATION_FORMATS = ("gif", "mp4")


def _format_of(path, fmt):
    fmt = (fmt or os.path.splitext(str(path))[1].lstrip(".")).lower()
    if fmt not in ANIMATION_FORMATS:
        raise ValueError(f"fmt must be one of {ANIMATION_FORMATS} (or path must end in .gif/.mp4), got {fmt!r}")
    return fmt


def write_frames(path, frames, *, fps: float = 10.0, fmt: str | None = None, loop: int = 0) -> str:
    """Writes frames as an animated GIF or an H.264 MP4 (imageio).

    Args:
      path: output file; the format comes from ``fmt`` or the extension.
      frames: non-empty sequence of ``[H, W, 3]`` images, float in [0, 1] or uint8,
        all one size.
      fps: frames per second (> 0).
      fmt: ``"gif"`` or ``"mp4"``.
      loop: GIF loop count (0 = forever).

    MP4 needs the ``imageio-ffmpeg`` package (it ships an ffmpeg binary); its
    frames are padded to even sizes as H.264 requires.
    """
    fmt = _format_of(path, fmt)
    frames = list(frames)
    if not frames:
        raise ValueError("frames: no frames given")
    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    arr = []
    for k, f in enumerate(frames):
        a = np.asarray(f)
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"frames[{k}] must have shape (H, W, 3), got {a.shape}")
        a = a[..., :3] if a.dtype == np.uint8 else to_uint8(a[..., :3])
        if arr and a.shape != arr[0].shape:
            raise ValueError(f"frames[{k}] has shape {a.shape}, but frames[0] has {arr[0].shape}")
        arr.append(a)
    import imageio.v3 as iio
    if fmt == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise ImportError("MP4 export needs imageio-ffmpeg: pip install imageio-ffmpeg "
                              "(or 'diffbmp-jax[export]'); GIF needs nothing more") from e
        h, w = arr[0].shape[:2]
        ph, pw = h % 2, w % 2
        if ph or pw:
            arr = [np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge") for a in arr]
    with atomic_output(path) as tmp:
        if fmt == "gif":
            iio.imwrite(tmp, np.stack(arr), extension=".gif", duration=1000.0 / fps, loop=loop)
        else:
            _write_mp4(tmp, arr, fps)
    return str(path)


def _write_mp4(tmp, frames, fps):
    import imageio.v2 as iio2
    from ..io import ffmpeg_subprocess
    # macro_block_size=1: sizes were made even above; no silent resize.
    with ffmpeg_subprocess(), iio2.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                              quality=8, macro_block_size=1, pixelformat="yuv420p") as w:
        for f in frames:
            w.append_data(f)


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
    fmt = _format_of(path, fmt)
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
    fmt = _format_of(path, fmt)
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
