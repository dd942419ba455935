"""The kernels' FFI targets as JAX primitives: result shapes, batching, a lowering per platform.

``call(target, result_types, *args, **attrs)`` is what ``jax.ffi.ffi_call(target,
result_types, vmap_method="expand_dims")(*args, **attrs)`` would be, with one
difference, the reason this module exists: on the CUDA platform the handlers
also take a pair capacity and return a *workspace*, one buffer holding all the
memory of their tile binning (``cuda/gpu/workspace.h``). Its size depends on the
batched shapes, which only the lowering knows (``jax.vmap`` adds the scenes'
dimensions after the call was written), so the CUDA lowering adds that result
and drops it again. Because XLA allocates it, the handlers keep no memory of
their own and can be captured into CUDA graphs (XLA's command buffers). The
cpu lowering calls the targets exactly as ``ffi_call`` would.

A forward call returns one result more than asked for, its tile ``lists``: in
a process with a GPU, the CUDA forward's binning, sized at abstract evaluation,
which the backward takes as its last argument instead of binning again (then
neither needs a workspace); elsewhere an empty buffer.

Batching follows ``vmap_method="expand_dims"`` (``cuda/common/batch_layout.h``):
every argument gains the leading batch dimension, of size 1 where it is not
mapped, and every result carries the full one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np
import jax
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from diffbmp_jax.rendering import registry
from diffbmp_jax.validation import check_count, env_count

TILE = 16
"""Tile side of the kernels in pixels (``kTile`` of ``render_common.h``)."""

MAX_PAIRS_ENV = "DIFFBMP_CUDA_MAX_PAIRS"
DEFAULT_MAX_PAIRS = 1 << 27


def pair_budget(value: str | None) -> int:
    """Most (tile, primitive) pairs a CUDA call may bin: ``value`` of ``DIFFBMP_CUDA_MAX_PAIRS``, or 2^27.

    The variable is read when a render is traced (2^27 pairs take about 1 GB).
    ValueError unless it is unset or an integer >= 0 (0 never bins: every tile
    walks all primitives).
    """
    budget = env_count(MAX_PAIRS_ENV, value, 0, "the most (tile, primitive) pairs a CUDA render bins")
    return DEFAULT_MAX_PAIRS if budget is None else budget


def pair_capacity(primitives: int, tiles_per_scene: int, budget: int) -> int:
    """Pairs the CUDA binning has room for, from shapes alone.

    Every pair when that is cheap (``primitives * tiles_per_scene``), else room
    for each primitive to cover 64 tiles on average (at least 2^22 pairs), never
    more than ``budget`` nor 2^31 - 1. ``primitives`` counts all scenes of the
    call. A render with more pairs falls back to walking every primitive per
    tile: slower, the same result.
    """
    primitives = check_count("primitives", primitives, 0)
    tiles_per_scene = check_count("tiles_per_scene", tiles_per_scene, 0)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise TypeError(f"budget must be an int, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget must be a non-negative int, got {budget}")
    want = min(primitives * tiles_per_scene, max(1 << 22, 64 * primitives))
    return max(0, min(want, budget, 2**31 - 1))


# ----------------------------------------------------------------------------- the primitive

kernel_call_p = Primitive("diffbmp_kernel_call")
kernel_call_p.multiple_results = True


def _base(target: str) -> str:
    return target.removesuffix("_bf16")


def is_forward(target: str) -> bool:
    """True for the forward targets (``diffbmp_forward``, ``diffbmp_forward_loss`` and their bf16
    twins), which keep their tile lists for a backward; False for the others."""
    return _base(target) in (registry.FORWARD, registry.FORWARD_LOSS)


def call(target: str, result_types, *args, **attrs):
    """The FFI target ``target`` on ``args``; returns one array per entry of ``result_types``,
    and for a forward target one more: its tile ``lists``, which the backward takes as its last
    argument.

    ``result_types`` are ``jax.ShapeDtypeStruct`` of one scene; ``attrs`` the
    target's attributes (NumPy scalars). The lists are the CUDA forward's binning, kept so
    that the backward does not bin again: an opaque uint8 buffer for all scenes of the call
    (unmapped under ``jax.vmap``), sized when the process has a GPU, else empty (the cpu
    kernels neither write nor read it).
    """
    shapes = tuple((tuple(r.shape), np.dtype(r.dtype).name) for r in result_types)
    return kernel_call_p.bind(*args, target=target, result_shapes=shapes,
                              attributes=tuple(sorted(attrs.items())),
                              max_pairs=os.environ.get(MAX_PAIRS_ENV),
                              keep_lists=is_forward(target) and registry.cuda_available())


def _abstract_eval(*avals, target, result_shapes, max_pairs, keep_lists, **_):
    outs = [jax.core.ShapedArray(shape, np.dtype(dtype)) for shape, dtype in result_shapes]
    if is_forward(target):
        nbytes = _binning(target, avals, outs, max_pairs)[1] if keep_lists else 0
        outs.append(jax.core.ShapedArray((nbytes,), np.dtype(np.uint8)))
    return outs


@functools.lru_cache(maxsize=None)
def _compiled(**params):
    return jax.jit(functools.partial(kernel_call_p.bind, **params))


def _impl(*args, **params):
    # Outside jit: a compiled call of its own, cached by the static settings.
    return _compiled(**params)(*args)


def _batch(args, dims, *, result_shapes, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = [jax.lax.expand_dims(a, (0,)) if d is None else jax.numpy.moveaxis(a, d, 0)
            for a, d in zip(args, dims)]
    shapes = tuple(((size,) + shape, dtype) for shape, dtype in result_shapes)
    outs = kernel_call_p.bind(*args, result_shapes=shapes, **params)
    # A forward's lists hold all scenes of the call at once: unmapped.
    return outs, [0] * len(shapes) + [None] * (len(outs) - len(shapes))


def _lower(ctx, *operands, target, attributes, **_):
    return jax.ffi.ffi_lowering(target)(ctx, *operands, **dict(attributes))


def _call_shape(target: str, avals_in, avals_out) -> tuple[int, int, int]:
    """(scenes, primitives per scene, tiles per scene) of one call, from its batched shapes."""
    if not is_forward(target):  # results d_xy, d_scale [*B, N], ...
        batch_and_n = avals_out[1].shape
        scenes, n = math.prod(batch_and_n[:-1]), batch_and_n[-1]
        if _base(target) == registry.MSE_GRAD:  # args ..., target [*B', H, W, 3]
            height, width = avals_in[8].shape[-3:-1]
        else:  # args ..., transmittance [*B', H, W]
            height, width = avals_in[8].shape[-2:]
    else:  # results color [*B, H, W, 3], ...; args xy, scale [*B', N], ...
        scenes = math.prod(avals_out[0].shape[:-3])
        height, width = avals_out[0].shape[-3:-1]
        n = avals_in[1].shape[-1]
    return scenes, n, -(-height // TILE) * -(-width // TILE)


def _binning(target: str, avals_in, avals_out, max_pairs) -> tuple[int, int]:
    """(pair capacity, bytes) of the CUDA binning of one call (``cuda/gpu/workspace.h``)."""
    scenes, n, tiles = _call_shape(target, avals_in, avals_out)
    pairs = pair_capacity(scenes * n, tiles, pair_budget(max_pairs))
    return pairs, registry.cuda_workspace_bytes(scenes * n, scenes * tiles, pairs)


def _lower_cuda(ctx, *operands, target, attributes, max_pairs, **_):
    pairs, need = _binning(target, ctx.avals_in, ctx.avals_out, max_pairs)
    # The forward bins into its lists, the backward reads them, when they were sized for it;
    # otherwise (lists empty) each bins into a workspace of its own, as the one-call gradient does.
    if _base(target) == registry.MSE_GRAD:
        own = need
    else:
        lists = ctx.avals_out[-1] if is_forward(target) else ctx.avals_in[-1]
        own = 0 if math.prod(lists.shape) >= need else need
    workspace = jax.core.ShapedArray((own,), np.dtype(np.uint8))
    ctx = dataclasses.replace(ctx, avals_out=(*ctx.avals_out, workspace))
    results = jax.ffi.ffi_lowering(target)(ctx, *operands, pair_capacity=np.int64(pairs),
                                           **dict(attributes))
    return results[:-1]


kernel_call_p.def_impl(_impl)
kernel_call_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[kernel_call_p] = _batch
mlir.register_lowering(kernel_call_p, _lower, platform="cpu")
mlir.register_lowering(kernel_call_p, _lower_cuda, platform="cuda")
