"""Text-guided compositions: fit bitmap primitives to a prompt through CLIP.

CLIPDraw-style objective: each step renders the canvas over a (noisy)
background, draws ``num_cutouts`` augmented views (random crops, perspective,
flips; :func:`diffbmp_jax.clip.random_cutouts`), embeds them with the CLIP
image tower and maximises their cosine similarity to the prompt's embedding,
minus a weighted similarity to optional negative prompts. An optional target
image adds an MSE term::

    loss = text_weight * (-mean cos(views, prompt) + negative_weight * mean cos(views, negatives))
           + image_weight * MSE(render, target)

The step is the engine's (:mod:`diffbmp_jax.fitting.engine`) with
:class:`ClipObjective` as its objective: the optimiser, learning-rate
schedules, atlas blur annealing, backgrounds, the chunked loop and the
initialisers are those of :func:`diffbmp_jax.fit` (configured by the same
:class:`~diffbmp_jax.fitting.config.FitConfig`). Respawning is not used (it
needs a per-pixel error, which a prompt does not give).
"""

from __future__ import annotations

import functools
import dataclasses
import time
from typing import Any, Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.clip.api import ClipModel, image_features
from diffbmp_jax.clip.model import ClipConfig
from diffbmp_jax.clip.preprocess import normalize, random_cutouts, resize_center_crop
from diffbmp_jax.fitting import init as _init
from diffbmp_jax.fitting.cache import enable_compilation_cache
from diffbmp_jax.fitting.canvas import check_background_image, resolve_background
from diffbmp_jax.fitting.config import GENTLE_STEPS, FitConfig, resolve_config
from diffbmp_jax.fitting.engine import Data, Static, evaluate, run_fit_chunk
from diffbmp_jax.fitting.loop import record, run_chunks
from diffbmp_jax.fitting.optim import host_theta, initial_state, make_optimizer
from diffbmp_jax.fitting.timing import clocked
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.validation import as_key, as_target, check_count, nonnegative_number

__all__ = ["fit_text", "TextFitResult", "TEXT_FIT_DEFAULTS", "ClipObjective", "ClipInputs"]

# FitConfig fields whose image-fitting defaults do not suit a prompt: there is
# no target to initialise colours from, and respawn needs a per-pixel error.
TEXT_FIT_DEFAULTS = {"init": "random", "prune_every": 0, "background": "noise", "output_background": "white",
                     "coverage": 2.0, "init_opacity": 0.7, **GENTLE_STEPS}


@dataclasses.dataclass
class TextFitResult:
    """What :func:`fit_text` returns.

    Attributes:
      params: fitted :class:`Primitives` (pixel units).
      template: ``[N]`` int32 bitmap ids.
      image: ``[H, W, 3]`` final render (sharp atlas, ``output_background``).
      history: lists over logged steps: ``step``, ``loss`` (training loss),
        ``clip_score`` (cosine similarity of the final-style render, resized
        to the CLIP input, to the prompt), ``time`` (seconds since the start).
      clip_score: final cosine similarity to the prompt (mean over prompts).
      wall_time: seconds, compilation included.
      config: the :class:`FitConfig` used.
      compile_time: seconds spent tracing, lowering and compiling (or loading
        compiled programs from the persistent cache).
      step_time: seconds spent running the steps (compilation excluded).
    """

    params: Primitives
    template: jax.Array
    image: jax.Array
    history: dict
    clip_score: float
    wall_time: float
    config: FitConfig
    compile_time: float = 0.0
    step_time: float = 0.0


class ClipObjective(NamedTuple):
    """The engine objective of a text fit (:mod:`diffbmp_jax.fitting.engine`): hashable
    settings here, the CLIP weights and embeddings in ``Data.extra`` (:class:`ClipInputs`)."""
    clip: ClipConfig
    mean: tuple
    std: tuple
    num_cutouts: int
    crop_scale: tuple
    distortion: float
    flip: bool
    text_weight: float
    negative_weight: float
    image_weight: float
    per_pixel: bool = False  # no per-pixel error: no respawn

    def _embed(self, clip_params, views):
        """``[K, S, S, 3]`` views in [0, 1] -> ``[K, D]`` unit CLIP embeddings."""
        return _unit(image_features(self.clip, clip_params, normalize(views, self.mean, self.std)))

    def loss(self, static: Static, data: Data, image, target, key):
        views = random_cutouts(key, jnp.clip(image, 0.0, 1.0), self.num_cutouts, self.clip.vision.image_size,
                               crop_scale=self.crop_scale, distortion=self.distortion, flip=self.flip)
        inputs = data.extra
        emb = self._embed(inputs.clip_params, views)
        loss = -self.text_weight * jnp.mean(emb @ inputs.positive.T)
        if inputs.negative is not None:
            loss = loss + self.text_weight * self.negative_weight * jnp.mean(emb @ inputs.negative.T)
        if target is not None:
            loss = loss + self.image_weight * jnp.mean(jnp.square(image - target))
        return loss

    def score(self, static: Static, data: Data, image):
        """Cosine similarity of the whole canvas (plain resize, no augmentation) to the prompt."""
        view = resize_center_crop(image[None], self.clip.vision.image_size)
        return jnp.mean(self._embed(data.extra.clip_params, view) @ data.extra.positive.T)


class ClipInputs(NamedTuple):
    """What :class:`ClipObjective` reads from ``Data.extra``."""
    clip_params: Any        # CLIP weights: an argument, never a jit constant
    positive: jax.Array     # [T, D] unit-norm prompt embeddings
    negative: Any           # [M, D] unit-norm or None


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _embed_prompts(model: ClipModel, prompts, name: str):
    """Unit text embeddings ``[T, D]`` from strings or token ids ``[L]`` / ``[T, L]``."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (list, tuple)) and all(isinstance(p, str) for p in prompts):
        if not prompts:
            raise ValueError(f"{name} is empty")
        if any(not p.strip() for p in prompts):
            raise ValueError(f"{name} contains an empty prompt")
        return _unit(model.embed_text(list(prompts)))
    ids = np.asarray(prompts)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must be a string, a list of strings, or integer token ids [L] or [T, L]; "
                        f"got dtype {ids.dtype}")
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"{name} token ids must have shape (L,) or (T, L), got {tuple(ids.shape)}")
    if ids.min() < 0 or ids.max() >= model.config.text.vocab_size:
        raise ValueError(f"{name} token ids must lie in [0, {model.config.text.vocab_size}), found "
                         f"{ids.min()}..{ids.max()}")
    return _unit(model.encode_text(ids))


@clocked
def fit_text(prompt, atlas: Atlas, *, model: ClipModel, num_primitives: int, steps: int, key,
             height: int = 224, width: int = 224, negative_prompts=None, target=None,
             text_weight: float = 1.0, image_weight: float = 1.0, negative_weight: float = 0.3,
             num_cutouts: int = 8, crop_scale=(0.7, 0.9), distortion: float = 0.5, flip: bool = True,
             config: FitConfig | dict | None = None, background_image=None, init_params: tuple | None = None,
             progress: bool = True, callback: Callable | None = None, **options) -> TextFitResult:
    """Fits ``num_primitives`` stamps from ``atlas`` so the render matches a text prompt under CLIP.

    Args:
      prompt: a string, a list of strings (their similarities are averaged),
        or token ids ``[L]`` / ``[T, L]`` int (no tokenizer needed).
      atlas: the :class:`Atlas` of bitmaps.
      model: a :class:`~diffbmp_jax.clip.ClipModel` (:func:`diffbmp_jax.clip.load_clip`).
      num_primitives: ``N >= 1``.
      steps: optimisation steps ``>= 0``.
      key: ``jax.random.key`` or an int seed (the fit is deterministic in it).
      height, width: canvas size in pixels (ignored when ``target`` is given:
        the target's size is used).
      negative_prompts: optional prompts (same forms as ``prompt``) to move away from.
      target: optional ``[H, W, 3]`` image in [0, 1] mixed in by MSE.
      text_weight, image_weight: weights of the CLIP and MSE terms.
      negative_weight: weight of the negative-prompt similarity (relative to the prompt's).
      num_cutouts: augmented views ``K`` per step (view 0 is the whole canvas).
      crop_scale: (min, max) area fraction of the random crops.
      distortion: perspective strength in [0, 1].
      flip: random horizontal flips.
      config: :class:`~diffbmp_jax.fitting.config.FitConfig` or dict (learning rates,
        schedule, blur, backgrounds, init, rendering). When ``None``,
        ``FitConfig(**TEXT_FIT_DEFAULTS)``; ``**options`` override fields.
      background_image: ``[H, W, 3]`` for ``background="image"``.
      init_params: optional ``(Primitives, template)`` to start from.
      progress: tqdm progress bar.
      callback: ``callback(step, params, image, metrics)`` at step 0 and after
        every chunk of ``config.log_every`` steps (``metrics``: ``loss``, ``clip_score``).

    Returns:
      :class:`TextFitResult`.
    """
    t0 = time.perf_counter()
    enable_compilation_cache()
    if not isinstance(model, ClipModel):
        raise TypeError(f"model must be a diffbmp_jax.clip.ClipModel (see clip.load_clip), got "
                        f"{type(model).__name__}")
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    # No target to match: "auto" means noise, as behind a transparent target.
    config = resolve_background(resolve_config(config, options, defaults=TEXT_FIT_DEFAULTS), transparent=True)
    n = check_count("num_primitives", num_primitives, 1)
    steps = check_count("steps", steps, 0)
    num_cutouts = check_count("num_cutouts", num_cutouts, 1)
    key = as_key(key)
    text_weight = nonnegative_number("text_weight", text_weight)
    image_weight = nonnegative_number("image_weight", image_weight)
    negative_weight = nonnegative_number("negative_weight", negative_weight)
    lo, hi = (float(c) for c in crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale!r}")
    if not 0.0 <= distortion <= 1.0:
        raise ValueError(f"distortion must be in [0, 1], got {distortion!r}")

    if target is not None:
        target = as_target(target)
        height, width = int(target.shape[0]), int(target.shape[1])
    else:
        height = check_count("height", height, 1)
        width = check_count("width", width, 1)
    bg_image = check_background_image(config, background_image, height, width)
    if config.color_blend > 0 and atlas.rgb is None:
        raise ValueError("config.color_blend > 0 needs an atlas with rgb colours (Atlas.rgb is None)")

    positive = _embed_prompts(model, prompt, "prompt")
    negative = None
    if negative_prompts is not None and not (isinstance(negative_prompts, (list, tuple)) and not negative_prompts):
        negative = _embed_prompts(model, negative_prompts, "negative_prompts")

    k_init, k_loop = jax.random.split(key)
    if init_params is None:
        # Initialisers read colours/structure from a target; a mid-grey canvas
        # stands in when there is none (the "random" initialiser ignores it).
        guide = target if target is not None else jnp.full((height, width, 3), 0.5, jnp.float32)
        params, template = _init.INITIALIZERS[config.init](
            guide, atlas, n, k_init, coverage=config.coverage, opacity=config.init_opacity)
    else:
        params, template = _init.check_init_params(init_params, n, atlas)
    template = jnp.asarray(template, jnp.int32)

    size = float(max(height, width))  # positions in units of the canvas' longer side
    objective = ClipObjective(model.config, tuple(float(c) for c in model.image_mean),
                              tuple(float(c) for c in model.image_std), num_cutouts, (lo, hi), float(distortion),
                              bool(flip), float(text_weight), float(negative_weight), float(image_weight))
    static = Static(config, height, width, config.log_every, size, objective=objective)
    data = Data(target, None, Atlas(mask=jnp.asarray(atlas.mask, jnp.float32), rgb=atlas.rgb), template, None,
                bg_image, None, None, k_loop, extra=ClipInputs(model.params, positive, negative))
    theta = host_theta(params, size)
    carry = (theta, initial_state(make_optimizer(config, steps), theta))
    history = {"step": [], "loss": [], "clip_score": [], "time": []}

    def log(step, carry, loss, aux):
        image, score, prm = evaluate(static, data, carry[0])
        score = float(score)
        loss = record(history, step, loss, t0, clip_score=score)
        if callback is not None:
            callback(step, prm, image, {"loss": loss, "clip_score": score})
        return (image, score, prm), {"clip": f"{score:.3f}"}

    _, (image, score, params) = run_chunks(functools.partial(run_fit_chunk, static), data, carry, steps=steps, chunk=static.chunk, log=log,
                                           progress=progress, desc="text")
    return TextFitResult(params=params, template=template, image=image, history=history, clip_score=score,
                         wall_time=time.perf_counter() - t0, config=config)
