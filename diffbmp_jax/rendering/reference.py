"""Dense pure-JAX renderer: the ground truth every backend is tested against.

Written for clarity, not speed: it evaluates every primitive at every pixel
(``O(N * H * W)`` time and memory), so it suits N up to a few hundred.
``jax.grad`` differentiates it directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffbmp_jax.scene.primitives import Primitives


def local_coords(params: Primitives, height: int, width: int):
    """Bitmap-frame coordinates ``(u, v)`` of every pixel centre, ``[N, H, W]`` each.

    ``d = ((x, y) - xy) / scale``; rotating ``d`` by ``-rotation`` gives
    ``u = cos(r) dx - sin(r) dy``, ``v = sin(r) dx + cos(r) dy`` (y points down,
    so a positive rotation turns the bitmap counter-clockwise on screen).
    """
    ys = jnp.arange(height, dtype=jnp.float32)[None, :, None]
    xs = jnp.arange(width, dtype=jnp.float32)[None, None, :]
    s = params.scale[:, None, None]
    dx = (xs - params.xy[:, 0, None, None]) / s
    dy = (ys - params.xy[:, 1, None, None]) / s
    c = jnp.cos(params.rotation)[:, None, None]
    n = jnp.sin(params.rotation)[:, None, None]
    return c * dx - n * dy, n * dx + c * dy


def bilinear(images: jax.Array, template: jax.Array, u: jax.Array, v: jax.Array) -> jax.Array:
    """Samples ``images[template[n]]`` at ``(u, v)``, zero outside the bitmap.

    Args:
      images: ``[P, h, w, C]`` bitmaps.
      template: ``[N]`` int32 bitmap index per primitive.
      u, v: ``[N, H, W]`` coordinates; ``[-1, 1]`` spans the longer bitmap side,
        pixel ``j`` has its centre at ``u = (2 j + 1 - w) / max(h, w)``.

    Returns:
      ``[N, H, W, C]`` samples.
    """
    _, h, w, _ = images.shape
    half = max(h, w) / 2.0
    # Clipping keeps far-away coordinates (even inf) in int32 range; the taps
    # there read the zero border either way.
    fx = jnp.clip(u * half + (w / 2.0 - 0.5), -2.0, w + 1.0)
    fy = jnp.clip(v * half + (h / 2.0 - 0.5), -2.0, h + 1.0)
    # A one-pixel zero border makes every out-of-bitmap tap read zero.
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x0 = jnp.floor(fx)
    y0 = jnp.floor(fy)
    tx = (fx - x0)[..., None]
    ty = (fy - y0)[..., None]
    ix = jnp.clip(x0.astype(jnp.int32), -1, w) + 1
    iy = jnp.clip(y0.astype(jnp.int32), -1, h) + 1
    ix1 = jnp.clip(x0.astype(jnp.int32) + 1, -1, w) + 1
    iy1 = jnp.clip(y0.astype(jnp.int32) + 1, -1, h) + 1
    t = template[:, None, None]
    p00 = padded[t, iy, ix]
    p01 = padded[t, iy, ix1]
    p10 = padded[t, iy1, ix]
    p11 = padded[t, iy1, ix1]
    return (p00 * (1 - tx) * (1 - ty) + p01 * tx * (1 - ty)
            + p10 * (1 - tx) * ty + p11 * tx * ty)


def layers(params: Primitives, mask, rgb, template, height: int, width: int,
           color_blend: float, alpha_max: float):
    """Per-primitive alpha ``[N, H, W]`` and colour ``[N, H, W, 3]`` (docs/DESIGN.md §1)."""
    u, v = local_coords(params, height, width)
    images = mask[..., None] if rgb is None else jnp.concatenate([mask[..., None], rgb], -1)
    samples = bilinear(images, template, u, v)
    a = alpha_max * params.opacity[:, None, None] * samples[..., 0]
    tint = params.color[:, None, None, :]
    col = tint if rgb is None else (1 - color_blend) * tint + color_blend * samples[..., 1:]
    return a, jnp.broadcast_to(col, a.shape + (3,))


def _composite_dense(params: Primitives, mask, rgb, template, height, width, color_blend, alpha_max,
                     valid=None):
    """``(C, T)`` of a group of primitives, evaluated densely."""
    a, col = layers(params, mask, rgb, template, height, width, color_blend, alpha_max)
    if valid is not None:  # padding primitives draw nothing
        a = a * valid[:, None, None]
    one_minus = 1.0 - a
    # T_n = prod_{m > n} (1 - a_m): exclusive product over the primitives in front.
    inclusive = jnp.cumprod(one_minus[::-1], axis=0)[::-1]
    front = jnp.concatenate([inclusive[1:], jnp.ones_like(inclusive[:1])], axis=0)
    color = jnp.sum((front * a)[..., None] * col, axis=0)
    return color, inclusive[0]


def render_reference(params: Primitives, mask, rgb, template, height: int, width: int,
                     color_blend: float = 0.0, alpha_max: float = 0.99, chunk: int = 64):
    """Painter's-order composite, primitive ``N-1`` on top.

    Returns ``(C [H, W, 3], T [H, W])``: premultiplied colour and the light that
    passes every primitive, ``T = prod_n (1 - a_n)`` (coverage is ``1 - T``).

    Up to ``chunk`` primitives are evaluated at once. Larger scenes are composited
    chunk by chunk, bottom first (``C <- C_chunk + T_chunk * C``,
    ``T <- T_chunk * T``), each chunk rematerialised in the backward pass, so
    memory is ``O(chunk * H * W)`` instead of ``O(N * H * W)``.
    """
    n = params.xy.shape[0]
    if n <= chunk:
        return _composite_dense(params, mask, rgb, template, height, width, color_blend, alpha_max)
    groups = -(-n // chunk)
    pad = groups * chunk - n

    def grouped(x, fill):
        x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)])
        return x.reshape((groups, chunk) + x.shape[1:])

    stacked = jax.tree_util.tree_map(lambda x: grouped(x, 1), params)
    valid = grouped(jnp.ones(n, params.xy.dtype), 0)

    @jax.checkpoint
    def step(carry, group):
        color, trans = carry
        p, t, ok = group
        c_g, t_g = _composite_dense(p, mask, rgb, t, height, width, color_blend, alpha_max, ok)
        return (c_g + t_g[..., None] * color, t_g * trans), None

    dtype = params.xy.dtype
    init = (jnp.zeros((height, width, 3), dtype), jnp.ones((height, width), dtype))
    (color, trans), _ = jax.lax.scan(step, init, (stacked, grouped(template, 0), valid))
    return color, trans
