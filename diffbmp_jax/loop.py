"""The chunked optimisation loop shared by :func:`diffbmp_jax.fit` and :func:`diffbmp_jax.fit_text`.

``static.chunk`` steps run inside one ``jit``-compiled ``lax.scan`` (a
"chunk"), so Python only runs between chunks to log, call the callback and
move the progress bar. A chunk always runs ``static.chunk`` iterations so one
compilation serves every chunk (the step function skips iterations past the
last step); compilations are cached per step function, ``static`` and shapes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import jax
import jax.numpy as jnp

__all__ = ["run_chunk", "run_chunks"]


@functools.partial(jax.jit, static_argnums=(0, 1))
def run_chunk(step: Callable, static, data, carry, start):
    """Runs ``static.chunk`` steps ``t = start, start + 1, ...`` of ``step(static, data, carry, t)``.

    ``step`` returns ``(carry, (loss, aux))``; ``static`` must be hashable
    (a NamedTuple of settings). Returns ``(carry, (losses [chunk], aux [chunk]))``.
    """
    ts = start + jnp.arange(static.chunk, dtype=jnp.int32)
    return jax.lax.scan(lambda c, t: step(static, data, c, t), carry, ts)


def run_chunks(step: Callable, static, data, carry, *, steps: int, log: Callable, progress: bool,
               desc: str, update: Callable | None = None) -> tuple[Any, Any]:
    """Runs ``steps`` steps in chunks of ``static.chunk``, logging between chunks.

    ``update(done, chunk_steps, carry, data)``, if given, runs after every chunk
    before the log and returns the ``data`` for the next chunks (same shapes, so
    nothing recompiles): host-side changes such as template re-assignment.

    ``log(step, carry, loss, aux)`` is called at step 0 (``loss`` NaN, ``aux``
    None) and after every chunk (``loss`` the last step's, ``aux`` the chunk's
    per-step ``aux`` array); it returns ``(result, postfix)``, ``postfix`` a
    dict shown on the tqdm bar (``desc``; hidden unless ``progress``) after
    the loss. Returns ``(carry, result of the last log)``.
    """
    from tqdm.auto import tqdm
    bar = tqdm(total=steps, disable=not progress, unit="it", desc=desc, leave=True)
    try:
        result, _ = log(0, carry, float("nan"), None)
        for start in range(0, steps, static.chunk):
            carry, (losses, aux) = run_chunk(step, static, data, carry, jnp.int32(start))
            done = min(start + static.chunk, steps)
            losses = np.asarray(losses)[: done - start]
            if update is not None:
                data = update(done, done - start, carry, data)
            result, postfix = log(done, carry, losses[-1], aux)
            bar.update(done - start)
            bar.set_postfix(loss=f"{losses[-1]:.4g}", **postfix)
    finally:
        bar.close()
    return carry, result
