"""Fits built on the fitting engine for other goals: videos (``video``),
region-constrained compositions (``regions``) and text prompts scored by
CLIP (``text``)."""

from diffbmp_jax.tasks.regions import RegionFitResult, fit_regions
from diffbmp_jax.tasks.text import TextFitResult, fit_text
from diffbmp_jax.tasks.video import VideoFitResult, fit_video, flicker, frame_psnr

__all__ = ["fit_video", "VideoFitResult", "flicker", "frame_psnr", "fit_regions", "RegionFitResult", "fit_text",
           "TextFitResult"]
