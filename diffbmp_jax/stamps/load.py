"""One entry point for stamps of every kind: files, folders, globs, SVG, ``text:`` and ``emoji:`` specs."""

from __future__ import annotations

import dataclasses
import os
import unicodedata
from pathlib import Path

import numpy as np

from diffbmp_jax.io.images import IMAGE_SUFFIXES, expand_paths_with
from diffbmp_jax.stamps.emoji import atlas_from_emoji, split_graphemes
from diffbmp_jax.stamps.raster import MASK_RULES, SUPERSAMPLE, atlas_from_rgba, check_stamp_size, read_stamp
from diffbmp_jax.stamps.svg import SVG_SUFFIXES, rasterize_svg
from diffbmp_jax.stamps.text import atlas_from_text, split_text

STAMP_SUFFIXES = IMAGE_SUFFIXES + SVG_SUFFIXES


def _is_svg(path) -> bool:
    return Path(str(path)).suffix.lower() in SVG_SUFFIXES


def _text_name(unit: str) -> str:
    """A readable name of a ``text:`` unit: the text itself, unless it holds
    characters that do not print (those are spelled by their Unicode names)."""
    if unit.isprintable():
        return unit
    return " ".join(c if c.isprintable() else unicodedata.name(c, f"U+{ord(c):04X}").lower() for c in unit)


def _emoji_name(unit: str) -> str:
    """A readable name of an emoji: itself and its Unicode name(s), e.g.
    ``"🌸 cherry blossom"``; joiners, variation selectors, skin tones and
    tags are left out of the words, flags are spelled ``"flag JP"``."""
    ri = [c for c in unit if 0x1F1E6 <= ord(c) <= 0x1F1FF]
    if len(ri) == 2:
        return f"{unit} flag " + "".join(chr(ord(c) - 0x1F1E6 + ord("A")) for c in ri)
    words = []
    for c in unit:
        o = ord(c)
        if o in (0x200D, 0xFE0E, 0xFE0F, 0x20E3) or 0x1F3FB <= o <= 0x1F3FF or 0xE0020 <= o <= 0xE007F:
            continue
        words.append(unicodedata.name(c, f"U+{o:04X}").lower())
    return " ".join([unit] + words)


def _distinct(units):
    out = []
    for u in units:
        if u not in out:
            out.append(u)
    return out


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
    transparent padding) and stacked in the order given. Each is named
    (``Atlas.names``, used for the layer names of a PSD export): files by their
    stem (``"flower"`` for ``flower.png``, each file of a folder or glob
    likewise), ``text:`` units by their text, emoji by themselves and their
    Unicode names (``"🌸 cherry blossom"``).

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
    names: list[str | None] = []
    for spec in specs:
        s = str(spec)
        if s.startswith("text:"):
            body = s[len("text:"):]
            mode = "char"
            for m in ("char", "word"):
                if body.startswith(m + ":"):
                    mode, body = m, body[len(m) + 1:]
            a = atlas_from_text(body, size, mode=mode, font=font)
            units = [_text_name(u) for u in split_text(body, mode)]
        elif s.startswith("emoji:"):
            a = atlas_from_emoji(s[len("emoji:"):], size, font=emoji_font)
            units = [_emoji_name(u) for u in _distinct(split_graphemes(s[len("emoji:"):]))]
        else:
            a = None
            for path in expand_paths_with([s], STAMP_SUFFIXES):
                names.append(Path(path).stem)
                if _is_svg(path):
                    images.append(rasterize_svg(path, size * SUPERSAMPLE, name="specs"))
                else:
                    images.append(read_stamp(path, size, mask_rule, background))
        if a is not None:
            # Already fitted: append as RGBA squares (refitting a square is exact).
            sq = np.concatenate([np.asarray(a.rgb), np.asarray(a.mask)[..., None]], -1)
            images.extend(list(sq))
            names.extend(units if len(units) == len(sq) else [None] * len(sq))
    return dataclasses.replace(atlas_from_rgba(images, size), names=tuple(names))
