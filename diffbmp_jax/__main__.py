"""``python -m diffbmp_jax``: the ``diffbmp-jax`` command."""

import sys

from diffbmp_jax.cli import main

sys.exit(main())
