"""Random inputs, good and bad, to render, fit and the stamp loaders (seeded, so any failure reproduces).

Each call must either return finite arrays of the documented shapes or raise
ValueError/TypeError naming an argument: never crash, hang or return NaN.
"""

import os

import numpy as np
import pytest

import diffbmp_jax as db

ARGUMENT_WORDS = ("params", "atlas", "height", "width", "template", "color_blend", "alpha_max", "backend", "xy",
                  "scale", "target", "num_primitives", "steps", "key", "config", "size", "specs", "paths", "image",
                  "mask", "init_params", "Atlas", "font", "emoji", "text")


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def random_array(rng, shape, dtype, bad: float):
    a = rng.uniform(-0.2, 1.2, size=shape) if rng.uniform() < 0.3 else rng.uniform(0.0, 1.0, size=shape)
    if a.size and rng.uniform() < bad:
        a.flat[int(rng.integers(a.size))] = pick(rng, [np.nan, np.inf, -np.inf, -5.0, 1e30])
    return a.astype(dtype)


def random_render_case(rng):
    n = pick(rng, [0, 1, 3, 7])
    xy_shape = pick(rng, [(n, 2)] * 6 + [(n, 3), (n,), (2,)])
    dtype = pick(rng, [np.float32] * 5 + [np.float64, np.int32, np.float16, bool])
    xy = random_array(rng, xy_shape, dtype, 0.1) * 20
    scale = np.abs(random_array(rng, pick(rng, [(n,)] * 5 + [(n + 1,)]), np.float32, 0.15)) * 6 + 0.5
    if rng.uniform() < 0.1:
        scale = -scale
    params = db.Primitives(xy=xy, scale=scale, rotation=random_array(rng, (n,), np.float32, 0.05) * 7,
                           opacity_logit=random_array(rng, (n,), np.float32, 0.05) * 4 - 2,
                           color_logit=random_array(rng, (n, 3), np.float32, 0.05) * 4 - 2)
    p, h, w = pick(rng, [1, 2]), pick(rng, [1, 3, 8]), pick(rng, [1, 4, 8])
    mask = random_array(rng, pick(rng, [(p, h, w)] * 6 + [(h, w), (p, h, w, 1)]), np.float32, 0.1)
    rgb = random_array(rng, (p, h, w, 3), np.float32, 0.05) if rng.uniform() < 0.6 else None
    atlas = db.Atlas(mask=mask, rgb=rgb) if rng.uniform() < 0.9 else "atlas"
    kw = dict(height=pick(rng, [1, 5, 16, 16, 0, -3, 2.5, True]), width=pick(rng, [1, 7, 16, 16, 0, 3.0]),
              template=pick(rng, [None, None, np.zeros(n, np.int32), np.full(n, 5, np.int32), np.zeros(n)]),
              color_blend=pick(rng, [0.0, 0.0, 0.5, 1.0, 1.5, np.nan]),
              alpha_max=pick(rng, [0.99, 0.99, 0.5, 0.0, 1.0]),
              backend=pick(rng, ["reference", "cpu", "auto", "auto", "gpu"]),
              antialias=bool(rng.uniform() < 0.3))
    return params, atlas, kw


def assert_clear_error(e: Exception):
    assert isinstance(e, (ValueError, TypeError)), f"{type(e).__name__}: {e}"
    assert any(word in str(e) for word in ARGUMENT_WORDS), f"message names no argument: {e}"


@pytest.mark.parametrize("seed", range(120))
def test_render_with_random_inputs(seed):
    rng = np.random.default_rng(seed)
    try:
        params, atlas, kw = random_render_case(rng)  # building an Atlas checks its shapes already
        color, alpha = db.render(params, atlas, **kw)
    except Exception as e:  # noqa: BLE001 - the kind of exception is what is tested
        assert_clear_error(e)
        return
    color, alpha = np.asarray(color), np.asarray(alpha)
    assert color.shape == (kw["height"], kw["width"], 3) and alpha.shape == (kw["height"], kw["width"])
    assert np.all(np.isfinite(color)) and np.all(np.isfinite(alpha))
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0


@pytest.mark.parametrize("seed", range(12))
def test_fit_with_random_inputs(seed):
    rng = np.random.default_rng(1000 + seed)
    h, w = pick(rng, [(8, 8), (12, 9), (1, 5)])
    target = random_array(rng, pick(rng, [(h, w, 3)] * 4 + [(h, w), (h, w, 4), (h, w, 2)]),
                          pick(rng, [np.float32, np.float64, np.uint8]), 0.1)
    atlas = db.Atlas.from_arrays(rng.uniform(size=(2, 5, 5)).astype(np.float32))
    options = pick(rng, [{}, {"lr_xy": -1.0}, {"init": "grid"}, {"blur_sigma": 0.0}, {"prune_every": 1},
                         {"background": "noise"}, {"background": "purple"}, {"ssim_weight": 0.5}])
    try:
        r = db.fit(target, atlas, num_primitives=pick(rng, [1, 4, 0]), steps=pick(rng, [0, 2, -1]),
                   key=pick(rng, [0, 7, "seed"]), progress=False, log_every=2, **options)
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e)
        return
    assert r.image.shape == (h, w, 3) and np.all(np.isfinite(np.asarray(r.image)))
    for field in ("xy", "scale", "rotation", "opacity_logit", "color_logit"):
        assert np.all(np.isfinite(np.asarray(getattr(r.params, field)))), field


@pytest.mark.parametrize("seed", range(16))
def test_stamp_loaders_with_random_files(tmp_path, seed):
    rng = np.random.default_rng(2000 + seed)
    kind = pick(rng, ["bytes", "png", "svg", "text", "missing", "folder"])
    if kind == "bytes":
        path = tmp_path / pick(rng, ["x.png", "x.jpg", "x.svg", "x.gif"])
        path.write_bytes(rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        spec = str(path)
    elif kind == "png":
        from PIL import Image
        path = tmp_path / "x.png"
        shape = pick(rng, [(1, 1, 4), (5, 9, 4), (3, 3, 3), (7, 2)])
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
        spec = str(path)
    elif kind == "svg":
        path = tmp_path / "x.svg"
        path.write_text(pick(rng, ['<svg xmlns="http://www.w3.org/2000/svg" width="10" height="4"><rect width="10" '
                                   'height="4"/></svg>', "<svg>", '<svg xmlns="http://www.w3.org/2000/svg"/>', ""]))
        spec = str(path)
    elif kind == "text":
        spec = "text:" + pick(rng, ["A", "", "  ", "word:HI THERE", "🙂"])
    elif kind == "missing":
        spec = str(tmp_path / "nothing_here.png")
    else:
        os.makedirs(tmp_path / "empty", exist_ok=True)
        spec = str(tmp_path / "empty")
    size = pick(rng, [16, 16, 1, 0, 5000])
    try:
        atlas = db.load_stamps([spec], size=size)
    except (FileNotFoundError, ImportError):
        return  # a missing file says so; an optional dependency may be absent
    except Exception as e:  # noqa: BLE001
        assert_clear_error(e)
        return
    mask = np.asarray(atlas.mask)
    assert mask.ndim == 3 and mask.shape[1:] == (size, size) and np.all(np.isfinite(mask))
