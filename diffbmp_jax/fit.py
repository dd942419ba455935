"""Fitting ``N`` bitmap primitives to a target image by gradient descent.

One optimisation step is a pure function; ``log_every`` steps run inside one
``jit``-compiled ``lax.scan`` (a "chunk"), so Python only runs between chunks
to log, call the callback and move the progress bar. Compiled chunks are
cached across calls with the same configuration and shapes.

Inside the optimiser the parameters live in a normalised space (:class:`Theta`):
positions in units of the typical stamp half-extent (:func:`init.base_scale`)
and scales as logarithms, so that one set of learning rates suits any canvas
size and primitive count, and scales stay positive.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
import optax

from . import init as _init
from .atlas import Atlas
from .blur import blur_atlas, blur_sigma, gaussian_filter, kernel_radius
from .losses import check_weight_mask, combined_loss
from .metrics import psnr as _psnr
from .losses import ssim as _ssim
from .primitives import Primitives
from .render import BACKENDS, composite, render
from .schedules import LR_SCHEDULES, lr_multiplier

__all__ = ["FitConfig", "FitResult", "fit", "BACKGROUNDS", "as_target"]

BACKGROUNDS = ("noise", "white", "black", "image")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit` (all plain scalars/strings, so a TOML table can fill it).

    Learning rates (Adam step sizes, multiplied by the decay schedule):
      lr_xy: position, in typical stamp half-extents per step (the half-extent
        at which ``N`` stamps cover the canvas ``coverage`` times).
      lr_scale: log of the scale (relative change per step).
      lr_rotation: radians per step.
      lr_opacity, lr_color: opacity / colour logits per step.
      lr_schedule: ``"cosine"``, ``"linear"``, ``"exponential"`` or ``"constant"``.
      lr_final: learning-rate factor reached at the last step.
      warmup_steps: linear learning-rate warm-up (steps).

    Loss: ``mse_weight * MSE + l1_weight * L1 + ssim_weight * (1 - SSIM)``.

    Initialisation: ``init`` names one of :data:`diffbmp_jax.init.INITIALIZERS`;
    ``coverage`` sets the initial stamp size (the canvas is covered about that
    many times over); ``init_opacity`` is the starting (and respawn) opacity.

    Soft rasterisation: masks blurred with std ``blur_sigma`` (bitmap pixels)
    annealed to 0 by ``blur_anneal`` of the fit; ``soft_raster=False`` or
    ``blur_sigma=0`` turns it off. The final image always uses the sharp atlas.

    Canvas: ``background`` is what shows through uncovered pixels during
    optimisation: ``"noise"`` (fresh uniform noise each step, so the optimiser
    must cover the canvas), ``"white"``, ``"black"``, ``"image"`` (the
    ``background_image`` argument) or an RGB triple in [0, 1].
    ``output_background`` is used for the final image (same choices but noise).

    Pruning and respawn: every ``prune_every`` steps (0 = never), until
    ``prune_until`` of the fit, primitives that are invisible (opacity below
    ``prune_opacity``, entirely off the canvas, or scale below
    ``prune_min_scale`` pixels) are re-initialised where the current error is
    largest, with fresh optimiser moments. Scales are clipped to
    ``max_scale`` times the canvas' longer side.

    Rendering: ``color_blend``, ``alpha_max`` and ``backend`` are passed to
    :func:`diffbmp_jax.render`. ``log_every`` is the number of steps per
    compiled chunk (and between history entries).
    """

    init: str = "structure_aware"
    coverage: float = 3.0
    init_opacity: float = 0.3
    lr_xy: float = 0.05
    lr_scale: float = 0.02
    lr_rotation: float = 0.03
    lr_opacity: float = 0.05
    lr_color: float = 0.05
    lr_schedule: str = "cosine"
    lr_final: float = 0.1
    warmup_steps: int = 0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    mse_weight: float = 1.0
    l1_weight: float = 0.0
    ssim_weight: float = 0.0
    soft_raster: bool = True
    blur_sigma: float = 1.0
    blur_anneal: float = 0.6
    background: Any = "noise"
    output_background: Any = "white"
    prune_every: int = 25
    prune_until: float = 0.8
    prune_opacity: float = 0.1
    prune_min_scale: float = 0.5
    max_scale: float = 0.5
    color_blend: float = 0.0
    alpha_max: float = 0.99
    backend: str = "auto"
    log_every: int = 25

    def __post_init__(self):
        for name in ("background", "output_background"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple, np.ndarray)):
                v = tuple(float(c) for c in v)  # hashable: the config is a jit static argument
                if len(v) != 3 or not all(0.0 <= c <= 1.0 for c in v):
                    raise ValueError(f"config.{name} as a colour must be 3 floats in [0, 1], got {v!r}")
                object.__setattr__(self, name, v)
            elif v not in BACKGROUNDS:
                raise ValueError(f"config.{name} must be one of {BACKGROUNDS} or an RGB triple, got {v!r}")
        if self.output_background == "noise":
            raise ValueError("config.output_background cannot be 'noise' (the final image must be "
                             "deterministic); use 'white', 'black', 'image' or an RGB triple")
        if self.init not in _init.INITIALIZERS:
            raise ValueError(f"config.init must be one of {tuple(_init.INITIALIZERS)}, got {self.init!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"config.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"config.backend must be one of {BACKENDS}, got {self.backend!r}")
        nonneg = ("coverage", "lr_xy", "lr_scale", "lr_rotation", "lr_opacity", "lr_color", "mse_weight",
                  "l1_weight", "ssim_weight", "blur_sigma", "prune_min_scale", "prune_opacity")
        for name in nonneg:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"config.{name} must be a finite number >= 0, got {v!r}")
        for name in ("init_opacity", "lr_final", "blur_anneal", "prune_until", "adam_b1", "adam_b2",
                     "color_blend", "max_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"config.{name} must be a number in [0, 1], got {v!r}")
        if not 0.0 < self.alpha_max <= 0.99:
            raise ValueError(f"config.alpha_max must be in (0, 0.99], got {self.alpha_max!r}")
        if self.coverage <= 0 or self.max_scale <= 0:
            raise ValueError("config.coverage and config.max_scale must be > 0")
        if self.mse_weight + self.l1_weight + self.ssim_weight <= 0:
            raise ValueError("config: at least one of mse_weight, l1_weight, ssim_weight must be > 0")
        for name in ("warmup_steps", "prune_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"config.{name} must be an int >= 0, got {v!r}")
        if isinstance(self.log_every, bool) or not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(f"config.log_every must be an int >= 1, got {self.log_every!r}")
        if not isinstance(self.soft_raster, bool):
            raise ValueError(f"config.soft_raster must be true or false, got {self.soft_raster!r}")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> "FitConfig":
        """Builds a config from a mapping (e.g. a parsed TOML table).

        Raises ValueError naming every unknown key and ``source``.
        """
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys are {list(cls.fields())}")
        return cls(**d)

    def replace(self, **changes) -> "FitConfig":
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise TypeError(f"fit got unknown option(s) {unknown}; valid FitConfig fields are "
                            f"{list(self.fields())}")
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      params: fitted :class:`Primitives` (``N`` entries, pixel units).
      template: ``[N]`` int32 bitmap id per primitive.
      image: ``[H, W, 3]`` final render (sharp atlas, ``output_background``).
      history: lists over logged steps: ``step``, ``loss`` (training loss of
        that step), ``psnr`` (dB, of the final-style render), ``time`` (seconds
        since the start, compilation included), ``respawned`` (primitives
        re-initialised since the previous entry).
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


class Theta(NamedTuple):
    """Optimiser-space parameters (see module docstring); leading axis ``N``."""
    xy: jax.Array             # [N, 2] position / base stamp half-extent
    log_scale: jax.Array      # [N] log of the half-extent in pixels
    rotation: jax.Array       # [N] radians
    opacity_logit: jax.Array  # [N]
    color_logit: jax.Array    # [N, 3]


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
    target: jax.Array          # [H, W, 3]
    atlas: Atlas
    template: jax.Array        # [N] int32
    weight: Any                # [H, W, 1|3] or None
    bg_image: Any              # [H, W, 3] or None
    guide_scale: jax.Array     # [H, W] respawn scale (pixels)
    guide_angle: jax.Array     # [H, W] respawn rotation (radians)
    key: jax.Array


def _to_theta(p: Primitives, unit: float) -> Theta:
    return Theta(p.xy / unit, jnp.log(p.scale), p.rotation, p.opacity_logit, p.color_logit)


def _to_params(t: Theta, unit: float) -> Primitives:
    return Primitives(xy=t.xy * unit, scale=jnp.exp(t.log_scale), rotation=t.rotation,
                      opacity_logit=t.opacity_logit, color_logit=t.color_logit)


def _optimizer(cfg: FitConfig, steps: int) -> optax.GradientTransformation:
    """Adam, then the decay schedule, then one learning rate per field."""
    lrs = Theta(cfg.lr_xy, cfg.lr_scale, cfg.lr_rotation, cfg.lr_opacity, cfg.lr_color)

    def per_field(updates, state, params=None):
        del params
        return Theta(*(-lr * u for u, lr in zip(updates, lrs))), state

    return optax.chain(
        optax.scale_by_adam(b1=cfg.adam_b1, b2=cfg.adam_b2),
        optax.scale_by_schedule(lr_multiplier(cfg.lr_schedule, steps, cfg.lr_final, cfg.warmup_steps)),
        optax.GradientTransformation(lambda params: optax.EmptyState(), per_field),
    )


def _background(spec, key, height: int, width: int, bg_image):
    """``[H, W, 3]`` or ``[3]`` background for a named spec or RGB triple."""
    if spec == "noise":
        return jax.random.uniform(key, (height, width, 3))
    if spec == "white":
        return jnp.ones((3,), jnp.float32)
    if spec == "black":
        return jnp.zeros((3,), jnp.float32)
    if spec == "image":
        return bg_image
    return jnp.asarray(spec, jnp.float32)


def _image(static: _Static, params: Primitives, atlas: Atlas, template, bg):
    cfg = static.cfg
    color, alpha = render(params, atlas, height=static.height, width=static.width, template=template,
                          color_blend=cfg.color_blend, alpha_max=cfg.alpha_max, backend=cfg.backend)
    return composite(color, alpha, bg)


def _respawn(static: _Static, data: _Data, theta: Theta, opt_state, image, key):
    """Re-initialises invisible primitives where the error of ``image`` is largest.

    Returns the new ``(theta, opt_state, count)``; Adam moments of respawned
    primitives are zeroed so that stale momentum does not throw them away.
    """
    cfg, h, w = static.cfg, static.height, static.width
    size = float(max(h, w))
    n = theta.log_scale.shape[0]
    s = jnp.exp(theta.log_scale)
    x, y = theta.xy[:, 0] * static.unit, theta.xy[:, 1] * static.unit
    off = (x + s < -0.5) | (x - s > w - 0.5) | (y + s < -0.5) | (y - s > h - 0.5)
    dead = (jax.nn.sigmoid(theta.opacity_logit) < cfg.prune_opacity) | off | (s < cfg.prune_min_scale)

    err = jnp.sum(jnp.square(image - data.target), -1)
    if data.weight is not None:
        err = err * jnp.mean(data.weight, -1)
    # Smooth over about a stamp so that new primitives go to error regions,
    # not to isolated noisy pixels.
    sig = max(1.0, 0.5 * _init.base_scale(h, w, n, cfg.coverage))
    sig = min(sig, 0.1 * size)
    err = gaussian_filter(err, sig, min(kernel_radius(sig), max(h, w) // 2 + 1), axes=(0, 1), mode="reflect")
    k1, k2 = jax.random.split(key)
    xy = _init.sample_pixels(err.reshape(-1) + 1e-12, k1, n, h, w)
    new = Theta(
        xy=xy / static.unit,
        log_scale=jnp.log(_init.sample_colors(data.guide_scale[..., None], xy)[:, 0]),
        rotation=_init.sample_colors(data.guide_angle[..., None], xy)[:, 0]
        + jax.random.uniform(k2, (n,), minval=-0.3, maxval=0.3),
        opacity_logit=jnp.full((n,), _logit(cfg.init_opacity)),
        color_logit=_init._logit(_init.sample_colors(data.target, xy)),
    )

    def pick(new_leaf, old_leaf):
        d = dead.reshape((n,) + (1,) * (old_leaf.ndim - 1))
        return jnp.where(d, new_leaf, old_leaf)

    theta = Theta(*(pick(a, b) for a, b in zip(new, theta)))

    def reset(leaf):
        if hasattr(leaf, "ndim") and leaf.ndim >= 1 and leaf.shape[0] == n:
            return jnp.where(dead.reshape((n,) + (1,) * (leaf.ndim - 1)), 0.0, leaf)
        return leaf

    opt_state = jax.tree_util.tree_map(reset, opt_state)
    return theta, opt_state, jnp.sum(dead).astype(jnp.int32)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p) - math.log1p(-p)


def _step(static: _Static, data: _Data, carry, t):
    """One optimisation step at (traced) step index ``t``; no-op past the end."""
    cfg, h, w = static.cfg, static.height, static.width
    size = float(max(h, w))
    opt = _optimizer(cfg, static.steps)
    theta, opt_state = carry

    def do(args):
        theta, opt_state = args
        key = jax.random.fold_in(data.key, t)
        k_bg, k_spawn = jax.random.split(key)
        atlas = data.atlas
        if cfg.soft_raster and cfg.blur_sigma > 0:
            sigma = blur_sigma(t, static.steps, cfg.blur_sigma, cfg.blur_anneal)
            atlas = blur_atlas(atlas, sigma, kernel_radius(cfg.blur_sigma))
        bg = _background(cfg.background, k_bg, h, w, data.bg_image)

        def loss_fn(th):
            image = _image(static, _to_params(th, static.unit), atlas, data.template, bg)
            loss = combined_loss(image, data.target, mse_weight=cfg.mse_weight, l1_weight=cfg.l1_weight,
                                 ssim_weight=cfg.ssim_weight, weight=data.weight)
            return loss, image

        (loss, image), grads = jax.value_and_grad(loss_fn, has_aux=True)(theta)
        # A non-finite gradient (degenerate primitive) must not poison the state.
        grads = jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), grads)
        updates, opt_state = opt.update(grads, opt_state, theta)
        theta = optax.apply_updates(theta, updates)
        # Keep scales in a sane range and positions near the canvas; pruning
        # catches what leaves it anyway.
        theta = theta._replace(
            log_scale=jnp.clip(theta.log_scale, math.log(0.05), math.log(cfg.max_scale * size)),
            xy=jnp.clip(theta.xy, -0.5 * size / static.unit, 1.5 * size / static.unit))
        count = jnp.zeros((), jnp.int32)
        if cfg.prune_every > 0:
            due = ((t + 1) % cfg.prune_every == 0) & (t + 1 < cfg.prune_until * static.steps)
            theta, opt_state, count = jax.lax.cond(
                due, lambda a: _respawn(static, data, a[0], a[1], image, k_spawn),
                lambda a: (a[0], a[1], jnp.zeros((), jnp.int32)), (theta, opt_state))
        return (theta, opt_state), (loss, count)

    def skip(args):
        return args, (jnp.full((), jnp.nan, jnp.float32), jnp.zeros((), jnp.int32))

    # The scan always runs `chunk` iterations so one compilation serves every
    # chunk; iterations past the last step are skipped by the cond.
    return jax.lax.cond(t < static.steps, do, skip, (theta, opt_state))


@functools.partial(jax.jit, static_argnums=0)
def _run_chunk(static: _Static, data: _Data, carry, start):
    """Runs ``static.chunk`` steps from ``start``; returns the carry, losses, respawn counts."""
    ts = start + jnp.arange(static.chunk, dtype=jnp.int32)
    return jax.lax.scan(lambda c, t: _step(static, data, c, t), carry, ts)


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(static: _Static, data: _Data, theta: Theta):
    """Final-style render (sharp atlas, output background), its PSNR and params."""
    params = _to_params(theta, static.unit)
    bg = _background(static.cfg.output_background, None, static.height, static.width, data.bg_image)
    image = jnp.clip(_image(static, params, data.atlas, data.template, bg), 0.0, 1.0)
    return image, _psnr(image, data.target, weight=data.weight), params


def as_target(target) -> jax.Array:
    """Validates a target image and returns float32 ``[H, W, 3]`` in [0, 1].

    Accepts ``[H, W, 3]``, ``[H, W]`` (grey) or ``[H, W, 4]`` (alpha dropped),
    floats in [0, 1] or uint8 (divided by 255).
    """
    if isinstance(target, (str, bytes)) or not hasattr(target, "__array__") and not isinstance(target, (list, tuple)):
        raise TypeError(f"target must be an image array [H, W, 3], got {type(target).__name__} "
                        "(load files with diffbmp_jax.cli.load_target)")
    a = np.asarray(target)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"target must be a float or uint8 array, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim != 3 or a.shape[-1] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"target must have shape (H, W, 3), (H, W) or (H, W, 4), got {tuple(np.shape(target))}")
    if not np.all(np.isfinite(a)):
        raise ValueError("target contains non-finite values (NaN or inf)")
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"target values must lie in [0, 1] (or be uint8), found {a.min():g}..{a.max():g}")
    return jnp.asarray(a)


def _check_count(name: str, v, minimum: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int, got {v}")
    return int(v)


def _as_key(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax.random.key (or an int seed), got {type(key).__name__}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def fit(target, atlas: Atlas, *, num_primitives: int, steps: int, key, config: FitConfig | dict | None = None,
        weight_mask=None, background_image=None, init_params: tuple | None = None, progress: bool = True,
        callback: Callable | None = None, **options) -> FitResult:
    """Fits ``num_primitives`` stamps from ``atlas`` to ``target``.

    Args:
      target: ``[H, W, 3]`` image in [0, 1] (uint8, grey and RGBA accepted).
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
    """
    t0 = time.perf_counter()
    if config is None:
        config = FitConfig()
    elif isinstance(config, dict):
        config = FitConfig.from_dict(config)
    elif not isinstance(config, FitConfig):
        raise TypeError(f"config must be a FitConfig or dict, got {type(config).__name__}")
    if options:
        config = config.replace(**options)
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    target = as_target(target)
    h, w = int(target.shape[0]), int(target.shape[1])
    n = _check_count("num_primitives", num_primitives, 1)
    steps = _check_count("steps", steps, 0)
    key = _as_key(key)
    weight = check_weight_mask(weight_mask, h, w)
    uses_image = "image" in (config.background, config.output_background)
    if uses_image:
        if background_image is None:
            raise ValueError("background_image is required when background or output_background is 'image'")
        bg_image = as_target(background_image)
        if bg_image.shape != target.shape:
            raise ValueError(f"background_image must have the target's shape {tuple(target.shape)}, "
                             f"got {tuple(bg_image.shape)}")
    else:
        bg_image = None
    if config.color_blend > 0 and atlas.rgb is None:
        raise ValueError("config.color_blend > 0 needs an atlas with rgb colours (Atlas.rgb is None)")

    k_init, k_loop = jax.random.split(key)
    if init_params is None:
        params, template = _init.INITIALIZERS[config.init](
            target, atlas, n, k_init, coverage=config.coverage, opacity=config.init_opacity)
    else:
        params, template = init_params
        if not isinstance(params, Primitives) or params.num != n:
            raise ValueError(f"init_params must be (Primitives with {n} entries, template [{n}])")
        t = np.asarray(template)
        if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= atlas.num:
            raise ValueError(f"init_params template must be {n} integer ids in [0, {atlas.num})")
    template = jnp.asarray(template, jnp.int32)
    maps = _init.structure_maps(target, n, coverage=config.coverage)
    data = _Data(target, Atlas(mask=jnp.asarray(atlas.mask, jnp.float32), rgb=atlas.rgb), template, weight,
                 bg_image, maps["scale"], maps["angle"], k_loop)
    unit = float(_init.base_scale(h, w, n, config.coverage))
    theta = _to_theta(params, unit)
    chunk = min(config.log_every, max(steps, 1))
    static = _Static(config, steps, h, w, chunk, unit)
    carry = (theta, _optimizer(config, steps).init(theta))

    history = {"step": [], "loss": [], "psnr": [], "time": [], "respawned": []}

    def log(step, loss, respawned):
        image, p, prm = _evaluate(static, data, carry[0])
        p = float(p)
        history["step"].append(step)
        history["loss"].append(float(loss))
        history["psnr"].append(p)
        history["time"].append(time.perf_counter() - t0)
        history["respawned"].append(int(respawned))
        if callback is not None:
            callback(step, prm, image, {"loss": float(loss), "psnr": p})
        return image, p, prm

    from tqdm.auto import tqdm
    bar = tqdm(total=steps, disable=not progress, unit="it", desc="fit", leave=True)
    try:
        image, p, params = log(0, float("nan"), 0)
        for start in range(0, steps, chunk):
            carry, (losses, counts) = _run_chunk(static, data, carry, jnp.int32(start))
            done = min(start + chunk, steps)
            losses = np.asarray(losses)[: done - start]
            image, p, params = log(done, losses[-1], int(np.sum(counts)))
            bar.update(done - start)
            bar.set_postfix(loss=f"{losses[-1]:.4g}", psnr=f"{p:.2f}")
    finally:
        bar.close()
    s = float(_ssim(image, target))
    return FitResult(params=params, template=template, image=image, history=history, psnr=p, ssim=s,
                     wall_time=time.perf_counter() - t0, config=config)
