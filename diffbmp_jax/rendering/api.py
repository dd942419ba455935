"""The public ``render`` function: validation and backend dispatch."""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffbmp_jax.rendering import registry, mipmap
from diffbmp_jax.rendering.blur import check_mask_blur
from diffbmp_jax import validation as V
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.rendering.kernels import KernelConfig, mse_kernel, render_kernel
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.rendering.reference import render_reference

BACKENDS = ("auto", "reference", "cpu", "cuda")

__all__ = ["render", "render_mse", "composite", "default_template", "available_backends", "check_scene",
           "check_params", "check_template", "check_prefiltered", "BACKENDS"]


def default_template(num_primitives: int, num_bitmaps: int) -> jax.Array:
    """``[N]`` int32 ids ``n % P``: bitmaps assigned round-robin."""
    return jnp.arange(num_primitives, dtype=jnp.int32) % num_bitmaps


def check_params(params) -> Primitives:
    """Checks a :class:`Primitives` (shapes, dtypes; values when concrete); returns float32 fields."""
    if not isinstance(params, Primitives):
        raise TypeError(f"params must be a diffbmp_jax.Primitives, got {type(params).__name__}")
    if np.ndim(params.xy) != 2:
        raise ValueError(f"params.xy must have shape (N, 2), got {tuple(np.shape(params.xy))}")
    n = np.shape(params.xy)[0]  # N is read off xy; every other field must agree
    shapes = {"xy": (n, 2), "scale": (n,), "rotation": (n,), "opacity_logit": (n,), "color_logit": (n, 3)}
    fields = {}
    for name, shape in shapes.items():
        x = getattr(params, name)
        dtype = V.dtype_of(x)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"params.{name} must be a float array, got dtype {dtype}")
        V.check_shape(f"params.{name}", x, shape)
        V.check_finite(f"params.{name}", x)
        fields[name] = jnp.asarray(x).astype(jnp.float32)
    V.check_range("params.scale", params.scale, 0.0, lo_open=True)
    return Primitives(**fields)


def check_template(template, n: int, p: int) -> jax.Array:
    """Checks ``[N]`` template ids against ``P`` bitmaps (range when concrete); ``None`` gives ``n % P``."""
    if template is None:
        return default_template(n, p)
    dtype = V.dtype_of(template)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"template must be an integer array of bitmap ids, got dtype {dtype}")
    V.check_shape("template", template, (n,))
    if V.is_concrete(template):
        t = np.asarray(template)
        if t.size and (t.min() < 0 or t.max() >= p):
            raise ValueError(f"template ids must lie in [0, {p}) for an atlas of {p} bitmaps; "
                             f"found {int(t.min())}..{int(t.max())}")
    return jnp.asarray(template).astype(jnp.int32)


BYTES_PER_PIXEL = 20
"""What a render keeps per canvas pixel: colour (3 float32), transmittance, stop index."""


def check_canvas_memory(height: int, width: int) -> None:
    """ValueError naming height/width when the render's per-pixel buffers would need
    more than half of this machine's memory (checked before anything is allocated)."""
    need = height * width * BYTES_PER_PIXEL
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not every platform says
        return
    if need > have // 2:
        raise ValueError(f"height/width: a {height}x{width} canvas needs about {need / 2**30:.1f} GiB for the "
                         f"render's buffers, more than half of this machine's {have / 2**30:.1f} GiB of memory")


def check_scene(params, atlas, *, height, width, template=None, color_blend=0.0, alpha_max=0.99):
    """Validates the arguments of :func:`render` (every entry point that takes a scene uses it).

    Returns ``(params, template [N] int32, height, width, color_blend, alpha_max)``
    with float32 params and plain Python numbers.
    """
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    height = V.positive_int("height", height)
    width = V.positive_int("width", width)
    check_canvas_memory(height, width)
    color_blend = V.unit_float("color_blend", color_blend)
    alpha_max = V.unit_float("alpha_max", alpha_max, 0.0, 0.99)
    if alpha_max == 0.0:
        raise ValueError("alpha_max must be in (0, 0.99], got 0.0")
    if jnp.ndim(atlas.mask) != 3:
        raise ValueError(f"atlas.mask must have shape (P, h, w), got {tuple(jnp.shape(atlas.mask))} "
                         "(map over a batch of atlases with jax.vmap)")
    atlas.check_values()
    params = check_params(params)
    template = check_template(template, params.num, atlas.num)
    if color_blend > 0.0 and atlas.rgb is None:
        raise ValueError("color_blend > 0 needs an atlas with rgb colours (Atlas.rgb is None)")
    return params, template, height, width, color_blend, alpha_max


def render(params: Primitives, atlas: Atlas, *, height: int, width: int, template=None,
           color_blend: float = 0.0, alpha_max: float = 0.99, backend: str = "auto",
           atlas_grad: bool = False, atlas_bf16: bool = False, antialias: bool = False, mask_blur=None,
           prefiltered=None):
    """Renders ``N`` bitmap primitives onto an ``H x W`` canvas (docs/DESIGN.md §1).

    Args:
      params: :class:`Primitives` with ``N`` entries (differentiable).
      atlas: :class:`Atlas` of ``P`` bitmaps, mask ``[P, h, w]``.
      height, width: canvas size in pixels (static Python ints).
      template: ``[N]`` int32 bitmap id per primitive, default ``n % P``. Not
        differentiated. Ids outside ``[0, P)`` raise ``ValueError`` on concrete
        input; inside ``jit`` (where they cannot be checked) the kernels draw such
        a primitive as invisible and the reference clamps the id.
      color_blend: ``k`` in [0, 1]: colour ``(1 - k) * tint + k * bitmap rgb``.
        ``k > 0`` needs an atlas with ``rgb``.
      alpha_max: scale of every primitive's alpha, in (0, 0.99].
      backend: ``"auto"`` (the fastest built kernel for the platform the
        computation runs on, else the reference), ``"cuda"``, ``"cpu"`` or
        ``"reference"`` (:func:`available_backends`; asking for one that is not
        available raises RuntimeError). The kernels are differentiable in
        reverse mode (``jax.grad``); forward mode (``jax.jvp``, ``jacfwd``,
        ``hessian``) needs ``backend="reference"``.
      atlas_grad: no longer needed: every backend differentiates the atlas
        (mask and rgb) exactly when the atlas is being differentiated; True
        makes the kernels compute its gradient anyway.
      atlas_bf16: ``backend="cuda"`` only: the kernels read the atlas as bf16
        (half its memory traffic; arithmetic and gradients stay fp32; about
        2e-3 relative error in the image, see benchmarks/RESULTS.md).
      antialias: sample each bitmap from a prefiltered level that suits its
        size on screen (:mod:`diffbmp_jax.rendering.mipmap`), so stamps drawn smaller
        than their bitmaps do not alias. Off, every pixel samples the bitmap
        itself (the contract of docs/DESIGN.md §1). Fits turn it on
        (``FitConfig.antialias``).
      mask_blur: None, or a :class:`~diffbmp_jax.rendering.blur.MaskBlur`
        ``(sigma, radius)``: the masks (not the colours) blurred by a Gaussian of
        std ``sigma`` texels (may be traced; ``radius`` static taps a side, zero
        padding) before sampling -- the soft rasterisation of fits, whose std
        anneals to 0. With ``antialias`` the blur is folded into the levels'
        filters (:mod:`diffbmp_jax.rendering.mipmap`).
      prefiltered: None, or the atlas as this call samples it, computed ahead
        (:func:`~diffbmp_jax.rendering.mipmap.prefilter` of ``atlas``, the
        ``mask_blur`` and ``antialias`` meant, with the atlas' rgb when
        ``color_blend > 0``), e.g. once for many renders, or for many steps of
        a fit in one batched pass. ``mask_blur`` must then be None (it is in
        ``prefiltered``); the gradient reaches ``atlas`` only through
        ``prefiltered``.

    Returns:
      ``(color [H, W, 3], alpha [H, W])``: premultiplied colour ``C`` and
      coverage ``A``; compose over a background ``B`` with :func:`composite`.
    """
    scene = _prepare(params, atlas, height, width, template, color_blend, alpha_max, backend, atlas_grad,
                     atlas_bf16, antialias, mask_blur, prefiltered)
    if scene.params.num == 0:
        return jnp.zeros((height, width, 3), jnp.float32), jnp.zeros((height, width), jnp.float32)
    color, trans = _dispatch(backend, lambda platform: _kernel_render(scene, backend), scene.reference)
    return color, 1.0 - trans


def render_mse(params: Primitives, atlas: Atlas, target, background, *, height: int, width: int, template=None,
               color_blend: float = 0.0, alpha_max: float = 0.99, backend: str = "auto", atlas_grad: bool = False,
               atlas_bf16: bool = False, antialias: bool = False, mask_blur=None, prefiltered=None):
    """Mean squared error of the render over ``background`` against ``target`` (a scalar).

    The same value as ``jnp.mean((composite(*render(...), background) - target) ** 2)``
    with the same arguments (:func:`render`'s, to float rounding), computed where the
    kernels allow it with the loss folded into them: the value by a forward kernel
    that scores each pixel as it finishes it, the gradient with respect to ``params``
    alone (a fitting step's) by one call that composites, scores and walks each tile
    back, with nothing per pixel written (docs/DESIGN.md §3.4.1).

    Args:
      target: ``[H, W, 3]`` float image the render is compared with.
      background: what shows through uncovered pixels: a scalar, an RGB triple
        ``[3]`` or an image ``[H, W, 3]`` (e.g. noise).
      The others: as :func:`render`'s.

    Differentiable in reverse mode with respect to ``params``, ``target``,
    ``background`` and (through ``prefiltered`` or the atlas) the bitmaps; forward
    mode needs ``backend="reference"``.
    """
    scene = _prepare(params, atlas, height, width, template, color_blend, alpha_max, backend, atlas_grad,
                     atlas_bf16, antialias, mask_blur, prefiltered)
    target = V.as_float_array("target", target, (height, width, 3))
    bg = _background_of(background, height, width)

    def unfused(color, trans):
        image = composite(color, 1.0 - trans, bg)
        return jnp.mean(jnp.square(image - target))

    if scene.params.num == 0:
        return unfused(jnp.zeros((height, width, 3), jnp.float32), jnp.ones((height, width), jnp.float32))

    def kernel(platform):
        def has(target_name):
            return (registry.exported_everywhere(target_name) if platform is None
                    else registry.exports(platform, target_name))

        if not has(registry.FORWARD_LOSS):
            return unfused(*_kernel_render(scene, backend))
        bg_kernel = jnp.broadcast_to(bg, (1, 1, 3)) if bg.ndim < 3 else bg
        return _kernel_call(backend, lambda: mse_kernel(scene.kernel_config(), has(registry.MSE_GRAD), scene.params,
                                                        scene.template, scene.mask, scene.kernel_rgb(), target,
                                                        bg_kernel),
                            "render_mse")

    return _dispatch(backend, kernel, lambda: unfused(*scene.reference()))


def _background_of(background, height: int, width: int) -> jax.Array:
    """``background`` as float32 ``[3]`` or ``[H, W, 3]``; errors naming it otherwise."""
    bg = V.as_float_array("background", background)
    if bg.ndim == 0:
        return jnp.broadcast_to(bg, (3,))
    if bg.shape in ((3,), (height, width, 3)):
        return bg
    raise ValueError(f"background must be a scalar, an RGB triple (3,) or an image ({height}, {width}, 3), "
                     f"got shape {tuple(bg.shape)}")


class _Scene(NamedTuple):
    """A render's arguments after the checks, as the kernels and the reference take them."""
    params: Primitives
    template: jax.Array  # [N] int32 (ids into the mip levels with antialias)
    mask: jax.Array      # [P', h, w] the atlas as sampled (filtered, levels)
    rgb: Any             # [P', h, w, 3] or None without colours
    height: int
    width: int
    color_blend: float
    alpha_max: float
    atlas_grad: bool
    atlas_bf16: bool

    def kernel_config(self) -> KernelConfig:
        return KernelConfig(self.height, self.width, self.color_blend, self.alpha_max, self.rgb is not None,
                            self.atlas_grad, self.atlas_bf16)

    def kernel_rgb(self):
        return self.rgb if self.rgb is not None else jnp.zeros((1, 1, 1, 3), jnp.float32)

    def reference(self):
        safe_template = jnp.clip(self.template, 0, self.mask.shape[0] - 1)
        return render_reference(self.params, self.mask, self.rgb, safe_template, self.height, self.width,
                                self.color_blend, self.alpha_max)


def _prepare(params, atlas, height, width, template, color_blend, alpha_max, backend, atlas_grad, atlas_bf16,
             antialias, mask_blur, prefiltered) -> _Scene:
    """Checks :func:`render`'s arguments and filters the atlas as the call samples it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if atlas_bf16 and backend != "cuda":
        raise ValueError(f"atlas_bf16=True needs backend='cuda', got backend={backend!r}")
    params, template, height, width, color_blend, alpha_max = check_scene(
        params, atlas, height=height, width=width, template=template, color_blend=color_blend,
        alpha_max=alpha_max)
    mask_blur = check_mask_blur(mask_blur)
    use_rgb = color_blend > 0.0
    mask = jnp.asarray(atlas.mask, jnp.float32)
    rgb = jnp.asarray(atlas.rgb, jnp.float32) if use_rgb else None
    # The atlas as the kernels sample it: given (computed ahead), or filtered here.
    if prefiltered is not None:
        prefiltered = check_prefiltered(prefiltered, atlas, antialias=antialias, use_rgb=use_rgb,
                                        mask_blur=mask_blur)
    else:
        prefiltered = mipmap.prefilter(mask, rgb, mask_blur, antialias)
    if antialias:  # the primitives' ids into the levels
        mask, rgb, template = mipmap.lod_scene(params.scale, mask, rgb, template, prefiltered=prefiltered)
    else:
        mask, rgb = prefiltered
    return _Scene(params, template, mask, rgb, height, width, color_blend, alpha_max, bool(atlas_grad),
                  bool(atlas_bf16))


def _kernel_call(backend: str, call, name: str = "render"):
    """``call()``, with forward-mode differentiation refused in words (``name``: the public function)."""
    try:
        return call()
    except TypeError as e:
        if "forward-mode" not in str(e):
            raise
        raise TypeError(f"{name}(backend={backend!r}): the cpu and cuda kernels are differentiable in "
                        "reverse mode only (jax.grad, jax.vjp, jacrev); for jax.jvp, jacfwd or hessian "
                        "use backend='reference'") from None


def _kernel_render(scene: _Scene, backend: str):
    """``(C, T)`` from the kernels."""
    return _kernel_call(backend, lambda: render_kernel(scene.kernel_config(), scene.params, scene.template,
                                                       scene.mask, scene.kernel_rgb()))


def _dispatch(backend: str, kernel, reference):
    """``kernel(platform)`` or ``reference()`` as ``backend`` asks: ``platform`` is "cpu" or "CUDA"
    inside a branch per platform, None where XLA picks each platform's handler itself."""
    if backend == "reference":
        return reference()
    if backend in ("cpu", "cuda"):
        # Only the asked-for backend is checked: cuda_available lists the devices, not for a cpu render.
        usable = registry.registered("cpu") if backend == "cpu" else registry.cuda_available()
        if not usable:
            raise RuntimeError(f"backend={backend!r} is not available here ({_why_not(backend)}); "
                               f"available backends: {', '.join(available_backends())}")
        return kernel(None)
    if registry.kernels_everywhere():
        return kernel(None)
    # A branch per platform, the reference where no kernels are built.
    branches = {plat: (functools.partial(kernel, name) if registry.registered(name) else reference)
                for plat, name in (("cpu", "cpu"), ("cuda", "CUDA"))}
    return jax.lax.platform_dependent(**branches, default=reference)


def check_prefiltered(prefiltered, atlas: Atlas, *, antialias: bool, use_rgb: bool, mask_blur) -> mipmap.Prefiltered:
    """Validates :func:`render`'s ``prefiltered`` against its atlas and settings; returns float32
    ``Prefiltered(mask, rgb)`` (rgb None unless ``use_rgb``)."""
    if not isinstance(prefiltered, mipmap.Prefiltered):
        raise TypeError("prefiltered must be None or a diffbmp_jax.rendering.mipmap.Prefiltered "
                        f"(mipmap.prefilter's result), got {type(prefiltered).__name__}")
    if mask_blur is not None:
        raise ValueError("mask_blur must be None when prefiltered is given (the blur is part of prefiltered)")
    p, h, w = (int(d) for d in jnp.shape(atlas.mask))
    levels = mipmap.num_levels(max(h, w)) if antialias else 1
    V.check_shape("prefiltered.mask", prefiltered.mask, (p * levels, h, w))
    if not use_rgb:
        return mipmap.Prefiltered(jnp.asarray(prefiltered.mask, jnp.float32), None)
    if prefiltered.rgb is None:
        raise ValueError("prefiltered.rgb is None, but color_blend > 0 samples the bitmaps' colours: "
                         "prefilter the atlas with its rgb")
    V.check_shape("prefiltered.rgb", prefiltered.rgb, (p * levels, h, w, 3))
    return mipmap.Prefiltered(jnp.asarray(prefiltered.mask, jnp.float32), jnp.asarray(prefiltered.rgb, jnp.float32))


def available_backends() -> list[str]:
    """The backends :func:`render` can run here: ``"auto"``, ``"reference"``, and
    ``"cpu"`` / ``"cuda"`` when their kernels are built (and, for cuda, JAX sees a GPU)."""
    out = ["auto", "reference"]
    if registry.registered("cpu"):
        out.append("cpu")
    if registry.cuda_available():
        out.append("cuda")
    return out


def _why_not(backend: str) -> str:
    if backend == "cuda" and registry.registered("CUDA"):
        return "the cuda kernels are built but JAX sees no GPU"
    return f"the {backend} kernels are not built in this installation of diffbmp_jax"


def composite(color: jax.Array, alpha: jax.Array, background) -> jax.Array:
    """Image ``C + (1 - A) * B`` ``[..., H, W, 3]`` over a background.

    Args:
      color: ``[..., H, W, 3]`` premultiplied colour from :func:`render`.
      alpha: ``[..., H, W]`` coverage.
      background: anything broadcastable to ``color``: a scalar, an RGB triple,
        or an image ``[H, W, 3]`` (e.g. noise).
    """
    return color + (1.0 - alpha)[..., None] * jnp.asarray(background, jnp.float32)
