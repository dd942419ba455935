"""Shared pieces of the exporters: argument checks, atomic writes, per-primitive
bounding boxes and crops, and memory-bounded full renders."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax.rendering import mipmap
from diffbmp_jax import validation as V
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.rendering.reference import layers as _reference_layers
from diffbmp_jax.rendering.api import check_canvas_memory, check_scene as render_check_scene, composite, render

# Reference-renderer work per call, in primitive-pixels (N * H * W). The dense
# reference keeps ~10 float32 values per primitive-pixel, so 2**22 is ~160 MB.
DENSE_BUDGET = 1 << 22


# --- arguments ------------------------------------------------------------------

def check_scene(params, atlas, height, width, template, color_blend, alpha_max=0.99):
    """Validates a scene as :func:`render` does; returns
    ``(params, atlas, height, width, template [N] int32 numpy, color_blend, alpha_max)``."""
    params, template, height, width, color_blend, alpha_max = render_check_scene(
        params, atlas, height=height, width=width, template=template, color_blend=color_blend,
        alpha_max=alpha_max)
    template = np.asarray(template, np.int32)
    return params, atlas, height, width, template, color_blend, alpha_max


def check_background(background) -> np.ndarray:
    """``background`` as an RGB float32 triple in [0, 1]."""
    b = np.asarray(background, np.float32)
    if b.ndim == 0:
        b = np.full(3, b, np.float32)
    if b.shape != (3,):
        raise ValueError(f"background must be an RGB triple in [0, 1], got shape {b.shape}")
    V.check_finite("background", b)
    V.check_range("background", b, 0.0, 1.0)
    return b


def check_scale(scale) -> float:
    """Output scale factor (> 0): the canvas and every primitive grow by it."""
    try:
        s = float(scale)
    except Exception as e:
        raise TypeError(f"scale must be a positive number, got {scale!r}") from e
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return s


def scale_scene(params: Primitives, height: int, width: int, s: float):
    """The same picture on a canvas ``s`` times larger.

    Pixel centres sit at integers, so canvas point ``x`` maps to
    ``s * (x + 0.5) - 0.5``; half-extents grow by ``s``.
    """
    if s == 1.0:
        return params, height, width
    h2, w2 = max(1, int(round(height * s))), max(1, int(round(width * s)))
    check_canvas_memory(h2, w2)  # before any writer allocates the scaled canvas
    p = Primitives(xy=params.xy * s + (s - 1) / 2, scale=params.scale * s, rotation=params.rotation,
                   opacity_logit=params.opacity_logit, color_logit=params.color_logit)
    return p, h2, w2


def drawn_atlas(params: Primitives, atlas, template, antialias: bool):
    """``(atlas, template [N] int32 numpy)`` as the plain sampler draws them.

    With ``antialias`` (the exporters' default, as in fits) the atlas becomes
    its prefiltered levels and the ids pick each primitive's level for its
    size in ``params`` (already scaled to the output): the picture of
    ``render(..., antialias=True)``; without, both are returned as given.
    """
    if not antialias:
        return atlas, template
    rgb = None if atlas.rgb is None else jnp.asarray(atlas.rgb, jnp.float32)
    mask, rgb, t = mipmap.lod_scene(jnp.asarray(params.scale, jnp.float32), jnp.asarray(atlas.mask, jnp.float32),
                                    rgb, jnp.asarray(template, jnp.int32))
    return Atlas(mask=mask, rgb=rgb), np.asarray(t, np.int32)


# --- full renders -----------------------------------------------------------------

def _pad_params(p: Primitives, n: int) -> Primitives:
    """Pads to ``n`` primitives with invisible ones (far off-canvas, zero opacity)."""
    k = n - p.num
    if k <= 0:
        return p
    pad = Primitives(xy=jnp.full((k, 2), -1e6, jnp.float32), scale=jnp.ones((k,), jnp.float32),
                     rotation=jnp.zeros((k,), jnp.float32), opacity_logit=jnp.full((k,), -30.0, jnp.float32),
                     color_logit=jnp.zeros((k, 3), jnp.float32))
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), p, pad)


def _kernels_available() -> bool:
    from diffbmp_jax.rendering import registry
    try:
        return bool(registry.registered("cpu") or registry.registered("CUDA"))
    except Exception:  # pragma: no cover
        return False


def render_layers_chunked(params, atlas, template, height, width, *, color_blend=0.0, alpha_max=0.99,
                          backend="auto", chunk=None):
    """``render`` over consecutive chunks of primitives, composited in painter's
    order, so memory stays bounded with the dense reference backend.

    Yields ``(end, C [H, W, 3], A [H, W])`` numpy arrays after each chunk: the
    picture of primitives ``[0, end)``. Chunks have a fixed size (the last one is
    padded with invisible primitives) so ``render`` compiles once.
    """
    n = params.num
    if chunk is None:
        chunk = n if (_kernels_available() and backend != "reference") else max(1, DENSE_BUDGET // (height * width))
    chunk = max(1, min(int(chunk), max(n, 1)))
    C = np.zeros((height, width, 3), np.float32)
    A = np.zeros((height, width), np.float32)
    tmpl = jnp.asarray(template, jnp.int32)
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        p = _pad_params(params[start:end], chunk)
        t = jnp.concatenate([tmpl[start:end], jnp.zeros((chunk - (end - start),), jnp.int32)])
        c, a = render(p, atlas, height=height, width=width, template=t, color_blend=color_blend,
                      alpha_max=alpha_max, backend=backend)
        c, a = np.asarray(c), np.asarray(a)
        # The new chunk lies on top of everything so far.
        C = c + (1.0 - a)[..., None] * C
        A = a + (1.0 - a) * A
        yield end, C, A


def render_image(params, atlas, template, height, width, *, color_blend=0.0, alpha_max=0.99,
                 background=(1.0, 1.0, 1.0), backend="auto") -> np.ndarray:
    """The final picture ``[H, W, 3]`` float32 in [0, 1] over ``background``."""
    C = np.zeros((height, width, 3), np.float32)
    A = np.zeros((height, width), np.float32)
    for _, C, A in render_layers_chunked(params, atlas, template, height, width, color_blend=color_blend,
                                         alpha_max=alpha_max, backend=backend):
        pass
    return np.clip(np.asarray(composite(C, A, background)), 0.0, 1.0)


# --- per-primitive crops ----------------------------------------------------------

def bounding_boxes(params: Primitives, atlas_hw, height: int, width: int) -> np.ndarray:
    """``[N, 4]`` int ``(x0, y0, x1, y1)`` (x1/y1 exclusive, clipped to the canvas):
    the pixels each primitive can touch. Empty when ``x1 <= x0`` or ``y1 <= y0``.

    The rotated bitmap rectangle, grown by one bitmap pixel for the bilinear
    footprint and by one canvas pixel for rounding.
    """
    h, w = atlas_hw
    m = max(h, w)
    xy = np.asarray(params.xy, np.float64)
    s = np.asarray(params.scale, np.float64)
    r = np.asarray(params.rotation, np.float64)
    hx = s * (w + 2) / m
    hy = s * (h + 2) / m
    c, n = np.abs(np.cos(r)), np.abs(np.sin(r))
    ex, ey = c * hx + n * hy + 1, n * hx + c * hy + 1
    x0 = np.clip(np.floor(xy[:, 0] - ex), 0, width)
    x1 = np.clip(np.ceil(xy[:, 0] + ex) + 1, 0, width)
    y0 = np.clip(np.floor(xy[:, 1] - ey), 0, height)
    y1 = np.clip(np.ceil(xy[:, 1] + ey) + 1, 0, height)
    return np.stack([x0, y0, x1, y1], -1).astype(np.int64)


@functools.partial(jit, static_argnums=(4, 5, 6, 7), persist=True)
def _crop_layers(params, mask, rgb, template, size, _unused, color_blend, alpha_max):
    # reference.layers gives each primitive alone: alpha a_n and straight colour col_n.
    return _reference_layers(params, mask, rgb, template, size, size, color_blend, alpha_max)


def iter_primitive_crops(params, atlas, template, height, width, *, color_blend=0.0, alpha_max=0.99,
                         chunk=512, budget=DENSE_BUDGET):
    """Renders each primitive alone, inside its own bounding box, in painter's order.

    Yields ``(n, x0, y0, alpha [h, w], color [h, w, 3])`` float32 numpy arrays:
    ``alpha = alpha_max * opacity * mask`` and the straight colour, i.e. exactly
    the ``a_n`` and ``col_n`` of docs/DESIGN.md §1 (a single-primitive render has
    ``A = a_n`` and ``C / A = col_n``). Boxes are trimmed to non-zero alpha; a
    primitive that touches no pixel yields ``h = w = 0``.

    Memory: ``chunk`` primitives at a time, each rendered on a square crop of a
    power-of-two side (so few shapes compile), at most ``budget`` crop pixels per
    call. Nothing full-canvas is held per primitive.
    """
    n = params.num
    mask = jnp.asarray(atlas.mask, jnp.float32)
    rgb = jnp.asarray(atlas.rgb, jnp.float32) if color_blend > 0 else None
    boxes = bounding_boxes(params, atlas.size, height, width)
    xy = np.asarray(params.xy, np.float32)
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        idx = np.arange(start, end)
        bw = boxes[idx, 2] - boxes[idx, 0]
        bh = boxes[idx, 3] - boxes[idx, 1]
        side = np.maximum(np.maximum(bw, bh), 1)
        bucket = (1 << np.ceil(np.log2(np.maximum(side, 8))).astype(np.int64))
        results = {}
        for S in np.unique(bucket[(bw > 0) & (bh > 0)]):
            S = int(S)
            members = idx[(bucket == S) & (bw > 0) & (bh > 0)]
            per_call = max(1, budget // (S * S))
            # Round calls up to a power of two of primitives: few compiled shapes.
            per_call = min(per_call, 1 << int(np.ceil(np.log2(len(members)))))
            for s0 in range(0, len(members), per_call):
                sel = members[s0:s0 + per_call]
                pad = per_call - len(sel)
                full = np.concatenate([sel, np.repeat(sel[:1], pad)])
                origin = boxes[full][:, :2].astype(np.float32)
                p = Primitives(xy=jnp.asarray(xy[full] - origin), scale=params.scale[full],
                               rotation=params.rotation[full], opacity_logit=params.opacity_logit[full],
                               color_logit=params.color_logit[full])
                a, col = _crop_layers(p, mask, rgb, jnp.asarray(template[full]), S, S, float(color_blend),
                                      float(alpha_max))
                a, col = np.asarray(a), np.asarray(col)
                for k, i in enumerate(sel):
                    results[int(i)] = (a[k, :bh[i - start], :bw[i - start]], col[k, :bh[i - start], :bw[i - start]])
        for i in idx:
            x0, y0 = int(boxes[i, 0]), int(boxes[i, 1])
            if int(i) not in results:
                yield int(i), x0, y0, np.zeros((0, 0), np.float32), np.zeros((0, 0, 3), np.float32)
                continue
            a, col = results.pop(int(i))
            rows = np.nonzero(a.max(1) > 0)[0]
            cols = np.nonzero(a.max(0) > 0)[0]
            if rows.size == 0:
                yield int(i), x0, y0, np.zeros((0, 0), np.float32), np.zeros((0, 0, 3), np.float32)
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            yield int(i), x0 + int(c0), y0 + int(r0), a[r0:r1, c0:c1], col[r0:r1, c0:c1]
