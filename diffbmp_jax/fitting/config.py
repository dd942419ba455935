"""Settings of the optimisation loops: :class:`FitConfig`, its validation and its sources.

One frozen, hashable dataclass of plain scalars/strings (it is a ``jit``
static argument) shared by :func:`diffbmp_jax.fit`, :func:`diffbmp_jax.fit_text`,
:func:`diffbmp_jax.fit_video` and :func:`diffbmp_jax.fit_regions`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from diffbmp_jax.validation import nonnegative_number
from diffbmp_jax.fitting import init as _init
from diffbmp_jax.rendering.api import BACKENDS
from diffbmp_jax.fitting.schedules import LR_SCHEDULES

__all__ = ["FitConfig", "BACKGROUNDS", "TEMPLATE_CHOICES", "GENTLE_STEPS", "resolve_config"]

BACKGROUNDS = ("auto", "noise", "white", "black", "image")
"""Named backgrounds; an RGB triple in [0, 1] is accepted too (see :mod:`diffbmp_jax.fitting.canvas`)."""

TEMPLATE_CHOICES = ("init", "round_robin", "random", "color")
"""How a fit picks each primitive's bitmap at the start (``FitConfig.templates``)."""


GENTLE_STEPS = {"lr_xy": 0.05, "lr_scale": 0.02, "lr_rotation": 0.03, "lr_opacity": 0.05, "lr_color": 0.05,
                "adam_b1": 0.9}
"""Step sizes a quarter of image fitting's, and Adam's usual momentum: the defaults of tasks
whose parameters must move little per step (a video's warm-started frames, where larger steps
flicker; CLIP guidance, not re-measured with the larger ones)."""


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

    Initialisation: ``init`` names one of :data:`diffbmp_jax.fitting.init.INITIALIZERS`;
    ``coverage`` sets the initial stamp size (the canvas is covered about that
    many times over); ``init_opacity`` is the starting (and respawn) opacity.

    Soft rasterisation: masks blurred with std ``blur_sigma`` (bitmap pixels)
    annealed to 0 by ``blur_anneal`` of the fit; ``soft_raster=False`` or
    ``blur_sigma=0`` turns it off. The final image always uses the sharp atlas.

    Canvas: ``background`` is what shows through uncovered pixels during
    optimisation: ``"auto"`` (the default: fresh noise behind a target with
    transparent pixels, so the fit learns to leave them uncovered, and
    ``output_background`` behind an opaque one, so the fit optimises the
    picture it returns), ``"noise"`` (fresh uniform noise each step, so the
    optimiser must cover the canvas), ``"white"``, ``"black"``, ``"image"``
    (the ``background_image`` argument) or an RGB triple in [0, 1].
    ``output_background`` is used for the final image (same choices but noise
    and auto).

    Pruning and respawn: every ``prune_every`` steps (0 = never), until
    ``prune_until`` of the fit, primitives that are invisible (opacity below
    ``prune_opacity``, entirely off the canvas, or scale below
    ``prune_min_scale`` pixels) are re-initialised where the current error is
    largest, with fresh optimiser moments. Scales are clipped to
    ``max_scale`` times the canvas' longer side.

    Templates (which bitmap each primitive shows): ``templates`` picks them at
    the start: ``"init"`` (the initialiser's choice), ``"round_robin"``,
    ``"random"`` or ``"color"`` (the bitmap whose mean colour is nearest the
    target's around the primitive: photomosaics). Every ``reassign_every``
    steps (0 = never) each primitive may switch to the bitmap that lowers the
    loss most (:func:`diffbmp_jax.fitting.templates.reassign_templates`: greedy, never
    raises the loss; it costs ``P + 1`` dense renders and ``O(N H W)`` memory,
    so keep it for small scenes).

    Rendering: ``color_blend``, ``alpha_max``, ``antialias`` (bitmaps
    prefiltered for their size on screen, :mod:`diffbmp_jax.rendering.mipmap`) and
    ``backend`` are passed to :func:`diffbmp_jax.render`. ``log_every`` is the number of steps per
    compiled chunk (and between history entries).
    """

    # Defaults measured on the scenes of benchmarks/quality.py (RESULTS.md,
    # "fit quality per iteration"): the same settings for every scene.
    init: str = "structure_aware"
    coverage: float = 3.0
    init_opacity: float = 0.6
    lr_xy: float = 0.2
    lr_scale: float = 0.08
    lr_rotation: float = 0.12
    lr_opacity: float = 0.2
    lr_color: float = 0.2
    lr_schedule: str = "cosine"
    lr_final: float = 0.1
    warmup_steps: int = 0
    adam_b1: float = 0.7
    adam_b2: float = 0.999
    mse_weight: float = 1.0
    l1_weight: float = 0.0
    ssim_weight: float = 0.0
    soft_raster: bool = True
    blur_sigma: float = 1.0
    blur_anneal: float = 0.6
    background: Any = "auto"
    output_background: Any = "white"
    prune_every: int = 25
    prune_until: float = 0.8
    prune_opacity: float = 0.1
    prune_min_scale: float = 0.5
    max_scale: float = 0.5
    color_blend: float = 0.0
    alpha_max: float = 0.99
    antialias: bool = True
    backend: str = "auto"
    log_every: int = 25
    templates: str = "init"
    reassign_every: int = 0

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
        if self.output_background in ("noise", "auto"):
            raise ValueError(f"config.output_background cannot be {self.output_background!r} (the final image "
                             "must be deterministic); use 'white', 'black', 'image' or an RGB triple")
        if self.init not in _init.INITIALIZERS:
            raise ValueError(f"config.init must be one of {tuple(_init.INITIALIZERS)}, got {self.init!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"config.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"config.backend must be one of {BACKENDS}, got {self.backend!r}")
        nonneg = ("coverage", "lr_xy", "lr_scale", "lr_rotation", "lr_opacity", "lr_color", "mse_weight",
                  "l1_weight", "ssim_weight", "blur_sigma", "prune_min_scale", "prune_opacity")
        for name in nonneg:
            nonnegative_number(f"config.{name}", getattr(self, name))
        for name in ("init_opacity", "lr_final", "blur_anneal", "prune_until", "adam_b1", "adam_b2",
                     "color_blend", "max_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"config.{name} must be a number in [0, 1], got {v!r}")
        for name in ("adam_b1", "adam_b2"):  # a beta of 1 divides by zero in Adam's bias correction
            if getattr(self, name) >= 1.0:
                raise ValueError(f"config.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0.0 < self.alpha_max <= 0.99:
            raise ValueError(f"config.alpha_max must be in (0, 0.99], got {self.alpha_max!r}")
        if self.coverage <= 0 or self.max_scale <= 0:
            raise ValueError("config.coverage and config.max_scale must be > 0")
        if self.mse_weight + self.l1_weight + self.ssim_weight <= 0:
            raise ValueError("config: at least one of mse_weight, l1_weight, ssim_weight must be > 0")
        if self.templates not in TEMPLATE_CHOICES:
            raise ValueError(f"config.templates must be one of {TEMPLATE_CHOICES}, got {self.templates!r}")
        for name, least in (("warmup_steps", 0), ("prune_every", 0), ("reassign_every", 0), ("log_every", 1)):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < least:
                raise ValueError(f"config.{name} must be an int >= {least}, got {v!r}")
            object.__setattr__(self, name, int(v))  # NumPy ints too, stored as Python ints (hashable, static)
        for name in ("soft_raster", "antialias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config.{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The names of all settings, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> FitConfig:
        """Builds a config from a mapping (e.g. a parsed TOML table).

        Raises ValueError naming every unknown key and ``source``.
        """
        unknown = sorted(set(d) - set(cls.fields()))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys are {list(cls.fields())}")
        return cls(**d)

    def replace(self, **changes) -> FitConfig:
        """A copy with ``changes`` applied (validated again); TypeError names unknown fields."""
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise TypeError(f"fit got unknown option(s) {unknown}; valid FitConfig fields are "
                            f"{list(self.fields())}")
        return dataclasses.replace(self, **changes)


def resolve_config(config: FitConfig | dict | None, options: dict, defaults: dict | None = None) -> FitConfig:
    """The :class:`FitConfig` an entry point runs with.

    Args:
      config: a :class:`FitConfig`, a dict of its fields, or ``None`` for
        ``FitConfig(**defaults)`` (``FitConfig()`` when ``defaults`` is ``None``).
      options: single fields overriding ``config`` (an entry point's ``**options``).

    Raises TypeError for another type of ``config`` or an unknown option,
    ValueError for an unknown dict key or an invalid value.
    """
    if config is None:
        config = FitConfig(**(defaults or {}))
    elif isinstance(config, dict):
        config = FitConfig.from_dict(config)
    elif not isinstance(config, FitConfig):
        raise TypeError(f"config must be a FitConfig or dict, got {type(config).__name__}")
    if options:
        config = config.replace(**options)
    return config
