"""PNG export at any output scale."""

from __future__ import annotations

from PIL import Image

from diffbmp_jax.files import atomic_output
from diffbmp_jax.export.common import (check_background, check_scale, check_scene, drawn_atlas, render_image,
                                       scale_scene)
from diffbmp_jax.io.images import PNG_LEVEL, to_uint8

__all__ = ["export_png"]


def export_png(path, params, atlas, *, height: int, width: int, template=None, color_blend: float = 0.0,
               background=(1.0, 1.0, 1.0), scale: float = 1, alpha_max: float = 0.99,
               backend: str = "auto", antialias: bool = True) -> str:
    """Renders the scene and writes an 8-bit RGB PNG of
    ``round(scale * height) x round(scale * width)`` pixels.

    ``scale > 1`` re-renders at the higher resolution (positions map as
    ``s * (xy + 0.5) - 0.5``, half-extents as ``s * scale``), so stamps stay
    sharp rather than being upsampled. Large scenes render in chunks of
    primitives (bounded memory with the reference backend). ``antialias``:
    stamps drawn from the prefiltered level for their output size
    (:mod:`diffbmp_jax.rendering.mipmap`), as fits draw them.

    Returns:
      ``path`` as a string.
    """
    params, atlas, height, width, template, color_blend, alpha_max = check_scene(
        params, atlas, height, width, template, color_blend, alpha_max)
    bg = check_background(background)
    params, height, width = scale_scene(params, height, width, check_scale(scale))
    atlas, template = drawn_atlas(params, atlas, template, antialias)
    with atomic_output(path) as tmp:
        img = render_image(params, atlas, template, height, width, color_blend=color_blend,
                           alpha_max=alpha_max, background=bg, backend=backend)
        Image.fromarray(to_uint8(img), "RGB").save(tmp, format="PNG", compress_level=PNG_LEVEL)
    return str(path)
