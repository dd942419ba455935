"""Initialisers: pure functions ``(target, atlas, N, key) -> (Primitives, template)``.

``target`` is ``[H, W, 3]`` float in [0, 1]; the result places ``N`` primitives
on that canvas (positions and scales in pixels) and assigns each a bitmap id
``template [N]`` int32. All are deterministic functions of ``key``.

* :func:`random` -- uniform positions, random rotations and colours.
* :func:`grid` -- a regular grid covering the canvas, colours from the target.
* :func:`structure_aware` -- the paper's scheme: more (and smaller) primitives
  where the target has detail, rotated along local edges, target colours,
  low starting opacity.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax import validation as V
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.rendering.blur import filter_matrix, kernel_radius, smooth_last_two
from diffbmp_jax.rendering.api import check_params, check_template
from diffbmp_jax.scene.primitives import Primitives, logit

__all__ = ["logit", "check_init_params", "random", "grid", "structure_aware", "INITIALIZERS", "base_scale", "structure_maps",
           "host_structure_maps", "host_rng", "host_subkey", "sample_pixels", "sample_colors"]

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # host constant: a jnp one is a device op at import


def base_scale(height: int, width: int, num: int, coverage: float = 3.0) -> float:
    """Half-extent (pixels) at which ``num`` square stamps cover the canvas ``coverage`` times."""
    return 0.5 * math.sqrt(coverage * height * width / max(num, 1))


def sample_pixels(prob, key, num: int, height: int, width: int) -> jax.Array:
    """``[num, 2]`` positions (x, y) in pixels drawn from a pixel distribution.

    Args:
      prob: ``[H * W]`` non-negative weights (need not sum to 1), row-major.
    Inverse-CDF sampling (``searchsorted``) keeps memory ``O(H * W + num)``,
    unlike a categorical draw that would build ``[num, H * W]`` logits. The
    binary search is unrolled (``method="scan_unrolled"``, the same indices):
    as a loop it ran its ~19 levels as ~19 launches on a GPU, which made a
    single-scene fit's step 11 % slower (respawn every 25 steps, H200,
    ``benchmarks/RESULTS.md``).
    """
    k1, k2 = jax.random.split(key)
    cdf = jnp.cumsum(prob)
    u = jax.random.uniform(k1, (num,)) * cdf[-1]
    idx = jnp.clip(jnp.searchsorted(cdf, u, side="right", method="scan_unrolled"), 0, height * width - 1)
    xy = jnp.stack([idx % width, idx // width], -1).astype(jnp.float32)
    return xy + jax.random.uniform(k2, (num, 2), minval=-0.5, maxval=0.5)


def sample_colors(image: jax.Array, xy: jax.Array) -> jax.Array:
    """``[N, C]`` colours of ``image [H, W, C]`` at the nearest pixel to each ``xy``."""
    h, w = image.shape[:2]
    ix = jnp.clip(jnp.round(xy[:, 0]).astype(jnp.int32), 0, w - 1)
    iy = jnp.clip(jnp.round(xy[:, 1]).astype(jnp.int32), 0, h - 1)
    return image[iy, ix]


def _templates(key, num: int, atlas: Atlas) -> jax.Array:
    return jax.random.randint(key, (num,), 0, atlas.num, dtype=jnp.int32)


def _check(target, atlas, num, xp=jnp):
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
        raise ValueError(f"num_primitives must be a positive int, got {num!r}")
    target = xp.asarray(target, xp.float32)
    if target.ndim != 3 or target.shape[-1] != 3:
        raise ValueError(f"target must have shape (H, W, 3), got {tuple(target.shape)}")
    return target


def random(target, atlas: Atlas, num: int, key, *, coverage: float = 3.0,
           opacity: float = 0.5) -> tuple[Primitives, jax.Array]:
    """Uniform positions, scales in ``[0.5, 1.5] x`` :func:`base_scale`, random
    rotations, uniformly random colours (a baseline that ignores the target's content)."""
    target = _check(target, atlas, num)
    h, w = target.shape[:2]
    kxy, ks, kr, kc, kt = jax.random.split(key, 5)
    xy = jax.random.uniform(kxy, (num, 2)) * jnp.array([w, h], jnp.float32) - 0.5
    s = base_scale(h, w, num, coverage) * jax.random.uniform(ks, (num,), minval=0.5, maxval=1.5)
    rot = jax.random.uniform(kr, (num,), minval=-math.pi, maxval=math.pi)
    col = jax.random.uniform(kc, (num, 3))
    params = Primitives(xy=xy, scale=s, rotation=rot,
                        opacity_logit=jnp.full((num,), logit(opacity, 0.02)), color_logit=logit(col, 0.02))
    return params, _templates(kt, num, atlas)


def grid(target, atlas: Atlas, num: int, key, *, coverage: float = 3.0,
         opacity: float = 0.5) -> tuple[Primitives, jax.Array]:
    """A near-square grid of cells (at least ``num``), ``num`` of them used, spread
    evenly; each stamp's square is ``sqrt(coverage)`` times its cell (so the
    canvas is covered about ``coverage`` times); colour of the target at the
    centre; rotation 0. ``key`` only picks the bitmap ids."""
    target = _check(target, atlas, num)
    h, w = target.shape[:2]
    cols = max(1, math.ceil(math.sqrt(num * w / h)))
    rows = max(1, math.ceil(num / cols))
    cells = rows * cols
    # Spread the num used cells evenly over all cells, so gaps are scattered.
    idx = jnp.floor(jnp.arange(num) * (cells / num)).astype(jnp.int32)
    cw, ch = w / cols, h / rows
    xy = jnp.stack([(idx % cols + 0.5) * cw - 0.5, (idx // cols + 0.5) * ch - 0.5], -1).astype(jnp.float32)
    s = jnp.full((num,), 0.5 * max(cw, ch) * math.sqrt(coverage), jnp.float32)
    col = sample_colors(target, xy)
    params = Primitives(xy=xy, scale=s, rotation=jnp.zeros((num,), jnp.float32),
                        opacity_logit=jnp.full((num,), logit(opacity, 0.02)), color_logit=logit(col, 0.02))
    return params, _templates(key, num, atlas)


def structure_maps(target, num: int, *, coverage: float = 3.0, floor: float = 0.15,
                   scale_range=(0.25, 2.0)) -> dict:
    """Per-pixel guides derived from the target's local detail.

    Detail is the smoothed gradient magnitude plus the local standard
    deviation of luminance, each normalised by its mean, then mapped to [0, 1]
    by its 99th percentile.

    Returns a dict of
      ``prob [H * W]``: sampling weight ``floor + detail`` (rises with detail),
      ``scale [H, W]``: half-extent in pixels, :func:`base_scale` times
        ``scale_range[1]`` in flat regions down to ``scale_range[0]`` at the
        most detailed ones,
      ``angle [H, W]``: radians (counter-clockwise on screen) of the local
        edge direction, from the smoothed structure tensor,
      ``detail [H, W]`` in [0, 1].
    Traceable (``jit``, ``vmap``); :func:`host_structure_maps` is the same in NumPy.
    """
    V.check_shape("target", target, (None, None, 3))
    return _structure_maps(jnp.asarray(target, jnp.float32), V.check_count("num", num, 1), float(coverage),
                           float(floor), tuple(float(v) for v in scale_range))


def host_structure_maps(target, num: int, *, coverage: float = 3.0, floor: float = 0.15,
                        scale_range=(0.25, 2.0)) -> dict:
    """:func:`structure_maps` computed on the host in NumPy (float32 arrays).

    A fit's set-up uses this one: at 512 px it takes tens of milliseconds, where
    compiling the JAX version took 2.4 s on a GPU (and a cache lookup warm).
    """
    target = np.asarray(target, np.float32)
    V.check_shape("target", target, (None, None, 3))
    num = V.check_count("num", num, 1)
    maps = _maps(target, num, float(coverage), float(floor), tuple(float(v) for v in scale_range), np)
    return {k: np.asarray(v, np.float32) for k, v in maps.items()}


def _maps(target, num: int, coverage: float, floor: float, scale_range: tuple, xp) -> dict:
    """The maps of :func:`structure_maps` with array module ``xp`` (``jax.numpy`` or ``numpy``)."""
    h, w = target.shape[:2]
    lum = target @ _LUMA
    # Forward differences: unlike central ones they also see 2-pixel stripes.
    p = xp.pad(lum, ((0, 1), (0, 1)), mode="edge")
    gx = p[:-1, 1:] - p[:-1, :-1]
    gy = p[1:, :-1] - p[:-1, :-1]
    s0 = base_scale(h, w, num, coverage)
    # Smooth over about half a stamp: detail at the scale a stamp can express.
    sig = float(min(max(1.0, 0.5 * s0), 0.1 * max(h, w)))
    r = min(kernel_radius(sig), max(h, w) // 2 + 1)

    # The five maps smoothed at once, as two products with filter matrices.
    stack = xp.stack([gx * gx, gx * gy, gy * gy, lum, lum * lum])
    if xp is np:  # on the host, only the band of each matrix: O(n * r) per sample, not O(n^2)
        rows, cols = filter_matrix(h, sig, r, "reflect"), filter_matrix(w, sig, r, "reflect")
        stack = banded_product(cols, banded_product(rows, stack, r).swapaxes(-1, -2), r).swapaxes(-1, -2)
    else:
        stack = smooth_last_two(stack, sig, r)
    jxx, jxy, jyy, mean, mean_sq = stack
    grad = xp.sqrt(jxx + jyy)
    # Variance as E[x^2] - E[x]^2 cancels: below a few float32 roundings of E[x^2]
    # (a 0.1/255 std) it is rounding, not texture, and counts as none.
    std = xp.sqrt(xp.maximum(mean_sq - mean * mean - 5e-7 * mean_sq, 0.0))
    detail = grad / (xp.mean(grad) + 1e-8) + std / (xp.mean(std) + 1e-8)
    detail = xp.clip(detail / (xp.percentile(detail, 99.0) + 1e-8), 0.0, 1.0)
    lo, hi = scale_range
    scale = s0 * (hi - (hi - lo) * detail)
    # Dominant gradient orientation in image axes (y down) is
    # 0.5 * atan2(2 Jxy, Jxx - Jyy); on screen (counter-clockwise) it is the
    # negative of that, and the edge runs perpendicular to the gradient.
    # Where the tensor is (nearly) isotropic -- flat areas, the diagonal of a
    # corner -- there is no orientation, only rounding: those get phi = 0.
    aniso = xp.sqrt((jxx - jyy) ** 2 + 4.0 * jxy * jxy) > 1e-3 * (jxx + jyy) + 1e-12
    phi = xp.where(aniso, 0.5 * xp.arctan2(2.0 * jxy, jxx - jyy), 0.0)
    angle = -phi + 0.5 * math.pi
    return {"prob": (floor + detail).reshape(-1), "scale": scale, "angle": angle, "detail": detail}


def banded_product(matrix: np.ndarray, x: np.ndarray, radius: int, block: int = 256) -> np.ndarray:
    """``matrix @ x`` for a ``[n, n]`` filter matrix whose row ``i`` is zero beyond ``i +- radius``
    (:func:`~diffbmp_jax.rendering.blur.filter_matrix`; reflection folds into that band), ``x``
    ``[..., n, m]``: block rows of ``block`` times only the columns they reach."""
    n = matrix.shape[0]
    if np.shape(matrix) != (n, n) or np.ndim(x) < 2 or np.shape(x)[-2] != n:
        raise ValueError(f"matrix must be [n, n] and x [..., n, m], got {np.shape(matrix)} and {np.shape(x)}")
    radius = V.check_count("radius", radius, 0)
    if n <= 2 * block:
        return matrix @ x
    out = np.empty(x.shape[:-2] + (n, x.shape[-1]), np.result_type(matrix, x))
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        j0, j1 = max(0, i0 - radius), min(n, i1 + radius)
        out[..., i0:i1, :] = matrix[i0:i1, j0:j1] @ x[..., j0:j1, :]
    return out


# Compiled once per shape and settings: op by op, the maps cost ~0.2 s per
# target on a GPU, which dominated the set-up of batched fits.
@functools.partial(jit, static_argnums=(1, 2, 3, 4))
def _structure_maps(target, num: int, coverage: float, floor: float, scale_range: tuple) -> dict:
    return _maps(target, num, coverage, floor, scale_range, jnp)


def structure_aware(target, atlas: Atlas, num: int, key, *, coverage: float = 3.0,
                    opacity: float = 0.3, floor: float = 0.15,
                    scale_range=(0.25, 2.0), maps: dict | None = None) -> tuple[Primitives, jax.Array]:
    """The paper's structure-aware initialisation.

    Positions are drawn with probability rising with local detail (see
    :func:`structure_maps`), scales shrink with detail, rotations follow the
    local edge direction, colours are the target's at each position, and
    opacity starts low (``opacity``) so that the optimiser builds up coverage.
    Primitives are ordered largest first, so small detail stamps paint on top.

    ``maps``: this target's :func:`structure_maps` (or
    :func:`host_structure_maps`) for the same ``num``, ``coverage``, ``floor``
    and ``scale_range``, when the caller has them already (the fit keeps them
    as respawn guides); computed otherwise.

    Runs on the host in NumPy (nothing to compile: it is every fit's start),
    with draws seeded by ``key``'s data; concrete arguments only.
    """
    target = _check(target, atlas, num, np)
    h, w = target.shape[:2]
    if maps is None:
        maps = host_structure_maps(target, num, coverage=coverage, floor=floor, scale_range=scale_range)
    else:
        _check_maps(maps, h, w)
    rng = host_rng(key)
    prob, scale, angle = (np.asarray(maps[k], np.float64) for k in ("prob", "scale", "angle"))
    # Inverse-CDF draws (as sample_pixels) and nearest-pixel lookups (as sample_colors).
    cdf = np.cumsum(prob)
    idx = np.clip(np.searchsorted(cdf, rng.uniform(size=num) * cdf[-1], side="right"), 0, h * w - 1)
    xy = np.stack([idx % w, idx // w], -1) + rng.uniform(-0.5, 0.5, size=(num, 2))
    ix = np.clip(np.round(xy[:, 0]).astype(np.int64), 0, w - 1)
    iy = np.clip(np.round(xy[:, 1]).astype(np.int64), 0, h - 1)
    s, rot, col = scale[iy, ix], angle[iy, ix], target[iy, ix]
    order = np.argsort(-s, kind="stable")  # big (flat-region) stamps at the bottom
    eps = 0.02
    col = np.clip(col[order], eps, 1.0 - eps)
    params = Primitives(xy=jax.device_put(xy[order].astype(np.float32)),
                        scale=jax.device_put(s[order].astype(np.float32)),
                        rotation=jax.device_put(rot[order].astype(np.float32)),
                        opacity_logit=jax.device_put(np.full((num,), host_logit(opacity, eps), np.float32)),
                        color_logit=jax.device_put(host_logit(col, eps)))
    template = jax.device_put(rng.integers(0, atlas.num, size=num).astype(np.int32))
    return params, template


def _seed_sequence(key, stream: int) -> np.random.SeedSequence:
    words = np.asarray(jax.random.key_data(V.as_key(key)), np.uint32).reshape(-1)  # TypeError names key
    stream = V.check_count("stream", stream, 0)
    return np.random.SeedSequence([int(v) for v in words] + [0x6469_6662, int(stream)])


def host_rng(key, stream: int = 0) -> np.random.Generator:
    """A NumPy generator seeded by a ``jax.random`` key's data and a ``stream`` number
    (host draws, deterministic in both)."""
    return np.random.default_rng(_seed_sequence(key, stream))


def host_subkey(key, stream: int) -> jax.Array:
    """A ``jax.random`` key derived from ``key`` on the host, one per ``stream`` number (like
    ``fold_in``, but without compiling a program); independent of :func:`host_rng`'s draws."""
    words = _seed_sequence(key, stream).generate_state(2, np.uint32)
    return jax.random.wrap_key_data(jax.device_put(words), impl=jax.random.key_impl(key))


def host_logit(p, eps: float) -> np.ndarray:
    """:func:`~diffbmp_jax.scene.primitives.logit` in NumPy (float32)."""
    p = np.clip(np.asarray(p, np.float32), eps, 1.0 - eps)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def _check_maps(maps, h: int, w: int) -> None:
    """ValueError naming ``maps`` unless it holds this target's structure_maps guides."""
    need = {"prob": (h * w,), "scale": (h, w), "angle": (h, w)}
    if not isinstance(maps, dict) or any(k not in maps for k in need):
        raise ValueError("maps must be the dict returned by structure_maps (keys 'prob', 'scale', 'angle')")
    for k, shape in need.items():
        if tuple(jnp.shape(maps[k])) != shape:
            raise ValueError(f"maps['{k}'] must have shape {shape} for this {h}x{w} target, "
                             f"got {tuple(jnp.shape(maps[k]))}")


INITIALIZERS = {"random": random, "grid": grid, "structure_aware": structure_aware}


def check_init_params(init_params, num: int, atlas: Atlas) -> tuple[Primitives, jax.Array]:
    """Validates a fit's ``init_params``: ``(Primitives with num entries, template [num])``.

    The primitives must be finite with scales > 0 (a start the optimiser can
    leave), the template ``num`` integer ids in ``[0, P)``. Returns float32
    primitives and the int32 template; ValueError/TypeError name ``init_params``.
    """
    if not isinstance(init_params, (tuple, list)) or len(init_params) != 2:
        raise TypeError(f"init_params must be a pair (Primitives with {num} entries, template [{num}]), "
                        f"got {type(init_params).__name__}")
    params, template = init_params
    if not isinstance(params, Primitives) or params.num != num:
        raise ValueError(f"init_params must be (Primitives with {num} entries, template [{num}])")
    try:
        params = check_params(params)
        if template is None:  # check_template would read None as "round robin"
            raise TypeError(f"template must be {num} integer bitmap ids, got None")
        template = check_template(template, num, atlas.num)
    except (TypeError, ValueError) as e:
        raise type(e)(f"init_params: {e}") from None
    return params, template
