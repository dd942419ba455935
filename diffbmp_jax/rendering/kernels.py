"""Calls of the tile kernels' FFI targets (``lowering.call``), tied by ``jax.custom_vjp``.

The forward target returns the premultiplied colour ``C [H, W, 3]``, the final
transmittance ``T [H, W]`` and, per pixel, the index of the deepest primitive
it composited before early termination (``stop [H, W]`` int32). ``T`` and
``stop`` are the only per-pixel residuals: memory ``O(H * W + N)``. On a GPU the
forward's tile binning (its ``lists``, ``O(N + tiles + pairs)`` bytes) is a
residual too, so the backward walks each pixel's list again without binning
again; the cpu backward bins again.

``mse_kernel`` is the mean squared error of the render over a background
against a target through the forward-with-loss target: the forward writes the
loss's cotangents per pixel (and each tile's squared error) itself, so a fit's
step runs no pass over the image between the two kernels; where the platform
has the one-call target, a gradient with respect to the primitives alone runs
forward, loss and backward in one call.

Batching: ``jax.vmap`` (nested up to 4 deep) of anything built on these calls
renders all scenes in one kernel launch per call, not one after another.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from diffbmp_jax.rendering import lowering, registry
from diffbmp_jax.scene.primitives import Primitives


class KernelConfig(NamedTuple):
    """Static (hashable) settings of one kernel call."""
    height: int
    width: int
    color_blend: float
    alpha_max: float
    use_rgb: bool
    atlas_grad: bool
    # CUDA only: the kernels read the atlas (mask, rgb) as bf16, halving its
    # memory traffic; arithmetic, parameters and gradients stay fp32.
    atlas_bf16: bool = False


def kernel_inputs(params: Primitives, template, mask, rgb):
    return (params.xy, params.scale, params.rotation, params.opacity_logit,
            params.color_logit, template, mask, rgb)


def kernel_attrs(cfg: KernelConfig) -> dict:
    return dict(color_blend=np.float32(cfg.color_blend), alpha_max=np.float32(cfg.alpha_max),
                use_rgb=np.int32(cfg.use_rgb))


def _target(name: str, cfg: KernelConfig) -> str:
    return name + "_bf16" if cfg.atlas_bf16 else name


def pad_atlas(mask, rgb, use_rgb: bool):
    """The atlas as the kernels read it: each bitmap with one texel of zeros around it.

    ``mask [P, h, w] -> [P, h + 2, w + 2]``, ``rgb [P, h, w, 3] -> [P, h + 2, w + 2, 3]``
    (a dummy ``rgb`` is passed through when not ``use_rgb``). The border lets
    the kernels read all four bilinear taps without bounds checks.
    """
    mask = jnp.pad(mask, ((0, 0), (1, 1), (1, 1)))
    if use_rgb:
        rgb = jnp.pad(rgb, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return mask, rgb


def _atlas_inputs(cfg: KernelConfig, mask, rgb):
    """Padded, and cast to bf16 when asked for."""
    mask, rgb = pad_atlas(mask, rgb, cfg.use_rgb)
    if cfg.atlas_bf16:
        return mask.astype(jnp.bfloat16), rgb.astype(jnp.bfloat16)
    return mask, rgb


def _forward_call(cfg: KernelConfig, params, template, mask, rgb):
    h, w = cfg.height, cfg.width
    mask, rgb = _atlas_inputs(cfg, mask, rgb)
    out_types = (
        jax.ShapeDtypeStruct((h, w, 3), jnp.float32),
        jax.ShapeDtypeStruct((h, w), jnp.float32),
        jax.ShapeDtypeStruct((h, w), jnp.int32),
    )
    return lowering.call(_target(registry.FORWARD, cfg), out_types,
                         *kernel_inputs(params, template, mask, rgb), **kernel_attrs(cfg))


def _field_types(n: int) -> tuple:
    """Result types of the five field gradients of ``n`` primitives (xy, scale, rotation,
    opacity logit, colour logits), as the backward targets return them."""
    return tuple(jax.ShapeDtypeStruct(shape, jnp.float32) for shape in ((n, 2), (n,), (n,), (n,), (n, 3)))


def _backward_call(cfg: KernelConfig, params, template, mask, rgb, transmittance, stop, d_color, d_trans,
                   lists):
    """The parameter gradients and (padded, empty unless ``cfg.atlas_grad``) atlas gradients."""
    n = params.scale.shape[0]
    mask, rgb = _atlas_inputs(cfg, mask, rgb)
    # Unused atlas gradients are empty, of the same rank (the kernels read
    # every buffer's batch dimensions by rank).
    atlas_shape = mask.shape if cfg.atlas_grad else (0,) + mask.shape[1:]
    rgb_shape = rgb.shape if (cfg.atlas_grad and cfg.use_rgb) else (0,) + rgb.shape[1:]
    out_types = (
        *_field_types(n),
        jax.ShapeDtypeStruct(atlas_shape, jnp.float32),
        jax.ShapeDtypeStruct(rgb_shape, jnp.float32),
    )
    return lowering.call(_target(registry.BACKWARD, cfg), out_types,
                         *kernel_inputs(params, template, mask, rgb), transmittance, stop, d_color,
                         d_trans, lists, atlas_grad=np.int32(cfg.atlas_grad), **kernel_attrs(cfg))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def render_kernel(cfg: KernelConfig, params: Primitives, template, mask, rgb):
    """``(C [H, W, 3], T [H, W])`` from the FFI kernels of the current platform.

    ``rgb`` is ``[P, h, w, 3]`` when ``cfg.use_rgb`` else a ``[1, 1, 1, 3]`` dummy.
    Differentiable in reverse mode: the backward kernel computes the atlas's
    gradients exactly when the atlas is being differentiated (``cfg.atlas_grad``
    forces them).
    """
    color, trans, _, _ = _forward_call(cfg, params, template, mask, rgb)
    return color, trans


def _value(tree):
    return jax.tree.map(lambda p: p.value, tree, is_leaf=lambda p: isinstance(p, CustomVJPPrimal))


def _fwd(cfg, params, template, mask, rgb):
    # With symbolic zeros every argument arrives as CustomVJPPrimal(value, perturbed):
    # whether the atlas is differentiated is known here, at trace time.
    atlas_grad = cfg.atlas_grad or mask.perturbed or (cfg.use_rgb and rgb.perturbed)
    params, template, mask, rgb = _value((params, template, mask, rgb))
    color, trans, stop, lists = _forward_call(cfg, params, template, mask, rgb)
    # The flag travels as the residuals' structure (static): an empty tuple or a tuple holding one.
    return (color, trans), (params, template, mask, rgb, trans, stop, lists, ((),) if atlas_grad else ())


def _dense(cotangent, like):
    if isinstance(cotangent, SymbolicZero):
        return jnp.zeros(like.shape, jnp.float32)
    return jnp.asarray(cotangent, jnp.float32)


def _scene_cotangents(cfg, params, template, mask, rgb, trans, stop, d_color, d_trans, lists, flag):
    """The backward kernel's cotangents of ``(params, template, mask, rgb)`` from the image's
    ``(d_color, d_trans)``; the atlas's are zeros unless ``flag`` (the forward's residual)."""
    cfg = cfg._replace(atlas_grad=bool(flag))
    d_xy, d_scale, d_rot, d_op, d_col, d_mask, d_rgb = _backward_call(
        cfg, params, template, mask, rgb, trans, stop, d_color, d_trans, lists)
    d_params = Primitives(xy=d_xy, scale=d_scale, rotation=d_rot, opacity_logit=d_op, color_logit=d_col)
    if cfg.atlas_grad:  # drop the padding's border
        d_mask_out = d_mask[:, 1:-1, 1:-1]
        d_rgb_out = d_rgb[:, 1:-1, 1:-1, :] if cfg.use_rgb else jnp.zeros_like(rgb)
    else:
        d_mask_out, d_rgb_out = jnp.zeros_like(mask), jnp.zeros_like(rgb)
    d_template = np.zeros(template.shape, dtype=jax.dtypes.float0)
    return d_params, d_template, d_mask_out, d_rgb_out


def _bwd(cfg, res, cotangents):
    params, template, mask, rgb, trans, stop, lists, flag = res
    d_color = _dense(cotangents[0], jax.ShapeDtypeStruct(trans.shape + (3,), jnp.float32))
    d_trans = _dense(cotangents[1], trans)
    return _scene_cotangents(cfg, params, template, mask, rgb, trans, stop, d_color, d_trans, lists, flag)


render_kernel.defvjp(_fwd, _bwd, symbolic_zeros=True)


# ----------------------------------------------------------------------------- the loss folded in

def tiles_of(height: int, width: int) -> int:
    """Tiles of an ``height x width`` canvas: what the forward-with-loss sums its squared error over."""
    return -(-height // lowering.TILE) * -(-width // lowering.TILE)


def _loss_attrs(cfg: KernelConfig) -> dict:
    """The folded targets' attributes: the kernel call's, and ``grad_scale = 2 / (3 H W)``
    (the MSE's gradient per unit residual)."""
    return dict(grad_scale=np.float32(2.0 / (3 * cfg.height * cfg.width)), **kernel_attrs(cfg))


def _forward_loss_call(cfg: KernelConfig, params, template, mask, rgb, target, bg):
    """``(d_color, T, d_trans, stop, sq_error [tiles], lists)`` of the mean squared error of
    ``C + T bg`` against ``target``."""
    h, w = cfg.height, cfg.width
    mask, rgb = _atlas_inputs(cfg, mask, rgb)
    out_types = (
        jax.ShapeDtypeStruct((h, w, 3), jnp.float32),
        jax.ShapeDtypeStruct((h, w), jnp.float32),
        jax.ShapeDtypeStruct((h, w), jnp.float32),
        jax.ShapeDtypeStruct((h, w), jnp.int32),
        jax.ShapeDtypeStruct((tiles_of(h, w),), jnp.float32),
    )
    return lowering.call(_target(registry.FORWARD_LOSS, cfg), out_types,
                         *kernel_inputs(params, template, mask, rgb), target, bg, **_loss_attrs(cfg))


def _mean_of(sq_error, cfg: KernelConfig):
    return jnp.sum(sq_error, axis=-1) * np.float32(1.0 / (3 * cfg.height * cfg.width))


def _mse_grad_call(cfg: KernelConfig, params, template, mask, rgb, target, bg):
    """``(Primitives of gradients, sq_error [tiles])`` of the same loss, in one call."""
    n = params.scale.shape[0]
    mask, rgb = _atlas_inputs(cfg, mask, rgb)
    out_types = (*_field_types(n), jax.ShapeDtypeStruct((tiles_of(cfg.height, cfg.width),), jnp.float32))
    d_xy, d_scale, d_rot, d_op, d_col, sq_error = lowering.call(
        _target(registry.MSE_GRAD, cfg), out_types, *kernel_inputs(params, template, mask, rgb), target, bg,
        **_loss_attrs(cfg))
    return Primitives(xy=d_xy, scale=d_scale, rotation=d_rot, opacity_logit=d_op, color_logit=d_col), sq_error


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def mse_kernel(cfg: KernelConfig, one_call: bool, params: Primitives, template, mask, rgb, target, bg):
    """Mean over ``H x W x 3`` of ``(C + T bg - target)^2``: the render over ``bg`` against ``target``.

    ``target`` is ``[H, W, 3]``, ``bg`` ``[H, W, 3]`` or ``[1, 1, 3]`` (one colour);
    the other arguments as :func:`render_kernel`'s. Differentiable in reverse
    mode with respect to all of them (template aside). ``one_call``: the
    platform's kernels have ``diffbmp_mse_grad``, which a gradient with respect
    to the primitives alone (the fits' case) then takes: forward, loss and
    backward in one call, its gradients kept until the backward pass scales them;
    otherwise the forward with the loss, then the backward.
    """
    *_, sq_error, _ = _forward_loss_call(cfg, params, template, mask, rgb, target, bg)
    return _mean_of(sq_error, cfg)


def _fwd_loss(cfg, one_call, params, template, mask, rgb, target, bg):
    atlas_grad = cfg.atlas_grad or mask.perturbed or (cfg.use_rgb and rgb.perturbed)
    # Which of target and bg are differentiated, as the residuals' static structure.
    wants = tuple(((),) if x.perturbed else () for x in (target, bg))
    params, template, mask, rgb, target, bg = _value((params, template, mask, rgb, target, bg))
    if one_call and not atlas_grad and wants == ((), ()):
        grads, sq_error = _mse_grad_call(cfg, params, template, mask, rgb, target, bg)
        return _mean_of(sq_error, cfg), (grads,)
    d_color, trans, d_trans, stop, sq_error, lists = _forward_loss_call(cfg, params, template, mask, rgb,
                                                                        target, bg)
    res = (params, template, mask, rgb, trans, stop, d_color, d_trans, lists, ((),) if atlas_grad else (),
           bg, wants)
    return _mean_of(sq_error, cfg), res


def _bwd_loss(cfg, one_call, res, g):
    g = _dense(g, jax.ShapeDtypeStruct((), jnp.float32))
    if len(res) == 1:  # the one call's gradients: only the primitives were differentiated
        return (jax.tree.map(lambda d: g * d, res[0]),) + (None,) * 5
    params, template, mask, rgb, trans, stop, d_color, d_trans, lists, flag, bg, wants = res
    # The kernels' cotangents are those of g = 1; the step's scale (g) multiplies the
    # parameters' gradients, where XLA fuses it into whatever reads them.
    d_scene = _scene_cotangents(cfg, params, template, mask, rgb, trans, stop, d_color, d_trans, lists, flag)
    d_scene = jax.tree.map(lambda d: d if d.dtype == jax.dtypes.float0 else g * d, d_scene)
    # d loss / d target = -d_color; d loss / d bg = d_color * T, summed where bg was broadcast.
    d_target = -g * d_color if wants[0] else None
    d_bg = None
    if wants[1]:
        full = g * d_color * trans[..., None]
        d_bg = jnp.sum(full, axis=(0, 1), keepdims=True) if bg.shape[:2] == (1, 1) else full
    return (*d_scene, d_target, d_bg)


mse_kernel.defvjp(_fwd_loss, _bwd_loss, symbolic_zeros=True)
