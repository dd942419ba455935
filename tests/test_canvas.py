"""Backgrounds of the canvas (diffbmp_jax.canvas)."""

import numpy as np
import jax

from diffbmp_jax.fitting.canvas import background


def test_noise_is_uniform_on_256_levels():
    noise = np.asarray(background("noise", jax.random.key(0), 256, 192, None))
    assert noise.shape == (256, 192, 3) and noise.dtype == np.float32
    levels = noise * 256 - 0.5
    np.testing.assert_array_equal(levels, np.round(levels))  # exactly the centres (k + 1/2) / 256
    k = np.round(levels).astype(int)
    assert k.min() == 0 and k.max() == 255
    for c in range(3):  # each channel uniform over the levels (within 5 sigma of a binomial count)
        counts = np.bincount(k[..., c].ravel(), minlength=256)
        expect = k[..., c].size / 256
        assert np.all(np.abs(counts - expect) < 5 * np.sqrt(expect)), c
    # channels of a pixel are independent bytes, not copies
    assert abs(np.corrcoef(k[..., 0].ravel(), k[..., 1].ravel())[0, 1]) < 0.02
    assert abs(np.corrcoef(k[..., 1].ravel(), k[..., 2].ravel())[0, 1]) < 0.02


def test_noise_follows_the_key():
    a = np.asarray(background("noise", jax.random.key(1), 32, 32, None))
    b = np.asarray(background("noise", jax.random.key(1), 32, 32, None))
    c = np.asarray(background("noise", jax.random.key(2), 32, 32, None))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.9


def test_named_colours_and_image():
    np.testing.assert_array_equal(np.asarray(background("white", None, 4, 4, None)), [1, 1, 1])
    np.testing.assert_array_equal(np.asarray(background("black", None, 4, 4, None)), [0, 0, 0])
    np.testing.assert_allclose(np.asarray(background((0.2, 0.4, 0.6), None, 4, 4, None)), [0.2, 0.4, 0.6])
    img = np.full((4, 4, 3), 0.3, np.float32)
    assert background("image", None, 4, 4, img) is img
