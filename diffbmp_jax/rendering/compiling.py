"""How the library compiles its own programs: :func:`jit` with the XLA options they need.

Every program the package compiles itself (a fit's chunk of steps, the
closing render, the traceable structure maps, the exporters' renders) goes
through :func:`jit`.
Functions users compose into their own ``jax.jit`` are untouched.

The option set, :data:`COMPILER_OPTIONS`:

* ``xla_gpu_autotune_level=0``: XLA's GPU compiler otherwise times dozens of
  candidate configurations for every matrix product of a new shape. Ours are
  small (the mip pyramid's level filters, the structure maps' Gaussian
  products); on the H200 their autotuning was about 6.5 s of a 22 s cold
  start, for a step time that did not move (``benchmarks/RESULTS.md``).
* ``xla_gpu_enable_triton_gemm=false``: those products go to cuBLAS instead
  of kernels generated (and compiled) by Triton: 0.9 s less compiling in a
  cold start on the H200, the same step time.

Both are ignored by the CPU compiler.

A user's own ``XLA_FLAGS`` win: an option named there is left out here, so
``XLA_FLAGS=--xla_gpu_autotune_level=4`` restores XLA's default tuning (and
``--xla_gpu_enable_triton_gemm=true`` its Triton products).
"""

from __future__ import annotations

import functools
import os

import jax

__all__ = ["COMPILER_OPTIONS", "options_from_env", "jit"]


def options_from_env() -> dict:
    """The options of :data:`COMPILER_OPTIONS`, less those the environment's ``XLA_FLAGS`` names."""
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = {"xla_gpu_autotune_level": 0, "xla_gpu_enable_triton_gemm": False}
    return {k: v for k, v in wanted.items() if f"--{k}" not in flags}


COMPILER_OPTIONS: dict = options_from_env()
"""XLA options of every program compiled by :func:`jit` (read once, at import)."""


def jit(fun=None, *, persist: bool = False, **kwargs):
    """``jax.jit`` with :data:`COMPILER_OPTIONS`; usable as a decorator, bare or with arguments.

    XLA options belong to a whole program, so ``jax.jit`` accepts them on the
    outermost function only: called with traced arguments (inside a caller's
    ``jit``, ``vmap`` or ``grad``) the function runs as a plain ``jax.jit`` and
    becomes part of the caller's program. ``.lower`` is the top-level form's;
    ``._cache_size()`` counts its compilations (stored programs included).

    ``persist=True``: top-level calls use the programs stored on disk
    (:mod:`diffbmp_jax.rendering.programs`), so a warm start does not trace
    the function again; ``static_argnums`` is the only static form it supports.
    """
    if fun is None:
        return functools.partial(jit, persist=persist, **kwargs)
    top = jax.jit(fun, compiler_options=COMPILER_OPTIONS or None, **kwargs)
    nested = jax.jit(fun, **kwargs)
    stored = None
    if persist:
        if set(kwargs) - {"static_argnums"}:
            raise ValueError(f"jit(persist=True) supports static_argnums only, got {sorted(kwargs)}")
        if not getattr(fun, "__module__", "").startswith("diffbmp_jax."):
            # A stored program is only as fresh as the fingerprint, which covers this package's files.
            raise ValueError(f"jit(persist=True) is for the package's own functions, not {fun!r}")
        from diffbmp_jax.rendering.programs import Persisted
        statics = kwargs.get("static_argnums", ())
        stored = Persisted(fun, top, (statics,) if isinstance(statics, int) else tuple(statics), COMPILER_OPTIONS)

    @functools.wraps(fun)
    def call(*args, **kw):
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kw)))
        if traced:
            return nested(*args, **kw)
        if stored is not None:
            out = stored(args, kw)
            if out is not NotImplemented:
                return out
        return top(*args, **kw)

    call.lower = top.lower  # the top-level form's
    call._cache_size = lambda: top._cache_size() + (len(stored) if stored is not None else 0)
    call.persisted = stored  # the stored-program path, or None
    return call
