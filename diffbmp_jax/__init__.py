"""diffbmp-jax: differentiable rendering with bitmap primitives, in JAX."""

from .atlas import Atlas
from .primitives import Primitives
from .render import BACKENDS, composite, default_template, render

__version__ = "0.1.0"

__all__ = ["Atlas", "Primitives", "render", "composite", "default_template", "BACKENDS"]

# Stamp sources, template assignment and exporters (issue 5).
from . import export, sources, templates  # noqa: E402
from .export import export_psd, export_svg, export_png  # noqa: E402
from .sources import load_stamps  # noqa: E402

__all__ += ["export", "sources", "templates", "export_psd", "export_svg", "export_png", "load_stamps"]
