"""One entry point for stamps of every kind: files, folders, globs, SVG, ``text:`` and ``emoji:`` specs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffbmp_jax.io.images import IMAGE_SUFFIXES, expand_paths_with, read_rgba
from diffbmp_jax.stamps.emoji import atlas_from_emoji
from diffbmp_jax.stamps.raster import (MASK_RULES, SUPERSAMPLE, atlas_from_rgba, check_stamp_size,
                                       mask_from_rgba)
from diffbmp_jax.stamps.svg import SVG_SUFFIXES, rasterize_svg
from diffbmp_jax.stamps.text import atlas_from_text

STAMP_SUFFIXES = IMAGE_SUFFIXES + SVG_SUFFIXES


def _is_svg(path) -> bool:
    return Path(str(path)).suffix.lower() in SVG_SUFFIXES


def load_stamps(specs, size: int = 64, mask_rule: str = "auto", *, font=None, emoji_font=None,
                background=(1.0, 1.0, 1.0)):
    """Builds one atlas from a list of stamp specifications.

    Each spec is one of:

    * an image file (PNG/WebP/GIF with alpha, JPG/BMP opaque: see ``mask_rule``),
      or an ``.svg``/``.svgz`` file (rasterised with resvg);
    * a folder (its images and SVGs, sorted by name) or a glob (``"stamps/*.png"``);
    * ``"text:HELLO"``: one bitmap per distinct character;
      ``"text:char:HELLO"`` the same, explicitly; ``"text:word:HELLO WORLD"``
      one bitmap per distinct whitespace-separated word. Drawn with ``font``;
    * ``"emoji:🌸🌼"``: one colour bitmap per emoji (needs a colour emoji font).

    Bitmaps from all specs are fitted into ``size x size`` squares (aspect kept,
    transparent padding) and stacked in the order given.

    Args:
      specs: list of spec strings (a single string is accepted too).
      size: bitmap side in pixels.
      mask_rule: for raster images only, see :func:`~diffbmp_jax.stamps.load_images`.
      font: font for ``text:`` specs (path or installed file name), default
        Pillow's bundled TrueType font.
      background: RGB in [0, 1] for ``mask_rule="background"``.

    Returns:
      :class:`~diffbmp_jax.Atlas` with ``mask [P, size, size]`` and ``rgb``.
    """
    size = check_stamp_size(size)
    if mask_rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    specs = list(specs)
    if not specs:
        raise ValueError("specs: no stamp specifications given (the atlas would be empty)")
    images: list[np.ndarray] = []
    for spec in specs:
        s = str(spec)
        if s.startswith("text:"):
            body = s[len("text:"):]
            mode = "char"
            for m in ("char", "word"):
                if body.startswith(m + ":"):
                    mode, body = m, body[len(m) + 1:]
            a = atlas_from_text(body, size, mode=mode, font=font)
        elif s.startswith("emoji:"):
            a = atlas_from_emoji(s[len("emoji:"):], size, font=emoji_font)
        else:
            a = None
            for path in expand_paths_with([s], STAMP_SUFFIXES):
                if _is_svg(path):
                    images.append(rasterize_svg(path, size * SUPERSAMPLE, name="specs"))
                else:
                    rgba, has_alpha = read_rgba(path)
                    mask = mask_from_rgba(rgba, has_alpha, mask_rule, background)
                    images.append(np.concatenate([rgba[..., :3], mask[..., None]], -1))
        if a is not None:
            # Already fitted: append as RGBA squares (refitting a square is exact).
            sq = np.concatenate([np.asarray(a.rgb), np.asarray(a.mask)[..., None]], -1)
            images.extend(list(sq))
    return atlas_from_rgba(images, size)
