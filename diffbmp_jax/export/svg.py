"""SVG export: one ``<use>`` of an embedded bitmap per primitive.

Each distinct tinted bitmap (bitmap id and 8-bit colour) is embedded once as a
PNG ``<image>`` in ``<defs>``; every primitive is a ``<use>`` of it with a
``transform`` (position, rotation, scale) and an ``opacity``, in painter's
order. The drawing stays resolution independent: scale it freely in any viewer.
"""

from __future__ import annotations

import base64
import io
import math
from xml.sax.saxutils import quoteattr

import numpy as np
from PIL import Image

from diffbmp_jax.files import atomic_output
from diffbmp_jax.export.common import check_background, check_scale, check_scene
from diffbmp_jax.io.images import to_uint8

__all__ = ["export_svg", "rasterize_svg_file"]


def _png_data_uri(rgba_u8: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgba_u8, "RGBA").save(buf, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hex(rgb) -> str:
    r, g, b = (int(v) for v in to_uint8(rgb))
    return f"#{r:02x}{g:02x}{b:02x}"


def svg_document(params, atlas, *, height: int, width: int, template=None, color_blend: float = 0.0,
                 background=(1.0, 1.0, 1.0), scale: float = 1, alpha_max: float = 0.99):
    """Yields the SVG document as text chunks (see :func:`export_svg`)."""
    params, atlas, height, width, template, color_blend, alpha_max = check_scene(
        params, atlas, height, width, template, color_blend, alpha_max)
    bg = check_background(background)
    s = check_scale(scale)
    h, w = atlas.size
    m = max(h, w)
    mask = np.asarray(atlas.mask, np.float32)
    rgb = np.asarray(atlas.rgb, np.float32) if color_blend > 0 else None
    tint = to_uint8(1.0 / (1.0 + np.exp(-np.asarray(params.color_logit, np.float64))))
    opac = alpha_max / (1.0 + np.exp(-np.asarray(params.opacity_logit, np.float64)))
    xy = np.asarray(params.xy, np.float64)
    sc = np.asarray(params.scale, np.float64)
    rot = np.asarray(params.rotation, np.float64)

    yield ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           f'width="{width * s:g}" height="{height * s:g}" viewBox="0 0 {width} {height}">\n'
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="{_hex(bg)}"/>\n<defs>\n')
    # Key of a tinted bitmap: bitmap id, plus the 8-bit tint unless colours are
    # the bitmap's own (color_blend == 1).
    keys = {}
    for i in range(params.num):
        p = int(template[i])
        key = (p,) if color_blend == 1.0 else (p, *tint[i].tolist())
        if key in keys:
            continue
        keys[key] = f"b{len(keys)}"
        col = tint[i].astype(np.float32) / 255.0
        if rgb is not None:
            col = (1 - color_blend) * col + color_blend * rgb[p]
        col = np.broadcast_to(col, (h, w, 3))
        rgba = np.concatenate([to_uint8(col), to_uint8(mask[p])[..., None]], -1)
        # A one-pixel transparent border: the renderer's bilinear taps read zero
        # outside the bitmap, so its edge fades out over that extra pixel.
        rgba = np.pad(rgba, ((1, 1), (1, 1), (0, 0)))
        yield (f'<image id="{keys[key]}" x="{-w / 2 - 1:g}" y="{-h / 2 - 1:g}" width="{w + 2}" '
               f'height="{h + 2}" preserveAspectRatio="none" style="image-rendering:smooth" xlink:href="{_png_data_uri(rgba)}"/>\n')
    yield "</defs>\n"
    for i in range(params.num):
        p = int(template[i])
        key = (p,) if color_blend == 1.0 else (p, *tint[i].tolist())
        # Pixel centres are at integers in the renderer, at +0.5 in SVG user space.
        f = 2.0 * sc[i] / m
        deg = -math.degrees(rot[i])
        yield (f'<use xlink:href="#{keys[key]}" transform="translate({xy[i, 0] + 0.5:.4f} {xy[i, 1] + 0.5:.4f}) '
               f'rotate({deg:.4f}) scale({f:.6f})" opacity="{opac[i]:.5f}" id={quoteattr(f"p{i}")}/>\n')
    yield "</svg>\n"


def export_svg(path, params, atlas, *, height: int, width: int, template=None, color_blend: float = 0.0,
               background=(1.0, 1.0, 1.0), scale: float = 1, alpha_max: float = 0.99) -> str:
    """Writes an SVG with one element per primitive, in painter's order.

    Each primitive is ``<use xlink:href="#bK" transform="translate(x y) rotate(-deg) scale(f)"
    opacity="alpha_max * o">`` of an embedded PNG (its bitmap, coloured
    ``(1 - k) * tint + k * rgb``, alpha = mask) centred on the origin, where
    ``f = 2 * scale / max(h, w)`` canvas pixels per bitmap pixel.

    Rasterised back at the canvas size (e.g. with resvg) it matches
    ``composite(*render(...), background)`` to about 1/255 on average; single
    pixels at sharp bitmap edges differ more (viewers resample embedded images
    with their own filter, e.g. bicubic, where the renderer is bilinear).

    Args:
      path: output ``.svg`` file; written to a temporary file and renamed.
      params, atlas, template, color_blend, alpha_max: as for :func:`render`.
      height, width: canvas size; the ``viewBox`` is ``0 0 width height``.
      background: RGB in [0, 1] of a full-canvas rectangle under everything.
      scale: the document's displayed size is ``scale`` times the canvas
        (the drawing itself is resolution independent).

    Returns:
      ``path`` as a string.
    """
    chunks = svg_document(params, atlas, height=height, width=width, template=template,
                          color_blend=color_blend, background=background, scale=scale, alpha_max=alpha_max)
    first = next(chunks)  # validates the arguments before any file is created
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(first)
            for c in chunks:
                f.write(c)
    return str(path)


def rasterize_svg_file(path, width: int | None = None) -> np.ndarray:
    """Rasterises an SVG file with resvg: ``[H, W, 4]`` float32 RGBA in [0, 1]."""
    from diffbmp_jax.stamps.svg import import_resvg as _import_resvg
    resvg_py = _import_resvg()
    kw = {} if width is None else {"width": int(width)}
    png = resvg_py.svg_to_bytes(svg_path=str(path), **kw)
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGBA"), np.float32) / 255.0
