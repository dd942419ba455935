"""fit_batch: many fits as one vmapped, sharded loop; scene b is fit(targets[b], key=fold_in(key, b))."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.validation import as_key

from fit_scenes import shape_atlas

FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")
H, W = 24, 28
# Small fits that still exercise the noise background, the blurred atlas and
# one respawn (at step 5) inside the batch.
OPTS = dict(num_primitives=10, steps=10, log_every=5, prune_every=5, prune_until=1.0, background="noise")


def targets(count, seed=0):
    """``count`` different targets: a few stamps drawn over white by the reference renderer."""
    atlas = shape_atlas()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = 6
        params = db.Primitives.create(rng.uniform(5, [W - 5, H - 5], (n, 2)), rng.uniform(3, 7, n),
                                      rng.uniform(-1, 1, n), rng.uniform(0.6, 0.95, n),
                                      rng.uniform(0.05, 0.95, (n, 3)))
        c, a = db.render(params, atlas, height=H, width=W, template=jnp.arange(n) % 2, backend="reference")
        out.append(np.asarray(db.composite(c, a, 1.0)))
    return np.stack(out), atlas


def _assert_params_close(a, b, atol=1e-4, what=""):
    for f in FIELDS:
        np.testing.assert_allclose(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), rtol=0, atol=atol,
                                   err_msg=f"{what} {f}")


def _starts(tg, atlas, n):
    """Grid initialisations with some primitives far off the canvas (a different set per scene),
    so the respawn at step 5 has work to do inside the batch."""
    starts = []
    for b, target in enumerate(tg):
        p, t = db.init.grid(target, atlas, n, jax.random.key(100 + b))
        xy = np.asarray(p.xy).copy()
        xy[np.arange(n) % (2 + b) == 0] = [-200.0, -200.0]
        starts.append((db.Primitives(xy=jnp.asarray(xy), scale=p.scale, rotation=p.rotation,
                                     opacity_logit=p.opacity_logit, color_logit=p.color_logit), t))
    return starts


def test_fit_batch_equals_per_scene_fit():
    tg, atlas = targets(3)
    key = jax.random.key(11)
    starts = _starts(tg, atlas, OPTS["num_primitives"])
    rng = np.random.default_rng(5)
    weights = [rng.uniform(0.2, 2.0, (H, W)).astype(np.float32) for _ in range(3)]
    res = db.fit_batch(tg, atlas, key=key, progress=True, init_params=starts, weight_masks=weights, **OPTS)
    assert isinstance(res, db.BatchFitResult) and len(res) == 3 and res.devices >= 1
    assert res.params.xy.shape == (3, 10, 2) and res.template.shape == (3, 10)
    assert res.images.shape == (3, H, W, 3) and res.psnr.shape == (3,) and res.ssim.shape == (3,)
    # History: one entry per chunk (and step 0), each a list over the scenes.
    assert res.history["step"] == [0, 5, 10]
    assert res.history["loss"][0] is None
    assert all(len(v) == 3 for v in res.history["loss"][1:]) and all(len(v) == 3 for v in res.history["psnr"])
    assert len(res.history["time"]) == 3
    np.testing.assert_allclose(res.history["psnr"][-1], res.psnr)

    for b in range(3):
        ref = db.fit(tg[b], atlas, key=jax.random.fold_in(key, b), progress=False, init_params=starts[b],
                     weight_mask=weights[b], **OPTS)
        assert sum(ref.history["respawned"]) > 0  # respawn ran (here and, vmapped, in the batch)
        assert [v[b] for v in res.history["respawned"]] == ref.history["respawned"]
        _assert_params_close(res.params[b], ref.params,
                             what=f"scene {b}")
        np.testing.assert_array_equal(res.template[b], np.asarray(ref.template))
        np.testing.assert_allclose(res.images[b], np.asarray(ref.image), atol=1e-4)
        assert res.psnr[b] == pytest.approx(ref.psnr, abs=1e-3)
        assert res.ssim[b] == pytest.approx(ref.ssim, abs=1e-4)
        assert [v[b] for v in res.history["psnr"]] == pytest.approx(ref.history["psnr"], abs=1e-3)
        assert [v[b] for v in res.history["loss"][1:]] == pytest.approx(ref.history["loss"][1:], rel=1e-4)

        # scene(b): the same values as a FitResult.
        s = res.scene(b)
        assert isinstance(s, db.FitResult)
        _assert_params_close(s.params, ref.params, what=f"scene({b})")
        for f in FIELDS:
            np.testing.assert_array_equal(np.asarray(getattr(s.params, f)), np.asarray(getattr(res.params, f))[b])
        np.testing.assert_array_equal(s.template, res.template[b])
        np.testing.assert_array_equal(s.image, res.images[b])
        assert s.psnr == float(res.psnr[b]) and s.ssim == float(res.ssim[b])
        assert s.history["step"] == res.history["step"]
        assert s.history["psnr"] == [v[b] for v in res.history["psnr"]]
        assert s.history["loss"] == [None] + [v[b] for v in res.history["loss"][1:]]
        assert s.history["respawned"] == ref.history["respawned"] and s.history["reassigned"] == [0, 0, 0]
        assert s.config == res.config and s.wall_time == res.wall_time
    # The scenes were fitted to their own targets (not all to one).
    assert not np.allclose(res.params.xy[0], res.params.xy[1], atol=1e-2)
    np.testing.assert_array_equal(res.scene(-1).image, res.scene(2).image)


def test_zero_steps_returns_initialisation():
    tg, atlas = targets(3, seed=1)
    res = db.fit_batch(tg, atlas, num_primitives=6, steps=0, key=3, progress=False, init="grid")
    assert res.history["step"] == [0] and res.history["loss"] == [None]
    assert len(res.history["psnr"]) == 1 and len(res.history["psnr"][0]) == 3
    for b in range(3):
        ref = db.fit(tg[b], atlas, num_primitives=6, steps=0, key=jax.random.fold_in(as_key(3), b),
                     progress=False, init="grid")
        _assert_params_close(res.params[b], ref.params, atol=1e-5)
        assert res.psnr[b] == pytest.approx(ref.psnr, abs=1e-3)
        assert res.scene(b).history["step"] == [0]
    # A batch of 3: scene indices -3..2 only.
    for b in (3, 10, -4):
        with pytest.raises(IndexError, match=f"index {b} "):
            res.scene(b)


# --------------------------------------------------------------------------- errors

T = np.full((8, 8, 3), 0.5, np.float32)


@pytest.mark.parametrize("kw, exc, word", [
    (dict(targets=np.zeros((0, 8, 8, 3), np.float32)), ValueError, "targets"),
    (dict(targets=[]), ValueError, "targets"),
    (dict(targets=T), ValueError, "targets"),  # one image, not a batch
    (dict(targets=[T, np.full((8, 9, 3), 0.5, np.float32)]), ValueError, "targets"),
    (dict(weight_masks=[np.ones((8, 8))] * 2), ValueError, "weight_masks"),
    (dict(background_images=[T] * 4), ValueError, "background_images"),
    (dict(init_params=[None]), ValueError, "init_params"),
    (dict(reassign_every=5), ValueError, "reassign_every"),
    (dict(atlas=np.ones((2, 8, 8), np.float32)), TypeError, "atlas"),
    (dict(devices=[]), ValueError, "devices"),
    (dict(not_an_option=1), TypeError, "not_an_option"),
])
def test_fit_batch_bad_inputs(kw, exc, word):
    args = dict(targets=[T, T, T], atlas=shape_atlas(8), num_primitives=4, steps=2, key=0, progress=False)
    args.update(kw)
    with pytest.raises(exc, match=word):
        db.fit_batch(args.pop("targets"), args.pop("atlas"), **args)


# --------------------------------------------------------------------------- several devices

_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    import diffbmp_jax as db
    from diffbmp_jax.fitting import batch

    targets = np.load(sys.argv[1])
    atlas = db.Atlas.from_arrays(np.load(sys.argv[2]))
    opts = json.loads(sys.argv[3])

    seen = []  # sharding of every chunk's carry
    run_chunk = batch.run_batch_chunk
    def spy(static, mesh, scenes, atlas, carry, start, steps, full=False):
        out = run_chunk(static, mesh, scenes, atlas, carry, start, steps, full)
        leaf = jax.tree.leaves(out[0])[0]
        seen.append({"devices": len(leaf.sharding.device_set),
                     "shards": sorted(int(s.data.shape[0]) for s in leaf.addressable_shards),
                     "shape": list(leaf.shape)})
        return out
    batch.run_batch_chunk = spy

    many = db.fit_batch(targets, atlas, key=7, devices=jax.devices(), progress=False, **opts)
    chunks_many, seen[:] = list(seen), []
    one = db.fit_batch(targets, atlas, key=7, devices=jax.devices()[:1], progress=True, **opts)
    chunks_one = list(seen)
    diff = {f: float(np.max(np.abs(np.asarray(getattr(many.params, f)) - np.asarray(getattr(one.params, f)))))
            for f in ("xy", "scale", "rotation", "opacity_logit", "color_logit")}
    print("RESULT " + json.dumps({
        "jax_file": jax.__file__, "db_file": db.__file__,
        "device_count": len(jax.devices()), "platform": jax.devices()[0].platform,
        "devices_many": many.devices, "devices_one": one.devices,
        "chunks_many": chunks_many, "chunks_one": chunks_one,
        "xy_shape": list(np.shape(many.params.xy)), "template_equal": bool(np.array_equal(many.template, one.template)),
        "param_diff": diff, "image_diff": float(np.max(np.abs(many.images - one.images))),
        "psnr_many": many.psnr.tolist(), "psnr_one": one.psnr.tolist(),
        "steps_many": many.history["step"], "steps_one": one.history["step"],
        "last_loss_many": many.history["loss"][-1], "last_loss_one": one.history["loss"][-1],
        "xy_scene4": np.asarray(many.params.xy[4]).tolist(),
    }))
""")


@pytest.mark.slow
def test_fit_batch_over_four_host_devices(tmp_path):
    """B=5 scenes over 4 (forced) CPU devices, padded to 8: same fits as on one device."""
    tg, atlas = targets(5, seed=2)
    np.save(tmp_path / "targets.npy", tg)
    np.save(tmp_path / "mask.npy", np.asarray(atlas.mask))
    opts = dict(num_primitives=8, steps=6, log_every=3, prune_every=3, prune_until=1.0, background="noise")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)  # import the installed package, not anything beside the tests
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "targets.npy"), str(tmp_path / "mask.npy"),
                           json.dumps(opts)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(line) == 1, proc.stdout[-2000:]
    out = json.loads(line[0][len("RESULT "):])

    assert os.path.realpath(out["db_file"]) == os.path.realpath(db.__file__)
    assert out["device_count"] == 4 and out["platform"] == "cpu"
    assert out["devices_many"] == 4 and out["devices_one"] == 1
    # Every chunk's carry: 8 scenes (5 padded to a multiple of 4), 2 on each of the 4 devices.
    assert len(out["chunks_many"]) == 2
    for c in out["chunks_many"]:
        assert c == {"devices": 4, "shards": [2, 2, 2, 2], "shape": [8, 8, 2]}, c
    for c in out["chunks_one"]:
        assert c == {"devices": 1, "shards": [5], "shape": [5, 8, 2]}, c
    assert out["xy_shape"] == [5, 8, 2] and out["template_equal"]
    for f, d in out["param_diff"].items():
        assert d < 1e-4, (f, d)
    assert out["image_diff"] < 1e-4
    np.testing.assert_allclose(out["psnr_many"], out["psnr_one"], atol=1e-3)
    # progress=False logs the end only; its last loss is the one progress=True logged.
    assert out["steps_many"] == [6] and out["steps_one"] == [0, 3, 6]
    np.testing.assert_allclose(out["last_loss_many"], out["last_loss_one"], rtol=1e-4)

    # The last scene (the one copied as padding) matches its own single fit here, in the parent.
    ref = db.fit(tg[4], atlas, key=jax.random.fold_in(as_key(7), 4), progress=False, **opts)
    np.testing.assert_allclose(out["xy_scene4"], np.asarray(ref.params.xy), atol=1e-4)


# --------------------------------------------------------------------------- several processes

_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import jax
    try:  # the CPU backend needs a collectives implementation across processes
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:
        pass
    port, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import diffbmp_jax as db

    targets = np.load(sys.argv[3])
    atlas = db.Atlas.from_arrays(np.load(sys.argv[4]))
    res = db.fit_batch(targets, atlas, key=5, progress=False, **json.loads(sys.argv[5]))
    print("RESULT " + json.dumps({
        "process": jax.process_index(), "processes": jax.process_count(),
        "devices": len(jax.devices()), "local": len(jax.local_devices()), "used": res.devices,
        "xy": np.asarray(res.params.xy).tolist(), "images": float(np.sum(res.images)),
        "psnr": res.psnr.tolist()}))
""")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_fit_batch_across_two_processes(tmp_path):
    """Multi-host: 2 processes x 2 CPU devices after jax.distributed.initialize = one process."""
    tg, atlas = targets(3, seed=4)
    np.save(tmp_path / "targets.npy", tg)
    np.save(tmp_path / "mask.npy", np.asarray(atlas.mask))
    opts = dict(num_primitives=8, steps=4, log_every=2)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    port = str(_free_port())
    args = [str(tmp_path / "targets.npy"), str(tmp_path / "mask.npy"), json.dumps(opts)]
    procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, port, str(i)] + args, cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-4000:]
            line = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
            assert len(line) == 1, stdout[-2000:]
            outs.append(json.loads(line[0][len("RESULT "):]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(o["process"] for o in outs) == [0, 1]
    for o in outs:
        assert o["processes"] == 2 and o["devices"] == 4 and o["local"] == 2 and o["used"] == 4
    # Both processes hold the whole result, and it is the single-process one.
    assert outs[0]["xy"] == outs[1]["xy"] and outs[0]["psnr"] == outs[1]["psnr"]
    ref = db.fit_batch(tg, atlas, key=5, progress=False, devices=jax.devices()[:1], **opts)
    np.testing.assert_allclose(np.asarray(outs[0]["xy"]), np.asarray(ref.params.xy), atol=1e-4)
    np.testing.assert_allclose(outs[0]["psnr"], ref.psnr, atol=1e-3)


def test_fit_batch_callback_sees_every_chunk():
    tg, atlas = targets(2, seed=6)
    seen = []

    def cb(step, params, images, metrics):
        seen.append((step, params.xy.shape, images.shape, metrics["loss"], metrics["psnr"]))

    res = db.fit_batch(tg, atlas, key=3, progress=False, callback=cb, num_primitives=6, steps=7, log_every=3)
    assert [s[0] for s in seen] == [0, 3, 6, 7] == res.history["step"]
    assert all(s[1] == (2, 6, 2) and s[2] == (2,) + tuple(tg.shape[1:]) for s in seen)
    assert seen[0][3] is None and all(len(s[3]) == 2 for s in seen[1:])
    assert [s[4] for s in seen] == res.history["psnr"]
    np.testing.assert_allclose(seen[-1][4], res.psnr)
