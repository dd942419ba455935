"""Exporters: layered PSD, SVG, PNG at any scale, GIF/MP4 animations.

``export(fmt, path, params, atlas, height=..., width=...)`` dispatches on
``fmt``; each writer also stands alone (``export_psd``, ``export_svg``,
``export_png``, ``export_buildup``, ``export_progress``, ``write_frames``).
Every writer writes a temporary file beside ``path`` and renames it at the end:
a failed export leaves no partial file.
"""

from __future__ import annotations

from diffbmp_jax.export.animation import buildup_frames, export_buildup, export_progress
from diffbmp_jax.export.formats import FORMATS, export
from diffbmp_jax.io.video import write_frames
from diffbmp_jax.export.png import export_png
from diffbmp_jax.export.psd import export_psd
from diffbmp_jax.export.svg import export_svg

__all__ = ["export", "FORMATS", "export_psd", "export_svg", "export_png", "export_buildup",
           "export_progress", "buildup_frames", "write_frames"]
