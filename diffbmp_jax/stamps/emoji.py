"""Stamps from colour emoji: finding a colour font, splitting graphemes, drawing them."""

from __future__ import annotations

import os


from diffbmp_jax.stamps.raster import SUPERSAMPLE, atlas_from_rgba, check_stamp_size
from diffbmp_jax.stamps.text import find_font, render_text_bitmap, system_font_files

_EMOJI_FONT_NAMES = ("notocoloremoji.ttf", "notocoloremoji-regular.ttf", "noto-colrv1.ttf",
                     "applecoloremoji.ttc", "seguiemj.ttf", "twemoji.ttf", "twemojimozilla.ttf",
                     "openmoji-color-colrv0.ttf", "joypixels.ttf", "emojione-color.ttf")
# CBDT bitmap fonts (Noto Color Emoji) exist only at this strike size.
_CBDT_STRIKE = 109


class EmojiFontNotFoundError(RuntimeError):
    """No colour emoji font is installed (nor named): ``emoji:`` stamps cannot be drawn."""


def find_emoji_font() -> str | None:
    """Path of a colour emoji font, or None.

    Looks at ``$DIFFBMP_EMOJI_FONT``, then ``fc-list :color=true`` (fontconfig),
    then well-known file names in the usual font folders.
    """
    env = os.environ.get("DIFFBMP_EMOJI_FONT")
    if env:
        return env if os.path.isfile(env) else None
    import shutil
    import subprocess
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":color=true", "file"], capture_output=True, text=True,
                                 timeout=10).stdout
            files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
            files = [f for f in files if os.path.isfile(f)]
            if files:
                return files[0]
        except (OSError, subprocess.SubprocessError):  # pragma: no cover
            pass
    for q in system_font_files():
        if q.name.lower() in _EMOJI_FONT_NAMES:
            return str(q)
    return None


def split_graphemes(s: str) -> list[str]:
    """Splits a string into emoji-sized clusters.

    Keeps together a base character with variation selectors, skin-tone
    modifiers, keycap marks and tag characters, ZWJ sequences (👩‍💻) and
    regional-indicator pairs (flags). Whitespace is dropped.
    """
    def is_ext(c):
        o = ord(c)
        return (o in (0xFE0E, 0xFE0F, 0x20E3) or 0x1F3FB <= o <= 0x1F3FF or 0xE0020 <= o <= 0xE007F
                or 0x0300 <= o <= 0x036F)

    def is_ri(c):
        return 0x1F1E6 <= ord(c) <= 0x1F1FF

    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        i += 1
        if c.isspace():
            continue
        cur = c
        if is_ri(c) and i < len(s) and is_ri(s[i]):
            cur += s[i]
            i += 1
        while i < len(s):
            if is_ext(s[i]):
                cur += s[i]
                i += 1
            elif s[i] == "\u200d" and i + 1 < len(s):
                cur += s[i] + s[i + 1]
                i += 2
            else:
                break
        out.append(cur)
    return out


def atlas_from_emoji(emoji: str, size: int = 64, *, font=None):
    """Atlas of the emoji in ``emoji`` (one bitmap each, repeats removed), drawn
    in colour from a colour emoji font.

    Args:
      emoji: a string such as ``"🌸🌼"``; see :func:`split_graphemes`.
      size: bitmap side in pixels.
      font: a colour emoji font file; default :func:`find_emoji_font`.

    Raises:
      RuntimeError when no colour emoji font is installed (install e.g. Debian's
      ``fonts-noto-color-emoji``, or set ``$DIFFBMP_EMOJI_FONT``).
    """
    from PIL import ImageFont
    size = check_stamp_size(size)
    units = []
    for u in split_graphemes(emoji):
        if u not in units:
            units.append(u)
    if not units:
        raise ValueError("emoji: no emoji given (the atlas would be empty)")
    path = find_font(font) if font is not None else find_emoji_font()
    if path is None:
        raise EmojiFontNotFoundError("emoji: no colour emoji font found on this system (searched "
                                     "$DIFFBMP_EMOJI_FONT, fc-list :color=true and the usual font folders); "
                                     "install one, e.g. Debian's 'fonts-noto-color-emoji', or name one "
                                     "(font=PATH; on the command line --emoji-font PATH)")
    try:
        f = ImageFont.truetype(path, size * SUPERSAMPLE)
    except OSError:
        # Bitmap (CBDT) colour fonts load only at their strike size.
        try:
            f = ImageFont.truetype(path, _CBDT_STRIKE)
        except OSError as e:
            raise ValueError(f"font: cannot load emoji font {path!r}: {e}") from e
    images = []
    for u in units:
        rgba = render_text_bitmap(u, f, embedded_color=True)
        images.append(rgba)
    return atlas_from_rgba(images, size)

