"""Losses and metrics against straightforward numpy computations."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from diffbmp_jax.fitting import losses, metrics


def _imgs(seed=0, h=20, w=17):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(h, w, 3)).astype(np.float32), rng.uniform(size=(h, w, 3)).astype(np.float32)


def _np_ssim(x, y):
    """Textbook SSIM: 11-tap Gaussian window (std 1.5), valid region, data range 1."""
    i = np.arange(-5, 6)
    g = np.exp(-i ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    win = np.outer(g, g)
    h, w, c = x.shape

    def filt(a):
        out = np.zeros((h - 10, w - 10, c))
        for r in range(h - 10):
            for q in range(w - 10):
                out[r, q] = np.tensordot(win, a[r:r + 11, q:q + 11], axes=([0, 1], [0, 1]))
        return out

    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx ** 2, filt(y * y) - my ** 2, filt(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))


def test_mse_l1_psnr_match_numpy():
    a, b = _imgs()
    d = a.astype(np.float64) - b
    np.testing.assert_allclose(losses.mse(a, b), np.mean(d ** 2), rtol=1e-5)
    np.testing.assert_allclose(losses.l1(a, b), np.mean(np.abs(d)), rtol=1e-5)
    np.testing.assert_allclose(metrics.psnr(a, b), 10 * np.log10(1 / np.mean(d ** 2)), rtol=1e-5)


def test_weighted_losses_match_numpy():
    a, b = _imgs(1)
    wm = np.random.default_rng(2).uniform(size=a.shape[:2]).astype(np.float32)
    d2 = (a.astype(np.float64) - b) ** 2
    want = np.sum(d2 * wm[..., None]) / (3 * np.sum(wm))
    np.testing.assert_allclose(losses.mse(a, b, losses.check_weight_mask(wm, *a.shape[:2])), want, rtol=1e-5)
    ones = losses.check_weight_mask(np.ones(a.shape[:2]), *a.shape[:2])
    np.testing.assert_allclose(losses.l1(a, b, ones), losses.l1(a, b), rtol=1e-6)


def test_ssim_matches_numpy_and_identity():
    a, b = _imgs(3)
    b = np.clip(0.6 * a + 0.4 * b, 0, 1)  # correlated, so SSIM is well inside (0, 1)
    np.testing.assert_allclose(metrics.ssim(a, b), _np_ssim(a, b), rtol=1e-4)
    assert float(metrics.ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(losses.ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_combined_loss_and_gradient():
    a, b = _imgs(4)
    want = 0.5 * losses.mse(a, b) + 2.0 * losses.l1(a, b) + 0.3 * losses.ssim_loss(a, b)
    got = losses.combined_loss(a, b, mse_weight=0.5, l1_weight=2.0, ssim_weight=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    g = jax.grad(lambda x: losses.combined_loss(x, b, l1_weight=1.0, ssim_weight=1.0))(jnp.asarray(a))
    assert g.shape == a.shape and bool(jnp.all(jnp.isfinite(g)))


def test_ssim_small_images_shrink_window():
    a, b = _imgs(5, h=6, w=6)
    assert np.isfinite(float(metrics.ssim(a, b)))


@pytest.mark.parametrize("shape", [(20, 16), (19, 17, 1), (20, 17, 2)])
def test_weight_mask_shape_mismatch_names_argument(shape):
    with pytest.raises(ValueError, match="weight_mask"):
        losses.check_weight_mask(np.ones(shape), 20, 17)


def test_weight_mask_bad_values():
    with pytest.raises(ValueError, match="weight_mask"):
        losses.check_weight_mask(-np.ones((4, 4)), 4, 4)
    with pytest.raises(ValueError, match="weight_mask"):
        losses.check_weight_mask(np.zeros((4, 4)), 4, 4)


@pytest.mark.parametrize("shape", [(40, 33, 3), (7, 9, 3), (1, 5, 1)])
def test_host_ssim_equals_the_jax_ssim(shape):
    """A fit's closing SSIM is computed on the host (nothing to compile): the same value as ssim()."""
    from diffbmp_jax.fitting.metrics import score_ssim
    rng = np.random.default_rng(3)
    a = rng.uniform(size=shape).astype(np.float32)
    b = np.clip(a + 0.1 * rng.normal(size=shape), 0, 1).astype(np.float32)
    assert abs(score_ssim(a, b) - float(losses.ssim(jnp.asarray(a), jnp.asarray(b)))) < 1e-5
    assert abs(score_ssim(a, a) - 1.0) < 1e-6
