"""How the library compiles its own programs: filter matrices, compiler options, nested calls."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from diffbmp_jax.fitting import init
from diffbmp_jax.rendering import blur, compiling


@pytest.mark.parametrize("mode", ["same", "reflect"])
@pytest.mark.parametrize("n,radius,sigma", [(37, 5, 2.0), (37, 40, 9.0), (4, 3, 1.5), (9, 0, 0.0)])
def test_filter_matrix_is_the_shifted_slice_filter(mode, n, radius, sigma):
    """F @ x equals gaussian_filter along that axis (reflect falls back to edge where n <= radius)."""
    x = np.random.default_rng(n + radius).uniform(size=(n, 6)).astype(np.float32)
    want = blur.gaussian_filter(jnp.asarray(x), sigma, radius, axes=(0,), mode=mode)
    got = blur.filter_matrix(n, sigma, radius, mode) @ x
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        blur.filter_matrix(n, sigma, radius, "valid")


def test_structure_maps_match_the_filtered_definition():
    """The maps' smoothing (two products) is the separable Gaussian of their definition."""
    t = np.random.default_rng(0).uniform(size=(24, 30, 3)).astype(np.float32)
    maps = init.structure_maps(t, 40)
    lum = t @ np.array([0.299, 0.587, 0.114], np.float32)
    p = np.pad(lum, ((0, 1), (0, 1)), mode="edge")
    gx, gy = p[:-1, 1:] - p[:-1, :-1], p[1:, :-1] - p[:-1, :-1]
    sig = min(max(1.0, 0.5 * init.base_scale(24, 30, 40)), 3.0)
    r = min(blur.kernel_radius(sig), 30 // 2 + 1)
    smooth = lambda a: np.asarray(blur.gaussian_filter(jnp.asarray(a), sig, r, axes=(0, 1), mode="reflect"))  # noqa: E731
    jxx, jxy, jyy = smooth(gx * gx), smooth(gx * gy), smooth(gy * gy)
    np.testing.assert_allclose(np.asarray(maps["angle"]), -0.5 * np.arctan2(2 * jxy, jxx - jyy) + 0.5 * np.pi,
                               atol=1e-4)
    grad = np.sqrt(jxx + jyy)
    std = np.sqrt(np.maximum(smooth(lum * lum) - smooth(lum) ** 2, 0.0))
    detail = grad / (grad.mean() + 1e-8) + std / (std.mean() + 1e-8)
    detail = np.clip(detail / (np.percentile(detail, 99.0) + 1e-8), 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(maps["detail"]), detail, atol=1e-4)


def test_library_programs_run_inside_a_callers_trace():
    """A function compiled with the library's options also runs under jit, vmap and grad."""
    t = np.random.default_rng(1).uniform(size=(2, 16, 20, 3)).astype(np.float32)
    top = [init.structure_maps(t[i], 10)["scale"] for i in range(2)]
    under_jit = jax.jit(lambda a: init.structure_maps(a, 10)["scale"])(t[0])
    under_vmap = jax.vmap(lambda a: init.structure_maps(a, 10)["scale"])(t)
    np.testing.assert_allclose(np.asarray(under_jit), np.asarray(top[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(under_vmap), np.stack(top), atol=1e-5)
    g = jax.grad(lambda a: jnp.sum(init.structure_maps(a, 10)["angle"]))(jnp.asarray(t[0]))
    assert g.shape == t[0].shape and np.all(np.isfinite(np.asarray(g)))


def test_compiler_options_leave_a_users_xla_flags_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=4 --xla_dump_to=/tmp/x")
    assert compiling.options_from_env() == {"xla_gpu_enable_triton_gemm": False}
    monkeypatch.setenv("XLA_FLAGS", "")
    assert compiling.options_from_env() == {"xla_gpu_autotune_level": 0, "xla_gpu_enable_triton_gemm": False}


def test_jit_keeps_static_arguments_and_lowering():
    @compiling.jit
    def bare(x):
        return x + 1

    @compiling.jit(static_argnums=1)
    def scaled(x, k: int):
        return x * k

    assert float(bare(1.0)) == 2.0 and float(scaled(2.0, 3)) == 6.0
    assert "multiply" in scaled.lower(2.0, 3).as_text()
    assert float(jax.jit(lambda x: scaled(x, 4))(1.5)) == 6.0


@pytest.mark.parametrize("mode", ["same", "reflect"])
def test_banded_product_is_the_full_product(mode):
    """The host maps multiply only each filter matrix's band; blocks of 8 rows, edges included."""
    n, radius = 61, 5
    f = blur.filter_matrix(n, 2.0, radius, mode)
    x = np.random.default_rng(7).uniform(size=(3, n, 4)).astype(np.float32)
    np.testing.assert_allclose(init.banded_product(f, x, radius, block=8), f @ x, atol=1e-6)


def test_smooth_last_two_is_the_separable_filter():
    """Respawn's and the maps' smoothing (two products) equals gaussian_filter over the last two axes."""
    x = np.random.default_rng(9).uniform(size=(3, 21, 34)).astype(np.float32)
    want = blur.gaussian_filter(jnp.asarray(x), 3.0, 9, axes=(1, 2), mode="reflect")
    np.testing.assert_allclose(np.asarray(blur.smooth_last_two(jnp.asarray(x), 3.0, 9)), np.asarray(want), atol=1e-6)


def test_the_host_helpers_name_their_bad_arguments():
    from diffbmp_jax.fitting.loop import compile_beside
    from diffbmp_jax.fitting.optim import host_theta
    with pytest.raises(ValueError, match="radius"):
        blur.filter_matrix(8, 1.0, -1)
    with pytest.raises(ValueError, match="^n "):
        blur.filter_matrix(0, 1.0, 2)
    with pytest.raises(ValueError, match="sigma"):
        blur.filter_matrix(8, float("nan"), 2)
    with pytest.raises(ValueError, match="x must have"):
        blur.smooth_last_two(jnp.ones(5), 1.0, 2)
    with pytest.raises(ValueError, match="target must have shape"):
        init.host_structure_maps(np.zeros((6, 6)), 4)
    with pytest.raises(ValueError, match="target must have shape"):
        init.structure_maps(np.zeros((6, 6, 4)), 4)
    with pytest.raises(ValueError, match="num must be a positive int"):
        init.host_structure_maps(np.zeros((6, 6, 3)), 0)
    with pytest.raises(ValueError, match="matrix must be"):
        init.banded_product(np.eye(4, dtype=np.float32), np.ones((5, 2), np.float32), 1)
    with pytest.raises(TypeError, match="key"):
        init.host_rng("seed")
    with pytest.raises(ValueError, match="stream"):
        init.host_subkey(0, -1)
    with pytest.raises(TypeError, match="p must be"):
        host_theta({"xy": 0}, 1.0)
    with pytest.raises(TypeError, match="fn must be callable"):
        compile_beside(3)
