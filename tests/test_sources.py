"""Atlas sources: raster files, SVG, text, emoji, folders/globs, load_stamps."""

import numpy as np
import pytest
from PIL import Image

import diffbmp_jax as db
from diffbmp_jax import stamps as S


def _save_rgba(path, arr):
    Image.fromarray((np.asarray(arr) * 255).round().astype(np.uint8), "RGBA").save(path)
    return str(path)


@pytest.fixture
def red_bar_png(tmp_path):
    # 20 wide x 10 high: an opaque red bar on transparency.
    a = np.zeros((10, 20, 4), np.float32)
    a[2:8, 2:18] = (1, 0, 0, 1)
    return _save_rgba(tmp_path / "bar.png", a)


@pytest.fixture
def circle_svg(tmp_path):
    p = tmp_path / "circle.svg"
    p.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" viewBox="0 0 40 20">'
                 '<circle cx="20" cy="10" r="10" fill="#00ff00"/></svg>')
    return str(p)


def test_png_alpha_keeps_aspect_and_colour(red_bar_png):
    atlas = S.load_stamps([red_bar_png], size=16)
    m, rgb = np.asarray(atlas.mask), np.asarray(atlas.rgb)
    assert m.shape == (1, 16, 16) and rgb.shape == (1, 16, 16, 3)
    # 20x10 fitted into 16x16 becomes 16x8, centred: rows 0..3 and 12..15 are padding.
    assert m[0, :4].max() == 0 and m[0, 12:].max() == 0
    assert m[0, 8, 8] > 0.9
    np.testing.assert_allclose(rgb[0][m[0] > 0.5], [[1, 0, 0]] * int((m[0] > 0.5).sum()), atol=1e-3)


def test_webp_alpha(tmp_path):
    a = np.zeros((12, 12, 4), np.float32)
    a[3:9, 3:9] = (0, 0, 1, 1)
    p = tmp_path / "sq.webp"
    Image.fromarray((a * 255).astype(np.uint8), "RGBA").save(p, lossless=True)
    atlas = S.load_stamps([str(p)], size=12)
    m = np.asarray(atlas.mask)[0]
    assert m[6, 6] > 0.99 and m[0, 0] == 0
    assert np.asarray(atlas.rgb)[0, 6, 6, 2] > 0.99


@pytest.fixture
def dark_disc_jpg(tmp_path):
    yy, xx = np.mgrid[:32, :32]
    img = np.full((32, 32, 3), 255, np.uint8)
    img[(xx - 15.5) ** 2 + (yy - 15.5) ** 2 < 100] = (20, 20, 200)
    p = tmp_path / "disc.jpg"
    Image.fromarray(img).save(p, quality=95)
    return str(p)


@pytest.mark.parametrize("rule", ["auto", "luminance", "background"])
def test_jpg_mask_rules_find_the_shape(dark_disc_jpg, rule):
    atlas = S.load_stamps([dark_disc_jpg], size=32, mask_rule=rule)
    m = np.asarray(atlas.mask)[0]
    assert m[16, 16] > 0.5  # the disc
    assert m[1, 1] < 0.05  # the white surround
    assert np.asarray(atlas.rgb)[0, 16, 16, 2] > 0.6  # keeps the disc's own colour (blue)


def test_a_large_jpeg_stamp_is_read_at_a_reduced_scale(tmp_path):
    """A photo many times the stamp's size decodes at a DCT scale (read_rgba's draft) and comes out
    as the full-size decode would, through load_images and load_stamps alike."""
    from diffbmp_jax.io.images import read_rgba
    from diffbmp_jax.stamps.raster import atlas_from_rgba, mask_from_rgba
    yy, xx = np.mgrid[-1:1:700j, -1:1:500j]
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx), 0.5 + 0.4 * np.cos(5 * yy), np.where(xx ** 2 + yy ** 2 < 0.6, 0.1, 0.9)], -1)
    path = tmp_path / "photo.jpg"
    Image.fromarray((img * 255).astype(np.uint8), "RGB").save(path, quality=95)
    small, _ = read_rgba(path, draft=32)
    assert small.shape[0] < 700 and min(small.shape[:2]) * 700 // 500 >= 32  # decoded smaller, not below 32
    full, has_alpha = read_rgba(path)
    assert full.shape == (700, 500, 4) and not has_alpha
    rgba = np.concatenate([full[..., :3], mask_from_rgba(full, False, "luminance", (1.0, 1.0, 1.0))[..., None]], -1)
    want = atlas_from_rgba([rgba], 16)
    for got in (S.load_images([str(path)], size=16, mask_rule="luminance"),
                db.load_stamps([str(path)], size=16, mask_rule="luminance")):
        np.testing.assert_allclose(np.asarray(got.mask), np.asarray(want.mask), atol=0.03)
        # colours where they show (premultiplied; near-transparent texels' colours are bled guesses),
        # within JPEG's chroma blur of the disc's hard edge
        err = np.asarray(got.rgb * got.mask[..., None]) - np.asarray(want.rgb * want.mask[..., None])
        assert np.abs(err).max() < 0.1 and 10 * np.log10(1.0 / np.mean(err ** 2)) > 38.0


def test_jpg_opaque_rule(dark_disc_jpg):
    m = np.asarray(S.load_stamps([dark_disc_jpg], size=32, mask_rule="opaque").mask)[0]
    assert m.min() > 0.99


def test_bad_mask_rule(dark_disc_jpg):
    with pytest.raises(ValueError, match="mask_rule"):
        S.load_stamps([dark_disc_jpg], size=16, mask_rule="magic")


def test_svg_rasterised(circle_svg):
    atlas = S.atlas_from_svg([circle_svg], size=32)
    m, rgb = np.asarray(atlas.mask)[0], np.asarray(atlas.rgb)[0]
    # 40x20 drawing -> 32x16 centred; the circle has radius 8 px at the centre.
    assert m[16, 16] > 0.99 and m[2, 16] == 0 and m[16, 2] == 0
    assert abs(m.sum() - np.pi * 8 ** 2) < 0.1 * np.pi * 8 ** 2
    np.testing.assert_allclose(rgb[16, 16], [0, 1, 0], atol=0.01)
    # load_stamps routes .svg files to the same rasteriser.
    np.testing.assert_allclose(np.asarray(S.load_stamps([circle_svg], size=32).mask)[0], m, atol=1e-6)


def test_svg_markup_string():
    a = S.atlas_from_svg(['<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                          '<rect width="10" height="10" fill="red"/></svg>'], size=8)
    assert np.asarray(a.mask).min() > 0.99


def test_svg_parse_error(tmp_path):
    bad = tmp_path / "bad.svg"
    bad.write_text("<svg this is not xml")
    with pytest.raises(ValueError, match="bad.svg"):
        S.load_stamps([str(bad)], size=16)


def test_corrupt_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="cannot read image"):
        S.load_stamps([str(bad)], size=16)


def test_text_chars_and_words():
    a = S.load_stamps(["text:HELLO"], size=24)
    assert a.mask.shape == (4, 24, 24)  # H, E, L, O: repeats removed
    m = np.asarray(a.mask)
    assert all(m[i].max() > 0.9 for i in range(4))
    assert not np.allclose(m[0], m[1])
    w = S.load_stamps(["text:word:HELLO WORLD HELLO"], size=24)
    assert w.mask.shape == (2, 24, 24)
    c = S.load_stamps(["text:char:AB"], size=24)
    assert c.mask.shape == (2, 24, 24)
    # The stored colour is the text colour (black by default).
    assert np.asarray(a.rgb)[0][m[0] > 0.5].max() < 0.05


def test_text_with_named_font():
    try:
        path = S.find_font("DejaVuSans-Bold.ttf")
    except ValueError:
        pytest.skip("DejaVu fonts are not installed")
    a = S.atlas_from_text("Ag", 20, font=path)
    b = S.atlas_from_text("Ag", 20)
    assert a.mask.shape == (2, 20, 20) and not np.allclose(np.asarray(a.mask), np.asarray(b.mask))


def test_unknown_font():
    with pytest.raises(ValueError, match="font"):
        S.load_stamps(["text:AB"], size=16, font="NoSuchFont-Regular-42.ttf")


def test_text_without_visible_chars():
    with pytest.raises(ValueError, match="text"):
        S.atlas_from_text("   ", 16)


def test_split_graphemes():
    assert S.split_graphemes("🌸🌼 👩\u200d💻🇯🇵1\ufe0f\u20e3👍🏽") == [
        "🌸", "🌼", "👩\u200d💻", "🇯🇵", "1\ufe0f\u20e3", "👍🏽"]


def test_emoji_without_colour_font_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(S, "find_emoji_font", lambda: None)
    with pytest.raises(RuntimeError, match="colour emoji font"):
        S.load_stamps(["emoji:🌸🌼"], size=16)


@pytest.mark.skipif(S.find_emoji_font() is None, reason="no colour emoji font installed")
def test_emoji_rendered_in_colour():
    a = S.load_stamps(["emoji:🌸🌼🌸"], size=24)
    assert a.mask.shape == (2, 24, 24)
    m, rgb = np.asarray(a.mask), np.asarray(a.rgb)
    for i in range(2):
        vis = rgb[i][m[i] > 0.5]
        assert len(vis) > 50
        # Colour, not grey: channels differ clearly somewhere.
        assert (vis.max(1) - vis.min(1)).mean() > 0.2


def test_folder_glob_and_mix(tmp_path, red_bar_png, circle_svg):
    d = tmp_path / "stamps"
    d.mkdir()
    for k in range(2):
        a = np.zeros((8, 8, 4), np.float32)
        a[k:k + 4, 2:6] = (0, 0, 0, 1)
        _save_rgba(d / f"s{k}.png", a)
    (d / "notes.txt").write_text("ignored")
    assert S.load_stamps([str(d)], size=8).num == 2
    assert S.load_stamps([str(d / "*.png")], size=8).num == 2
    mixed = S.load_stamps([red_bar_png, "text:AB", circle_svg, str(d)], size=8)
    assert mixed.num == 1 + 2 + 1 + 2
    assert isinstance(mixed, db.Atlas) and mixed.rgb is not None


def test_empty_folder_and_bad_specs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no"):
        S.load_stamps([str(empty)], size=8)
    with pytest.raises(ValueError, match="matched no files"):
        S.load_stamps([str(tmp_path / "*.png")], size=8)
    with pytest.raises(FileNotFoundError, match="no such"):
        S.load_stamps([str(tmp_path / "missing.png")], size=8)
    with pytest.raises(ValueError, match="specs"):
        S.load_stamps([], size=8)
    with pytest.raises(ValueError, match="size"):
        S.load_stamps(["text:A"], size=0)


def test_bleed_colors_fills_transparent_texels():
    a = np.zeros((6, 6, 4), np.float32)
    a[2:4, 2:4] = (0.2, 0.4, 0.6, 1.0)
    b = S.bleed_colors(a)
    np.testing.assert_allclose(b[..., :3], np.broadcast_to([0.2, 0.4, 0.6], (6, 6, 3)), atol=1e-6)
    np.testing.assert_array_equal(b[..., 3], a[..., 3])


def test_colour_blend_one_keeps_stamp_colours():
    """Mosaic mode: one opaque stamp drawn at its own resolution shows exactly the
    bitmap's colours (straight colour C / A == rgb at every texel centre)."""
    rng = np.random.default_rng(0)
    rgb = rng.random((1, 8, 8, 3)).astype(np.float32)
    atlas = db.Atlas.from_arrays(np.ones((1, 8, 8), np.float32), rgb)
    # Centre (3.5, 3.5), half-extent 4 px: pixel (x, y) samples texel (x, y) exactly.
    p = db.Primitives.create(xy=[[3.5, 3.5]], scale=[4.0], opacity=0.999, color=[[0.1, 0.9, 0.1]])
    c, a = db.render(p, atlas, height=8, width=8, color_blend=1.0, backend="auto")
    c, a = np.asarray(c), np.asarray(a)
    np.testing.assert_allclose(a, 0.99 * 0.999, rtol=1e-5)
    np.testing.assert_allclose(c / a[..., None], rgb[0], atol=1e-5)
    # Over any background the stamp shows its own colours up to 1 - A.
    img = np.asarray(db.composite(c, a, 1.0))
    np.testing.assert_allclose(img, rgb[0], atol=0.012)


def test_atlas_classmethods_match_source_functions(tmp_path):
    from diffbmp_jax import stamps
    a = db.stamps.atlas_from_text("HI", size=16)
    b = stamps.atlas_from_text("HI", size=16)
    np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
    assert float(a.mask.max()) > 0.5
    c = db.load_stamps(["text:HI"], size=16)
    np.testing.assert_array_equal(np.asarray(c.mask), np.asarray(b.mask))
