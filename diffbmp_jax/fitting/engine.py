"""The one optimisation step every fit runs, with its respawn and its evaluation.

:func:`fit`, :func:`fit_batch`, :func:`fit_video`, :func:`fit_regions` and
:func:`fit_text` all optimise through :func:`step`, :data:`RESPAWN` and
:func:`evaluate`. What differs between them are options of the step:

* the **objective** (``Static.objective``, a hashable object): the
  :data:`PIXEL_LOSS` (MSE/L1/SSIM against the target, per-pixel weights) or
  another one with the same three members, e.g. the CLIP objective of
  :mod:`diffbmp_jax.tasks.text`. ``loss(static, data, image, target, key)``
  scores the step's render ``[H, W, 3]``; ``score(static, data, image)`` the
  final-style render (PSNR in dB for pixels); ``per_pixel`` says whether the
  objective has a per-pixel error that respawn can follow;
* **masked updates** (``Data.free``, ``[N]``, 1 = optimised, 0 = frozen): a
  frozen primitive gets a zero update and keeps its exact bits through
  clipping, projection and respawn (:func:`diffbmp_jax.fit_video`);
* **region projection** (``Static.constrained``): every step ends with
  :func:`project` onto the tables of ``Data.region`` (:class:`Region`), and
  respawn draws each group's positions inside that group's mask
  (:func:`diffbmp_jax.fit_regions`);
* a **temporal loss** (``Static.temporal_weight > 0``):
  ``temporal_weight * sum |theta - anchor|^2 / N`` in the optimiser's
  normalised space, the anchor being the carry's third entry.

The carry is ``(theta, optimiser state)``, plus ``anchor`` with a temporal
loss. Units: pixels on the ``H x W`` canvas; ``theta`` is optimiser space with
``Static.unit`` pixels per position unit (:mod:`diffbmp_jax.fitting.optim`).
Steps are branch-free (see :mod:`diffbmp_jax.fitting.loop`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax.fitting.canvas import background, mse_over, render_over, step_atlases, step_canvas, step_target
from diffbmp_jax.fitting.config import FitConfig
from diffbmp_jax.fitting.loop import Ahead, CarryForm, run_chunk, scan_steps
from diffbmp_jax.fitting.losses import combined_loss
from diffbmp_jax.fitting.metrics import psnr
from diffbmp_jax.fitting.optim import (AdamState, Theta, apply_updates, clamp_packed, clamp_theta, finite_grads,
                                       make_optimizer, pack, to_params, unpack)
from diffbmp_jax.fitting.respawn import per_primitive, respawn, schedule as respawn_schedule
from diffbmp_jax.scene.atlas import Atlas

__all__ = ["PixelLoss", "PIXEL_LOSS", "Static", "Data", "Region", "BATCHED_FIELDS", "step", "respawn_after",
           "RESPAWN", "AHEAD", "PACKED", "periodic", "evaluate", "project", "run_fit_chunk", "run_steps", "run_steps_batched",
           "stack_data", "render_theta"]


class PixelLoss(NamedTuple):
    """The image objective: ``combined_loss`` (``cfg.mse_weight``, ``l1_weight``,
    ``ssim_weight``, ``Data.weight``) against the step's target; PSNR as score."""

    per_pixel: bool = True

    def loss(self, static: "Static", data: "Data", image, target, key):
        cfg = static.cfg
        return combined_loss(image, target, mse_weight=cfg.mse_weight, l1_weight=cfg.l1_weight,
                             ssim_weight=cfg.ssim_weight, weight=data.weight)

    def score(self, static: "Static", data: "Data", image):
        return psnr(image, data.target, weight=data.weight)

    def plain_mse(self, static: "Static", data: "Data") -> bool:
        """True when the loss is the unweighted MSE alone: then a step computes it with
        :func:`~diffbmp_jax.fitting.canvas.mse_over` (folded into the kernels)
        instead of rendering the image and scoring it."""
        cfg = static.cfg
        return cfg.l1_weight == 0 and cfg.ssim_weight == 0 and data.weight is None and data.target is not None


PIXEL_LOSS = PixelLoss()


class Static(NamedTuple):
    """Hashable settings a compiled run depends on (a change recompiles).

    The run's length is not one of them: it is a traced int32 argument
    (``steps``) of every step, so fits of any length share one compilation."""
    cfg: FitConfig
    height: int                  # canvas height H, pixels
    width: int                   # canvas width W, pixels
    chunk: int                   # steps per compiled chunk (one log entry each; the whole run for run_steps)
    unit: float                  # pixels per optimiser position unit
    objective: Any = PIXEL_LOSS  # see the module docstring
    temporal_weight: float = 0.0  # weight (>= 0) of the parameter-motion penalty
    constrained: bool = False    # project onto Data.region after every step

    # Compiled programs are cached by their static arguments' equality. A tuple compares by
    # value only, so two objectives of different classes with equal fields (a NamedTuple
    # objective like PIXEL_LOSS and a user's subclass of it) would share one program:
    # the objective's class is part of the key.
    def __eq__(self, other):
        return (type(other) is type(self) and type(other.objective) is type(self.objective)
                and tuple.__eq__(self, other))

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((tuple(self), type(self.objective)))


class Region(NamedTuple):
    """Per-group lookup tables confining primitives (see :mod:`diffbmp_jax.tasks.regions`)."""
    group: jax.Array      # [N] int32 group id of each primitive
    nearest: jax.Array    # [G, H, W] int32 flat index (y * W + x) of the nearest allowed centre pixel
    room: jax.Array       # [G, H, W] float32 largest footprint radius (pixels) allowed at a centre
    radius: jax.Array     # [N] float32 footprint radius per unit scale (tasks.video.footprint_radius)
    mask: jax.Array       # [G, H, W] float32 1 inside the group's mask (not dilated), else 0
    allowed: jax.Array    # [G, H, W] float32 1 at the group's allowed centre pixels, else 0


class Data(NamedTuple):
    """Arrays a run reads (none of them optimised)."""
    target: Any                # [H, W, 3] float32 in [0, 1], over the output background; or None
    target_alpha: Any          # [H, W, 1] coverage of a transparent target, or None (opaque)
    atlas: Atlas               # float32 masks
    template: jax.Array        # [N] int32 bitmap ids
    weight: Any                # [H, W, 1|3] per-pixel loss weights or None
    bg_image: Any              # [H, W, 3] or None
    guide_scale: Any           # [H, W] respawn scale (pixels), or None without respawn
    guide_angle: Any           # [H, W] respawn rotation (radians), or None without respawn
    key: jax.Array             # jax.random.key of the run
    free: Any = None           # [N] float32: 1 = optimised, 0 = frozen; None = all optimised
    region: Any = None         # Region, or None when not constrained
    extra: Any = None          # what the objective reads besides (e.g. CLIP weights, prompt embeddings)
    prefiltered: Any = None    # the atlas as this step samples it (mipmap.Prefiltered), computed ahead by
                               # AHEAD for a block of steps; None: the step filters the atlas itself


# Fields of Data that differ between the frames of a batched video window.
BATCHED_FIELDS = ("target", "guide_scale", "guide_angle", "key", "free")


def render_theta(static: Static, theta: Theta, atlas: Atlas, template, bg, blur=None,
                 prefiltered=None) -> jax.Array:
    """``[H, W, 3]`` render of ``theta`` over ``bg`` with the settings of ``static.cfg`` (not clipped);
    ``blur``: the masks' blur of a step (:func:`~diffbmp_jax.fitting.canvas.step_canvas`), None for sharp;
    ``prefiltered``: the atlas already filtered for it (``Data.prefiltered``), or None."""
    return render_over(static.cfg, to_params(theta, static.unit), atlas, template, bg, static.height,
                       static.width, blur, prefiltered)


def project(static: Static, region: Region, theta: Theta) -> Theta:
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


def _keep_frozen(data: Data, new, old):
    """Frozen primitives keep their exact bits (clipping, projection and respawn must not touch them);
    ``new`` and ``old`` are :class:`Theta` or packed (:func:`~diffbmp_jax.fitting.optim.pack`)."""
    if data.free is None:
        return new
    keep = data.free > 0
    return jax.tree.map(lambda a, b: jnp.where(per_primitive(keep, a), a, b), new, old)


def _motion(theta: Theta, anchor: Theta):
    """Parameter motion since the anchor, in normalised units (positions in base
    half-extents, log scales, radians, logits), per primitive."""
    return sum(jnp.sum(jnp.square(a - b)) for a, b in zip(theta, anchor)) / theta.log_scale.shape[0]


def step(static: Static, data: Data, carry, t, steps):
    """One optimisation step at (traced) step index ``t`` of a run of ``steps``: ``(carry, (loss, 0))``.

    Branch-free (see :mod:`diffbmp_jax.fitting.loop`); respawn runs after it as
    :data:`RESPAWN`. The second output is the step's respawn count, filled in
    by the loop.
    """
    cfg, h, w = static.cfg, static.height, static.width
    opt = make_optimizer(cfg, steps)
    theta, opt_state = carry[0], carry[1]
    packed = not isinstance(theta, Theta)  # the carry's PACKED form: theta [N, 8]
    blur, bg, key = step_canvas(cfg, data.atlas, data.bg_image, data.key, t, steps, h, w)
    target = None if data.target is None else step_target(cfg, data.target, data.target_alpha, bg,
                                                          data.bg_image, h, w)

    # Exactly PixelLoss (a subclass may score the image its own way).
    plain_mse = type(static.objective) is PixelLoss and static.objective.plain_mse(static, data)

    def loss_fn(th):
        th = unpack(th) if packed else th
        if plain_mse:
            loss = cfg.mse_weight * mse_over(cfg, to_params(th, static.unit), data.atlas, data.template, bg,
                                             target, h, w, blur, data.prefiltered)
        else:
            image = render_theta(static, th, data.atlas, data.template, bg, blur, data.prefiltered)
            loss = static.objective.loss(static, data, image, target, key)
        if static.temporal_weight > 0:
            loss = loss + static.temporal_weight * _motion(th, carry[2])
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(theta)
    updates, opt_state = opt.update(finite_grads(grads), opt_state, theta)
    if data.free is not None:  # masked update: frozen primitives get a zero update
        updates = jax.tree_util.tree_map(lambda u: u * per_primitive(data.free, u), updates)
    clamp = clamp_packed if packed else clamp_theta
    new = clamp(apply_updates(theta, updates), cfg, float(max(h, w)), static.unit)
    if static.constrained:
        new = pack(project(static, data.region, unpack(new))) if packed else project(static, data.region, new)
    return (_keep_frozen(data, new, theta), opt_state) + tuple(carry[2:]), (loss, jnp.zeros((), jnp.int32))


def respawn_after(static: Static, data: Data, carry, t, steps):
    """Respawn after step ``t``: invisible primitives move to where the error of
    the current render (step ``t``'s canvas) is largest, inside their group's
    region when constrained. Returns ``(carry, count)``."""
    cfg, h, w = static.cfg, static.height, static.width
    theta, opt_state = carry[0], carry[1]
    blur, bg, k_spawn = step_canvas(cfg, data.atlas, data.bg_image, data.key, t, steps, h, w)
    image = render_theta(static, theta, data.atlas, data.template, bg, blur)
    target = step_target(cfg, data.target, data.target_alpha, bg, data.bg_image, h, w)
    new, opt_state, count = respawn(theta, opt_state, image, k_spawn, cfg=cfg, height=h, width=w, unit=static.unit,
                                    target=target, weight=data.weight, guide_scale=data.guide_scale,
                                    guide_angle=data.guide_angle,
                                    region=data.region if static.constrained else None)
    if static.constrained:
        new = project(static, data.region, new)
    new = _keep_frozen(data, new, theta)
    rest = tuple(carry[2:])
    if rest:  # a respawned primitive starts a new life: no pull back to its old place
        moved = jnp.any(new.xy != theta.xy, axis=-1)
        rest = (Theta(*(jnp.where(per_primitive(moved, a), a, b) for a, b in zip(new, rest[0]))),)
    return (new, opt_state) + rest, count


#: Respawn every ``cfg.prune_every`` steps until ``cfg.prune_until`` of the run.
RESPAWN = respawn_schedule(respawn_after)


def _with_atlas(data: Data, prefiltered) -> Data:
    return data._replace(prefiltered=prefiltered)


def _step_atlases(static: Static, data: Data, ts, steps):
    return step_atlases(static.cfg, data.atlas, ts, steps)


#: Each step's filtered atlas (annealed blur, mip levels) computed ahead, for a block of steps at once.
AHEAD = Ahead(_step_atlases, _with_atlas)


def _packed_carry(carry):
    theta, state = carry[0], carry[1]
    return (pack(theta), AdamState(state.count, pack(state.mu), pack(state.nu))) + tuple(carry[2:])


def _theta_carry(carry):
    theta, state = carry[0], carry[1]
    return (unpack(theta), AdamState(state.count, unpack(state.mu), unpack(state.nu))) + tuple(carry[2:])


#: The steps' carry with theta and Adam's moments packed (optim.pack): one elementwise update a step.
#: It pays where a step updates many scenes' rows (fit_batch, run_steps_batched: one fusion for
#: B x N rows instead of one per field); a single scene's steps keep the per-field carry, where
#: slicing the packed rows for the render and concatenating their gradients cost more than the
#: fusions saved (RESULTS.md, stop 36).
PACKED = CarryForm(_packed_carry, _theta_carry)


def periodic(static: Static):
    """The periodic operation of a run: :data:`RESPAWN` when the objective has a per-pixel error, else None."""
    return RESPAWN if static.objective.per_pixel else None


@functools.partial(jit, static_argnums=0, persist=True)
def evaluate(static: Static, data: Data, theta: Theta):
    """Final-style render (sharp atlas, ``output_background``) of ``theta``.

    Returns ``(image [H, W, 3] in [0, 1], objective score (PSNR in dB for pixels), Primitives in pixel units)``.
    """
    bg = background(static.cfg.output_background, None, static.height, static.width, data.bg_image)
    image = jnp.clip(render_theta(static, theta, data.atlas, data.template, bg), 0.0, 1.0)
    return image, static.objective.score(static, data, image), to_params(theta, static.unit)


def run_fit_chunk(static: Static, data: Data, carry, start, steps, full: bool = False):
    """``static.chunk`` steps from step ``start`` of a run of ``steps`` (int32 scalars; ``full``:
    the chunk ends by ``steps``, see :func:`diffbmp_jax.fitting.loop.run_chunk`):
    ``(carry, (losses [chunk], respawn counts [chunk]))``."""
    return run_chunk(step, static, data, carry, start, steps, periodic(static), full, AHEAD)


def _run_all(static: Static, data: Data, theta: Theta, anchor: Theta, steps, form: CarryForm | None = None):
    carry = (theta, make_optimizer(static.cfg, steps).init(theta))
    if static.temporal_weight > 0:
        carry += (anchor,)
    ts = jnp.arange(static.chunk, dtype=jnp.int32)
    carry, (loss, _) = scan_steps(step, static, data, carry, ts, jnp.asarray(steps, jnp.int32), periodic(static),
                                  ahead=AHEAD, form=form)
    return carry[0], loss


@functools.partial(jit, static_argnums=0, persist=True)
def run_steps(static: Static, data: Data, theta: Theta, anchor: Theta, steps):
    """A whole run of ``steps <= static.chunk`` steps as one jit-compiled ``lax.scan``
    of ``static.chunk`` iterations, from a fresh optimiser state.

    Args:
      theta: start, ``N`` primitives in optimiser space.
      anchor: the parameters the temporal loss pulls towards (same shapes; unused without one).
      steps: the run's length, an int32 scalar (traced: any length up to the chunk shares one compilation).

    Returns:
      ``(theta, losses [static.chunk])`` (NaN past ``steps``).
    """
    return _run_all(static, data, theta, anchor, steps)


@functools.partial(jit, static_argnums=0, persist=True)
def run_steps_batched(static: Static, data: Data, theta: Theta, anchor: Theta, steps):
    """:func:`run_steps` over a leading axis ``K`` (one ``jax.vmap``) of ``theta``,
    ``anchor`` and the :data:`BATCHED_FIELDS` of ``data`` (see :func:`stack_data`);
    the other fields (atlas, template, ...) and ``steps`` are shared. Returns
    ``(theta [K, ...], losses [K, static.chunk])``."""
    axes = Data(**{f: (0 if f in BATCHED_FIELDS else None) for f in Data._fields})
    return jax.vmap(lambda d, th, an: _run_all(static, d, th, an, steps, PACKED), in_axes=(axes, 0, 0))(
        data, theta, anchor)


def stack_data(datas: list) -> Data:
    """One :class:`Data` for :func:`run_steps_batched`: the :data:`BATCHED_FIELDS`
    of ``datas`` stacked along a new leading axis, the others taken from ``datas[0]``."""
    first = datas[0]
    return first._replace(**{f: jnp.stack([getattr(d, f) for d in datas]) for f in BATCHED_FIELDS})
