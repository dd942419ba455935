"""Template choice inside fit: colour-matched starts (mosaics) and periodic re-assignment."""

import jax
import numpy as np
import pytest

import diffbmp_jax as db
from fit_scenes import shape_atlas


def _solid_atlas(colors, size=8):
    colors = np.asarray(colors, np.float32)
    mask = np.ones((len(colors), size, size), np.float32)
    rgb = np.broadcast_to(colors[:, None, None, :], (len(colors), size, size, 3)).copy()
    return db.Atlas.from_arrays(mask, rgb)


def test_color_templates_pick_the_stamp_matching_the_target():
    """Left half red, right half blue: stamps keep their own colours (color_blend=1)."""
    target = np.zeros((24, 32, 3), np.float32)
    target[:, :16, 0] = 1.0
    target[:, 16:, 2] = 1.0
    atlas = _solid_atlas([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    r = db.fit(target, atlas, num_primitives=16, steps=0, key=jax.random.key(0), progress=False,
               templates="color", color_blend=1.0, init="grid")
    x = np.asarray(r.params.xy[:, 0])
    t = np.asarray(r.template)
    assert np.all(t[x < 12] == 1) and np.all(t[x > 20] == 2)
    assert not np.any(t == 0)  # nothing green in the target


def test_reassignment_switches_wrong_templates_and_lowers_the_loss():
    """Start every primitive on the wrong bitmap of a synthetic target drawn with known ones."""
    atlas = shape_atlas()
    n, h, w = 8, 32, 32
    rng = np.random.default_rng(3)
    truth = db.Primitives.create(rng.uniform(8, 24, (n, 2)), rng.uniform(5, 8, n), 0.0, 0.95,
                                 rng.uniform(0.05, 0.95, (n, 3)))
    true_t = np.arange(n) % 2
    c, a = db.render(truth, atlas, height=h, width=w, template=true_t, backend="reference")
    target = np.asarray(db.composite(c, a, 1.0))
    kw = dict(num_primitives=n, steps=20, key=jax.random.key(1), progress=False, log_every=5,
              background="white", prune_every=0, lr_xy=0.0, lr_scale=0.0, lr_rotation=0.0)
    wrong = (truth, 1 - true_t)
    fixed = db.fit(target, atlas, init_params=wrong, reassign_every=5, **kw)
    stuck = db.fit(target, atlas, init_params=wrong, **kw)
    assert sum(fixed.history["reassigned"]) > 0 and sum(stuck.history["reassigned"]) == 0
    assert np.mean(np.asarray(fixed.template) == true_t) >= 0.75
    assert fixed.psnr > stuck.psnr + 1.0


def test_bad_template_settings():
    atlas = shape_atlas()
    target = np.ones((16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="config.templates must be one of"):
        db.fit(target, atlas, num_primitives=4, steps=1, key=0, progress=False, templates="best")
    with pytest.raises(ValueError, match="config.reassign_every must be an int >= 0"):
        db.fit(target, atlas, num_primitives=4, steps=1, key=0, progress=False, reassign_every=-2)
    with pytest.raises(ValueError, match="needs an atlas with rgb"):
        db.fit(target, atlas, num_primitives=4, steps=1, key=0, progress=False, templates="color")
