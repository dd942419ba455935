"""diffbmp-jax: differentiable rendering with bitmap primitives, in JAX."""

from .atlas import Atlas
from .primitives import Primitives
from .render import BACKENDS, composite, default_template, render

__version__ = "0.1.0"

__all__ = ["Atlas", "Primitives", "render", "composite", "default_template", "BACKENDS"]
