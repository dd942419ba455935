"""diffbmp-jax: differentiable rendering with bitmap primitives, in JAX.

Layers, bottom up: the scene (:class:`Primitives`, :class:`Atlas`, stamp
``sources``), the renderer (:func:`render` with reference / cpu / cuda
backends), fitting (:func:`fit`, :func:`fit_batch`, :func:`fit_video`, :func:`fit_regions`,
:func:`fit_text`) and the writers (``export``).
"""

# The scene and the renderer.
from .atlas import Atlas
from .primitives import Primitives
from .render import BACKENDS, composite, default_template, render
from . import sources, templates
from .sources import load_stamps

# Fitting.
from . import init, losses, metrics
from .metrics import psnr, ssim
from .fit import FitConfig, FitResult, fit
from .batch import BatchFitResult, fit_batch, scene_mesh
from . import video, regions
from .video import VideoFitResult, fit_video, flicker, frame_psnr, load_video
from .regions import RegionFitResult, fit_regions
from . import clip
from .text_fit import TextFitResult, fit_text

# Writers.
from . import export
from .export import export_png, export_psd, export_svg

__version__ = "0.1.0"

__all__ = [
    "Atlas", "Primitives", "render", "composite", "default_template", "BACKENDS",
    "sources", "templates", "load_stamps",
    "init", "losses", "metrics", "psnr", "ssim", "fit", "FitConfig", "FitResult",
    "fit_batch", "BatchFitResult", "scene_mesh",
    "video", "regions", "fit_video", "VideoFitResult", "load_video", "flicker", "frame_psnr",
    "fit_regions", "RegionFitResult", "clip", "fit_text", "TextFitResult",
    "export", "export_psd", "export_svg", "export_png",
]
