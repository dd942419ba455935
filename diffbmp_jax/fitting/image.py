"""Fitting ``N`` bitmap primitives to a target image by gradient descent: :func:`fit`.

:func:`prepare` checks the arguments and builds the start of a fit (the
engine's :class:`~diffbmp_jax.fitting.engine.Static` settings, its
:class:`~diffbmp_jax.fitting.engine.Data` and the optimiser carry); the steps
are the engine's (:mod:`diffbmp_jax.fitting.engine`), ``log_every`` of them per
``jit``-compiled ``lax.scan`` (:mod:`diffbmp_jax.fitting.loop`), so Python only
runs between chunks to log, re-assign templates, call the callback and move the
progress bar. Compiled chunks are cached across calls with the same settings
and shapes. :func:`diffbmp_jax.fit_batch` prepares each of its scenes here.
"""

from __future__ import annotations

import functools
import dataclasses
import time
import warnings
from typing import Callable

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.fitting import init as _init
from diffbmp_jax.fitting import templates as _templates
from diffbmp_jax.fitting.cache import enable_compilation_cache
from diffbmp_jax.fitting.canvas import background, check_background_image, resolve_background, target_over
from diffbmp_jax.fitting.config import FitConfig, resolve_config
from diffbmp_jax.fitting.engine import Data, Static, evaluate, run_fit_chunk
from diffbmp_jax.fitting.loop import compile_beside, record, run_chunks
from diffbmp_jax.fitting.timing import clocked
from diffbmp_jax.fitting.losses import check_weight_mask
from diffbmp_jax.fitting.metrics import score_ssim
from diffbmp_jax.fitting.optim import host_theta, initial_state, make_optimizer, to_params
from diffbmp_jax.io.images import as_target_image
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.validation import as_key, check_count, split_alpha

__all__ = ["FitResult", "fit", "prepare", "PALETTE_TOLERANCE", "PALETTE_WARN_FRACTION"]


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
      compile_time: seconds of the fit spent tracing, lowering and compiling
        (or loading compiled programs from the persistent cache).
      step_time: seconds spent running the steps (compilation excluded).
    """

    params: Primitives
    template: jax.Array
    image: jax.Array
    history: dict
    psnr: float
    ssim: float
    wall_time: float
    config: FitConfig
    compile_time: float = 0.0
    step_time: float = 0.0


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


def prepare(target, atlas: Atlas, *, num_primitives, steps, key, config: FitConfig, weight_mask=None,
            background_image=None, init_params=None) -> tuple[Static, Data, tuple]:
    """Checks the arguments of one fit and builds its start: ``(static, data, carry)``.

    ``carry`` is ``(theta, optimiser state)``; see :func:`fit` for the arguments.
    The same function sets up every scene of :func:`diffbmp_jax.fit_batch`.
    """
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    rgb, alpha = split_alpha(as_target_image(target, "target"))  # a path or PIL image -> its pixels
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

    # The start is made on the host (NumPy): nothing in it is compiled, the
    # first program a fit compiles is its chunk of steps.
    maps = _init.host_structure_maps(target, n, coverage=config.coverage)  # respawn guides, and the init's
    if init_params is not None:
        params, template = _init.check_init_params(init_params, n, atlas)
    elif config.init == "structure_aware":
        params, template = _init.structure_aware(target, atlas, n, key, coverage=config.coverage,
                                                 opacity=config.init_opacity, maps=maps)
    else:  # the other initialisers draw with jax.random
        params, template = _init.INITIALIZERS[config.init](
            target, atlas, n, _init.host_subkey(key, 2), coverage=config.coverage, opacity=config.init_opacity)
    template = _initial_templates(config.templates, params, template, atlas, target, key)
    bitmaps = Atlas(mask=jnp.asarray(atlas.mask, jnp.float32), rgb=atlas.rgb)  # no names: they are not data
    unit = float(_init.base_scale(h, w, n, config.coverage))
    theta = host_theta(params, unit)
    data = Data(target, alpha, bitmaps, template, weight, bg_image, jax.device_put(maps["scale"]),
                jax.device_put(maps["angle"]), _init.host_subkey(key, 1))
    static = Static(config, h, w, config.log_every, unit)  # any length runs the same compiled chunk
    carry = (theta, initial_state(make_optimizer(config, steps), theta))
    return static, data, carry


PALETTE_TOLERANCE = 0.1
"""RGB distance within which a target colour counts as reproducible by the stamps' own colours."""
PALETTE_WARN_FRACTION = 0.05
"""Fraction of the target out of the stamps' reach above which a ``color_blend=1`` fit warns."""


def _warn_palette(static: Static, data: Data) -> None:
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
                      f"e.g. {hexa}); add stamps of those colours or lower color_blend", UserWarning, stacklevel=5)


def fit(target, atlas: Atlas, *, num_primitives: int, steps: int, key, config: FitConfig | dict | None = None,
        weight_mask=None, background_image=None, init_params: tuple | None = None, progress: bool = True,
        callback: Callable | None = None, **options) -> FitResult:
    """Fits ``num_primitives`` stamps from ``atlas`` to ``target``.

    Args:
      target: ``[H, W, 3]`` image in [0, 1] (uint8, grey and RGBA accepted; an
        RGBA target with transparent pixels is fitted over fresh noise with
        ``background="auto"``, so its transparent parts stay uncovered, and
        judged over ``output_background``), or an image file's path (str or
        ``os.PathLike``) or a ``PIL.Image``, read at full size with its alpha
        channel if it has one (:func:`diffbmp_jax.io.images.as_target_image`).
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
    of the stamps' colours (:func:`diffbmp_jax.fitting.templates.palette_gap`).
    """
    t0 = time.perf_counter()
    enable_compilation_cache()
    return _fit(t0, target, atlas, num_primitives=num_primitives, steps=steps, key=key, config=config,
                weight_mask=weight_mask, background_image=background_image, init_params=init_params,
                progress=progress, callback=callback, options=options)


@clocked
def _fit(t0, target, atlas, *, num_primitives, steps, key, config, weight_mask, background_image,
         init_params, progress, callback, options) -> FitResult:
    config = resolve_config(config, options)
    static, data, carry = prepare(target, atlas, num_primitives=num_primitives, steps=steps, key=key,
                                  config=config, weight_mask=weight_mask, background_image=background_image,
                                  init_params=init_params)
    config = static.cfg  # background "auto" resolved for this target
    if steps:  # the logging render compiles while the chunk does
        compile_beside(evaluate, static, data, carry[0])
    _warn_palette(static, data)
    target, h, w, unit = data.target, static.height, static.width, static.unit
    steps = int(steps)  # checked by prepare
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
        image, p, prm = evaluate(static, current["data"], carry[0])
        p = float(p)
        loss = record(history, step, loss, t0, psnr=p, respawned=int(sum(np.sum(np.asarray(c)) for c in counts)),
                      reassigned=current["reassigned"])
        current["reassigned"] = 0
        if callback is not None:
            callback(step, prm, image, {"loss": loss, "psnr": p})
        return (image, p, prm), {"psnr": f"{p:.2f}"}

    _, (image, p, params) = run_chunks(functools.partial(run_fit_chunk, static), data, carry, steps=steps, chunk=static.chunk, log=log,
                                       progress=progress, desc="fit", update=reassign)
    template = current["data"].template
    s = float(score_ssim(image, target))
    return FitResult(params=params, template=template, image=image, history=history, psnr=p, ssim=s,
                     wall_time=time.perf_counter() - t0, config=config)
