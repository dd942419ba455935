"""Where a fit's time goes: compilation versus steps.

JAX reports every trace, lowering and backend compilation (or load from the
persistent cache) as a time span through :mod:`jax.monitoring`. A
:class:`FitClock` collects the spans that start while it is open, on its own
thread, and counts their union as compile time, so nested spans (a jitted
function traced inside another) are not counted twice. The loop adds the
seconds it spends running and waiting for chunks (:attr:`FitClock.step_time`);
compilation inside those calls is subtracted.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time

import jax

from diffbmp_jax.rendering.programs import LOAD_EVENT

__all__ = ["FitClock", "COMPILE_EVENTS", "current_clock", "clocked"]

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration",
                  LOAD_EVENT)
"""The :mod:`jax.monitoring` time spans counted as compilation (the last: a stored
program loaded by :mod:`diffbmp_jax.rendering.programs`)."""

_open = threading.local()  # the clocks open on this thread
_registered = False
_lock = threading.Lock()


def _on_span(event: str, start: float, end: float, **kwargs) -> None:
    if event in COMPILE_EVENTS:
        for clock in getattr(_open, "clocks", ()):
            clock._spans.append((start, end))


def _register() -> None:
    global _registered
    with _lock:
        if not _registered:
            jax.monitoring.register_event_time_span_listener(_on_span)
            _registered = True


def _union(spans) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


class FitClock:
    """Compile time and step time of one fit (seconds), used as ``with FitClock() as clock:``.

    Attributes:
      compile_time: union of JAX's trace/lower/compile spans while open
        (compiled programs loaded from the persistent cache count too).
      step_time: seconds the loop spent dispatching and waiting for chunks,
        compilation excluded (:meth:`steps`).
    """

    def __init__(self):
        self._spans: list[tuple[float, float]] = []
        self.step_time = 0.0

    def __enter__(self) -> "FitClock":
        _register()
        if not hasattr(_open, "clocks"):
            _open.clocks = []
        _open.clocks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _open.clocks.remove(self)

    @property
    def compile_time(self) -> float:
        return _union(self._spans)

    def compiled_since(self, start: float) -> float:
        """Compile seconds in spans that ended after ``start`` (a ``time.time()`` reading)."""
        return _union([(max(s, start), e) for s, e in self._spans if e > start])

    def steps(self):
        """Context manager timing one stretch of running steps (compilation in it excluded)."""
        return _StepTimer(self)


class _StepTimer:
    def __init__(self, clock: FitClock):
        self.clock = clock

    def __enter__(self):
        self.start = time.time()  # jax.monitoring's spans are time.time() readings

    def __exit__(self, *exc):
        self.clock.step_time += max(0.0, time.time() - self.start - self.clock.compiled_since(self.start))


def current_clock() -> FitClock | None:
    """The innermost :class:`FitClock` open on this thread, or None."""
    clocks = getattr(_open, "clocks", ())
    return clocks[-1] if clocks else None


def clocked(fit_fn):
    """Decorator: runs a fit function under a :class:`FitClock` and fills the ``compile_time`` and
    ``step_time`` fields of the dataclass it returns (the loop finds the clock through
    :func:`current_clock`)."""
    @functools.wraps(fit_fn)
    def wrapper(*args, **kwargs):
        with FitClock() as clock:
            result = fit_fn(*args, **kwargs)
        return dataclasses.replace(result, compile_time=clock.compile_time, step_time=clock.step_time)

    return wrapper
