"""Choosing which bitmap each primitive shows (the int32 ``template`` array).

All functions are pure: arrays in, a new ``[N]`` int32 array out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffbmp_jax import validation as V
from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.rendering.reference import layers as _layers
from diffbmp_jax.rendering.api import check_params, check_template

__all__ = ["assign_round_robin", "assign_random", "assign_by_color", "bitmap_mean_colors",
           "local_mean_colors", "reassign_templates", "template_losses", "palette_gap"]


def _check_atlas(atlas):
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    return atlas


def assign_round_robin(num_primitives: int, num_bitmaps: int) -> jax.Array:
    """``[N]`` int32 ids ``n % P`` (the default of :func:`render`)."""
    n = V.positive_int("num_primitives", num_primitives) if num_primitives else 0
    p = V.positive_int("num_bitmaps", num_bitmaps)
    return jnp.arange(n, dtype=jnp.int32) % p


def assign_random(key: jax.Array, num_primitives: int, num_bitmaps: int, weights=None) -> jax.Array:
    """``[N]`` int32 ids drawn independently, uniformly or with ``weights [P]`` (>= 0)."""
    n = V.positive_int("num_primitives", num_primitives) if num_primitives else 0
    p = V.positive_int("num_bitmaps", num_bitmaps)
    if weights is None:
        return jax.random.randint(key, (n,), 0, p, dtype=jnp.int32)
    w = V.as_float_array("weights", weights, (p,))
    V.check_finite("weights", w)
    V.check_range("weights", w, 0.0)
    if float(jnp.sum(w)) <= 0:
        raise ValueError("weights must have a positive sum")
    return jax.random.categorical(key, jnp.log(w), shape=(n,)).astype(jnp.int32)


def bitmap_mean_colors(atlas: Atlas) -> jax.Array:
    """``[P, 3]`` mean colour of each bitmap, weighted by its mask (white without rgb)."""
    _check_atlas(atlas)
    m = jnp.asarray(atlas.mask, jnp.float32)[..., None]
    return jnp.sum(m * atlas.colors, (1, 2)) / jnp.maximum(jnp.sum(m, (1, 2)), 1e-6)


def local_mean_colors(target, xy, radius) -> jax.Array:
    """``[N, 3]`` mean colour of ``target [H, W, 3]`` over the square of half-side
    ``radius [N]`` (pixels, at least half a pixel) around each ``xy [N, 2]``,
    clipped to the image. Uses a summed-area table: ``O(H W + N)``.
    """
    target = V.as_float_array("target", target, (None, None, 3))
    h, w, _ = target.shape
    xy = V.as_float_array("xy", xy, (None, 2))
    r = jnp.broadcast_to(V.as_float_array("radius", radius), xy.shape[:1])
    sat = jnp.pad(jnp.cumsum(jnp.cumsum(target, 0), 1), ((1, 0), (1, 0), (0, 0)))
    r = jnp.maximum(r, 0.5)
    # Pixel centres at integers: pixel j covers [j - 0.5, j + 0.5].
    x0 = jnp.clip(jnp.round(xy[:, 0] - r), 0, w - 1).astype(jnp.int32)
    x1 = jnp.clip(jnp.round(xy[:, 0] + r), 0, w - 1).astype(jnp.int32) + 1
    y0 = jnp.clip(jnp.round(xy[:, 1] - r), 0, h - 1).astype(jnp.int32)
    y1 = jnp.clip(jnp.round(xy[:, 1] + r), 0, h - 1).astype(jnp.int32) + 1
    total = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = ((x1 - x0) * (y1 - y0)).astype(jnp.float32)[:, None]
    return total / area


def assign_by_color(params: Primitives, atlas: Atlas, target, *, radius_factor: float = 0.5) -> jax.Array:
    """Mosaic assignment: each primitive gets the bitmap whose mean colour
    (:func:`bitmap_mean_colors`) is nearest (Euclidean RGB) the target's mean
    colour around the primitive (a square of half-side ``radius_factor * scale``).

    Args:
      params: :class:`Primitives` ``N`` (only ``xy`` and ``scale`` are read).
      atlas: :class:`Atlas` with ``rgb`` (the bitmaps' own colours).
      target: ``[H, W, 3]`` image in [0, 1].
    Returns:
      ``[N]`` int32 ids.
    """
    _check_atlas(atlas)
    if atlas.rgb is None:
        raise ValueError("atlas: assign_by_color needs an atlas with rgb colours (Atlas.rgb is None)")
    params = check_params(params)
    local = local_mean_colors(target, params.xy, params.scale * float(radius_factor))
    means = bitmap_mean_colors(atlas)
    d = jnp.sum((local[:, None, :] - means[None, :, :]) ** 2, -1)
    return jnp.argmin(d, 1).astype(jnp.int32)


def _scene(params, mask, rgb, template, height, width, color_blend, alpha_max, background):
    """Per-primitive context for single-primitive changes, all ``[N, H, W, ...]``:
    the image behind each primitive (background included), and the premultiplied
    colour and coverage of everything in front of it."""
    a, col = _layers(params, mask, rgb, template, height, width, color_blend, alpha_max)
    bg = jnp.broadcast_to(background, (height, width, 3))

    def back_step(img, layer):
        a_n, c_n = layer
        return a_n[..., None] * c_n + (1 - a_n[..., None]) * img, img

    _, behind = jax.lax.scan(back_step, bg, (a, col))

    def front_step(carry, layer):
        cf, af = carry
        a_n, c_n = layer
        return (cf + (1 - af)[..., None] * a_n[..., None] * c_n, af + (1 - af) * a_n), carry

    zero = (jnp.zeros((height, width, 3)), jnp.zeros((height, width)))
    _, (cf, af) = jax.lax.scan(front_step, zero, (a, col), reverse=True)
    return behind, cf, af


def template_losses(params: Primitives, template, atlas: Atlas, target, *, color_blend: float = 0.0,
                    alpha_max: float = 0.99, background=(1.0, 1.0, 1.0)) -> jax.Array:
    """``[N, P]`` mean-squared error of the picture against ``target`` when
    primitive ``n`` alone switches to bitmap ``p`` (everything else as given).

    Cost: ``P + 1`` dense renders, ``O((P + 1) N H W)`` time, and ``O(N H W)``
    memory for the per-primitive context (``~ 8 N H W`` floats): meant for
    reference-sized scenes (N up to a few hundred at 128x128), or for a subset
    of primitives at a time.
    """
    _check_atlas(atlas)
    params = check_params(params)
    n, p = params.num, atlas.num
    template = check_template(template, n, p)
    target = V.as_float_array("target", target, (None, None, 3))
    height, width = target.shape[:2]
    color_blend = V.unit_float("color_blend", color_blend)
    if color_blend > 0 and atlas.rgb is None:
        raise ValueError("color_blend > 0 needs an atlas with rgb colours (Atlas.rgb is None)")
    mask = jnp.asarray(atlas.mask, jnp.float32)
    rgb = jnp.asarray(atlas.rgb, jnp.float32) if color_blend > 0 else None
    bg = jnp.asarray(background, jnp.float32)
    return _template_losses(params, template, mask, rgb, target, bg, float(color_blend), float(alpha_max))


def _template_losses_impl(params, template, mask, rgb, target, bg, color_blend, alpha_max):
    height, width = target.shape[:2]
    behind, cf, af = _scene(params, mask, rgb, template, height, width, color_blend, alpha_max, bg)

    def for_bitmap(p):
        a, col = _layers(params, mask, rgb, jnp.full(template.shape, p, jnp.int32), height, width,
                         color_blend, alpha_max)
        img = cf + (1 - af)[..., None] * (a[..., None] * col + (1 - a[..., None]) * behind)
        return jnp.mean((img - target) ** 2, (1, 2, 3))

    return jax.lax.map(for_bitmap, jnp.arange(mask.shape[0])).T


_template_losses = jit(_template_losses_impl)


def reassign_templates(params: Primitives, template, atlas: Atlas, target, *, color_blend: float = 0.0,
                       alpha_max: float = 0.99, background=(1.0, 1.0, 1.0), indices=None,
                       rounds: int = 1):
    """Greedy template refinement: each primitive switches to the bitmap that
    lowers the loss (MSE against ``target``) most, all primitives evaluated in one
    batch against the current picture (:func:`template_losses`).

    Switching many primitives at once can interact (overlapping primitives), so
    the batch of switches is accepted only if the total loss drops; otherwise the
    half with the largest predicted gains is tried, and so on. The result never
    has a higher loss than the input.

    Args:
      params: :class:`Primitives` ``N``.
      template: ``[N]`` int ids (or None for ``n % P``).
      atlas: :class:`Atlas` of ``P`` bitmaps.
      target: ``[H, W, 3]`` image in [0, 1]; the canvas is its size.
      indices: optional primitive indices allowed to change (default all).
      rounds: repetitions of evaluate-and-switch.

    Returns:
      ``(template [N] int32, loss)``: the new ids and their MSE.

    Cost per round: one :func:`template_losses` (``P + 1`` dense renders,
    ``O(N H W)`` memory) plus a few full renders for the acceptance test.
    """
    params = check_params(params)
    _check_atlas(atlas)
    n, p = params.num, atlas.num
    tmpl = np.asarray(check_template(template, n, p)).copy()
    target = V.as_float_array("target", target, (None, None, 3))
    allowed = np.zeros(n, bool)
    allowed[np.arange(n) if indices is None else np.asarray(indices, np.int64)] = True

    def loss_of(t):
        return float(_full_loss(params, t, atlas, target, color_blend, alpha_max, background))

    current = loss_of(tmpl)
    for _ in range(int(rounds)):
        L = np.asarray(template_losses(params, jnp.asarray(tmpl), atlas, target, color_blend=color_blend,
                                       alpha_max=alpha_max, background=background))
        best = L.argmin(1)
        gain = L[np.arange(n), tmpl] - L[np.arange(n), best]
        cand = np.nonzero(allowed & (best != tmpl) & (gain > 0))[0]
        if cand.size == 0:
            break
        cand = cand[np.argsort(-gain[cand])]
        accepted = False
        k = cand.size
        while k > 0:
            trial = tmpl.copy()
            trial[cand[:k]] = best[cand[:k]]
            new = loss_of(trial)
            if new < current:
                tmpl, current, accepted = trial, new, True
                break
            k //= 2
        if not accepted:
            break
    return jnp.asarray(tmpl, jnp.int32), current


def _full_loss(params, template, atlas, target, color_blend, alpha_max, background):
    from diffbmp_jax.rendering.api import composite, render
    c, a = render(params, atlas, height=int(target.shape[0]), width=int(target.shape[1]),
                  template=jnp.asarray(template, jnp.int32), color_blend=color_blend, alpha_max=alpha_max)
    return jnp.mean((composite(c, a, background) - target) ** 2)


def palette_gap(atlas: Atlas, target, background=(1.0, 1.0, 1.0), *, tolerance: float = 0.1,
                samples: int = 4096, iterations: int = 64) -> tuple[float, np.ndarray]:
    """How much of ``target`` stamps that keep their own colours (``color_blend=1``) cannot reproduce.

    Composited stamps give convex combinations of what they show and of the
    background, so the colours within reach are (about: each stamp counted by
    its mean colour, :func:`bitmap_mean_colors`) the convex hull of the
    stamps' mean colours and ``background``. A target pixel is out of reach
    when its colour lies farther than ``tolerance`` (Euclidean RGB in [0, 1])
    from that hull.

    Args:
      atlas: :class:`Atlas` with ``rgb``.
      target: ``[H, W, 3]`` image in [0, 1].
      background: RGB in [0, 1] behind the stamps.
      tolerance: distance counted as reproduced.
      samples: pixels examined (evenly spaced over the image).
      iterations: Frank-Wolfe steps of the distance to the hull.

    Returns:
      ``(fraction, colour)``: the fraction of examined pixels out of reach, and
      the ``[3]`` colour of the farthest one (all zeros when none is).
    """
    _check_atlas(atlas)
    if atlas.rgb is None:
        raise ValueError("atlas: palette_gap needs an atlas with rgb colours (Atlas.rgb is None)")
    target = np.asarray(V.as_float_array("target", target, (None, None, 3)))
    tolerance = V.nonnegative_number("tolerance", tolerance)
    flat = target.reshape(-1, 3)
    pixels = flat[np.linspace(0, len(flat) - 1, min(int(samples), len(flat))).astype(np.int64)]
    vertices = np.concatenate([np.asarray(bitmap_mean_colors(atlas), np.float64),
                               np.asarray(background, np.float64).reshape(1, 3)])
    dist = _hull_distance(pixels.astype(np.float64), vertices, int(iterations))
    out = dist > tolerance
    worst = pixels[int(np.argmax(dist))] if out.any() else np.zeros(3, np.float32)
    return float(np.mean(out)), np.asarray(worst, np.float32)


def _hull_distance(points: np.ndarray, vertices: np.ndarray, iterations: int) -> np.ndarray:
    """``[M]`` distances of ``points [M, 3]`` to the convex hull of ``vertices [V, 3]`` (Frank-Wolfe)."""
    # Start at the nearest vertex; each step moves towards the vertex that most
    # lowers the squared distance, by the exact line-search step.
    x = vertices[np.argmin(((points[:, None] - vertices[None]) ** 2).sum(-1), 1)]
    for _ in range(iterations):
        r = x - points
        s = vertices[np.argmin(r @ vertices.T, 1)]
        d = s - x
        dd = (d * d).sum(-1)
        gamma = np.clip(-(r * d).sum(-1) / np.maximum(dd, 1e-12), 0.0, 1.0)
        x = x + gamma[:, None] * d
    return np.sqrt(((x - points) ** 2).sum(-1))
