"""Loads the compiled kernel modules and registers their XLA FFI targets.

The handlers live in the package ``_diffbmp_jax_kernels`` (modules ``cpu``
and ``cuda``), installed beside ``diffbmp_jax`` and never inside it, so that
Python run from a checkout (its ``diffbmp_jax`` folder first on the path)
still finds the installed kernels. Each module states the version of the
buffer contract it implements; a mismatch (kernels built from another tree)
is refused with a message saying to reinstall.

Targets (same names on every platform, see ``cuda/common/render_common.h`` for
the buffer contract):
  ``diffbmp_forward``  -> colour, transmittance, stop index per pixel
  ``diffbmp_backward`` -> gradients of the primitive fields (and of the atlas)
  ``diffbmp_forward_loss`` -> the forward with a fit's pixel loss folded in: the
  loss's cotangents per pixel and the squared error per tile
  ``diffbmp_mse_grad`` -> forward, that loss and backward in one call: the fields'
  gradients and the squared error per tile
A module may leave the last two out; :func:`exported_everywhere` says whether every
platform's module has one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os

import jax

from diffbmp_jax.validation import check_count, env_count

FORWARD = "diffbmp_forward"
BACKWARD = "diffbmp_backward"
FORWARD_LOSS = "diffbmp_forward_loss"
MSE_GRAD = "diffbmp_mse_grad"

_MODULES = {"cpu": "_diffbmp_jax_kernels.cpu", "CUDA": "_diffbmp_jax_kernels.cuda"}

CONTRACT = 4
"""Version of the kernels' buffer contract this Python code calls (``kContractVersion``)."""


@functools.lru_cache(maxsize=None)
def registered(platform: str) -> bool:
    """Registers the targets of ``platform`` ("cpu" or "CUDA") once; False if not built.

    Raises RuntimeError when the installed kernels implement another contract version.
    """
    if platform == "cpu":
        check_cpu_env()
    try:
        module = importlib.import_module(_MODULES[platform])
    except ImportError:
        return False
    version = getattr(module, "contract", None)
    if version != CONTRACT:
        raise RuntimeError(f"the installed {platform} kernels ({module.__file__}) implement buffer contract "
                           f"{version}, this diffbmp_jax ({__file__}) calls contract {CONTRACT}: reinstall "
                           "the package from this tree (python -m pip install .)")
    names = module.registrations()
    for name, capsule in names.items():
        jax.ffi.register_ffi_target(name, capsule, platform=platform)
    _EXPORTED[platform] = frozenset(names)
    return True


_EXPORTED: dict[str, frozenset] = {}


def exports(platform: str, target: str) -> bool:
    """True when the kernels of ``platform`` ("cpu" or "CUDA") are built and export ``target``."""
    return registered(platform) and target in _EXPORTED[platform]


@contextlib.contextmanager
def without(target: str):
    """Inside the block every module's exports read as if ``target`` were not among them, so a
    computation traced there takes the path it would take without it (benchmarks and tests
    compare the paths this way); restored on leaving."""
    for platform in _MODULES:
        registered(platform)
    saved = dict(_EXPORTED)
    _EXPORTED.update({p: names - {target} for p, names in saved.items()})
    try:
        yield
    finally:
        _EXPORTED.update(saved)


def exported_everywhere(target: str) -> bool:
    """True when the cpu kernels export ``target``, and so do the CUDA kernels if JAX sees a GPU.

    A render that calls the kernels directly lets XLA pick each platform's handler
    when it compiles, so a target may be called that way only when no platform
    the process can compute on lacks it (a CUDA module built on a machine without
    a GPU is never compiled for).
    """
    if not exports("cpu", target):
        return False
    return not _sees_cuda() or exports("CUDA", target)


def _sees_cuda() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


CPU_ENV = {"DIFFBMP_NUM_THREADS": "threads of the cpu kernels",
           "DIFFBMP_CPU_PAIRS_PER_GROUP": "(tile, primitive) pairs whose gradients the cpu backward holds at once"}
"""Environment variables the cpu kernels read, each unset or a positive integer."""


def check_cpu_env() -> None:
    """ValueError unless every variable of :data:`CPU_ENV` is unset or a positive integer
    (:func:`diffbmp_jax.validation.env_count`)."""
    for name, what in CPU_ENV.items():
        env_count(name, os.environ.get(name), 1, what)


def cuda_workspace_bytes(primitives: int, tiles: int, pairs: int) -> int:
    """Bytes of the workspace a CUDA call returns last (``cuda/gpu/workspace.h``), for
    ``primitives`` primitives and ``tiles`` tiles of all its scenes and room for ``pairs`` pairs."""
    counts = [check_count(name, v, 0) for name, v in (("primitives", primitives), ("tiles", tiles),
                                                       ("pairs", pairs))]
    if not registered("CUDA"):
        raise RuntimeError("a render is being compiled for a GPU, but the CUDA kernels are not built")
    return int(importlib.import_module(_MODULES["CUDA"]).workspace_bytes(*counts))


def cuda_available() -> bool:
    """True when the CUDA kernels were built and JAX sees a GPU."""
    try:
        has_gpu = any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        has_gpu = False
    return has_gpu and registered("CUDA")


@functools.lru_cache(maxsize=None)
def kernels_everywhere() -> bool:
    """True when every platform this process can compute on has compiled kernels: the CPU,
    and the CUDA GPUs if JAX sees any (no ROCm GPU, no TPU).

    Then ``render(backend="auto")`` calls the kernels directly (the FFI targets are
    registered per platform, so XLA picks the right one) instead of tracing and
    differentiating a branch per platform plus the reference for any other: on the
    CPU that was half the tracing of a fitting step.
    """
    if not registered("cpu"):
        return False
    for other in ("rocm", "tpu"):
        try:
            if jax.devices(other):
                return False
        except RuntimeError:
            pass
    return not _sees_cuda() or registered("CUDA")
