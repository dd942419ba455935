import os
import sys

# Scene helpers live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

# The suite's time goes mostly to compiling many small XLA programs once each;
# without LLVM's optimisation passes they compile about a quarter faster. The
# programs mean the same (no fast-math either way); the FFI kernels are
# compiled C++ and unaffected. Set before JAX starts a backend.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

# The suite leaves the user's compilation cache alone (tests/test_cache.py uses its own folders).
os.environ.setdefault("DIFFBMP_JAX_CACHE", "0")

import jax  # noqa: E402 -- after the environment above: JAX reads it when a backend starts
import pytest  # noqa: E402

@pytest.fixture
def on_cpu():
    """Checks of bit-for-bit equality run on the CPU device, also in a process with a GPU (whose
    backward sums with float atomics, in another order each run, and whose fusions round
    differently between two compilations of the same step)."""
    with jax.default_device(jax.devices("cpu")[0]):
        yield
