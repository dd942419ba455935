"""Fits built on the fitting engine for other goals: videos (``video``),
region-constrained compositions (``regions``) and text prompts scored by
CLIP (``text``).

Re-exported lazily: a name's module is imported on first use, so a video or
regions fit does not import CLIP (and Flax, the ``clip`` extra) with it.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "fit_video": "diffbmp_jax.tasks.video", "VideoFitResult": "diffbmp_jax.tasks.video",
    "flicker": "diffbmp_jax.tasks.video", "frame_psnr": "diffbmp_jax.tasks.video",
    "fit_regions": "diffbmp_jax.tasks.regions", "RegionFitResult": "diffbmp_jax.tasks.regions",
    "fit_text": "diffbmp_jax.tasks.text", "TextFitResult": "diffbmp_jax.tasks.text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffbmp_jax.tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
