"""The chunked optimisation loop shared by every fit.

``static.chunk`` steps run inside one ``jit``-compiled ``lax.scan`` (a
"chunk"), so Python only runs between chunks to log, call the callback and
move the progress bar. A chunk always runs ``static.chunk`` iterations and the
run's length ``steps`` is a traced argument, so one compilation serves every
chunk of a fit and every fit of another length; compilations are cached per
step function, ``static`` and shapes.

No host round-trip per step. On a GPU every ``lax.cond`` copies its
predicate to the host and waits for it, so the device drains and then idles
while the host launches the next kernels (a third of a single-scene step on
the H100, ``benchmarks/RESULTS.md``). So a step is branch-free: iterations
past the last step (only in a last, partial chunk, compiled as a variant of
its own) are computed and then discarded with ``jnp.where`` -- except on the
CPU, where a branch costs nothing and skips them; full chunks carry no masks
at all -- and an operation that runs every few steps (:class:`Periodic`,
e.g. respawning invisible primitives) runs *between* groups of steps, under
one ``lax.cond`` per group: the chunk is scanned as groups of
``gcd(chunk, every)`` steps.

What every step computes from its step index alone (a fit's atlas, filtered
for that step's annealed blur) can be computed ahead, for a block of steps in
one batched pass (:class:`Ahead`): on a GPU, a few launches a block instead of
a few a step.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any, Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax.fitting.timing import FitClock, current_clock

__all__ = ["Periodic", "Ahead", "CarryForm", "scan_steps", "run_chunk", "run_chunks", "record", "progress_bar"]


class Periodic(NamedTuple):
    """An operation that runs after step ``t`` when ``(t + 1) % every(static) == 0``
    and ``due(static, t, steps)`` (and ``t`` is a real step, not past the end of
    the ``steps`` of the run).

    ``apply(static, data, carry, t, steps)`` returns ``(carry, count)``; ``count`` is
    added to the ``aux`` output of step ``t`` (so ``aux`` must be an array of
    its shape and dtype, e.g. a count of respawned primitives).
    """
    every: Callable[[Any], int]
    due: Callable[[Any, jax.Array], jax.Array]
    apply: Callable


class Ahead(NamedTuple):
    """Inputs of consecutive steps computed together, ahead of them.

    ``compute(static, data, ts, steps)`` returns a pytree whose leaves have the
    leading axis ``len(ts)`` (entry ``i`` for step ``ts[i]``; ``ts`` are traced
    int32 step indices, ``steps`` the run's length); ``attach(data, x)`` returns
    the ``data`` a step sees, given its entry ``x``. The entries of a block of
    steps are computed at once, in blocks of at most ``max_bytes`` of entries
    (one step at a time when a single entry is larger). A :class:`Periodic`
    operation is not given an entry: it computes what it needs itself.
    """
    compute: Callable
    attach: Callable
    max_bytes: int = 64 << 20


class CarryForm(NamedTuple):
    """The form the steps keep their carry in between chunk ends: ``inner(carry)`` converts the
    caller's carry for the steps, ``outer(inner_carry)`` back (at the chunk's end and around a
    :class:`Periodic` operation, which sees the caller's form)."""
    inner: Callable
    outer: Callable


def _block_length(length: int, entry_bytes: int, max_bytes: int) -> int:
    """The largest divisor of ``length`` whose entries fit in ``max_bytes`` (at least 1)."""
    most = max(1, max_bytes // max(1, entry_bytes))
    return max(d for d in range(1, length + 1) if length % d == 0 and d <= most)


def _like(new, old):
    """``new`` cast leaf by leaf to the dtypes of ``old``: a carry keeps one dtype per leaf
    (under ``jax_enable_x64`` fresh randoms and constants would otherwise come out float64)."""
    return jax.tree.map(lambda a, b: jnp.asarray(a, jnp.result_type(b)), new, old)


def _where(live, new, old):
    return jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)


def _past_end(shapes):
    """What steps past the end report: NaN losses and zero ``aux``, of the shapes ``(loss, aux)``."""
    loss, aux = shapes
    return jnp.full(loss.shape, jnp.nan, loss.dtype), jnp.zeros(aux.shape, aux.dtype)


def scan_steps(step: Callable, static, data, carry, ts, steps, periodic: Periodic | None = None, *,
               branch_past_end: bool | None = None, past_end: bool = True, ahead: Ahead | None = None,
               form: CarryForm | None = None):
    """Runs ``step(static, data, carry, t, steps)`` for the consecutive step indices ``ts`` (``[L]``).

    ``steps`` is the run's length (an int32 scalar, may be traced: schedules
    read it). ``step`` returns ``(carry, (loss, aux))`` and must not branch on ``t``
    (see the module docstring); steps with ``t >= steps`` leave the
    carry as it was and report a NaN loss and zero ``aux``: skipped by a
    ``lax.cond`` if ``branch_past_end`` (default: on the CPU backend), else
    computed and discarded. ``past_end=False`` promises that every ``t`` is
    below ``steps`` (a full chunk): then nothing is masked or branched around
    (on a GPU the masks were a dozen small kernels per step). With ``ahead``,
    step ``t`` is given ``ahead.attach(data, x_t)``, its entry computed ahead
    (:class:`Ahead`). With ``form``, the steps see ``form.inner(carry)`` (:class:`CarryForm`).
    Returns ``(carry, (losses [L, ...], aux [L, ...]))``.
    """
    length = int(ts.shape[0])
    every = periodic.every(static) if periodic is not None else 0
    group = math.gcd(length, every) if every > 0 else length
    if branch_past_end is None:
        branch_past_end = jax.default_backend() == "cpu"

    def stepped(c, t, d):
        new, out = step(static, d, c, t, steps)
        return _like(new, c), out

    def one(c, t, d):
        if not past_end:
            return stepped(c, t, d)
        live = t < steps
        if branch_past_end:
            shapes = jax.eval_shape(lambda c: stepped(c, t, d)[1], c)
            return jax.lax.cond(live, lambda c: stepped(c, t, d), lambda c: (c, _past_end(shapes)), c)
        new, (loss, aux) = stepped(c, t, d)
        return _where(live, new, c), (jnp.where(live, loss, jnp.nan), _where(live, aux, jnp.zeros_like(aux)))

    def run_block(c, tb):  # consecutive steps, their entries computed ahead in one pass
        xs = ahead.compute(static, data, tb, steps)
        return jax.lax.scan(lambda c, tx: one(c, tx[0], ahead.attach(data, tx[1])), c, (tb, xs))

    def scan_group(c, tg):
        if ahead is None:
            return jax.lax.scan(lambda c, t: one(c, t, data), c, tg)
        g = int(tg.shape[0])
        entry = jax.eval_shape(lambda: ahead.compute(static, data, tg[:1], steps))
        block = _block_length(g, sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(entry)),
                              ahead.max_bytes)
        if block == g:
            return run_block(c, tg)
        c, (loss, aux) = jax.lax.scan(run_block, c, tg.reshape(g // block, block))
        return c, (loss.reshape((g,) + loss.shape[2:]), aux.reshape((g,) + aux.shape[2:]))

    def run_group(c, tg):
        c, (loss, aux) = scan_group(c, tg)
        if every > 0:
            t = tg[-1]
            due = ((t + 1) % every == 0) & (t < steps) & periodic.due(static, t, steps)
            def apply(c):
                new, count = periodic.apply(static, data, c, t, steps)
                return _like(new, c), jnp.asarray(count, aux.dtype)

            c, count = jax.lax.cond(due, apply, lambda c: (c, jnp.zeros_like(aux[-1])), c)
            aux = aux.at[-1].add(count)
        return c, (loss, aux)

    if form is not None:  # the steps in the inner form; the periodic operation in the caller's
        if periodic is not None:
            outer_apply = periodic.apply

            def inner_apply(st, d, c, t, n):
                new, count = outer_apply(st, d, form.outer(c), t, n)
                return form.inner(new), count

            periodic = periodic._replace(apply=inner_apply)
        carry, out = scan_steps(step, static, data, form.inner(carry), ts, steps, periodic,
                                branch_past_end=branch_past_end, past_end=past_end, ahead=ahead)
        return form.outer(carry), out
    if group == length:
        return run_group(carry, ts)
    def guarded_group(c, tg):  # a group wholly past the end is skipped
        shapes = jax.eval_shape(lambda c, tg: run_group(c, tg)[1], c, tg)
        return jax.lax.cond(tg[0] < steps, run_group, lambda c, tg: (c, _past_end(shapes)), c, tg)

    body = guarded_group if past_end else run_group
    carry, (loss, aux) = jax.lax.scan(body, carry, ts.reshape(length // group, group))
    return carry, (loss.reshape((length,) + loss.shape[2:]), aux.reshape((length,) + aux.shape[2:]))


def compile_beside(fn: Callable, *args) -> threading.Thread:
    """Calls ``fn(*args)`` once on a daemon thread, for what the call leaves behind (a compiled
    program, a started backend), and returns the thread.

    XLA compiles with the interpreter's lock released, so a program the fit
    needs later (the logging render) compiles on another core while the main
    thread compiles the chunk of steps; the later call finds it compiled (the
    command line starts the JAX backend the same way,
    :func:`diffbmp_jax.cli.app.start_backend_beside`). Its result is dropped,
    and so is any error: the real call raises it again.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")

    def warm():
        try:
            jax.block_until_ready(fn(*args))
        except Exception:  # noqa: BLE001 -- the main thread's own call reports it
            pass

    thread = threading.Thread(target=warm, name=f"compile {getattr(fn, '__name__', 'fn')}", daemon=True)
    thread.start()
    return thread


@functools.partial(jit, static_argnums=(0, 1, 6, 7, 8, 9), persist=True)
def run_chunk(step: Callable, static, data, carry, start, steps, periodic: Periodic | None = None,
              full: bool = False, ahead: Ahead | None = None, form: CarryForm | None = None):
    """Runs ``static.chunk`` steps ``t = start, start + 1, ...`` of a run of ``steps`` (see :func:`scan_steps`).

    ``step``, ``periodic`` and ``ahead`` must be hashable (module-level functions), as
    must ``static`` (a NamedTuple of settings). ``full``: every step of the
    chunk is below ``steps`` (``start + chunk <= steps``), so none is masked
    (:func:`run_chunks` says which; a fit compiles the masked variant only for
    a last, partial chunk). Returns ``(carry, (losses [chunk], aux [chunk]))``.
    """
    ts = start + jnp.arange(static.chunk, dtype=jnp.int32)
    return scan_steps(step, static, data, carry, ts, jnp.asarray(steps, jnp.int32), periodic, past_end=not full,
                      ahead=ahead, form=form)


class _NoBar:
    """What :func:`progress_bar` returns when the bar is off: every call does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def progress_bar(progress: bool, **kwargs):
    """A ``tqdm.auto`` bar (``kwargs`` are tqdm's) when ``progress``, else an object whose methods do nothing.

    Not a disabled tqdm: creating any tqdm bar, even a disabled one, takes its
    class lock, and the first one imports ``multiprocessing`` for it (0.08 s of a
    fit's start on 2 cores).
    """
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm  # imported when a bar is shown: a light `import diffbmp_jax`
    return tqdm(**kwargs)


def run_chunks(run: Callable, data, carry, *, steps: int, chunk: int, log: Callable, progress: bool, desc: str,
               watch: bool = True, update: Callable | None = None,
               to_host: Callable = np.asarray) -> tuple[Any, Any]:
    """Runs ``steps`` steps as chunks of ``chunk``, logging between them.

    ``run(data, carry, start, steps, full)`` runs one chunk from step ``start``
    of a run of ``steps`` (int32 scalars) and returns ``(carry, (losses [chunk, ...],
    aux [chunk, ...]))`` (e.g. :func:`~diffbmp_jax.fitting.engine.run_fit_chunk`
    with its static settings bound); ``full`` (a Python bool) says the chunk ends
    at or before ``steps``.

    ``log(step, carry, loss, auxes)`` records the state after ``step`` steps:
    ``loss`` is that step's (NaN at step 0, an array for a batch), ``auxes``
    the list of the chunks' ``aux`` arrays since the previous log (device
    arrays). It returns ``(result, postfix)``, ``postfix`` a dict shown on the
    tqdm bar (``desc``; hidden unless ``progress``) after the mean loss. With
    ``watch`` it runs at step 0 and after every chunk; without, only once at
    the end, so the chunks are dispatched without the host waiting for any.

    ``update(done, chunk_steps, carry, data)``, if given, runs after every chunk
    before the log and returns the ``data`` for the next chunks (same shapes, so
    nothing recompiles): host-side changes such as template re-assignment.

    ``to_host`` reads the losses back (across processes, for a multi-host batch).

    The bar reads "compiling" until the first chunk is compiled and starts its
    clock after that, so its it/s and ETA are the steps' own. The
    :class:`~diffbmp_jax.fitting.timing.FitClock` open on this thread (the
    fit's, see ``timing.clocked``), if any, gets the time spent running and
    waiting for chunks added to its ``step_time``.

    Returns ``(carry, result of the last log)``.
    """
    clock = current_clock() or FitClock()
    bar = progress_bar(progress, total=steps, unit="it", desc=f"{desc} (compiling)" if steps else desc, leave=True)
    auxes, losses, result, done = [], None, None, 0
    try:
        if watch or steps == 0:
            result, _ = log(0, carry, np.float32(np.nan), [])
        for start in range(0, steps, chunk):
            with clock.steps():
                carry, (losses, aux) = run(data, carry, np.int32(start), np.int32(steps), start + chunk <= steps)
            if start == 0:  # compiled (the call returns once the chunk is dispatched)
                bar.set_description(desc)
                bar.reset(total=steps)
            auxes.append(aux)
            done = min(start + chunk, steps)
            if update is not None:
                data = update(done, done - start, carry, data)
            if watch:
                with clock.steps():
                    loss = to_host(losses)[done - start - 1]
                result, postfix = log(done, carry, loss, auxes)
                auxes = []
                bar.update(done - start)
                bar.set_postfix(loss=f"{np.mean(loss):.4g}", **postfix)
        if not watch and steps > 0:
            with clock.steps():
                last = to_host(losses)[(done - 1) % chunk]
            result, _ = log(done, carry, last, auxes)
    finally:
        bar.close()
    return carry, result


def record(history: dict, step: int, loss, start: float, **values):
    """Appends one log entry to ``history`` (lists by name): ``step``, ``loss``
    (None at step 0, before any step was taken; else a float), ``time``
    (seconds since ``start``, a ``time.perf_counter()`` reading) and ``values``.
    Returns the loss as recorded."""
    loss = None if step == 0 else float(loss)
    history["step"].append(step)
    history["loss"].append(loss)
    history["time"].append(time.perf_counter() - start)
    for name, value in values.items():
        history[name].append(value)
    return loss
