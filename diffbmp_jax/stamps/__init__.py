"""Stamps: loaders that turn files, drawings, text and emoji into an :class:`~diffbmp_jax.Atlas`.

One module per kind of source (``raster``, ``svg``, ``text``, ``emoji``) and
``load``, the entry point for mixed specifications (the CLI's ``--stamps``).
Every loader fits its bitmaps into ``size x size`` squares (aspect kept,
transparent padding) and keeps their own colours as ``Atlas.rgb``.
"""

from diffbmp_jax.stamps.emoji import atlas_from_emoji, find_emoji_font, split_graphemes
from diffbmp_jax.stamps.load import STAMP_SUFFIXES, load_stamps
from diffbmp_jax.stamps.raster import (MASK_RULES, atlas_from_rgba, bleed_colors, fit_into_square, load_images,
                                       mask_from_rgba)
from diffbmp_jax.stamps.svg import SVG_SUFFIXES, atlas_from_svg, import_resvg, rasterize_svg
from diffbmp_jax.stamps.text import atlas_from_text, find_font, render_text_bitmap, split_text

__all__ = ["load_stamps", "load_images", "atlas_from_svg", "atlas_from_text", "atlas_from_emoji", "atlas_from_rgba",
           "mask_from_rgba", "fit_into_square", "bleed_colors", "rasterize_svg", "import_resvg", "find_font",
           "find_emoji_font", "render_text_bitmap", "split_text", "split_graphemes", "MASK_RULES", "SVG_SUFFIXES",
           "STAMP_SUFFIXES"]
