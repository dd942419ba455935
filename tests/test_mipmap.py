"""Antialiased sampling (render(..., antialias=True)): prefiltered levels chosen by on-screen size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.rendering import blur, registry, mipmap

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not registry.cuda_available(),
                                                                         reason="CUDA kernels not built or no GPU")])


def stripes(size=64, period=2):
    """A square of vertical stripes one texel wide: all detail, mean coverage 1/2."""
    xx = np.arange(size)[None, :].repeat(size, 0)
    return db.Atlas.from_arrays(((xx // (period // 2)) % 2).astype(np.float32)[None])


def test_levels_and_pyramid():
    assert [mipmap.num_levels(s) for s in (2, 4, 8, 16, 64, 128, 100)] == [1, 1, 2, 3, 5, 6, 5]
    rng = np.random.default_rng(0)
    mask = jnp.asarray(rng.random((2, 16, 16)), jnp.float32)
    rgb = jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32)
    m, c = mipmap.pyramid(mask, rgb, 3)
    assert m.shape == (6, 16, 16) and c.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(m[0::3], mask)  # level 0 is the bitmap itself
    np.testing.assert_array_equal(c[0::3], rgb)
    # Each level is smoother than the one below it (texel variance falls), mean kept.
    var = np.asarray(m).reshape(2, 3, -1).var(-1)
    assert np.all(np.diff(var, axis=1) < 0)
    np.testing.assert_allclose(np.asarray(m).reshape(2, 3, -1).mean(-1), np.asarray(mask).reshape(2, 1, -1).mean(-1)
                               .repeat(3, 1), atol=0.03)
    assert np.all((np.asarray(m) >= 0) & (np.asarray(m) <= 1))


@pytest.mark.parametrize("n_in,n_out,antialias", [(64, 16, True), (64, 16, False), (16, 64, False),
                                                   (100, 25, True), (5, 1, True), (1, 7, False)])
def test_resize_matrix_is_jax_image_resize(n_in, n_out, antialias):
    x = np.random.default_rng(1).random((n_in, 3))
    want = jax.image.resize(jnp.asarray(x, jnp.float32), (n_out, 3), method="linear", antialias=antialias)
    np.testing.assert_allclose(mipmap.resize_matrix(n_in, n_out, antialias) @ x, np.asarray(want), atol=1e-6)


def test_pyramid_levels_are_resize_down_and_up():
    """Each level is the bitmap resized down by 2**l (antialiased) and back up, as jax.image.resize does it."""
    rng = np.random.default_rng(2)
    mask = jnp.asarray(rng.random((3, 24, 20)), jnp.float32)
    rgb = jnp.asarray(rng.random((3, 24, 20, 3)), jnp.float32)
    m, c = mipmap.pyramid(mask, rgb, 4)
    stack = jnp.concatenate([mask[..., None], rgb * mask[..., None]], -1)
    for level in range(1, 4):
        small = (3, max(1, round(24 / 2 ** level)), max(1, round(20 / 2 ** level)), 4)
        lv = jax.image.resize(jax.image.resize(stack, small, "linear", antialias=True), stack.shape, "linear",
                              antialias=False)
        np.testing.assert_allclose(np.asarray(m[level::4]), np.clip(np.asarray(lv[..., 0]), 0, 1), atol=2e-6)
        want = np.clip(np.asarray(lv[..., 1:]) / np.maximum(np.asarray(lv[..., :1]), 1e-6), 0, 1)
        np.testing.assert_allclose(np.asarray(c[level::4]), want, atol=2e-5)


def test_mask_pyramid_levels_are_resize_down_and_up():
    """Masks alone (the product path of fits without color_blend): every level as jax.image.resize makes it."""
    rng = np.random.default_rng(3)
    mask = jnp.asarray(rng.random((3, 24, 20)), jnp.float32)
    m, rgb = mipmap.pyramid(mask, None, 4)
    assert rgb is None and m.shape == (12, 24, 20)
    np.testing.assert_array_equal(m[0::4], mask)  # level 0 exactly the bitmap
    for level in range(1, 4):
        small = (3, max(1, round(24 / 2 ** level)), max(1, round(20 / 2 ** level)))
        lv = jax.image.resize(jax.image.resize(mask, small, "linear", antialias=True), mask.shape, "linear",
                              antialias=False)
        np.testing.assert_allclose(np.asarray(m[level::4]), np.clip(np.asarray(lv), 0, 1), atol=2e-6)


@pytest.mark.parametrize("sigma", [0.0, 0.4, 1.0, 2.5])
@pytest.mark.parametrize("with_rgb", [False, True])
def test_blur_folded_into_the_levels_equals_blurring_first(sigma, with_rgb):
    """A MaskBlur given to the pyramid (one matrix per level and axis for masks alone) gives the levels
    of the masks blurred by gaussian_filter first; colours stay unblurred at level 0."""
    rng = np.random.default_rng(4)
    mask = jnp.asarray(rng.random((3, 24, 20)), jnp.float32)
    rgb = jnp.asarray(rng.random((3, 24, 20, 3)), jnp.float32) if with_rgb else None
    radius = blur.kernel_radius(2.5)
    sharp = jnp.clip(blur.gaussian_filter(mask, sigma, radius, mode="same"), 0.0, 1.0)
    want_m, want_c = mipmap.pyramid(sharp, rgb, 4)
    got_m, got_c = jax.jit(lambda s: mipmap.pyramid(mask, rgb, 4, blur.MaskBlur(s, radius)))(jnp.float32(sigma))
    np.testing.assert_allclose(np.asarray(got_m), np.asarray(want_m), atol=1e-6)
    if with_rgb:
        np.testing.assert_allclose(np.asarray(got_c), np.asarray(want_c), atol=1e-5)
        np.testing.assert_array_equal(got_c[0::4], rgb)
    if sigma > 0:  # the blur did something: level 0 is no longer the bitmap
        assert float(jnp.abs(got_m[0::4] - mask).max()) > 0.05


def test_blur_matrix_is_gaussian_filter_for_a_traced_sigma():
    x = np.random.default_rng(5).random((17, 4)).astype(np.float32)
    for sigma, radius in ((0.0, 3), (0.7, 3), (1.5, 5), (3.0, 12)):
        b = jax.jit(lambda s: blur.blur_matrix(17, s, radius))(jnp.float32(sigma))
        np.testing.assert_allclose(np.asarray(b), blur.filter_matrix(17, sigma, radius, "same"), atol=1e-7)
        want = blur.gaussian_filter(jnp.asarray(x), sigma, radius, axes=(0,), mode="same")
        np.testing.assert_allclose(np.asarray(b) @ x, np.asarray(want), atol=1e-6)
    m = np.random.default_rng(6).random((3, 5, 17)).astype(np.float32)  # times_blur of any constant m
    got = jax.jit(lambda s: blur.times_blur(m, s, 4))(jnp.float32(1.3))
    np.testing.assert_allclose(np.asarray(got), m @ blur.filter_matrix(17, 1.3, 4, "same"), atol=1e-6)
    np.testing.assert_allclose(np.asarray(blur.gaussian_kernel1d(1.3, 4)), blur.filter_matrix(9, 1.3, 4)[4], atol=1e-7)


@pytest.mark.parametrize("antialias", [False, True])
def test_render_with_mask_blur_draws_the_blurred_atlas(antialias):
    """render(mask_blur=...) is the render of the atlas blurred beforehand, with and without levels."""
    rng = np.random.default_rng(6)
    atlas = db.Atlas.from_arrays(rng.random((2, 16, 16)).astype(np.float32))
    params = db.Primitives.create(xy=rng.uniform(4, 28, (12, 2)), scale=rng.uniform(2, 9, 12),
                                  rotation=rng.uniform(-3, 3, 12), opacity=0.7, color=rng.random((12, 3)))
    mb = blur.MaskBlur(jnp.float32(1.2), 4)
    sharp = db.Atlas.from_arrays(np.asarray(jnp.clip(blur.gaussian_filter(atlas.mask, 1.2, 4), 0, 1)))
    kw = dict(height=32, width=32, backend="reference", antialias=antialias)
    c0, a0 = db.render(params, sharp, **kw)
    c1, a1 = db.render(params, atlas, mask_blur=mb, **kw)
    np.testing.assert_allclose(np.asarray(c1), np.asarray(c0), atol=2e-6)
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a0), atol=2e-6)
    c2, _ = db.render(params, atlas, mask_blur=blur.MaskBlur(0.0, 4), **kw)  # sigma 0: the sharp atlas
    np.testing.assert_allclose(np.asarray(c2), np.asarray(db.render(params, atlas, **kw)[0]), atol=1e-6)


def test_mask_blur_argument_is_checked():
    atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))
    params = db.Primitives.create(xy=[[4.0, 4.0]], scale=2.0)
    kw = dict(height=8, width=8, backend="reference")
    with pytest.raises(TypeError, match="mask_blur must be None or a diffbmp_jax.MaskBlur"):
        db.render(params, atlas, mask_blur=1.0, **kw)
    with pytest.raises(ValueError, match="mask_blur.radius must be a Python int >= 0"):
        db.render(params, atlas, mask_blur=db.MaskBlur(1.0, 2.5), **kw)
    with pytest.raises(ValueError, match="mask_blur.radius must be a Python int >= 0"):
        db.render(params, atlas, mask_blur=db.MaskBlur(1.0, -1), **kw)
    with pytest.raises(ValueError, match="mask_blur.sigma must be a finite number >= 0"):
        db.render(params, atlas, mask_blur=db.MaskBlur(float("nan"), 3), **kw)
    with pytest.raises(ValueError, match="mask_blur.sigma must be a finite number >= 0"):
        db.render(params, atlas, mask_blur=db.MaskBlur(-0.5, 3), **kw)
    with pytest.raises(ValueError, match="mask_blur.sigma must be a scalar"):
        db.render(params, atlas, mask_blur=db.MaskBlur(np.ones(2), 3), **kw)


def test_level_template_follows_the_size_on_screen():
    # A 64-texel bitmap spanning 64, 32, 16, 8 and 1 pixels: minification 1, 2, 4, 8, 64.
    scale = jnp.array([32.0, 16.0, 8.0, 4.0, 0.5, 100.0])
    t = mipmap.level_template(scale, jnp.array([0, 1, 0, 1, 0, 1]), 64, 5, 2)
    np.testing.assert_array_equal(t, [0 * 5 + 0, 1 * 5 + 1, 0 * 5 + 2, 1 * 5 + 3, 0 * 5 + 4, 1 * 5 + 0])
    # Ids outside [0, P) stay out of range, so the kernels keep them invisible.
    assert int(mipmap.level_template(jnp.array([8.0]), jnp.array([2]), 64, 5, 2)[0]) == -1


def _supersampled(params, atlas, h, w, k=8):
    """Ground truth coverage: plain point sampling on a k-times finer grid, box-averaged."""
    fine = db.Primitives(xy=params.xy * k + (k - 1) / 2, scale=params.scale * k, rotation=params.rotation,
                         opacity_logit=params.opacity_logit, color_logit=params.color_logit)
    _, a = db.render(fine, atlas, height=h * k, width=w * k, backend="reference")
    return np.asarray(a).reshape(h, k, w, k).mean((1, 3))


def test_small_detailed_stamp_matches_its_area_average():
    """Stripes of one texel drawn 8 times smaller than the bitmap: the plain sampler shows moiré,
    the antialiased one the flat half coverage that the stamp's area average gives."""
    atlas = stripes()
    params = db.Primitives.create(xy=[[15.3, 16.1]], scale=[4.0 * 2.5], rotation=[0.3], opacity=1.0,
                                  color=[[0, 0, 0]])
    h = w = 32
    truth = _supersampled(params, atlas, h, w)
    inside = truth > 0.3  # pixels well inside the stamp
    _, plain = db.render(params, atlas, height=h, width=w, backend="reference")
    _, smooth = db.render(params, atlas, height=h, width=w, backend="reference", antialias=True)
    err_plain = np.abs(np.asarray(plain) - truth)[inside].mean()
    err_smooth = np.abs(np.asarray(smooth) - truth)[inside].mean()
    assert err_smooth < 0.06 and err_plain > 3 * err_smooth


@pytest.mark.parametrize("backend", ["cpu", CUDA])
def test_kernels_match_reference_with_antialias(backend):
    rng = np.random.default_rng(1)
    n, h, w = 12, 24, 28
    atlas = db.Atlas.from_arrays(rng.random((3, 16, 16)).astype(np.float32),
                                 rng.random((3, 16, 16, 3)).astype(np.float32))
    params = db.Primitives.create(rng.uniform(3, [w - 3, h - 3], (n, 2)), rng.uniform(1.5, 9, n),
                                  rng.uniform(-3, 3, n), rng.uniform(0.3, 0.9, n), rng.random((n, 3)))
    template = jnp.asarray(rng.integers(0, 3, n), jnp.int32)

    def loss(p, a, be):
        c, al = db.render(p, a, height=h, width=w, template=template, color_blend=0.4, backend=be,
                          antialias=True, atlas_grad=True)
        return jnp.sum(db.composite(c, al, 0.5) * jnp.linspace(0, 1, w)[None, :, None])

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    ref = value_and_grad(params, atlas, "reference")
    got = value_and_grad(params, atlas, backend)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(ref[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    # The atlas gradient reaches the original bitmaps through the prefilter.
    assert float(jnp.abs(got[1][1].mask).sum()) > 0


def test_fit_config_and_export_follow_antialias(tmp_path):
    atlas = stripes(16)
    params = db.Primitives.create(xy=[[8.0, 8.0], [20.0, 12.0]], scale=[3.0, 6.0], rotation=[0.2, 1.0],
                                  opacity=0.9, color=[[0.1, 0.2, 0.9], [0.8, 0.1, 0.1]])
    assert db.FitConfig().antialias is True
    with pytest.raises(ValueError, match="config.antialias"):
        db.FitConfig(antialias="yes")
    from PIL import Image
    for aa in (False, True):
        path = db.export.export("png", tmp_path / f"a{aa}.png", params, atlas, height=16, width=28, antialias=aa)
        img = np.asarray(Image.open(path), np.float32) / 255
        c, a = db.render(params, atlas, height=16, width=28, antialias=aa)
        np.testing.assert_allclose(img, np.asarray(db.composite(c, a, 1.0)), atol=0.51 / 255 + 1e-6)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("colours", [False, True])
def test_prefiltered_atlas_renders_as_filtering_in_the_call(antialias, colours):
    """render(prefiltered=prefilter(...)) draws what render(mask_blur=...) draws, and its gradient
    reaches the atlas through the prefilter: the fit's steps filter their atlas ahead this way."""
    rng = np.random.default_rng(7)
    atlas = db.Atlas.from_arrays(rng.random((2, 16, 16)).astype(np.float32), rng.random((2, 16, 16, 3)))
    params = db.Primitives.create(xy=rng.uniform(4, 28, (12, 2)), scale=rng.uniform(1, 9, 12),
                                  rotation=rng.uniform(-3, 3, 12), opacity=0.7, color=rng.random((12, 3)))
    mb = blur.MaskBlur(jnp.float32(0.8), 3)
    kw = dict(height=32, width=32, backend="reference", antialias=antialias, color_blend=0.5 if colours else 0.0)
    rgb = atlas.rgb if colours else None

    def both(mask):
        a = db.Atlas(mask=mask, rgb=atlas.rgb)
        ahead = db.render(params, a, prefiltered=mipmap.prefilter(mask, rgb, mb, antialias), **kw)
        return ahead, db.render(params, a, mask_blur=mb, **kw)

    (c1, a1), (c0, a0) = both(atlas.mask)
    assert float(jnp.max(a0)) > 0.5  # something is drawn
    np.testing.assert_allclose(np.asarray(c1), np.asarray(c0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(a1), np.asarray(a0), atol=1e-6)
    g1, g0 = (jax.grad(lambda m, k=k: jnp.sum(both(m)[k][0] * np.linspace(0, 1, 3)))(atlas.mask) for k in (0, 1))
    assert float(jnp.max(jnp.abs(g0))) > 0
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g0), atol=1e-6)
    if antialias:  # 16 texels: three levels stacked per bitmap
        assert mipmap.prefilter(atlas.mask, rgb, mb, antialias).mask.shape == (2 * mipmap.num_levels(16), 16, 16)


def test_prefiltered_argument_is_checked():
    rng = np.random.default_rng(8)
    atlas = db.Atlas.from_arrays(rng.random((2, 16, 16)).astype(np.float32), rng.random((2, 16, 16, 3)))
    params = db.Primitives.create(xy=[[8.0, 8.0]], scale=4.0)
    kw = dict(height=16, width=16, backend="reference", antialias=True)
    levels = mipmap.prefilter(atlas.mask, None, None, True)
    with pytest.raises(TypeError, match="prefiltered must be None or a diffbmp_jax.rendering.mipmap.Prefiltered"):
        db.render(params, atlas, prefiltered=tuple(levels), **kw)
    with pytest.raises(ValueError, match="mask_blur must be None when prefiltered is given"):
        db.render(params, atlas, prefiltered=levels, mask_blur=blur.MaskBlur(1.0, 3), **kw)
    with pytest.raises(ValueError, match=r"prefiltered.mask must have shape \(2, 16, 16\)"):
        db.render(params, atlas, prefiltered=levels, **{**kw, "antialias": False})
    with pytest.raises(ValueError, match="prefiltered.rgb is None, but color_blend > 0"):
        db.render(params, atlas, prefiltered=levels, color_blend=0.5, **kw)
    with_rgb = mipmap.prefilter(atlas.mask, atlas.rgb, None, True)
    with pytest.raises(ValueError, match="prefiltered.rgb must have shape"):
        db.render(params, atlas, prefiltered=with_rgb._replace(rgb=with_rgb.rgb[:2]), color_blend=0.5, **kw)
