"""Fitting ``N`` bitmap primitives to a target image by gradient descent.

One optimisation step (:func:`_step`) is a pure function; ``log_every``
steps run inside one ``jit``-compiled ``lax.scan`` (a "chunk",
:mod:`diffbmp_jax.loop`), so Python only runs between chunks to log, call the
callback and move the progress bar. Compiled chunks are cached across calls
with the same configuration and shapes.

The pieces live in modules of their own: settings in :mod:`diffbmp_jax.config`,
the optimiser and its normalised parameter space (:class:`~diffbmp_jax.optim.Theta`)
in :mod:`diffbmp_jax.optim`, backgrounds in :mod:`diffbmp_jax.canvas`, pruning
and respawn in :mod:`diffbmp_jax.respawn`, argument checks in
:mod:`diffbmp_jax.validation`. The names below are re-exported from here for
compatibility (``from diffbmp_jax.fit import FitConfig`` keeps working).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
import optax

from . import init as _init
from . import templates as _templates
from .atlas import Atlas
from .canvas import (background, check_background_image, render_over, resolve_background, step_canvas,
                     step_target, target_over)
from .config import BACKGROUNDS, FitConfig, resolve_config
from .loop import run_chunk, run_chunks
from .losses import check_weight_mask, combined_loss
from .metrics import psnr as _psnr
from .losses import ssim as _ssim
from .optim import Theta, clamp_theta, finite_grads, make_optimizer, to_params, to_theta
from .primitives import Primitives
from .respawn import respawn, schedule as respawn_schedule
from .validation import as_key, as_target, check_count, split_alpha

__all__ = ["FitConfig", "FitResult", "fit", "BACKGROUNDS", "as_target"]


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: fitted :class:`Primitives` (``N`` entries, pixel units).
      template: ``[N]`` int32 bitmap id per primitive.
      image: ``[H, W, 3]`` final render (sharp atlas, ``output_background``).
      history: lists over logged steps: ``step``, ``loss`` (training loss of
        that step; ``None`` at step 0, before any step), ``psnr`` (dB, of the final-style render), ``time`` (seconds
        since the start, compilation included), ``respawned`` (primitives
        re-initialised since the previous entry), ``reassigned`` (primitives
        that switched bitmap since the previous entry, ``reassign_every``).
      psnr, ssim: final image quality against the target (dB / unitless).
      wall_time: seconds for the whole fit, compilation included.
      config: the :class:`FitConfig` used.
    """

    params: Primitives
    template: jax.Array
    image: jax.Array
    history: dict
    psnr: float
    ssim: float
    wall_time: float
    config: FitConfig


class _Static(NamedTuple):
    """Hashable settings a compiled chunk depends on."""
    cfg: FitConfig
    steps: int
    height: int
    width: int
    chunk: int
    unit: float  # pixels per optimiser position unit (base stamp half-extent)


class _Data(NamedTuple):
    """Arrays a chunk reads (none of them optimised)."""
    target: jax.Array          # [H, W, 3], over the output background
    target_alpha: Any          # [H, W, 1] coverage of a transparent target, or None (opaque)
    atlas: Atlas
    template: jax.Array        # [N] int32
    weight: Any                # [H, W, 1|3] or None
    bg_image: Any              # [H, W, 3] or None
    guide_scale: jax.Array     # [H, W] respawn scale (pixels)
    guide_angle: jax.Array     # [H, W] respawn rotation (radians)
    key: jax.Array


def _image(static: _Static, params: Primitives, atlas: Atlas, template, bg):
    return render_over(static.cfg, params, atlas, template, bg, static.height, static.width)


def _step(static: _Static, data: _Data, carry, t):
    """One optimisation step at (traced) step index ``t``: ``(carry, (loss, 0))``.

    Branch-free (see :mod:`diffbmp_jax.loop`); respawn runs after it, as
    :data:`RESPAWN`. The second output is the step's respawn count, filled in
    by the loop.
    """
    cfg, h, w = static.cfg, static.height, static.width
    opt = make_optimizer(cfg, static.steps)
    theta, opt_state = carry
    atlas, bg, _ = step_canvas(cfg, data.atlas, data.bg_image, data.key, t, static.steps, h, w)

    target = step_target(cfg, data.target, data.target_alpha, bg, data.bg_image, h, w)

    def loss_fn(th):
        image = _image(static, to_params(th, static.unit), atlas, data.template, bg)
        return combined_loss(image, target, mse_weight=cfg.mse_weight, l1_weight=cfg.l1_weight,
                             ssim_weight=cfg.ssim_weight, weight=data.weight)

    loss, grads = jax.value_and_grad(loss_fn)(theta)
    updates, opt_state = opt.update(finite_grads(grads), opt_state, theta)
    theta = clamp_theta(optax.apply_updates(theta, updates), cfg, float(max(h, w)), static.unit)
    return (theta, opt_state), (loss, jnp.zeros((), jnp.int32))


def _respawn(static: _Static, data: _Data, carry, t):
    """Respawn after step ``t``: invisible primitives move to where the error
    of the current render (step ``t``'s canvas) is largest. ``(carry, count)``."""
    cfg, h, w = static.cfg, static.height, static.width
    theta, opt_state = carry
    atlas, bg, k_spawn = step_canvas(cfg, data.atlas, data.bg_image, data.key, t, static.steps, h, w)
    image = _image(static, to_params(theta, static.unit), atlas, data.template, bg)
    target = step_target(cfg, data.target, data.target_alpha, bg, data.bg_image, h, w)
    theta, opt_state, count = respawn(theta, opt_state, image, k_spawn, cfg=cfg, height=h, width=w,
                                      unit=static.unit, target=target, weight=data.weight,
                                      guide_scale=data.guide_scale, guide_angle=data.guide_angle)
    return (theta, opt_state), count


#: Respawn every ``config.prune_every`` steps until ``config.prune_until`` of the run.
RESPAWN = respawn_schedule(_respawn)


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(static: _Static, data: _Data, theta: Theta):
    """Final-style render (sharp atlas, output background), its PSNR and params."""
    params = to_params(theta, static.unit)
    bg = background(static.cfg.output_background, None, static.height, static.width, data.bg_image)
    image = jnp.clip(_image(static, params, data.atlas, data.template, bg), 0.0, 1.0)
    return image, _psnr(image, data.target, weight=data.weight), params


def _initial_templates(choice: str, params: Primitives, template, atlas: Atlas, target, key) -> jax.Array:
    """``[N]`` int32 template ids by ``choice`` (:data:`config.TEMPLATE_CHOICES`)."""
    n, p = params.num, atlas.num
    if choice == "round_robin":
        return _templates.assign_round_robin(n, p)
    if choice == "random":
        # A key of its own, so the other random streams of the fit do not move.
        return _templates.assign_random(jax.random.fold_in(key, 1), n, p)
    if choice == "color":
        return _templates.assign_by_color(params, atlas, target)
    return jnp.asarray(template, jnp.int32)


def _prepare(target, atlas: Atlas, *, num_primitives, steps, key, config: FitConfig, weight_mask=None,
             background_image=None, init_params=None) -> tuple[_Static, _Data, tuple]:
    """Checks the arguments of one fit and builds its start: ``(static, data, carry)``.

    ``carry`` is ``(theta, optimiser state)``; see :func:`fit` for the arguments.
    The same function sets up every scene of :func:`diffbmp_jax.fit_batch`.
    """
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    rgb, alpha = split_alpha(target)
    config = resolve_background(config, transparent=alpha is not None)
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    n = check_count("num_primitives", num_primitives, 1)
    steps = check_count("steps", steps, 0)
    key = as_key(key)
    weight = check_weight_mask(weight_mask, h, w)
    bg_image = check_background_image(config, background_image, h, w, name_shape="the target's shape")
    if alpha is None:
        target = rgb
    else:  # the picture the fit returns is judged over the output background
        alpha = alpha[..., None]
        target = target_over(rgb, alpha, background(config.output_background, None, h, w, bg_image))
    if config.color_blend > 0 and atlas.rgb is None:
        raise ValueError("config.color_blend > 0 needs an atlas with rgb colours (Atlas.rgb is None)")

    k_init, k_loop = jax.random.split(key)
    maps = _init.structure_maps(target, n, coverage=config.coverage)  # respawn guides, and the init's
    if init_params is None:
        reuse = {"maps": maps} if config.init == "structure_aware" else {}
        params, template = _init.INITIALIZERS[config.init](
            target, atlas, n, k_init, coverage=config.coverage, opacity=config.init_opacity, **reuse)
    else:
        params, template = init_params
        if not isinstance(params, Primitives) or params.num != n:
            raise ValueError(f"init_params must be (Primitives with {n} entries, template [{n}])")
        t = np.asarray(template)
        if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= atlas.num:
            raise ValueError(f"init_params template must be {n} integer ids in [0, {atlas.num})")
    template = _initial_templates(config.templates, params, template, atlas, target, key)
    data = _Data(target, alpha, Atlas(mask=jnp.asarray(atlas.mask, jnp.float32), rgb=atlas.rgb), template, weight,
                 bg_image, maps["scale"], maps["angle"], k_loop)
    unit = float(_init.base_scale(h, w, n, config.coverage))
    theta = to_theta(params, unit)
    chunk = min(config.log_every, max(steps, 1))
    static = _Static(config, steps, h, w, chunk, unit)
    carry = (theta, make_optimizer(config, steps).init(theta))
    return static, data, carry


PALETTE_TOLERANCE = 0.1
"""RGB distance within which a target colour counts as reproducible by the stamps' own colours."""
PALETTE_WARN_FRACTION = 0.05
"""Fraction of the target out of the stamps' reach above which a ``color_blend=1`` fit warns."""


def _warn_palette(static: _Static, data: _Data) -> None:
    """One warning line when stamps that keep their own colours cannot reproduce the target's."""
    cfg = static.cfg
    if cfg.color_blend < 1.0:
        return  # the optimised tint can still move every colour
    bg = background(cfg.output_background, None, static.height, static.width, data.bg_image)
    bg = np.asarray(bg).reshape(-1, 3).mean(0)
    fraction, colour = _templates.palette_gap(data.atlas, data.target, bg, tolerance=PALETTE_TOLERANCE)
    if fraction > PALETTE_WARN_FRACTION:
        hexa = "#" + "".join(f"{int(round(255 * c)):02x}" for c in colour)
        warnings.warn(f"color_blend=1: the stamps' own colours cannot reproduce {100 * fraction:.0f}% of the "
                      f"target (farther than {PALETTE_TOLERANCE} from any mix of them and the background, "
                      f"e.g. {hexa}); add stamps of those colours or lower color_blend", UserWarning, stacklevel=3)


def fit(target, atlas: Atlas, *, num_primitives: int, steps: int, key, config: FitConfig | dict | None = None,
        weight_mask=None, background_image=None, init_params: tuple | None = None, progress: bool = True,
        callback: Callable | None = None, **options) -> FitResult:
    """Fits ``num_primitives`` stamps from ``atlas`` to ``target``.

    Args:
      target: ``[H, W, 3]`` image in [0, 1] (uint8, grey and RGBA accepted; an
        RGBA target with transparent pixels is fitted over fresh noise with
        ``background="auto"``, so its transparent parts stay uncovered, and
        judged over ``output_background``).
      atlas: the :class:`Atlas` of bitmaps to use.
      num_primitives: ``N >= 1``.
      steps: optimisation steps ``>= 0`` (0 returns the initialisation).
      key: ``jax.random.key`` (or an int seed); the fit is a deterministic
        function of it.
      config: :class:`FitConfig` (or a dict of its fields); ``**options``
        override single fields, e.g. ``fit(..., lr_xy=0.01)``.
      weight_mask: optional ``[H, W]`` / ``[H, W, 1|3]`` non-negative per-pixel
        loss weights.
      background_image: ``[H, W, 3]`` image for ``background="image"`` /
        ``output_background="image"``.
      init_params: optional ``(Primitives, template)`` to start from instead of
        the initialiser (e.g. a previous result).
      progress: show a tqdm bar with loss, PSNR and it/s.
      callback: called as ``callback(step, params, image, metrics)`` at step 0
        and after every chunk (``metrics``: dict with ``loss``, ``psnr``).

    Returns:
      :class:`FitResult`.

    With ``color_blend=1`` (stamps keep their own colours, e.g. photomosaics)
    a ``UserWarning`` says when more than 5% of the target lies out of reach
    of the stamps' colours (:func:`diffbmp_jax.templates.palette_gap`).
    """
    t0 = time.perf_counter()
    config = resolve_config(config, options)
    static, data, carry = _prepare(target, atlas, num_primitives=num_primitives, steps=steps, key=key,
                                   config=config, weight_mask=weight_mask, background_image=background_image,
                                   init_params=init_params)
    config = static.cfg  # background "auto" resolved for this target
    _warn_palette(static, data)
    target, h, w, steps, unit = data.target, static.height, static.width, static.steps, static.unit
    bg_image = data.bg_image

    history = {"step": [], "loss": [], "psnr": [], "time": [], "respawned": [], "reassigned": []}
    current = {"data": data, "reassigned": 0}  # what the chunks read, changed by reassign()

    def reassign(done, chunk_steps, carry, data):
        every = config.reassign_every
        if not every or done >= steps or done // every == (done - chunk_steps) // every:
            return data
        out_bg = background(config.output_background, None, h, w, bg_image)
        new, _ = _templates.reassign_templates(
            to_params(carry[0], unit), data.template, data.atlas, target,
            color_blend=config.color_blend, alpha_max=config.alpha_max, background=out_bg)
        current["reassigned"] = int(np.sum(np.asarray(new) != np.asarray(data.template)))
        current["data"] = data._replace(template=new)
        return current["data"]

    def log(step, carry, loss, counts):  # counts: respawn counts per step, one array per chunk
        image, p, prm = _evaluate(static, current["data"], carry[0])
        p = float(p)
        history["step"].append(step)
        loss = None if step == 0 else float(loss)  # no step taken yet: no training loss
        history["loss"].append(loss)
        history["psnr"].append(p)
        history["time"].append(time.perf_counter() - t0)
        history["respawned"].append(int(sum(np.sum(c) for c in counts)))
        history["reassigned"].append(current["reassigned"])
        current["reassigned"] = 0
        if callback is not None:
            callback(step, prm, image, {"loss": loss, "psnr": p})
        return (image, p, prm), {"psnr": f"{p:.2f}"}

    def run(data, carry, start):
        return run_chunk(_step, static, data, carry, start, RESPAWN)

    _, (image, p, params) = run_chunks(run, data, carry, steps=steps, chunk=static.chunk, log=log,
                                       progress=progress, desc="fit", update=reassign)
    template = current["data"].template
    s = float(_ssim(image, target))
    return FitResult(params=params, template=template, image=image, history=history, psnr=p, ssim=s,
                     wall_time=time.perf_counter() - t0, config=config)
