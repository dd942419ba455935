"""Fitting primitives to images by gradient descent.

Settings (``config``), the optimiser and its parameter space (``optim``,
``schedules``), canvases (``canvas``), initialisers (``init``), losses and
metrics, the chunked loop (``loop``), respawn, template choice
(``templates``), the one optimisation step every fit runs (``engine``), and
the two entry points built on it: :func:`fit` (``image``) and
:func:`fit_batch` (``batch``).
"""

from diffbmp_jax.fitting.batch import BatchFitResult, fit_batch, scene_mesh
from diffbmp_jax.fitting.config import FitConfig
from diffbmp_jax.fitting.image import FitResult, fit

__all__ = ["fit", "FitConfig", "FitResult", "fit_batch", "BatchFitResult", "scene_mesh"]
