"""Loads the compiled kernel modules and registers their XLA FFI targets.

Targets (same names on every platform, see ``cuda/render_common.h`` for the
buffer contract):
  ``diffbmp_forward``  -> colour, transmittance, stop index per pixel
  ``diffbmp_backward`` -> gradients of the primitive fields (and of the atlas)
"""

from __future__ import annotations

import functools
import importlib

import jax

FORWARD = "diffbmp_forward"
BACKWARD = "diffbmp_backward"

_MODULES = {"cpu": "diffbmp_jax._diffbmp_cpu", "CUDA": "diffbmp_jax._diffbmp_cuda"}


@functools.lru_cache(maxsize=None)
def registered(platform: str) -> bool:
    """Registers the targets of ``platform`` ("cpu" or "CUDA") once; False if not built."""
    try:
        module = importlib.import_module(_MODULES[platform])
    except ImportError:
        return False
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform=platform)
    return True


def cuda_available() -> bool:
    """True when the CUDA kernels were built and JAX sees a GPU."""
    try:
        has_gpu = any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        has_gpu = False
    return has_gpu and registered("CUDA")
