"""The ``diffbmp-jax`` command: one module per subcommand family, the shared
options in ``options``. The library never imports this package."""

from diffbmp_jax.cli.app import console, main, run

__all__ = ["main", "run", "console"]
