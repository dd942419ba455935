"""Stamps from text: fonts, glyph bitmaps, splitting text into characters or words."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from diffbmp_jax.stamps.raster import SUPERSAMPLE, atlas_from_rgba, check_stamp_size

_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
              "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def system_font_files() -> list[Path]:
    out = []
    for d in _FONT_DIRS:
        d = Path(os.path.expanduser(d))
        if d.is_dir():
            out.extend(q for q in d.rglob("*") if q.suffix.lower() in _FONT_SUFFIXES)
    return sorted(out)


def find_font(font) -> str:
    """Resolves ``font`` (a file path, or a file name / stem such as
    ``"DejaVuSans-Bold"``) to a font file path.

    Raises ValueError naming ``font`` when nothing matches.
    """
    s = os.path.expanduser(str(font))
    if os.path.isfile(s):
        return s
    key = Path(s).name.lower()
    for q in system_font_files():
        if q.name.lower() == key or q.stem.lower() == key:
            return str(q)
    raise ValueError(f"font: cannot find font {str(font)!r}: give a .ttf/.otf path or the file name of "
                     f"an installed font (searched {', '.join(_FONT_DIRS)})")


def load_font(font, px: int):
    """A FreeType font at ``px`` pixels: ``font`` (see :func:`find_font`) or
    Pillow's bundled default TrueType font (Pillow >= 10.1)."""
    from PIL import ImageFont
    if font is None:
        f = ImageFont.load_default(size=px)
        if not isinstance(f, ImageFont.FreeTypeFont):  # pragma: no cover - Pillow without FreeType
            raise RuntimeError("font: Pillow has no FreeType support here; pass font= a .ttf path")
        return f
    path = find_font(font)
    try:
        return ImageFont.truetype(path, px)
    except OSError as e:
        raise ValueError(f"font: cannot load font file {path!r}: {e}") from e


def render_text_bitmap(text: str, font=None, px: int = 128, color=(0.0, 0.0, 0.0),
                       embedded_color: bool = False) -> np.ndarray:
    """Draws ``text`` and crops it to its ink: ``[h, w, 4]`` float32 straight RGBA.

    ``px`` is the font size in pixels; ``color`` the fill RGB in [0, 1] (ignored by
    colour glyphs when ``embedded_color``). Raises ValueError when nothing is drawn.
    """
    from PIL import ImageDraw
    f = font if hasattr(font, "getbbox") else load_font(font, px)
    l, t, r, b = f.getbbox(text, anchor="ls")
    pad = 2
    w, h = max(1, r - l + 2 * pad), max(1, b - t + 2 * pad)
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    fill = tuple(int(round(255 * float(c))) for c in color) + (255,)
    ImageDraw.Draw(im).text((pad - l, pad - t), text, font=f, fill=fill, anchor="ls",
                            embedded_color=embedded_color)
    rgba = np.asarray(im, np.float32) / 255.0
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if ys.size == 0:
        raise ValueError(f"text: {text!r} draws no visible pixels with this font")
    return rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def split_text(text: str, mode: str = "char") -> list[str]:
    """Units of ``text``: characters (``mode="char"``) or words (``"word"``).

    Whitespace is dropped and repeats are removed (first occurrence kept), so each
    unit gives one distinct bitmap.
    """
    if mode not in ("char", "word"):
        raise ValueError(f"mode must be 'char' or 'word', got {mode!r}")
    units = list(text) if mode == "char" else text.split()
    out = []
    for u in units:
        if u.strip() and u not in out:
            out.append(u)
    return out


def atlas_from_text(text: str, size: int = 64, *, mode: str = "char", font=None,
                    color=(0.0, 0.0, 0.0)):
    """Atlas of the glyphs (``mode="char"``) or words (``mode="word"``) of ``text``.

    Args:
      text: the string; whitespace separates words and is never a bitmap.
      size: bitmap side in pixels; each glyph is cropped to its ink, then fitted
        with its aspect kept.
      mode: ``"char"`` or ``"word"``.
      font: ``None`` (Pillow's bundled TrueType font), a ``.ttf``/``.otf`` path,
        or the file name of an installed font (e.g. ``"DejaVuSans-Bold.ttf"``).
      color: RGB in [0, 1] stored as the bitmaps' own colour (``Atlas.rgb``).

    Returns:
      :class:`~diffbmp_jax.Atlas`, ``mask`` = glyph coverage.
    """
    size = check_stamp_size(size)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    units = split_text(text, mode)
    if not units:
        raise ValueError("text: no visible characters (the atlas would be empty)")
    f = load_font(font, size * SUPERSAMPLE)
    return atlas_from_rgba([render_text_bitmap(u, f, color=color) for u in units], size)

