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
    sq = np.stack([fit_into_square(im, size) for im in images])
    return Atlas.from_arrays(mask=sq[..., 3], rgb=sq[..., :3])


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
