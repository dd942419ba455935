"""Loading bitmaps from image files into an :class:`~diffbmp_jax.Atlas`."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MASK_RULES = ("auto", "alpha", "luminance", "background", "opaque")


def expand_paths(paths) -> list[Path]:
    """Expands files, folders (their images, sorted) and glob patterns into files.

    Raises ValueError naming ``paths`` when nothing is found.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = str(p)
        if any(ch in s for ch in "*?[") and not os.path.exists(s):
            hits = sorted(glob.glob(s, recursive=True))
            if not hits:
                raise ValueError(f"paths: glob {s!r} matched no files")
            out.extend(Path(h) for h in hits if os.path.isfile(h))
        elif os.path.isdir(s):
            hits = sorted(q for q in Path(s).iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not hits:
                raise ValueError(f"paths: folder {s!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(hits)
        elif os.path.isfile(s):
            out.append(Path(s))
        else:
            raise FileNotFoundError(f"paths: no such file or folder: {s!r}")
    if not out:
        raise ValueError("paths: no image files given (the atlas would be empty)")
    return out


def read_rgba(path) -> np.ndarray:
    """Reads an image as float32 ``[h, w, 4]`` RGBA in [0, 1]; alpha 1 if absent.

    Also returns whether the file had an alpha channel, as the ``has_alpha``
    attribute of the error-free tuple ``(rgba, has_alpha)``.
    """
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from e
    return rgba, has_alpha


def mask_from_rgba(rgba: np.ndarray, has_alpha: bool, rule: str, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Coverage ``[h, w]`` in [0, 1] from an RGBA image by ``rule`` (see MASK_RULES)."""
    if rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {rule!r}")
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    if rule == "auto":
        rule = "alpha" if has_alpha else "luminance"
    if rule == "alpha":
        return alpha
    if rule == "opaque":
        return np.ones_like(alpha)
    if rule == "luminance":
        lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        return (1.0 - lum) * alpha
    bg = np.asarray(background, np.float32).reshape(3)
    dist = np.linalg.norm(rgb - bg, axis=-1) / np.sqrt(3.0)
    return np.clip(dist / max(float(dist.max()), 1e-6), 0.0, 1.0) * alpha


def fit_into_square(rgba: np.ndarray, size: int) -> np.ndarray:
    """Resizes ``[h, w, 4]`` to fit ``size x size`` (aspect kept), centred on transparency.

    Resampling uses premultiplied colour so transparent pixels do not bleed.
    """
    h, w = rgba.shape[:2]
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    premult = rgba.copy()
    premult[..., :3] *= premult[..., 3:4]
    chans = [np.asarray(Image.fromarray(premult[..., c]).resize((nw, nh), Image.LANCZOS)) for c in range(4)]
    small = np.clip(np.stack(chans, -1), 0.0, 1.0)
    a = small[..., 3:4]
    small[..., :3] = np.where(a > 1e-6, small[..., :3] / np.maximum(a, 1e-6), 0.0)
    small = np.clip(small, 0.0, 1.0)
    out = np.zeros((size, size, 4), np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = small
    return out


def atlas_from_rgba(images: Sequence[np.ndarray], size: int):
    """Stacks RGBA images ``[h, w, 4]`` (mask in the alpha channel) into an Atlas."""
    from .atlas import Atlas
    if not images:
        raise ValueError("images: no bitmaps given (the atlas would be empty)")
    sq = np.stack([bleed_colors(fit_into_square(im, size)) for im in images])
    return Atlas.from_arrays(mask=sq[..., 3], rgb=sq[..., :3])


def bleed_colors(rgba: np.ndarray, steps: int = 4) -> np.ndarray:
    """Fills the colour of fully transparent pixels from their visible neighbours.

    The renderer samples ``rgb`` and ``mask`` bilinearly *each on its own*, so at
    a stamp's edge the colour of transparent texels leaks in (with black there,
    ``color_blend > 0`` stamps get dark fringes). Each step gives still-empty
    pixels the mean colour of their filled 4-neighbours; after ``steps`` steps
    the rest get the mean visible colour. Alpha is unchanged.

    Args:
      rgba: ``[h, w, 4]`` float32 straight RGBA.
    Returns:
      a new ``[h, w, 4]`` array.
    """
    out = np.array(rgba, np.float32, copy=True)
    filled = out[..., 3] > 0
    if filled.all() or not filled.any():
        return out
    rgb = np.where(filled[..., None], out[..., :3], 0.0)
    for _ in range(steps):
        if filled.all():
            break
        acc = np.zeros_like(rgb)
        cnt = np.zeros(filled.shape, np.float32)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            f = np.roll(filled, (dy, dx), (0, 1))
            c = np.roll(rgb, (dy, dx), (0, 1))
            # np.roll wraps around; drop the wrapped row/column.
            if dy == 1:
                f[0] = False
            if dy == -1:
                f[-1] = False
            if dx == 1:
                f[:, 0] = False
            if dx == -1:
                f[:, -1] = False
            acc += c * f[..., None]
            cnt += f
        new = (~filled) & (cnt > 0)
        rgb[new] = acc[new] / cnt[new][:, None]
        filled = filled | new
    if not filled.all():
        vis = out[..., 3] > 0
        rgb[~filled] = out[..., :3][vis].mean(0)
    out[..., :3] = rgb
    return out


def load_images(paths, size: int = 64, mask_rule: str = "auto", background=(1.0, 1.0, 1.0)):
    """Loads image files into an Atlas (see :meth:`Atlas.from_files`)."""
    from .validation import positive_int
    size = positive_int("size", size)
    if mask_rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
    images = []
    for path in expand_paths(paths):
        rgba, has_alpha = read_rgba(path)
        mask = mask_from_rgba(rgba, has_alpha, mask_rule, background)
        images.append(np.concatenate([rgba[..., :3], mask[..., None]], -1))
    return atlas_from_rgba(images, size)


# ---------------------------------------------------------------------------
# More atlas sources: SVG files, text glyphs, colour emoji, and ``load_stamps``.
# Every source returns RGBA float32 bitmaps that ``atlas_from_rgba`` fits into
# one ``size x size`` square (aspect kept, transparent padding); the RGB part is
# the bitmap's own colour, used by ``render(..., color_blend > 0)``.
# ---------------------------------------------------------------------------

SVG_SUFFIXES = (".svg", ".svgz")
STAMP_SUFFIXES = IMAGE_SUFFIXES + SVG_SUFFIXES

# Rasterise a little larger than the bitmap, then downsample with Lanczos in
# ``fit_into_square``: edges come out anti-aliased the same way as raster inputs.
_SUPERSAMPLE = 2


def _import_resvg():
    try:
        import resvg_py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("SVG sources need the 'resvg-py' package: pip install 'diffbmp-jax[export]' "
                          "(or pip install resvg-py)") from e
    return resvg_py


def rasterize_svg(source, size: int, *, name: str = "svg") -> np.ndarray:
    """Rasterises an SVG (a path, or markup starting with ``<``) with resvg.

    Args:
      source: path to a ``.svg``/``.svgz`` file, or SVG markup as a string.
      size: the longer side of the raster in pixels (aspect kept).
      name: argument name used in error messages.

    Returns:
      ``[h, w, 4]`` float32 straight RGBA in [0, 1], ``max(h, w) == size``.

    Raises:
      ValueError naming ``name`` (and the file) when the SVG cannot be parsed.
    """
    import io
    resvg_py = _import_resvg()
    s = str(source)
    is_markup = s.lstrip().startswith("<")
    if not is_markup and not os.path.isfile(s):
        raise FileNotFoundError(f"{name}: no such SVG file: {s!r}")
    kw = {"svg_string": s} if is_markup else {"svg_path": s}
    what = "SVG markup" if is_markup else f"SVG file {s!r}"
    try:
        # First pass at the natural size only to learn the aspect ratio.
        probe = Image.open(io.BytesIO(resvg_py.svg_to_bytes(**kw)))
        w0, h0 = probe.size
        if w0 >= h0:
            png = resvg_py.svg_to_bytes(**kw, width=size)
        else:
            png = resvg_py.svg_to_bytes(**kw, height=size)
        with Image.open(io.BytesIO(png)) as im:
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
    except (ValueError, OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{name}: cannot parse {what}: {e}") from e
    return rgba


def atlas_from_svg(paths, size: int = 64):
    """Atlas of SVG files (or SVG markup strings), rasterised with resvg.

    Args:
      paths: SVG files, folders (their ``.svg`` files), globs, or markup strings.
      size: bitmap side in pixels; each drawing is fitted with its aspect kept.

    Returns:
      :class:`~diffbmp_jax.Atlas` with ``mask`` = the drawing's alpha and ``rgb``
      its colours, ``[P, size, size]``.
    """
    from .validation import positive_int
    size = positive_int("size", size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    images = []
    for p in paths:
        if str(p).lstrip().startswith("<"):
            images.append(rasterize_svg(p, size * _SUPERSAMPLE, name="paths"))
            continue
        for f in expand_paths_with([p], SVG_SUFFIXES):
            images.append(rasterize_svg(f, size * _SUPERSAMPLE, name="paths"))
    return atlas_from_rgba(images, size)


def expand_paths_with(paths, suffixes) -> list[Path]:
    """Like :func:`expand_paths` but folders contribute files with ``suffixes``."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        s = str(p)
        if os.path.isdir(s):
            hits = sorted(q for q in Path(s).iterdir() if q.suffix.lower() in suffixes and q.is_file())
            if not hits:
                raise ValueError(f"paths: folder {s!r} holds no usable files ({', '.join(suffixes)})")
            out.extend(hits)
        else:
            out.extend(expand_paths([s]))
    return out


# --- text -------------------------------------------------------------------

_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
              "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def _system_font_files() -> list[Path]:
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
    for q in _system_font_files():
        if q.name.lower() == key or q.stem.lower() == key:
            return str(q)
    raise ValueError(f"font: cannot find font {str(font)!r}: give a .ttf/.otf path or the file name of "
                     f"an installed font (searched {', '.join(_FONT_DIRS)})")


def _load_font(font, px: int):
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
    f = font if hasattr(font, "getbbox") else _load_font(font, px)
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
    from .validation import positive_int
    size = positive_int("size", size)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    units = split_text(text, mode)
    if not units:
        raise ValueError("text: no visible characters (the atlas would be empty)")
    f = _load_font(font, size * _SUPERSAMPLE)
    return atlas_from_rgba([render_text_bitmap(u, f, color=color) for u in units], size)


# --- emoji ------------------------------------------------------------------

_EMOJI_FONT_NAMES = ("notocoloremoji.ttf", "notocoloremoji-regular.ttf", "noto-colrv1.ttf",
                     "applecoloremoji.ttc", "seguiemj.ttf", "twemoji.ttf", "twemojimozilla.ttf",
                     "openmoji-color-colrv0.ttf", "joypixels.ttf", "emojione-color.ttf")
# CBDT bitmap fonts (Noto Color Emoji) exist only at this strike size.
_CBDT_STRIKE = 109


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
    for q in _system_font_files():
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
    from .validation import positive_int
    size = positive_int("size", size)
    units = []
    for u in split_graphemes(emoji):
        if u not in units:
            units.append(u)
    if not units:
        raise ValueError("emoji: no emoji given (the atlas would be empty)")
    path = find_font(font) if font is not None else find_emoji_font()
    if path is None:
        raise RuntimeError("emoji: no colour emoji font found on this system (searched $DIFFBMP_EMOJI_FONT, "
                           "fc-list :color=true and the usual font folders); install one, e.g. Debian's "
                           "'fonts-noto-color-emoji', or pass font=PATH")
    try:
        f = ImageFont.truetype(path, size * _SUPERSAMPLE)
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


# --- one entry point for the CLI ---------------------------------------------

def _is_svg(path) -> bool:
    return Path(str(path)).suffix.lower() in SVG_SUFFIXES


def load_stamps(specs, size: int = 64, mask_rule: str = "auto", *, font=None,
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
      mask_rule: for raster images only, see :meth:`Atlas.from_files`.
      font: font for ``text:`` specs (path or installed file name), default
        Pillow's bundled TrueType font.
      background: RGB in [0, 1] for ``mask_rule="background"``.

    Returns:
      :class:`~diffbmp_jax.Atlas` with ``mask [P, size, size]`` and ``rgb``.
    """
    from .validation import positive_int
    size = positive_int("size", size)
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
            a = atlas_from_emoji(s[len("emoji:"):], size)
        else:
            a = None
            for path in expand_paths_with([s], STAMP_SUFFIXES):
                if _is_svg(path):
                    images.append(rasterize_svg(path, size * _SUPERSAMPLE, name="specs"))
                else:
                    rgba, has_alpha = read_rgba(path)
                    mask = mask_from_rgba(rgba, has_alpha, mask_rule, background)
                    images.append(np.concatenate([rgba[..., :3], mask[..., None]], -1))
        if a is not None:
            # Already fitted: append as RGBA squares (refitting a square is exact).
            sq = np.concatenate([np.asarray(a.rgb), np.asarray(a.mask)[..., None]], -1)
            images.extend(list(sq))
    return atlas_from_rgba(images, size)
