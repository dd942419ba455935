"""``export(fmt, path, ...)``: one entry point that dispatches to the writer of a format."""

from __future__ import annotations

from diffbmp_jax.export.animation import export_buildup, export_progress
from diffbmp_jax.export.png import export_png
from diffbmp_jax.export.psd import export_psd
from diffbmp_jax.export.svg import export_svg

__all__ = ["export", "FORMATS"]

FORMATS = ("psd", "svg", "png", "gif", "mp4")


def export(fmt: str, path, params, atlas, *, height: int, width: int, template=None,
           color_blend: float = 0.0, background=(1, 1, 1), scale=1, antialias: bool = True, **kwargs) -> str:
    """Writes the scene to ``path`` in format ``fmt``.

    Args:
      fmt: ``"psd"`` (layered, :func:`export_psd`), ``"svg"`` (:func:`export_svg`),
        ``"png"`` (:func:`export_png`), ``"gif"`` or ``"mp4"``. For the two
        animation formats ``params`` is either one :class:`Primitives` (a
        build-up animation adding primitives in painter's order,
        :func:`export_buildup`) or a list of them / of images (optimisation
        progress, one frame each, :func:`export_progress`).
      path: output file.
      params: :class:`Primitives` (``N``).
      atlas: :class:`Atlas`.
      height, width: canvas size in pixels.
      template: ``[N]`` int bitmap ids (default ``n % P``).
      color_blend: 0 = tints, 1 = the bitmaps' own colours.
      background: RGB in [0, 1].
      scale: output scale factor (PNG/PSD/GIF/MP4 re-render at
        ``scale`` times the size; SVG sets its displayed size).
      antialias: rendered formats draw each stamp from the prefiltered
        level for its output size, as fits do (:mod:`diffbmp_jax.rendering.mipmap`); an
        SVG embeds the bitmaps themselves and its viewer filters them.
      **kwargs: passed to the writer (``alpha_max``; ``fps``, ``num_frames``,
        ``hold`` for animations; ``backend`` for rendered formats).

    Returns:
      ``path`` as a string.
    """
    f = str(fmt).lower().lstrip(".")
    if f not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    common = dict(height=height, width=width, template=template, color_blend=color_blend,
                  background=background, scale=scale, **kwargs)
    if f == "psd":
        return export_psd(path, params, atlas, antialias=antialias, **common)
    if f == "svg":
        return export_svg(path, params, atlas, **common)
    if f == "png":
        return export_png(path, params, atlas, antialias=antialias, **common)
    if isinstance(params, (list, tuple)):
        return export_progress(path, params, atlas, fmt=f, antialias=antialias, **common)
    return export_buildup(path, params, atlas, fmt=f, antialias=antialias, **common)
