"""The renderer: :func:`render`, :func:`render_mse` and their checks (``api``), the dense pure-JAX
ground truth (``reference``), the FFI kernels' wrappers (``kernels``) and
their registration (``registry``), antialiased sampling (``mipmap``) and the
atlas blur of soft rasterisation (``blur``)."""

from diffbmp_jax.rendering.api import BACKENDS, available_backends, composite, default_template, render, render_mse

__all__ = ["render", "render_mse", "composite", "default_template", "available_backends", "BACKENDS"]
