"""Compiled programs kept on disk, so that a warm start neither traces nor lowers them.

JAX's persistent compilation cache (:mod:`diffbmp_jax.fitting.cache`) keys
an entry by the lowered program: finding it means tracing and lowering the
function first, which for a fit's chunk of steps is most of a warm start's
compile time (0.3-0.4 s on the H200's host, ``benchmarks/RESULTS.md``). This
store keys a compiled executable instead by what determines it -- the
function, its static arguments, the shapes and dtypes of the others, and a
fingerprint of the installation (the package's and the kernels' files, the
JAX version, the backend and device, the XLA options, the JAX settings and
the ``DIFFBMP_*`` environment variables) -- and loads it without tracing
(on 2 CPU cores the demo's warm compile time went from 0.3 to 0.1 s).

Only functions compiled through :func:`diffbmp_jax.rendering.compiling.jit`
with ``persist=True`` use it, only while :func:`use_folder` has set a folder
(the fits do, with the compilation cache), and only for calls whose static
arguments have a stable description (numbers, strings, module-level
functions of this package, named tuples and dataclasses of those) and whose
arrays live in the default device's own memory; any other call is an
ordinary ``jax.jit`` call. A program loaded (or compiled) once is kept in
memory under the call's shapes, dtypes and weak types: not under JAX's full
abstract values, which on a GPU told a program's output arrays apart from
its inputs and so loaded the program again for every chunk of a fit (24
loads of 0.22-0.30 s in a 300-step fit on the H200, where a warm fit now loads
one and takes 0.84-0.89 s against 1.28 s through JAX's cache,
``benchmarks/RESULTS.md``). An entry that cannot be read or loaded is compiled again and
rewritten; a folder that cannot be written is only not written.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import jax

from diffbmp_jax.files import atomic_output

__all__ = ["use_folder", "current_folder", "describe", "Unstable", "fingerprint", "default_device", "Persisted",
           "LOAD_EVENT"]

LOAD_EVENT = "/diffbmp_jax/programs/load"
"""The :mod:`jax.monitoring` time span of loading a stored program (fits count it as compile time)."""

_state: dict = {"folder": None}
_FORMAT = 1  # bump when the entries' layout changes


def use_folder(folder: str | os.PathLike | None) -> None:
    """Stores programs in ``folder`` from now on (None: stop storing and loading)."""
    if folder is not None and not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path (str or os.PathLike) or None, got {type(folder).__name__}")
    _state["folder"] = None if folder is None else Path(folder)


def current_folder() -> Path | None:
    """The folder set by :func:`use_folder`, or None."""
    return _state["folder"]


class Unstable(Exception):
    """A static argument without a description that is the same in every process."""


def describe(value) -> str:
    """A description of a static argument that is the same in every process, or raises ``Unstable``.

    Numbers, strings, bytes, None, enums, tuples/lists/dicts of those,
    named tuples and dataclasses (by type and fields), and functions or
    classes defined at the top level of a ``diffbmp_jax`` module (by name:
    their code is in the fingerprint).
    """
    if value is None or isinstance(value, (bool, int, str, bytes)):
        return repr(value)
    if isinstance(value, float):
        return float.hex(value)
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return f"{type(value).__name__}({value.item()!r})"
    if isinstance(value, enum.Enum):
        return f"{_qualified(type(value))}.{value.name}"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return f"{_qualified(type(value))}({', '.join(describe(v) for v in value)})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(describe(v) for v in value)})"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{describe(k)}: {describe(value[k])}" for k in sorted(value, key=repr)) + ")"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(f"{f.name}={describe(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{_qualified(type(value))}({fields})"
    if isinstance(value, functools.partial):
        return f"partial({describe(value.func)}, {describe(value.args)}, {describe(value.keywords)})"
    if callable(value):
        return _qualified(value)
    raise Unstable(type(value).__name__)


def _qualified(obj) -> str:
    module, name = getattr(obj, "__module__", None) or "", getattr(obj, "__qualname__", "")
    if not (module == "diffbmp_jax" or module.startswith("diffbmp_jax.")) or not name or "<" in name:
        raise Unstable(f"{module}.{name}")
    return f"{module}.{name}"


def _files() -> list[tuple[str, int, int]]:
    """(path, size, mtime) of the package's and the kernels' files: an edit or a reinstall changes them."""
    roots = [Path(__file__).resolve().parents[1]]  # the diffbmp_jax folder
    try:
        import _diffbmp_jax_kernels
        roots.append(Path(_diffbmp_jax_kernels.__file__).parent)
    except ImportError:
        pass
    out = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".so", ".pyd", ".dylib") and path.is_file():
                st = path.stat()
                out.append((str(path), st.st_size, st.st_mtime_ns))
    return out


@functools.lru_cache(maxsize=None)
def _fingerprint(flags: str, device) -> str:
    import jaxlib
    parts = [f"format {_FORMAT}", jax.__version__, jaxlib.__version__, device.platform,
             getattr(device, "device_kind", ""), getattr(device.client, "platform_version", ""), flags,
             repr(_files())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def fingerprint(compiler_options: dict, device) -> str:
    """Digest of everything besides a call's own arguments that decides what a program compiles to
    (``compiler_options``: the XLA options its ``jax.jit`` was given; ``device``: where it runs)."""
    values = getattr(jax.config, "values", {})
    settings = {k: v for k, v in values.items() if "cache" not in k and "log" not in k}
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("DIFFBMP_", "XLA_", "JAX_")))
    return _fingerprint(repr((sorted(compiler_options.items()), sorted(settings.items(), key=repr), env)), device)


_hits = threading.local()  # JAX persistent-cache hits on this thread since the counter was reset
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _on_event(event: str, **kwargs) -> None:
    if event == _HIT_EVENT:
        _hits.count = getattr(_hits, "count", 0) + 1


jax.monitoring.register_event_listener(_on_event)


def _register_kernels() -> None:
    """The FFI targets a stored program calls must be registered before it is loaded."""
    from diffbmp_jax.rendering import registry
    registry.registered("cpu")


def default_device():
    """The device a call's host arguments go to: ``jax.default_device``'s, else the first."""
    chosen = jax.config.jax_default_device
    if isinstance(chosen, str):
        return jax.devices(chosen)[0]
    return chosen if chosen is not None else jax.devices()[0]


def _shape_key(leaf) -> tuple:
    """What of an argument's abstract value picks its program: shape, dtype, weak type."""
    aval = jax.typeof(leaf)
    return aval.shape, aval.dtype, aval.weak_type


class Persisted:
    """The stored-program path of a ``jit`` function (see the module docstring).

    ``top`` is the ``jax.jit`` of ``fun`` with the XLA ``compiler_options`` and
    ``static_argnums``; calling a :class:`Persisted` with a call's
    arguments returns the call's result, or ``NotImplemented`` when the call
    must go through ``top`` (no folder, unstable statics, arrays elsewhere).
    """

    def __init__(self, fun: Callable, top, static_argnums: tuple[int, ...], compiler_options: dict):
        self.name = f"{fun.__module__}.{fun.__qualname__}"
        self.top = top
        self.compiler_options = dict(compiler_options)
        self.static_argnums = tuple(static_argnums)
        # The positional parameters' defaults (inspect.Parameter.empty where none): a call that
        # leaves trailing arguments out is keyed and compiled as the call that spells them out.
        self.defaults = tuple(p.default for p in inspect.signature(fun).parameters.values()
                              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        self.programs: dict = {}  # memory key -> compiled program
        self._ordinary: set = set()  # memory keys whose statics have no stable description
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.programs)

    def __call__(self, args: tuple, kwargs: dict):
        folder = current_folder()
        if folder is None or kwargs or jax.config.jax_disable_jit:
            return NotImplemented
        args = tuple(args) + self.defaults[len(args):]
        if any(a is inspect.Parameter.empty for a in args):
            return NotImplemented  # an argument missing: jax.jit's call names it
        default = default_device()
        statics = tuple(args[i] for i in self.static_argnums)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        for leaf in leaves:
            if isinstance(leaf, jax.Array) and (leaf.devices() != {default}
                                                or leaf.sharding.memory_kind not in (None, "device")):
                return NotImplemented
        memory_key = (statics, tree, tuple(_shape_key(leaf) for leaf in leaves), default)
        program = self.programs.get(memory_key)
        if program is None:
            if memory_key in self._ordinary:
                return NotImplemented
            with self._lock:
                program = self.programs.get(memory_key)
                if program is None:
                    program = self._load_or_compile(folder, args, statics, memory_key, default)
                    if program is None:
                        self._ordinary.add(memory_key)
                        return NotImplemented
                    self.programs[memory_key] = program
        return program(*dynamic)

    def _load_or_compile(self, folder: Path, args, statics, memory_key, device):
        try:
            described = repr((self.name, [describe(s) for s in statics], str(memory_key[1]),
                              [str(a) for a in memory_key[2]], fingerprint(self.compiler_options, device)))
        except Unstable:
            return None
        path = folder / f"{self.name.rsplit('.', 1)[-1]}-{hashlib.sha256(described.encode()).hexdigest()[:40]}.bin"
        program = self._load(path, device)
        if program is not None:
            return program
        _hits.count = 0
        compiled = self.top.lower(*args).compile()
        # An executable JAX loaded from its own cache is not stored: serialising a loaded
        # executable again loses its functions on XLA's CPU backend (the copy then fails
        # to run). It is stored the next time it is compiled.
        if not _hits.count:
            self._store(path, compiled)
        return compiled

    @staticmethod
    def _load(path: Path, device):
        from jax.experimental.serialize_executable import deserialize_and_load
        start = time.time()
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        try:
            payload, in_tree, out_tree = pickle.loads(blob)
            _register_kernels()
            program = deserialize_and_load(payload, in_tree, out_tree, backend=device.client,
                                           execution_devices=[device])
        except Exception:  # noqa: BLE001 -- a damaged or foreign entry is compiled again
            return None
        jax.monitoring.record_event_time_span(LOAD_EVENT, start, time.time())
        return program

    @staticmethod
    def _store(path: Path, compiled) -> None:
        from jax.experimental.serialize_executable import serialize
        try:
            blob = pickle.dumps(serialize(compiled))
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as tmp:  # whole or not at all: a reader never sees half an entry
                Path(tmp).write_bytes(blob)
        except Exception:  # noqa: BLE001 -- an entry not written is only a slower next start
            pass
