"""fit_regions: respawn chooses positions from the error inside each group's mask."""

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

import diffbmp_jax as db
from diffbmp_jax.cli import app as cli
from diffbmp_jax.tasks.regions import fit_regions

STAMPS = str(cli.ASSETS / "stamps")
H = W = 32


@pytest.fixture(scope="module")
def atlas():
    return db.stamps.load_images(STAMPS, size=16)


def test_respawn_lands_inside_mask_away_from_its_edge(atlas):
    # A 16 x 16 square region on a white canvas; the target is white inside it
    # and black outside, so the largest error by far lies outside the mask
    # (the group cannot paint there). Every primitive is "invisible"
    # (prune_opacity > 1), so all respawn at step 9; lr_xy = 0 keeps the
    # respawned centres where respawn put them until the end.
    mask = np.zeros((H, W), bool)
    mask[8:24, 8:24] = True
    target = np.zeros((H, W, 3), np.float32)
    target[mask] = 1.0
    kw = dict(steps=11, margin=1.0, background="white", output_background="white", prune_until=1.0,
              prune_opacity=2.0, lr_xy=0.0)
    r = fit_regions(target, [(mask, atlas, 24)], prune_every=10, key=0, **kw)
    still = fit_regions(target, [(mask, atlas, 24)], prune_every=0, key=0, **kw)
    assert np.all(np.any(np.asarray(r.params.xy) != np.asarray(still.params.xy), axis=-1))  # all respawned
    # Away from its edge: distance (pixels) from a centre's pixel to the
    # nearest pixel outside the mask, over a few seeds (one seed's 24 draws
    # vary: 0.25-0.6 of them in the edge ring). Projecting canvas-wide picks
    # to the nearest allowed pixel put every one at distance 1 (the edge ring).
    depths = []
    for key in range(4):
        fit = r if key == 0 else fit_regions(target, [(mask, atlas, 24)], prune_every=10, key=key, **kw)
        px = np.rint(np.asarray(fit.params.xy)).astype(int)
        assert mask[px[:, 1], px[:, 0]].all()  # inside the mask
        depths.append(distance_transform_edt(mask)[px[:, 1], px[:, 0]])
    depth = np.concatenate(depths)
    assert np.mean(depth <= 1.0) < 0.5, depth
    assert depth.mean() > 2.0, depth
    # the confinement guarantee still holds
    _, alpha = db.render(r.params, r.atlas, height=H, width=W, template=r.template)
    assert not ((np.asarray(alpha) > 0) & ~r.masks[0]).any()
