"""Input checks shared by every public entry point.

Shapes and dtypes are checked at trace time, always. Values (NaN/inf, ranges)
can only be checked on concrete arrays, so those checks run whenever the input
is not a tracer (``render`` outside ``jit``, constructors, ``fit``, export, CLI).
"""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def dtype_of(x):
    """The dtype of an array or array-like, without converting tracers."""
    dtype = getattr(x, "dtype", None)
    return dtype if dtype is not None else np.asarray(x).dtype


def as_float_array(name: str, x, shape: tuple | None = None) -> jax.Array:
    """Converts ``x`` to a float32 array, checking its dtype and shape.

    ``shape`` may contain ``None`` for free dimensions.
    """
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        try:
            x = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic objects
            raise TypeError(f"{name} must be an array, got {type(x).__name__}") from e
        dtype = x.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
            or jnp.issubdtype(dtype, jnp.bool_)):
        raise TypeError(f"{name} must have a real numeric dtype, got {dtype}")
    if shape is not None:
        check_shape(name, x, shape)
    return jnp.asarray(x, jnp.float32)


def check_shape(name: str, x, shape: tuple) -> None:
    got = tuple(np.shape(x))
    ok = len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got))
    if not ok:
        want = str(tuple("?" if s is None else s for s in shape)).replace("'", "")
        raise ValueError(f"{name} must have shape {want}, got {got}")


def check_finite(name: str, x) -> None:
    """Raises ValueError if a concrete ``x`` holds NaN or inf."""
    if is_concrete(x):
        a = np.asarray(x)
        if a.size and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_range(name: str, x, lo=None, hi=None, *, lo_open=False) -> None:
    """Raises ValueError if a concrete ``x`` leaves ``[lo, hi]`` (``(lo, hi]`` if lo_open)."""
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if a.size == 0:
        return
    if lo is not None:
        bad = a <= lo if lo_open else a < lo
        if np.any(bad):
            op = ">" if lo_open else ">="
            raise ValueError(f"{name} must be {op} {lo}; found {a[bad].ravel()[0]!r}")
    if hi is not None and np.any(a > hi):
        raise ValueError(f"{name} must be <= {hi}; found {a[a > hi].ravel()[0]!r}")


def positive_int(name: str, v) -> int:
    """Checks a static positive integer (canvas sizes, counts)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {v!r}")
    if v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v}")
    return int(v)


def unit_float(name: str, v, lo: float = 0.0, hi: float = 1.0) -> float:
    """Checks a static float in ``[lo, hi]`` (colour blend, alpha_max)."""
    try:
        f = float(v)
    except Exception as e:
        raise TypeError(f"{name} must be a float, got {v!r}") from e
    if not np.isfinite(f) or f < lo or f > hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {v!r}")
    return f


def nonnegative_number(name: str, v) -> float:
    """Checks a static finite number ``>= 0`` (weights, thresholds, margins); returns it as float.

    Python and NumPy ints and floats are accepted, bools are not.
    """
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


MAX_COUNT = 2**31 - 1
"""Largest count a fit takes (primitives, steps, frames): ids and step indices are int32."""


def check_count(name: str, v, minimum: int) -> int:
    """Checks a static integer count ``>= minimum`` (primitives, steps, frames); returns it as int.

    TypeError for a non-int (bools included), ValueError below ``minimum``.
    """
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be a {kind} int, got {v}")
    if v > MAX_COUNT:
        raise ValueError(f"{name} must be at most {MAX_COUNT} (counts and ids are int32), got {v}")
    return int(v)


def env_count(name: str, value: str | None, minimum: int, what: str) -> int | None:
    """``value`` (an environment variable ``name``'s text, or None when unset) as an int ``>= minimum``.

    ValueError naming the variable and ``what`` it sets for anything else: the
    kernels would read such text with C's ``atoi``, which turns ``"abc"`` or
    ``"-1"`` into a default and ``"2.5"`` into two, silently.
    """
    if value is None:
        return None
    if not (value.strip().isdigit() and int(value) >= minimum):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind} ({what}), got {value!r}")
    return int(value)


def _seed_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` built on the host: the same key, without compiling a seeding program.

    The default (threefry) key of ``seed`` is the words ``[seed >> 32, seed & 0xffffffff]``, with
    64-bit seeds, or ``[0, seed & 0xffffffff]`` when JAX runs without x64. Other PRNG
    implementations go through ``jax.random.key``.
    """
    if jax.config.jax_default_prng_impl != "threefry2x32":
        return jax.random.key(seed)
    high = (seed >> 32) & 0xFFFFFFFF if jax.config.jax_enable_x64 else 0
    return jax.random.wrap_key_data(jax.device_put(np.array([high, seed & 0xFFFFFFFF], np.uint32)))


def as_key(key) -> jax.Array:
    """A typed ``jax.random.key`` from a key, raw ``uint32`` key data, or an int seed."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not -2**63 <= int(key) < 2**63:
            raise ValueError(f"key: an int seed must fit in 64 bits (-2**63 <= seed < 2**63), got {int(key)}")
        return _seed_key(int(key))
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax.random.key (or an int seed), got {type(key).__name__}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def as_target(target) -> jax.Array:
    """Validates a target image and returns float32 ``[H, W, 3]`` in [0, 1].

    Accepts ``[H, W, 3]``, ``[H, W]`` (grey) or ``[H, W, 4]`` (RGBA, composed
    over white), floats in [0, 1] or uint8 (divided by 255). Fits that keep a
    target's transparency use :func:`split_alpha` instead.
    """
    rgb, alpha = split_alpha(target)
    if alpha is None:
        return rgb
    return rgb * alpha[..., None] + (1.0 - alpha[..., None])


def split_alpha(target) -> tuple[jax.Array, jax.Array | None]:
    """Validates a target image: ``(rgb [H, W, 3], alpha [H, W] or None)``, float32 in [0, 1].

    Accepts what :func:`as_target` does. ``alpha`` is the straight (not
    premultiplied) coverage of an ``[H, W, 4]`` target that has a pixel with
    alpha below 1, and None for an opaque target (RGBA with alpha 1 everywhere
    included).
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
    if a.ndim != 3 or a.shape[-1] not in (3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"target must have shape (H, W, 3), (H, W) or (H, W, 4), got {tuple(np.shape(target))}")
    if not np.all(np.isfinite(a)):
        raise ValueError("target contains non-finite values (NaN or inf)")
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"target values must lie in [0, 1] (or be uint8), found {a.min():g}..{a.max():g}")
    alpha = None
    if a.shape[-1] == 4:
        if np.any(a[..., 3] < 1.0):
            alpha = jax.device_put(np.ascontiguousarray(a[..., 3]))
        a = a[..., :3]
    # device_put, not jnp.asarray: that compiles a copy program for every new shape.
    return jax.device_put(np.ascontiguousarray(a, np.float32)), alpha
