"""diffbmp-jax: differentiable rendering with bitmap primitives, in JAX."""

from .atlas import Atlas
from .primitives import Primitives
from .render import BACKENDS, composite, default_template, render
from . import init, losses, metrics
from .fit import FitConfig, FitResult, fit
from .metrics import psnr, ssim

__version__ = "0.1.0"

__all__ = ["Atlas", "Primitives", "render", "composite", "default_template", "BACKENDS"]
__all__ += ["fit", "FitConfig", "FitResult", "init", "losses", "metrics", "psnr", "ssim"]

# Stamp sources, template assignment and exporters (issue 5).
from . import export, sources, templates  # noqa: E402
from .export import export_psd, export_svg, export_png  # noqa: E402
from .sources import load_stamps  # noqa: E402

__all__ += ["export", "sources", "templates", "export_psd", "export_svg", "export_png", "load_stamps"]

# CLIP in JAX and text-guided fitting (issue 7).
from . import clip  # noqa: E402
from .text_fit import TextFitResult, fit_text  # noqa: E402

__all__ += ["clip", "fit_text", "TextFitResult"]

# Videos and spatially constrained compositions (issue 6).
from . import video, regions  # noqa: E402
from .video import VideoFitResult, fit_video, flicker, frame_psnr, load_video  # noqa: E402
from .regions import RegionFitResult, fit_regions  # noqa: E402

__all__ += ["video", "regions", "fit_video", "VideoFitResult", "load_video", "flicker", "frame_psnr",
            "fit_regions", "RegionFitResult"]
