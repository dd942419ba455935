"""What the fitting defaults must achieve: quality per iteration, the canvas they pick, mosaics.

Nothing here is timed; the floors are PSNRs after a fixed number of steps (the
full comparison with the paper's code is ``benchmarks/quality.py``).
"""

from pathlib import Path
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

import diffbmp_jax as db

DATA = Path(__file__).parent / "data"


def _painting():
    """A 96x116 crop-free resize of the benchmark's Van Gogh self-portrait (public domain)."""
    return np.asarray(Image.open(DATA / "vangogh1_96.jpg").convert("RGB"), np.float32) / 255


def test_textured_stamp_reaches_its_floor_in_60_steps():
    """An opaque JPG stamp (ink on paper, its darkness the mask): 0.1.0's defaults reached
    15.0-15.6 dB here over three seeds, today's 26.6-26.7 dB."""
    atlas = db.load_stamps([str(DATA / "fingerprint.jpg")], size=64)
    r = db.fit(_painting(), atlas, num_primitives=150, steps=60, key=0, progress=False)
    assert r.psnr > 25.5


def test_opaque_targets_get_the_plain_canvas_transparent_ones_noise():
    target = np.full((20, 24, 3), 0.4, np.float32)
    atlas = db.Atlas.from_arrays(np.ones((1, 8, 8), np.float32))
    assert db.FitConfig().background == "auto"
    opaque = db.fit(target, atlas, num_primitives=4, steps=0, key=0, progress=False)
    assert opaque.config.background == "white"  # the output background
    black = db.fit(target, atlas, num_primitives=4, steps=0, key=0, progress=False, output_background="black")
    assert black.config.background == "black"
    rgba = np.concatenate([target, np.ones((20, 24, 1), np.float32)], -1)
    assert db.fit(rgba, atlas, num_primitives=4, steps=0, key=0, progress=False).config.background == "white"
    rgba[:, 12:, 3] = 0.0
    assert db.fit(rgba, atlas, num_primitives=4, steps=0, key=0, progress=False).config.background == "noise"
    chosen = db.fit(target, atlas, num_primitives=4, steps=0, key=0, progress=False, background="noise")
    assert chosen.config.background == "noise"  # a user's choice stays


def test_transparent_target_is_left_uncovered_where_it_is_transparent():
    """Left half an opaque blue, right half transparent: over fresh noise each step, only
    leaving the right half uncovered matches it; the result is judged over white."""
    h, w = 24, 32
    rgba = np.zeros((h, w, 4), np.float32)
    rgba[:, : w // 2] = (0.1, 0.2, 0.8, 1.0)
    rgba[:, w // 2:, 3] = 0.0
    yy, xx = np.mgrid[-1:1:16j, -1:1:16j]
    atlas = db.Atlas.from_arrays((xx ** 2 + yy ** 2 < 0.8).astype(np.float32)[None])
    r = db.fit(rgba, atlas, num_primitives=40, steps=120, key=1, progress=False)
    c, a = db.render(r.params, atlas, height=h, width=w, template=r.template, antialias=True)
    a = np.asarray(a)
    assert a[:, : w // 2 - 3].mean() > 0.8 and a[:, w // 2 + 3:].mean() < 0.15
    # The final image and its PSNR are against the target over the output background (white).
    over_white = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
    assert float(db.psnr(r.image, over_white)) == pytest.approx(r.psnr, abs=1e-3)


def _solid_atlas(colors, size=8):
    colors = np.asarray(colors, np.float32)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    disc = (xx ** 2 + yy ** 2 < 0.9).astype(np.float32)
    mask = np.broadcast_to(disc, (len(colors), size, size)).copy()
    rgb = np.broadcast_to(colors[:, None, None, :], (len(colors), size, size, 3)).copy()
    return db.Atlas.from_arrays(mask, rgb)


def _quadrants(h=32, w=32):
    """Four coloured quadrants: red, green, blue, yellow."""
    t = np.zeros((h, w, 3), np.float32)
    t[: h // 2, : w // 2] = (0.9, 0.1, 0.1)
    t[: h // 2, w // 2:] = (0.1, 0.8, 0.2)
    t[h // 2:, : w // 2] = (0.1, 0.2, 0.9)
    t[h // 2:, w // 2:] = (0.9, 0.85, 0.1)
    return t


def test_mosaic_uses_every_stamp_that_suits_a_region():
    """Six stamps keep their own colours: four match one quadrant each, two (magenta, cyan)
    match none. Every visible primitive is one of the four, and each of the four is shown."""
    colors = [(1, 0, 1), (0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0, 1, 1), (0.1, 0.2, 0.9), (0.9, 0.85, 0.1)]
    atlas = _solid_atlas(colors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the palette covers the target: no warning
        r = db.fit(_quadrants(), atlas, num_primitives=48, steps=40, key=2, progress=False, templates="color",
                   color_blend=1.0)
    visible = np.asarray(jax.nn.sigmoid(r.params.opacity_logit)) > r.config.prune_opacity
    used = set(np.asarray(r.template)[visible].tolist())
    assert used == {1, 2, 4, 5}
    assert r.psnr > 18.0


def test_mosaic_warns_when_the_palette_cannot_cover_the_target():
    atlas = _solid_atlas([(0.9, 0.1, 0.1), (0.1, 0.8, 0.2)])  # no blue, no yellow
    with pytest.warns(UserWarning, match=r"cannot reproduce \d+% of the target") as caught:
        db.fit(_quadrants(), atlas, num_primitives=16, steps=0, key=0, progress=False, templates="color",
               color_blend=1.0)
    assert caught[0].filename == __file__  # the warning points at the caller of fit
    fraction, colour = db.templates.palette_gap(atlas, _quadrants())
    assert fraction == pytest.approx(0.5, abs=0.02)  # the blue and the yellow quadrant
    np.testing.assert_allclose(colour, (0.1, 0.2, 0.9), atol=1e-6)  # blue is the farthest
    # Tinted stamps can take any colour: no warning below color_blend=1.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        db.fit(_quadrants(), atlas, num_primitives=16, steps=0, key=0, progress=False, color_blend=0.5)
    with pytest.raises(ValueError, match="tolerance"):
        db.templates.palette_gap(atlas, _quadrants(), tolerance=-1)
