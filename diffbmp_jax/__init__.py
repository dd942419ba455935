"""diffbmp-jax: differentiable rendering with bitmap primitives, in JAX.

Layers, bottom up (one subpackage each, see docs/DESIGN.md §2): ``scene``
(:class:`Primitives`, :class:`Atlas`), ``io`` (files in and out), ``rendering``
(:func:`render` with reference / cpu / cuda backends), ``stamps`` (atlases from
images, SVG, text, emoji), ``fitting`` (:func:`fit`, :func:`fit_batch`), ``tasks``
(:func:`fit_video`, :func:`fit_regions`, :func:`fit_text`), ``export`` (PSD, SVG,
PNG, GIF, MP4) and ``clip``. This module only re-exports, lazily: a name's
subpackage (and JAX) is imported on first use, so ``diffbmp-jax --help`` and
``import diffbmp_jax`` alone stay quick.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it (a subpackage re-exported under its own name).
_EXPORTS = {
    "Atlas": "diffbmp_jax.scene.atlas", "Primitives": "diffbmp_jax.scene.primitives",
    "render": "diffbmp_jax.rendering.api", "render_mse": "diffbmp_jax.rendering.api",
    "composite": "diffbmp_jax.rendering.api",
    "default_template": "diffbmp_jax.rendering.api", "BACKENDS": "diffbmp_jax.rendering.api",
    "MaskBlur": "diffbmp_jax.rendering.blur",
    "load_stamps": "diffbmp_jax.stamps.load",
    "psnr": "diffbmp_jax.fitting.metrics", "ssim": "diffbmp_jax.fitting.metrics",
    "fit": "diffbmp_jax.fitting.image", "FitResult": "diffbmp_jax.fitting.image",
    "FitConfig": "diffbmp_jax.fitting.config",
    "fit_batch": "diffbmp_jax.fitting.batch", "BatchFitResult": "diffbmp_jax.fitting.batch",
    "scene_mesh": "diffbmp_jax.fitting.batch",
    "fit_video": "diffbmp_jax.tasks.video", "VideoFitResult": "diffbmp_jax.tasks.video",
    "flicker": "diffbmp_jax.tasks.video", "frame_psnr": "diffbmp_jax.tasks.video",
    "load_video": "diffbmp_jax.io.video",
    "load_result": "diffbmp_jax.io.results", "SavedResult": "diffbmp_jax.io.results",
    "fit_regions": "diffbmp_jax.tasks.regions", "RegionFitResult": "diffbmp_jax.tasks.regions",
    "fit_text": "diffbmp_jax.tasks.text", "TextFitResult": "diffbmp_jax.tasks.text",
    "export_png": "diffbmp_jax.export", "export_psd": "diffbmp_jax.export", "export_svg": "diffbmp_jax.export",
}
_SUBPACKAGES = {
    "clip": "diffbmp_jax.clip", "export": "diffbmp_jax.export", "io": "diffbmp_jax.io",
    "rendering": "diffbmp_jax.rendering", "stamps": "diffbmp_jax.stamps", "scene": "diffbmp_jax.scene",
    "fitting": "diffbmp_jax.fitting", "tasks": "diffbmp_jax.tasks",
    "init": "diffbmp_jax.fitting.init", "losses": "diffbmp_jax.fitting.losses",
    "metrics": "diffbmp_jax.fitting.metrics", "templates": "diffbmp_jax.fitting.templates",
}

__all__ = sorted(_EXPORTS) + sorted(_SUBPACKAGES)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(_SUBPACKAGES[name])
    else:
        raise AttributeError(f"module 'diffbmp_jax' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
