"""The masked, constrained optimisation step shared by videos and regions.

One step is that of :func:`diffbmp_jax.fit` (same optimiser, blur annealing,
backgrounds and periodic respawn, :class:`~diffbmp_jax.config.FitConfig`)
with three additions:

* **masked updates** -- ``StepData.free`` (``[N]``, 1 = optimised, 0 = frozen)
  multiplies each primitive's optimiser update, and frozen primitives keep
  their exact previous bits (clipping, projection and respawn cannot touch
  them); used by :func:`diffbmp_jax.fit_video`;
* **region projection** -- with ``StepStatic.constrained``, every step ends with
  :func:`project`, which confines each primitive of group ``g`` to the lookup
  tables of a :class:`Region` (:func:`diffbmp_jax.regions.region_tables`), and
  respawn (:func:`respawn_in_regions`) draws each group's positions from the
  error inside that group's mask; used by :func:`diffbmp_jax.fit_regions`;
* **temporal loss** -- ``temporal_weight * sum |theta - anchor|^2 / N`` in the
  optimiser's normalised space (:class:`~diffbmp_jax.optim.Theta`).

Units: pixels for positions, scales and radii on the canvas (``H x W``);
``theta`` is optimiser space, ``StepStatic.unit`` pixels per position unit.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import init as init_lib
from .atlas import Atlas
from .blur import gaussian_filter, kernel_radius
from .canvas import background, render_over, step_canvas
from .config import FitConfig
from .loop import scan_steps
from .losses import combined_loss
from .metrics import psnr
from .optim import Theta, clamp_theta, finite_grads, make_optimizer, to_params
from .primitives import Primitives
from .respawn import invisible, respawn, schedule as respawn_schedule

__all__ = ["StepStatic", "Region", "StepData", "BATCHED_FIELDS", "project", "respawn_step", "respawn_in_regions", "run_steps",
           "run_steps_batched", "stack_data", "final_render"]


class StepStatic(NamedTuple):
    """Hashable settings of a compiled run (a change recompiles)."""
    cfg: FitConfig
    steps: int              # optimisation steps of the run
    height: int             # canvas height H, pixels
    width: int              # canvas width W, pixels
    chunk: int              # steps per logged chunk (kept for callers; runs are one scan)
    unit: float             # pixels per optimiser position unit
    temporal_weight: float  # weight (>= 0) of the parameter-motion penalty
    constrained: bool       # project onto StepData.region after every step


class Region(NamedTuple):
    """Per-group lookup tables confining primitives (see :mod:`diffbmp_jax.regions`)."""
    group: jax.Array      # [N] int32 group id of each primitive
    nearest: jax.Array    # [G, H, W] int32 flat index (y * W + x) of the nearest allowed centre pixel
    room: jax.Array       # [G, H, W] float32 largest footprint radius (pixels) allowed at a centre
    radius: jax.Array     # [N] float32 footprint radius per unit scale (video.footprint_radius)
    mask: jax.Array       # [G, H, W] float32 1 inside the group's mask (not dilated), else 0
    allowed: jax.Array    # [G, H, W] float32 1 at the group's allowed centre pixels, else 0


class StepData(NamedTuple):
    """Arrays a run reads (none of them optimised)."""
    target: jax.Array          # [H, W, 3] float32 in [0, 1]
    atlas: Atlas               # float32 masks
    template: jax.Array        # [N] int32 bitmap ids
    weight: Any                # [H, W, 1|3] per-pixel loss weights or None
    bg_image: Any              # [H, W, 3] or None
    guide_scale: jax.Array     # [H, W] respawn scale (pixels)
    guide_angle: jax.Array     # [H, W] respawn rotation (radians)
    key: jax.Array             # jax.random.key of the run
    free: jax.Array            # [N] float32: 1 = optimised, 0 = frozen
    region: Any                # Region, or None when not constrained


# Fields of StepData that differ between the frames of a batched window.
BATCHED_FIELDS = ("target", "guide_scale", "guide_angle", "key", "free")


def project(static: StepStatic, region: Region, theta: Theta) -> Theta:
    """Confines ``theta`` (``N`` primitives) to their groups' regions.

    Moves each centre into the closed pixel cell of the nearest allowed centre
    pixel of its group and caps its scale so its footprint disc (radius
    ``region.radius * scale`` pixels) fits in that pixel's ``room``.
    """
    h, w, unit = static.height, static.width, static.unit
    xy = theta.xy * unit
    px = jnp.clip(jnp.round(xy[:, 0]), 0, w - 1).astype(jnp.int32)
    py = jnp.clip(jnp.round(xy[:, 1]), 0, h - 1).astype(jnp.int32)
    px = jnp.where(jnp.isfinite(xy[:, 0]), px, 0)
    py = jnp.where(jnp.isfinite(xy[:, 1]), py, 0)
    idx = region.nearest[region.group, py, px]
    mx = (idx % w).astype(jnp.float32)
    my = (idx // w).astype(jnp.float32)
    # 0.49, not 0.5: xy goes through a division and a multiplication by `unit`.
    x = jnp.clip(xy[:, 0], mx - 0.49, mx + 0.49)
    y = jnp.clip(xy[:, 1], my - 0.49, my + 0.49)
    room = region.room[region.group, my.astype(jnp.int32), mx.astype(jnp.int32)]
    log_scale = jnp.minimum(theta.log_scale, jnp.log(room / region.radius))
    return theta._replace(xy=jnp.stack([x, y], -1) / unit, log_scale=log_scale)


def _image(static: StepStatic, params: Primitives, atlas: Atlas, template, bg):
    return render_over(static.cfg, params, atlas, template, bg, static.height, static.width)


def respawn_step(static: StepStatic, data: StepData, theta: Theta, opt_state, image, key):
    """:func:`diffbmp_jax.respawn.respawn` with the settings of ``static`` and ``data``.

    ``image``: ``[H, W, 3]`` current render. Returns ``(theta, opt_state, count)``.
    """
    return respawn(theta, opt_state, image, key, cfg=static.cfg, height=static.height, width=static.width,
                   unit=static.unit, target=data.target, weight=data.weight, guide_scale=data.guide_scale,
                   guide_angle=data.guide_angle)


def respawn_in_regions(static: StepStatic, data: StepData, theta: Theta, opt_state, image, key):
    """Respawn (:func:`diffbmp_jax.respawn.respawn`) with positions confined to each group's mask.

    The squared error of ``image`` (``[H, W, 3]``; weighted by ``data.weight``)
    is multiplied by the group's ``region.mask`` *before* smoothing (so error
    outside the mask cannot pull stamps to its edge), smoothed over about a
    stamp, restricted to the group's ``region.allowed`` centres, and a
    respawned primitive of group ``g`` is drawn from that distribution (a tiny
    floor keeps it inside ``allowed`` when the error there is zero). Scale,
    rotation, colour, opacity and the reset of optimiser moments are as in
    :func:`~diffbmp_jax.respawn.respawn`. Returns ``(theta, opt_state, count)``.
    """
    cfg, h, w, unit = static.cfg, static.height, static.width, static.unit
    region = data.region
    n = theta.log_scale.shape[0]
    dead = invisible(theta, cfg, h, w, unit)

    err = jnp.sum(jnp.square(image - data.target), -1)
    if data.weight is not None:
        err = err * jnp.mean(data.weight, -1)
    sig = min(max(1.0, 0.5 * init_lib.base_scale(h, w, n, cfg.coverage)), 0.1 * float(max(h, w)))
    err = gaussian_filter(err[None] * region.mask, sig, min(kernel_radius(sig), max(h, w) // 2 + 1),
                          axes=(1, 2), mode="reflect")                      # [G, H, W]
    prob = (err + 1e-12) * region.allowed
    k1, k2 = jax.random.split(key)
    xy = jnp.zeros((n, 2), jnp.float32)
    for g in range(prob.shape[0]):
        xy_g = init_lib.sample_pixels(prob[g].reshape(-1), jax.random.fold_in(k1, g), n, h, w)
        xy = jnp.where((region.group == g)[:, None], xy_g, xy)
    new = Theta(
        xy=xy / unit,
        log_scale=jnp.log(init_lib.sample_colors(data.guide_scale[..., None], xy)[:, 0]),
        rotation=init_lib.sample_colors(data.guide_angle[..., None], xy)[:, 0]
        + jax.random.uniform(k2, (n,), minval=-0.3, maxval=0.3),
        opacity_logit=jnp.full((n,), init_lib.logit(cfg.init_opacity, 1e-4)),
        color_logit=init_lib.logit(init_lib.sample_colors(data.target, xy), 0.02),
    )
    theta = Theta(*(jnp.where(_per_n(dead, b), a, b) for a, b in zip(new, theta)))

    def reset(leaf):
        if hasattr(leaf, "ndim") and leaf.ndim >= 1 and leaf.shape[0] == n:
            return jnp.where(_per_n(dead, leaf), 0.0, leaf)
        return leaf

    return theta, jax.tree_util.tree_map(reset, opt_state), jnp.sum(dead).astype(jnp.int32)


def _per_n(mask, leaf):
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _step(static: StepStatic, data: StepData, carry, t):
    """One masked (and possibly constrained) step; ``carry = (theta, opt_state, anchor)``.

    Returns ``(carry, (loss, 0))``; branch-free (see :mod:`diffbmp_jax.loop`),
    respawn runs after it as :data:`RESPAWN` (the 0 is the step's respawn count,
    filled in by the loop).
    """
    cfg, h, w = static.cfg, static.height, static.width
    size = float(max(h, w))
    opt = make_optimizer(cfg, static.steps)
    theta, opt_state, anchor = carry
    atlas, bg, _ = step_canvas(cfg, data.atlas, data.bg_image, data.key, t, static.steps, h, w)

    def loss_fn(th):
        image = _image(static, to_params(th, static.unit), atlas, data.template, bg)
        loss = combined_loss(image, data.target, mse_weight=cfg.mse_weight, l1_weight=cfg.l1_weight,
                             ssim_weight=cfg.ssim_weight, weight=data.weight)
        if static.temporal_weight > 0:
            # Parameter motion since the previous frame, normalised units
            # (positions in base half-extents, log scales, radians, logits).
            motion = sum(jnp.sum(jnp.square(a - b)) for a, b in zip(th, anchor)) / th.log_scale.shape[0]
            loss = loss + static.temporal_weight * motion
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(theta)
    updates, opt_state = opt.update(finite_grads(grads), opt_state, theta)
    # Masked update: frozen primitives get a zero update.
    updates = jax.tree_util.tree_map(lambda u: u * _per_n(data.free, u), updates)
    new = clamp_theta(optax.apply_updates(theta, updates), cfg, size, static.unit)
    if static.constrained:
        new = project(static, data.region, new)
    return (_keep_frozen(data, new, theta), opt_state, anchor), (loss, jnp.zeros((), jnp.int32))


def _keep_frozen(data: StepData, new: Theta, old: Theta) -> Theta:
    """Frozen primitives keep their exact bits (clipping, projection and respawn must not touch them)."""
    keep = data.free > 0
    return Theta(*(jnp.where(_per_n(keep, a), a, b) for a, b in zip(new, old)))


def _respawn(static: StepStatic, data: StepData, carry, t):
    """Respawn after step ``t`` (in each group's region when constrained), judged on
    the current render of step ``t``'s canvas. Returns ``(carry, count)``."""
    cfg, h, w = static.cfg, static.height, static.width
    theta, opt_state, anchor = carry
    atlas, bg, k_spawn = step_canvas(cfg, data.atlas, data.bg_image, data.key, t, static.steps, h, w)
    image = _image(static, to_params(theta, static.unit), atlas, data.template, bg)
    spawn = respawn_in_regions if static.constrained else respawn_step
    new, opt_state, count = spawn(static, data, theta, opt_state, image, k_spawn)
    if static.constrained:
        new = project(static, data.region, new)
    new = _keep_frozen(data, new, theta)
    # A respawned primitive starts a new life: no pull back to its old place.
    moved = jnp.any(new.xy != theta.xy, axis=-1)
    anchor = Theta(*(jnp.where(_per_n(moved, a), a, b) for a, b in zip(new, anchor)))
    return (new, opt_state, anchor), count


#: Respawn every ``cfg.prune_every`` steps until ``cfg.prune_until`` of the run.
RESPAWN = respawn_schedule(_respawn)


def _run_all(static: StepStatic, data: StepData, theta: Theta, anchor: Theta):
    carry = (theta, make_optimizer(static.cfg, static.steps).init(theta), anchor)
    ts = jnp.arange(max(static.steps, 1), dtype=jnp.int32)
    carry, (loss, _) = scan_steps(_step, static, data, carry, ts, RESPAWN)
    return carry[0], loss


@functools.partial(jax.jit, static_argnums=0)
def run_steps(static: StepStatic, data: StepData, theta: Theta, anchor: Theta):
    """All ``static.steps`` steps as one jit-compiled ``lax.scan``.

    Args:
      theta: start, ``N`` primitives in optimiser space (fresh optimiser state).
      anchor: the parameters the temporal loss pulls towards (same shapes).

    Returns:
      ``(theta, losses [max(steps, 1)])`` (a NaN loss for ``steps = 0``).
    """
    return _run_all(static, data, theta, anchor)


@functools.partial(jax.jit, static_argnums=0)
def run_steps_batched(static: StepStatic, data: StepData, theta: Theta, anchor: Theta):
    """:func:`run_steps` over a leading axis ``K`` (one ``jax.vmap``) of ``theta``,
    ``anchor`` and the :data:`BATCHED_FIELDS` of ``data`` (see :func:`stack_data`);
    the other fields (atlas, template, ...) are shared. Returns ``(theta [K, ...], losses [K, steps])``."""
    axes = StepData(**{f: (0 if f in BATCHED_FIELDS else None) for f in StepData._fields})
    return jax.vmap(lambda d, th, an: _run_all(static, d, th, an), in_axes=(axes, 0, 0))(data, theta, anchor)


def stack_data(datas: list) -> StepData:
    """One :class:`StepData` for :func:`run_steps_batched`: the :data:`BATCHED_FIELDS`
    of ``datas`` stacked along a new leading axis, the others taken from ``datas[0]``."""
    first = datas[0]
    return first._replace(**{f: jnp.stack([getattr(d, f) for d in datas]) for f in BATCHED_FIELDS})


@functools.partial(jax.jit, static_argnums=0)
def final_render(static: StepStatic, data: StepData, theta: Theta):
    """Final-style render (sharp atlas, ``output_background``) of ``theta``.

    Returns ``(image [H, W, 3] in [0, 1], PSNR in dB against data.target, Primitives in pixel units)``.
    """
    params = to_params(theta, static.unit)
    bg = background(static.cfg.output_background, None, static.height, static.width, data.bg_image)
    image = jnp.clip(_image(static, params, data.atlas, data.template, bg), 0.0, 1.0)
    return image, psnr(image, data.target, weight=data.weight), params
