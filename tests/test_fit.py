"""End-to-end fitting: recovery of a synthetic target, init quality, determinism, respawn."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import diffbmp_jax as db
from diffbmp_jax.fitting.image import FitConfig

from fit_scenes import shape_atlas, synthetic_target

RECOVERY_PSNR = 25.0  # dB on the 32x32 synthetic target (initial PSNR ~13.6 dB, reached ~27 dB)


def test_fit_recovers_synthetic_target():
    target, atlas = synthetic_target()
    # The target was drawn over white, so fit over white (a noise canvas would
    # ask 24 stamps to also paint the white background).
    r = db.fit(target, atlas, num_primitives=24, steps=200, key=jax.random.key(0), progress=False,
               background="white", soft_raster=False)
    assert r.image.shape == (32, 32, 3) and r.template.shape == (24,)
    assert r.psnr > RECOVERY_PSNR, r.history["psnr"]
    assert r.history["psnr"][-1] == pytest.approx(r.psnr)
    assert r.history["step"] == list(range(0, 201, 25))
    assert len(r.history["loss"]) == len(r.history["time"]) == len(r.history["step"])
    assert 0.8 < r.ssim <= 1.0 and r.wall_time > 0
    np.testing.assert_allclose(float(db.psnr(r.image, target)), r.psnr, rtol=1e-4)


@pytest.mark.slow
def test_structure_aware_beats_random_at_equal_steps():
    from PIL import Image
    from diffbmp_jax.assets import ASSETS
    target = np.asarray(Image.open(ASSETS / "target.png").convert("RGB").resize((48, 48)), np.float32) / 255
    atlas = shape_atlas()
    cfg = FitConfig(prune_every=0, log_every=20)
    res = {name: db.fit(target, atlas, num_primitives=60, steps=40, key=jax.random.key(3), progress=False,
                        config=cfg, init=name).psnr for name in ("structure_aware", "random")}
    assert res["structure_aware"] > res["random"] + 1.0, res


def test_fit_is_deterministic_for_a_key():
    target, atlas = synthetic_target(24, 20)
    # Bitwise with both renderers: the cpu kernel's backward schedules tiles
    # statically, so its gradient sums do not depend on thread timing.
    kw = dict(num_primitives=10, steps=20, progress=False, log_every=10)
    for backend, tol in (("reference", 0.0), ("auto", 0.0)):
        a = db.fit(target, atlas, key=jax.random.key(5), backend=backend, **kw)
        b = db.fit(target, atlas, key=jax.random.key(5), backend=backend, **kw)
        for f in ("xy", "scale", "rotation", "opacity_logit", "color_logit", "template"):
            src = a if f == "template" else a.params
            other = b if f == "template" else b.params
            np.testing.assert_allclose(np.asarray(getattr(src, f)), np.asarray(getattr(other, f)), rtol=tol, atol=tol)
        np.testing.assert_allclose(np.asarray(a.image), np.asarray(b.image), rtol=tol, atol=tol)
    c = db.fit(target, atlas, key=jax.random.key(6), **kw)
    assert not np.allclose(np.asarray(a.params.xy), np.asarray(c.params.xy))


def test_respawn_revives_invisible_primitives():
    target, atlas = synthetic_target()
    n = 12
    p, tmpl = db.init.grid(target, atlas, n, jax.random.key(0))
    dead = np.arange(n) % 3 == 0
    xy = np.asarray(p.xy).copy()
    xy[dead] = [-200.0, -200.0]  # far off the canvas
    op = np.where(np.arange(n) % 3 == 1, -9.0, np.asarray(p.opacity_logit))  # opacity ~1e-4
    p = db.Primitives(xy=xy, scale=p.scale, rotation=p.rotation, opacity_logit=op, color_logit=p.color_logit)
    r = db.fit(target, atlas, num_primitives=n, steps=10, key=jax.random.key(1), progress=False,
               init_params=(p, tmpl), prune_every=5, log_every=5, prune_until=1.0)
    assert sum(r.history["respawned"]) >= 8
    xy = np.asarray(r.params.xy)
    assert np.all((xy > -5) & (xy < 37)), xy
    assert np.all(np.asarray(r.params.opacity) > 0.05)


def test_zero_steps_returns_initialisation_and_options_apply():
    target, atlas = synthetic_target(16, 16)
    r = db.fit(target, atlas, num_primitives=5, steps=0, key=0, progress=False, init="grid",
               output_background=(0.0, 0.0, 0.0), soft_raster=False, ssim_weight=0.5)
    assert r.history["step"] == [0] and r.config.init == "grid"
    assert r.config.output_background == (0.0, 0.0, 0.0)


def test_history_has_no_nan_and_is_valid_json():
    import json
    target, atlas = synthetic_target(16, 16)
    r = db.fit(target, atlas, num_primitives=6, steps=4, key=jax.random.key(0), progress=False, log_every=2)
    assert r.history["loss"][0] is None and all(np.isfinite(r.history["loss"][1:]))
    json.loads(json.dumps(r.history, allow_nan=False))


@pytest.mark.parametrize("overrides", [{}, {"lr_schedule": "linear", "warmup_steps": 3, "adam_b1": 0.8}])
def test_the_optimiser_steps_like_the_optax_chain(overrides):
    """make_optimizer's Adam moves theta as optax.chain(scale_by_adam, scale_by_schedule, per-field
    rates) does, step after step (the schedule reading the steps taken before each step)."""
    optax = pytest.importorskip("optax")
    from diffbmp_jax.fitting.config import resolve_config
    from diffbmp_jax.fitting.optim import Theta, apply_updates, make_optimizer
    from diffbmp_jax.fitting.schedules import lr_multiplier
    cfg = resolve_config(None, overrides)
    lrs = Theta(cfg.lr_xy, cfg.lr_scale, cfg.lr_rotation, cfg.lr_opacity, cfg.lr_color)
    want_opt = optax.chain(
        optax.scale_by_adam(b1=cfg.adam_b1, b2=cfg.adam_b2),
        optax.scale_by_schedule(lr_multiplier(cfg.lr_schedule, 12, cfg.lr_final, cfg.warmup_steps)),
        optax.GradientTransformation(lambda p: optax.EmptyState(),
                                     lambda u, s, p=None: (Theta(*(-lr * x for x, lr in zip(u, lrs))), s)))
    opt = make_optimizer(cfg, 12)
    rng = np.random.default_rng(3)
    theta = Theta(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 2), (6,), (6,), (6,), (6, 3))))
    mine, theirs = (theta, opt.init(theta)), (theta, want_opt.init(theta))
    for step in range(12):
        grads = Theta(*(jnp.asarray(rng.normal(size=f.shape) * 10.0 ** (step % 3 - 1), jnp.float32)
                        for f in theta))
        u, s = opt.update(grads, mine[1], mine[0])
        mine = (apply_updates(mine[0], u), s)
        u, s = want_opt.update(grads, theirs[1], theirs[0])
        theirs = (optax.apply_updates(theirs[0], u), s)
        for a, b in zip(mine[0], theirs[0]):
            assert a.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-7)
    assert int(mine[1].count) == 12


def test_the_host_start_equals_the_compiled_one():
    """prepare's start is built on the host: host_theta is to_theta, initial_state is optimizer.init."""
    from diffbmp_jax.fitting.config import resolve_config
    from diffbmp_jax.fitting.optim import host_theta, initial_state, make_optimizer, to_theta
    rng = np.random.default_rng(5)
    params = db.Primitives(xy=rng.uniform(0, 30, (7, 2)).astype(np.float32),
                           scale=rng.uniform(1, 5, 7).astype(np.float32),
                           rotation=rng.uniform(-3, 3, 7).astype(np.float32),
                           opacity_logit=rng.normal(size=7).astype(np.float32),
                           color_logit=rng.normal(size=(7, 3)).astype(np.float32))
    theta = host_theta(params, 4.5)
    for got, want in zip(theta, to_theta(params, 4.5)):
        assert got.dtype == want.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    for cfg in (resolve_config(None, {}), resolve_config(None, {"lr_schedule": "constant", "warmup_steps": 3})):
        opt = make_optimizer(cfg, 40)
        got, want = initial_state(opt, theta), opt.init(theta)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
