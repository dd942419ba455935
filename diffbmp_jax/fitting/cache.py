"""JAX's persistent compilation cache, on by default for fits and the command line.

On a GPU a fit's steps are nearly free and compiling them is most of the wait;
the cache keeps the compiled programs between processes, in
``$XDG_CACHE_HOME/diffbmp-jax/jax`` (``~/.cache/diffbmp-jax/jax`` by default).
``DIFFBMP_JAX_CACHE=0`` (or the CLI's ``--no-cache``) turns it off; a cache
folder chosen by the user (``jax_compilation_cache_dir``) is left as it is.
Beside it, ``$XDG_CACHE_HOME/diffbmp-jax/programs`` keeps a CPU fit's chunk of
steps and closing render keyed by their arguments, so a warm start loads them
without tracing and lowering them first (:mod:`diffbmp_jax.rendering.programs`;
only with the package's own folder). Delete ``diffbmp-jax`` to clear both.
JAX keys every entry by the program, the compiler options and the JAX
version, the program store by the arguments and a fingerprint of the
installation, so a stale entry is never used; a folder that cannot be
written turns the cache off with one warning, never an error.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import jax

from diffbmp_jax.rendering import programs

__all__ = ["enable_compilation_cache", "cache_folder", "program_folder", "CACHE_ENV"]

CACHE_ENV = "DIFFBMP_JAX_CACHE"
_OFF = ("0", "false", "no", "off")
_state: dict = {}


def cache_folder() -> Path:
    """Where the cache lives: ``$XDG_CACHE_HOME/diffbmp-jax/jax``, else ``~/.cache/diffbmp-jax/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "diffbmp-jax" / "jax"


def program_folder() -> Path:
    """Where the fit's compiled programs are stored by their arguments (:mod:`diffbmp_jax.rendering.programs`):
    ``programs`` beside :func:`cache_folder`."""
    return cache_folder().parent / "programs"


def enable_compilation_cache() -> str | None:
    """Turns the persistent compilation cache on (once per process); returns its folder or None.

    None when ``DIFFBMP_JAX_CACHE`` says off or the folder cannot be written
    (one ``UserWarning``). It serves the programs compiled after this call:
    call it before the first compilation of the process to cache them all.
    """
    if os.environ.get(CACHE_ENV, "1").strip().lower() in _OFF:
        return None
    chosen = jax.config.jax_compilation_cache_dir
    if chosen:
        return chosen
    if "folder" in _state:
        return _state["folder"]
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        warnings.warn(f"compilation cache off: cannot write {str(folder)!r} ({e}); set {CACHE_ENV}=0 to "
                      "silence this", UserWarning, stacklevel=2)
        _state["folder"] = None
        return None
    from jax.experimental.compilation_cache import compilation_cache
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # A fit compiles a handful of programs, several of them small: keep them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX decides at its first compilation whether a cache is in use; programs
    # compiled before this call made it decide "no": let it decide again.
    compilation_cache.reset_cache()
    _state["folder"] = str(folder)
    programs.use_folder(program_folder())  # a warm start loads the fit's programs without tracing them
    return _state["folder"]
