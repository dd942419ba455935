"""diffbmp-jax: differentiable rendering with bitmap primitives, in JAX.

Layers, bottom up (one subpackage each, see docs/DESIGN.md): ``scene``
(:class:`Primitives`, :class:`Atlas`), ``io`` (files in and out), ``rendering``
(:func:`render` with reference / cpu / cuda backends), ``stamps`` (atlases from
images, SVG, text, emoji), ``fitting`` (:func:`fit`, :func:`fit_batch`), ``tasks``
(:func:`fit_video`, :func:`fit_regions`, :func:`fit_text`), ``export`` (PSD, SVG,
PNG, GIF, MP4) and ``clip``. This module only re-exports.
"""

from diffbmp_jax import clip, export, io, rendering, stamps
from diffbmp_jax.export import export_png, export_psd, export_svg
from diffbmp_jax.fitting import init, losses, metrics, templates
from diffbmp_jax.fitting.batch import BatchFitResult, fit_batch, scene_mesh
from diffbmp_jax.fitting.config import FitConfig
from diffbmp_jax.fitting.image import FitResult, fit
from diffbmp_jax.fitting.metrics import psnr, ssim
from diffbmp_jax.io.video import load_video
from diffbmp_jax.rendering.api import BACKENDS, composite, default_template, render
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.stamps.load import load_stamps
from diffbmp_jax.tasks.regions import RegionFitResult, fit_regions
from diffbmp_jax.tasks.text import TextFitResult, fit_text
from diffbmp_jax.tasks.video import VideoFitResult, fit_video, flicker, frame_psnr

__version__ = "0.1.0"

__all__ = [
    "Atlas", "Primitives", "render", "composite", "default_template", "BACKENDS",
    "stamps", "load_stamps", "templates", "io", "rendering",
    "init", "losses", "metrics", "psnr", "ssim", "fit", "FitConfig", "FitResult",
    "fit_batch", "BatchFitResult", "scene_mesh",
    "fit_video", "VideoFitResult", "load_video", "flicker", "frame_psnr",
    "fit_regions", "RegionFitResult", "clip", "fit_text", "TextFitResult",
    "export", "export_psd", "export_svg", "export_png",
]
