"""The kernels' primitive: its cpu lowering, and the CUDA lowering's workspace and pair capacity.

The CUDA lowering needs only the compiled CUDA module (built wherever nvcc is),
not a GPU: the programs are lowered for the platform "cuda" and read as text.
"""

from __future__ import annotations

import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.rendering import lowering, registry
from scenes import random_atlas, random_scene

H, W, N = 40, 50, 30

needs_cuda_module = pytest.mark.skipif(importlib.util.find_spec("_diffbmp_jax_kernels.cuda") is None,
                                       reason="the CUDA kernels are not built here")


def _loss(p, atlas, template):
    c, a = db.render(p, atlas, height=H, width=W, template=template, backend="cpu", color_blend=0.5)
    return jnp.sum(c) + jnp.sum(a ** 2)


def _scene(seed=0, scenes=None):
    rng = np.random.default_rng(seed)
    atlas = random_atlas(rng, num=2)
    params = random_scene(rng, N, H, W)
    template = jnp.asarray(rng.integers(0, 2, N), jnp.int32)
    if scenes is not None:
        params, template = jax.tree.map(lambda x: jnp.stack([x] * scenes), (params, template))
    return params, atlas, template


def _calls(text):
    """{target: (results' types, attributes)} of every custom call in a lowered program."""
    found = {}
    for line in text.splitlines():
        m = re.search(r"custom_call @(\w+)\(", line)
        if m:
            types = line.rsplit("->", 1)[1]
            found.setdefault(m.group(1), []).append((re.findall(r"tensor<([^>]*)>", types), line))
    return found


def _lowered(platform, scenes=None):
    params, atlas, template = _scene(scenes=scenes)
    f = jax.grad(_loss)
    if scenes is not None:
        f = jax.vmap(f, in_axes=(0, None, 0))
    return jax.jit(f).trace(params, atlas, template).lower(lowering_platforms=(platform,)).as_text()


def _no_gpu(monkeypatch):
    monkeypatch.setattr(registry, "cuda_available", lambda: False)


def _gpu(monkeypatch):
    """As in a process with a GPU: the forward keeps its tile lists for the backward."""
    monkeypatch.setattr(registry, "cuda_available", lambda: True)


def test_cpu_calls_carry_no_workspace(monkeypatch):
    _no_gpu(monkeypatch)
    calls = _calls(_lowered("cpu"))
    (fwd_types, fwd_line), = calls["diffbmp_forward"]
    (bwd_types, bwd_line), = calls["diffbmp_backward"]
    # Without a GPU the forward's tile lists are empty.
    assert fwd_types == [f"{H}x{W}x3xf32", f"{H}x{W}xf32", f"{H}x{W}xi32", "0xui8"]
    assert len(bwd_types) == 7 and "0xui8" in bwd_line.split("->")[0]
    assert "pair_capacity" not in fwd_line + bwd_line


def _capacity(line):
    return int(re.search(r"pair_capacity = (\d+) : i64", line).group(1))


def _binning_bytes(scenes):
    import _diffbmp_jax_kernels.cuda as module
    count = scenes or 1
    tiles = -(-H // 16) * -(-W // 16)
    pairs = lowering.pair_capacity(count * N, tiles, lowering.DEFAULT_MAX_PAIRS)
    assert pairs == count * N * tiles  # small scenes: room for every pair
    return pairs, f"{module.workspace_bytes(count * N, count * tiles, pairs)}xui8"


@needs_cuda_module
@pytest.mark.parametrize("scenes", [None, 3])
def test_cuda_forward_keeps_its_binning_for_the_backward(monkeypatch, scenes):
    _gpu(monkeypatch)
    pairs, binning = _binning_bytes(scenes)
    calls = _calls(_lowered("cuda", scenes=scenes))
    (fwd_types, fwd_line), = calls["diffbmp_forward"]  # one call for all scenes
    (bwd_types, bwd_line), = calls["diffbmp_backward"]
    batch = f"{scenes}x" if scenes else ""
    # color, transmittance, stop, the lists (all scenes at once), an empty workspace.
    assert fwd_types[0] == f"{batch}{H}x{W}x3xf32"
    assert fwd_types[3:] == [binning, "0xui8"], fwd_types
    # The backward reads the lists (with a size-1 batch dimension under vmap) and bins nothing.
    assert (f"1x{binning}" if scenes else binning) in bwd_line.split("->")[0]
    assert len(bwd_types) == 8 and bwd_types[-1] == "0xui8", bwd_types
    assert _capacity(fwd_line) == _capacity(bwd_line) == pairs


@needs_cuda_module
@pytest.mark.parametrize("scenes", [None, 3])
def test_cuda_calls_bin_into_a_workspace_when_the_lists_are_empty(monkeypatch, scenes):
    _no_gpu(monkeypatch)  # lowered for CUDA where no GPU is: the lists are empty
    pairs, binning = _binning_bytes(scenes)
    calls = _calls(_lowered("cuda", scenes=scenes))
    for target, results in (("diffbmp_forward", 5), ("diffbmp_backward", 8)):
        (types, line), = calls[target]
        assert len(types) == results and types[-1] == binning, (target, types)
        assert _capacity(line) == pairs


@needs_cuda_module
def test_cuda_pair_budget_from_the_environment(monkeypatch):
    _gpu(monkeypatch)
    monkeypatch.setenv(lowering.MAX_PAIRS_ENV, "0")
    calls = _calls(_lowered("cuda"))
    assert _capacity(calls["diffbmp_forward"][0][1]) == 0
    monkeypatch.setenv(lowering.MAX_PAIRS_ENV, "77")
    assert _capacity(_calls(_lowered("cuda"))["diffbmp_backward"][0][1]) == 77
    for bad in ("-1", "lots", "2.5"):
        monkeypatch.setenv(lowering.MAX_PAIRS_ENV, bad)
        with pytest.raises(ValueError, match=lowering.MAX_PAIRS_ENV):
            _lowered("cuda")
    # Without a GPU nothing reads it.
    _no_gpu(monkeypatch)
    assert "diffbmp_forward" in _calls(_lowered("cpu"))


def test_pair_capacity():
    big = 1 << 27
    assert lowering.pair_capacity(100, 9, big) == 900  # every pair
    assert lowering.pair_capacity(1000, 16384, big) == 1 << 22  # at least 2^22
    assert lowering.pair_capacity(100_000, 16384, big) == 64 * 100_000  # 64 tiles each
    assert lowering.pair_capacity(100_000, 16384, 1000) == 1000  # the budget
    assert lowering.pair_capacity(10**9, 10**6, 2**40) == 2**31 - 1  # int32 indices
    assert lowering.pair_capacity(0, 100, big) == 0
    with pytest.raises(ValueError, match="primitives"):
        lowering.pair_capacity(-1, 9, big)
    with pytest.raises(TypeError, match="tiles_per_scene"):
        lowering.pair_capacity(100, 9.5, big)
    with pytest.raises(ValueError, match="budget"):
        lowering.pair_capacity(100, 9, -5)


@needs_cuda_module
def test_workspace_bytes_cover_every_part():
    import _diffbmp_jax_kernels.cuda as module
    base = module.workspace_bytes(1000, 1024, 10_000)
    # Prims (40 B) + rectangles (16 B) per primitive, 8 + 8 + 8 + 4 B per tile, 8 B per pair.
    assert base >= 1000 * 56 + 1024 * 28 + 10_000 * 8
    assert module.workspace_bytes(2000, 1024, 10_000) > base
    assert module.workspace_bytes(1000, 2048, 10_000) > base
    assert module.workspace_bytes(1000, 1024, 20_000) - base >= 80_000 - 2 * 256  # parts 256-aligned
    assert module.workspace_bytes(0, 1, 0) > 0
    assert registry.cuda_workspace_bytes(1000, 1024, 10_000) == base
    for name, args in (("primitives", (-1, 1, 1)), ("tiles", (1, -1, 1)), ("pairs", (1, 1, -2))):
        with pytest.raises(ValueError, match=name):
            registry.cuda_workspace_bytes(*args)


def test_eager_call_equals_jit():
    # On the CPU, whose kernels are deterministic (a GPU's backward sums with float atomics).
    with jax.default_device(jax.devices("cpu")[0]):
        params, atlas, template = _scene(seed=3)
        eager = jax.grad(_loss)(params, atlas, template)
        jitted = jax.jit(jax.grad(_loss))(params, atlas, template)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
