"""The command line's messages: the ``diffbmp_jax`` logger, set by ``-q`` / ``-v``.

The library logs through ``logging.getLogger("diffbmp_jax...")`` and never
prints; the command line shows those records on stdout: results at INFO,
per-stage details (timings, compile time vs step time) at DEBUG with
``-v``, only warnings and errors with ``-q`` (which also hides the progress
bar). Warnings about the input still come through :mod:`warnings`, on stderr.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER", "configure", "add_verbosity", "timing"]

LOGGER = "diffbmp_jax"
_handler: logging.Handler | None = None


def add_verbosity(parser) -> None:
    """Adds ``-q/--quiet`` and ``-v/--verbose`` (command line only, not config keys) to a subcommand."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print only warnings and errors (no progress bar, no summary)")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="also print each stage's time, compile time and step time")


def configure(quiet: bool = False, verbose: bool = False) -> logging.Logger:
    """Shows the ``diffbmp_jax`` logger's records on the current ``sys.stdout`` at the level asked for."""
    global _handler
    logger = logging.getLogger(LOGGER)
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False  # shown once, here, whatever the root logger does
    return logger


def timing(wall_time: float, compile_time: float, step_time: float, steps: int | None = None) -> str:
    """The last line's account of a run's time, e.g. ``wall time 9.1 s (compiling 1.2 s,
    300 steps 4.4 s, 14.7 ms/step)``: seconds in all, of which compiling (or loading compiled
    programs) and running the steps; ``steps`` adds the time per step."""
    ran = f"{steps} steps {step_time:.1f} s" if steps is not None else f"steps {step_time:.1f} s"
    per = f", {1e3 * step_time / steps:.1f} ms/step" if steps else ""
    return f"wall time {wall_time:.1f} s (compiling {compile_time:.1f} s, {ran}{per})"
