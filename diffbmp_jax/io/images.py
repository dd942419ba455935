"""Images in and out: one list of image suffixes, file/folder/glob expansion, RGBA decoding, targets, uint8."""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

PNG_LEVEL = 3
"""zlib level of the PNG results (``result.png``, the PNG export): 3-4x faster to write than
Pillow's default 6 (0.03 s against 0.1 s at 512 px on 2 cores) for a file about 4 % larger."""


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


def draft_for(im, longer_side: int) -> None:
    """Lets a JPEG decode at the smallest DCT scale (1/2, 1/4 or 1/8) that keeps its longer side at
    least ``longer_side`` pixels (``Image.draft``; other formats decode whole). Call before ``load``.

    Downscaling a photo then starts from a quarter or a sixteenth of its pixels: a 3142 x 3820
    JPEG to 512 px took 0.09 s instead of 0.32 s on 2 cores, 54 dB from the full-size Lanczos
    result, with ``longer_side`` twice the output's (``benchmarks/RESULTS.md``).
    """
    s = longer_side / max(im.size)
    if s < 0.5:  # no scale of 1/2 or less would keep enough pixels otherwise
        im.draft(None, (math.ceil(im.width * s), math.ceil(im.height * s)))


def read_rgba(path, draft: int | None = None) -> np.ndarray:
    """Reads an image as float32 ``[h, w, 4]`` RGBA in [0, 1]; alpha 1 if absent.

    Also returns whether the file had an alpha channel, as the ``has_alpha``
    attribute of the error-free tuple ``(rgba, has_alpha)``. ``draft``: a JPEG
    may come back smaller, its longer side at least that many pixels
    (:func:`draft_for`; for callers that downscale it anyway).
    """
    try:
        with Image.open(path) as im:
            if draft is not None:
                draft_for(im, draft)
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from e
    return rgba, has_alpha


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


def load_target(path, max_size: int | None = None, keep_alpha: bool = False) -> np.ndarray:
    """Reads an image file as float32 ``[H, W, 3]`` in [0, 1].

    Transparent pixels are composed over white, unless ``keep_alpha``: then an
    image with any transparent pixel comes back as straight ``[H, W, 4]`` RGBA,
    for the fits that train over their own background behind it (:func:`diffbmp_jax.fit`,
    :func:`diffbmp_jax.fit_batch`). The image is downscaled (Lanczos; Pillow
    premultiplies RGBA by alpha for it) so its longer side is at most ``max_size``;
    a JPEG is first decoded at a reduced scale keeping twice that (:func:`draft_for`).
    Raises FileNotFoundError / ValueError naming ``target``.
    """
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"target: no such file: {str(path)!r}")
    try:
        with Image.open(path) as im:
            size = im.size  # as stored: the output's size follows from it, not from the draft's
            s = max_size / max(size) if max_size is not None and max(size) > max_size else None
            if s is not None:
                draft_for(im, 2 * max_size)
            im.load()
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"target: cannot read image {str(path)!r}: {e}") from e
    if s is not None:
        rgba = rgba.resize((max(1, round(size[0] * s)), max(1, round(size[1] * s))), Image.LANCZOS)
    out = np.asarray(rgba, np.float32) / 255.0
    if keep_alpha and out[..., 3].min() < 1.0:
        return out
    return over_white(out)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` straight RGBA in [0, 1] composed over white: ``[H, W, 3]``."""
    return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])


def as_target_image(target, argname: str = "target"):
    """A fit's target as given, with image files and PIL images decoded.

    A path (str or ``os.PathLike``) is read as float32 ``[H, W, 4]`` RGBA in
    [0, 1] when the file has an alpha channel, else ``[H, W, 3]`` RGB; a
    ``PIL.Image.Image`` likewise (``RGBA``/``LA``/``PA`` modes and palettes
    with transparency keep their alpha). Nothing is resized, and transparency
    is kept for the fit to handle (``validation.split_alpha``); anything else
    (arrays) is returned unchanged. Raises FileNotFoundError / ValueError
    naming ``argname`` and the file for a missing, folder or unreadable file.
    """
    if isinstance(target, Image.Image):
        has_alpha = target.mode in ("RGBA", "LA", "PA") or (target.mode == "P" and "transparency" in target.info)
        try:
            rgba = np.asarray(target.convert("RGBA"), np.float32) / 255.0
        except (OSError, ValueError) as e:
            raise ValueError(f"{argname}: cannot convert the PIL image (mode {target.mode!r}) to RGBA: {e}") from e
        return rgba if has_alpha else rgba[..., :3]
    if not isinstance(target, (str, os.PathLike)):
        return target
    path = os.fspath(target)
    if os.path.isdir(path):
        raise ValueError(f"{argname}: {path!r} is a folder, not an image file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argname}: no such file: {path!r}")
    try:
        rgba, has_alpha = read_rgba(path)
    except ValueError as e:
        raise ValueError(f"{argname}: {e}") from e
    return rgba if has_alpha else rgba[..., :3]


def to_uint8(img) -> np.ndarray:
    """Image in [0, 1] (clipped) -> uint8, rounded to nearest."""
    return (np.clip(np.asarray(img, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
