"""Stamps from SVG drawings, rasterised with resvg at the stamp size."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffbmp_jax.io.images import expand_paths_with
from diffbmp_jax.stamps.raster import SUPERSAMPLE, atlas_from_rgba, check_stamp_size

SVG_SUFFIXES = (".svg", ".svgz")


def import_resvg():
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
      ``[h, w, 4]`` float32 straight RGBA in [0, 1], ``max(h, w) == size``,
      whatever size the SVG declares.

    Raises:
      ValueError naming ``name`` (and the file) when the SVG cannot be parsed.
    """
    import io
    resvg_py = import_resvg()
    s = str(source)
    is_markup = s.lstrip().startswith("<")
    if not is_markup and not os.path.isfile(s):
        raise FileNotFoundError(f"{name}: no such SVG file: {s!r}")
    kw = {"svg_string": s} if is_markup else {"svg_path": s}
    what = "SVG markup" if is_markup else f"SVG file {s!r}"
    try:
        # Width and height together: resvg fits the drawing into the size x size
        # box, aspect kept, without ever rendering at the SVG's declared size
        # (which may be anything, e.g. 10^6 px a side).
        png = resvg_py.svg_to_bytes(**kw, width=size, height=size)
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
    size = check_stamp_size(size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    images = []
    for p in paths:
        if str(p).lstrip().startswith("<"):
            images.append(rasterize_svg(p, size * SUPERSAMPLE, name="paths"))
            continue
        for f in expand_paths_with([p], SVG_SUFFIXES):
            images.append(rasterize_svg(f, size * SUPERSAMPLE, name="paths"))
    return atlas_from_rgba(images, size)

