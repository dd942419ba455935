"""``python -m diffbmp_jax``: the ``diffbmp-jax`` command."""

from diffbmp_jax.cli import console

console()
