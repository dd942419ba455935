"""Ctrl-C that always stops the command line, even when Python swallows it.

Python ignores an exception raised inside a garbage-collection callback (it
prints "Exception ignored in ..." and goes on), and JAX has one: a Ctrl-C
landing there would let the run finish and write its outputs. The command's
SIGINT handler therefore also remembers the interrupt, and :func:`check`
raises it again at safe points: after every chunk of a fit and before any
output is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["handling", "check"]

_pressed = threading.Event()


def _on_sigint(signum, frame):
    _pressed.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handling():
    """Installs the SIGINT handler for the block (main thread only; the previous one comes back)."""
    _pressed.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check() -> None:
    """Raises KeyboardInterrupt if Ctrl-C was pressed during the block (and its exception swallowed)."""
    if _pressed.is_set():
        raise KeyboardInterrupt
