"""Bad inputs to fit() and FitConfig: clear errors naming the argument, before any work."""

import numpy as np
import jax
import pytest

import diffbmp_jax as db
from diffbmp_jax.fitting.image import FitConfig

from fit_scenes import shape_atlas

T = np.full((8, 8, 3), 0.5, np.float32)


def _fit(**kw):
    args = dict(num_primitives=4, steps=2, key=jax.random.key(0), progress=False)
    args.update(kw)
    return db.fit(args.pop("target", T), args.pop("atlas", shape_atlas(8)), **args)


@pytest.mark.parametrize("kw, exc, word", [
    (dict(num_primitives=0), ValueError, "num_primitives"),
    (dict(num_primitives=2.5), TypeError, "num_primitives"),
    (dict(steps=-1), ValueError, "steps"),
    (dict(steps="10"), TypeError, "steps"),
    (dict(weight_mask=np.ones((8, 7))), ValueError, "weight_mask"),
    (dict(target=np.zeros((8, 8, 2))), ValueError, "target"),
    (dict(target=np.full((8, 8, 3), 2.0)), ValueError, "target"),
    (dict(target="image.png"), FileNotFoundError, "target"),
    (dict(atlas=np.ones((2, 8, 8))), TypeError, "atlas"),
    (dict(key="seed"), TypeError, "key"),
    (dict(not_an_option=1), TypeError, "not_an_option"),
    (dict(config={"lr_xy": 0.1, "bogus": 1}), ValueError, "bogus"),
    (dict(background="image"), ValueError, "background_image"),
    (dict(color_blend=0.5), ValueError, "rgb"),
])
def test_fit_bad_inputs(kw, exc, word):
    with pytest.raises(exc, match=word):
        _fit(**kw)


@pytest.mark.parametrize("kw, word", [
    (dict(init="magic"), "init"), (dict(lr_xy=-1.0), "lr_xy"), (dict(background="grey"), "background"),
    (dict(output_background="noise"), "output_background"), (dict(log_every=0), "log_every"),
    (dict(lr_schedule="step"), "lr_schedule"), (dict(alpha_max=1.0), "alpha_max"),
    (dict(mse_weight=0.0), "mse_weight"), (dict(backend="tpu"), "backend"),
])
def test_config_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        FitConfig(**kw)


def test_config_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match="lr_typo"):
        FitConfig.from_dict({"lr_typo": 1.0}, source="my.toml")
    cfg = FitConfig.from_dict({"lr_xy": 0.2, "background": [1, 1, 1]})
    assert cfg.lr_xy == 0.2 and cfg.background == (1.0, 1.0, 1.0)
    hash(cfg)  # usable as a jit static argument
