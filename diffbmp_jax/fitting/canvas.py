"""The canvas: backgrounds, and the rendered primitives composed over one.

A background is named (``"noise"``, ``"white"``, ``"black"``, ``"image"``;
:data:`diffbmp_jax.fitting.config.BACKGROUNDS`) or an RGB triple in [0, 1]; the
image over a background ``B`` is ``C + (1 - A) * B`` (:func:`diffbmp_jax.composite`).

``"auto"``, the default training background, is resolved once per fit by
:func:`resolve_background`: noise behind a target with transparent pixels
(the target is composed over the same noise each step, so only leaving those
pixels uncovered matches it), the output background behind an opaque target
(the fit then optimises exactly the picture it returns; on the textured-stamp
scenes of ``benchmarks/quality.py`` noise behind opaque targets cost 1.3 to
2.5 dB at 100 steps, ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.rendering.blur import MaskBlur, annealed_blur
from diffbmp_jax.rendering.mipmap import Prefiltered, prefilter
from diffbmp_jax.fitting.config import BACKGROUNDS, FitConfig
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.rendering.api import composite, render, render_mse
from diffbmp_jax.validation import as_target

__all__ = ["BACKGROUNDS", "background", "render_over", "mse_over", "check_background_image", "resolve_background",
           "target_over", "step_canvas", "step_blur", "step_atlases", "step_target"]


def resolve_background(cfg: FitConfig, transparent: bool) -> FitConfig:
    """``cfg`` with ``background="auto"`` replaced by what it means for this fit.

    ``"noise"`` when the target has transparent pixels (``transparent``),
    else ``cfg.output_background``; any other background is kept.
    """
    if cfg.background != "auto":
        return cfg
    return cfg.replace(background="noise" if transparent else cfg.output_background)


def target_over(rgb, alpha, bg) -> jax.Array:
    """``[H, W, 3]`` target of straight colour ``rgb [H, W, 3]`` and coverage
    ``alpha [H, W, 1]`` composed over ``bg`` (``[H, W, 3]`` or ``[3]``)."""
    return rgb * alpha + (1.0 - alpha) * bg


def background(spec, key, height: int, width: int, bg_image) -> jax.Array:
    """The background for ``spec``: ``[H, W, 3]`` (noise, image) or ``[3]`` (a colour), in [0, 1].

    Args:
      spec: a name of :data:`BACKGROUNDS` or an RGB triple.
      key: ``jax.random.key`` for ``"noise"``; unused otherwise.
      height, width: canvas size in pixels.
      bg_image: ``[H, W, 3]`` image returned for ``"image"`` (else unused, may be None).

    ``"noise"`` is fresh uniform noise with 256 levels per channel (the
    centres ``(k + 1/2) / 256``, the precision of an 8-bit image): three bytes
    of one random 32-bit word per pixel, a third of the random bits of three
    floats, since drawing them is a sizeable part of a fitting step
    (``benchmarks/RESULTS.md``).
    """
    if spec == "auto":
        raise ValueError("background 'auto' must be resolved for the fit first (canvas.resolve_background)")
    if spec == "noise":
        return uniform_bytes(key, height, width)
    if spec == "white":
        return jnp.ones((3,), jnp.float32)
    if spec == "black":
        return jnp.zeros((3,), jnp.float32)
    if spec == "image":
        return bg_image
    return jnp.asarray(spec, jnp.float32)


def uniform_bytes(key, height: int, width: int) -> jax.Array:
    """``[H, W, 3]`` float32 uniform noise on the 256 levels ``(k + 1/2) / 256``."""
    word = jax.random.bits(key, (height, width), jnp.uint32)
    byte = (word[..., None] >> jnp.array([0, 8, 16], jnp.uint32)) & 0xFF
    return (byte.astype(jnp.float32) + 0.5) * (1.0 / 256.0)


def render_over(cfg: FitConfig, params: Primitives, atlas: Atlas, template, bg, height: int,
                width: int, blur: MaskBlur | None = None, prefiltered: Prefiltered | None = None) -> jax.Array:
    """``[H, W, 3]`` render of ``params`` (pixel units) over ``bg`` (``[H, W, 3]`` or ``[3]``).

    ``template`` is the ``[N]`` int32 bitmap id per primitive; ``cfg`` gives
    ``color_blend``, ``alpha_max``, ``antialias`` and ``backend``; ``blur`` the
    masks' blur (a step's :func:`step_canvas`), None for the sharp atlas;
    ``prefiltered``, if given, the atlas already filtered for that blur
    (:func:`step_atlases`), which ``blur`` then is not applied again. Not clipped to [0, 1].
    """
    color, alpha = render(params, atlas, height=height, width=width, template=template,
                          color_blend=cfg.color_blend, alpha_max=cfg.alpha_max, backend=cfg.backend,
                          antialias=cfg.antialias, mask_blur=None if prefiltered is not None else blur,
                          prefiltered=prefiltered)
    return composite(color, alpha, bg)


def mse_over(cfg: FitConfig, params: Primitives, atlas: Atlas, template, bg, target, height: int, width: int,
             blur: MaskBlur | None = None, prefiltered: Prefiltered | None = None) -> jax.Array:
    """Mean squared error of :func:`render_over` (same arguments) against ``target [H, W, 3]``:
    a scalar, from :func:`~diffbmp_jax.rendering.api.render_mse` (the loss folded into the
    forward kernel where the kernels have it)."""
    return render_mse(params, atlas, target, bg, height=height, width=width, template=template,
                      color_blend=cfg.color_blend, alpha_max=cfg.alpha_max, backend=cfg.backend,
                      antialias=cfg.antialias, mask_blur=None if prefiltered is not None else blur,
                      prefiltered=prefiltered)


def check_background_image(cfg: FitConfig, image, height: int, width: int, *, name_shape: str = "shape"):
    """Validates the ``background_image`` argument of a fit; returns float32 ``[H, W, 3]`` or None.

    None when neither ``cfg.background`` nor ``cfg.output_background`` is
    ``"image"``. Otherwise ``image`` is required and must be ``[height, width, 3]``
    (ValueError; ``name_shape`` words the expected shape in the message).
    """
    if "image" not in (cfg.background, cfg.output_background):
        return None
    if image is None:
        raise ValueError("background_image is required when background or output_background is 'image'")
    bg_image = as_target(image)
    if bg_image.shape != (height, width, 3):
        raise ValueError(f"background_image must have {name_shape} {(height, width, 3)}, "
                         f"got {tuple(bg_image.shape)}")
    return bg_image


def step_canvas(cfg: FitConfig, atlas: Atlas, bg_image, key, t, steps, height: int, width: int):
    """What optimisation step ``t`` of a run of ``steps`` (both may be traced) renders with:
    ``(blur, background, key)``.

    ``blur`` is the masks' blur at the annealed soft-rasterisation sigma (a
    :class:`MaskBlur` for :func:`render_over`, None without soft rasterisation;
    ``atlas`` gives the bitmaps' size), the background is drawn for this step
    (fresh noise for ``"noise"``), and the returned key is this step's own, for
    the step's other randomness.
    """
    k_bg, k_rest = jax.random.split(jax.random.fold_in(key, t))
    return step_blur(cfg, atlas, t, steps), background(cfg.background, k_bg, height, width, bg_image), k_rest


def step_blur(cfg: FitConfig, atlas: Atlas, t, steps) -> MaskBlur | None:
    """The masks' blur step ``t`` of a run of ``steps`` renders with: the annealed soft-rasterisation
    sigma (:func:`~diffbmp_jax.rendering.blur.annealed_blur`), None without soft rasterisation."""
    return annealed_blur(t, steps, cfg.blur_sigma if cfg.soft_raster else 0.0, cfg.blur_anneal,
                         max(atlas.mask.shape[-2:]))


def step_atlases(cfg: FitConfig, atlas: Atlas, ts, steps) -> Prefiltered:
    """The atlas as steps ``ts`` (``[S]`` int32, traced) of a run of ``steps`` sample it, stacked:
    :class:`~diffbmp_jax.rendering.mipmap.Prefiltered` with leaves ``[S, ...]``.

    Entry ``i`` is what step ``ts[i]`` would filter for itself (its annealed
    blur, :func:`step_blur`, and ``cfg.antialias``; colours when
    ``cfg.color_blend > 0``), all computed in one batched pass: on a GPU the
    products of a block of steps in two launches instead of two a step.
    """
    mask = jnp.asarray(atlas.mask, jnp.float32)
    rgb = jnp.asarray(atlas.rgb, jnp.float32) if cfg.color_blend > 0 else None
    return jax.vmap(lambda t: prefilter(mask, rgb, step_blur(cfg, atlas, t, steps), cfg.antialias))(ts)


def step_target(cfg: FitConfig, target, alpha, bg, bg_image, height: int, width: int) -> jax.Array:
    """The target a step compares its render over ``bg`` with: ``[H, W, 3]``.

    ``target`` is the picture over ``cfg.output_background``; a transparent
    target (``alpha [H, W, 1]``, else None) shows the step's background ``bg``
    where it is not covered, exactly as the render does.
    """
    if alpha is None:
        return target
    out_bg = background(cfg.output_background, None, height, width, bg_image)
    return target + (1.0 - alpha) * (bg - out_bg)
